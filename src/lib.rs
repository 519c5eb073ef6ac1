//! mailctl: manage email mailings from the command line, and send them from cron.

pub mod auth;
pub mod bounce;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod docs;
pub mod error;
pub mod mail;
pub mod output;
pub mod smtp;
pub mod validate;
pub mod web;
pub mod when;

/// The version, with `git describe` when the build had it.
pub const VERSION: &str = match option_env!("MAILCTL_GIT_DESCRIBE") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};
