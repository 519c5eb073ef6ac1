//! Letters: composing them, and the transports that carry them (SMTP or the outbox).

pub mod compose;
pub mod journal;
pub mod pace;
pub mod placeholders;
pub mod sender;
pub mod transport;
