//! imagec: a standalone container image pull client.
//!
//! Data flows one way: reference -> endpoint -> auth -> manifest -> plan -> parallel transfer
//! -> verified blobs -> index update. The folders say what the program does:
//! - `cli`: arguments, settings resolved once, the commands, rendering and progress; the only
//!   place that prints or exits.
//! - `registry`: talking to registries (HTTP agent, auth, credentials, retries, requests).
//! - `store`: the OCI layout on disk (blobs, index, locks, partial downloads, gc).
//! - `layer`: what is inside layer blobs (decompression, diff_ids).
//! - `pull`: resolving references, planning, and transferring blobs into the store.
//! - `manifest`, `reference`, `digest`, `platform`: the data types every step shares.
//!
//! `registry` and `store` never import each other; `pull` joins them.
pub mod archive;
pub mod cancel;
pub mod cli;
pub mod digest;
pub mod error;
pub mod layer;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod report;
pub mod store;
