//! imagec: a standalone container image pull client.
//!
//! Data flows one way: reference -> endpoint -> auth -> manifest -> plan -> parallel transfer
//! -> verified blobs -> index update. Each module owns one step; `main.rs` only parses
//! arguments and exits with the code `app::run` returns.
pub mod app;
pub mod cli;
pub mod credentials;
pub mod diffid;
pub mod digest;
pub mod error;
pub mod gc;
pub mod interrupt;
pub mod manifest;
pub mod output;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod report;
pub mod resolve;
pub mod retry;
pub mod settings;
pub mod store;
pub mod transfer;
