//! imagec: a standalone container image pull client.
pub mod digest;
pub mod platform;
pub mod reference;
pub mod registry;
