//! Who is calling, and what they may do.

pub mod password;
pub mod policy;
pub mod session;
pub mod throttle;
pub mod token;
pub mod unsubscribe;
pub mod verp;
