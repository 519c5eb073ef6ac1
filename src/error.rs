//! One error type for the whole program; each variant knows its exit code (CLI.md).

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Database, SMTP, filesystem: the environment failed, not the caller.
    #[error("{0}")]
    Runtime(String),
    /// Not logged in, session expired, wrong password, role not permitted.
    #[error("{0}")]
    Forbidden(String),
    /// A record that does not exist or belongs to someone the caller may not see.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// Bad input: names the field (or CSV line) and the reason.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The reader of our output went away (`mailctl ... | head`): their choice, not a failure.
    #[error("output closed")]
    PipeClosed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Runtime(_) => 1,
            Error::Forbidden(_) => 3,
            Error::NotFound { .. } => 4,
            Error::Invalid { .. } => 5,
            Error::PipeClosed => 0,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    pub fn not_found(what: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
    }

    pub fn runtime(msg: impl fmt::Display) -> Self {
        Error::Runtime(msg.to_string())
    }

    /// The same error with `f` applied to its texts (to hide secrets before it is printed).
    pub fn map_text(self, f: impl Fn(&str) -> String) -> Self {
        match self {
            Error::Runtime(m) => Error::Runtime(f(&m)),
            Error::Forbidden(m) => Error::Forbidden(f(&m)),
            Error::NotFound { what, id } => Error::NotFound { what, id: f(&id) },
            Error::Invalid { field, reason } => Error::Invalid {
                field: f(&field),
                reason: f(&reason),
            },
            Error::PipeClosed => Error::PipeClosed,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // Driver texts do not contain the connection URL; `commands::run` still passes every
        // error through `config::hide_secrets` before it is printed.
        Error::Runtime(format!("database: {e}"))
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Runtime(format!("migration: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => Error::PipeClosed,
            _ => Error::Runtime(format!("i/o: {e}")),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        match e.io_error_kind() {
            Some(std::io::ErrorKind::BrokenPipe) => Error::PipeClosed,
            _ => Error::Runtime(format!("json: {e}")),
        }
    }
}

impl From<csv::Error> for Error {
    fn from(e: csv::Error) -> Self {
        match e.kind() {
            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                Error::PipeClosed
            }
            _ => Error::Runtime(format!("csv: {e}")),
        }
    }
}
