//! The tiny_http listener for emailed links: /confirm/{token}, /reset/{token},
//! /unsubscribe/{token}. `router` decides (pure), `pages` renders (pure), `server` runs.

pub mod pages;
pub mod router;
pub mod server;
