//! What is inside a layer blob: its compression and its diff_id (the digest of the
//! uncompressed tar). Next: tar entries and applying them to a directory.
pub mod diffid;
