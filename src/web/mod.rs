//! The listener for emailed links: /confirm/{token}, /reset/{token}, /unsubscribe/{token}.
//! `router` decides (pure), `pages` renders (pure), `handlers` answers one request, `server`
//! accepts connections and enforces the limits.

pub mod handlers;
pub mod pages;
pub mod router;
pub mod server;
