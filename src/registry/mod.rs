//! The registry client: endpoint discovery, auth, and requests (distribution spec v2).
pub mod challenge;
