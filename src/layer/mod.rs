//! What is inside a layer blob: its compression (`decompress`), its diff_id (the digest of the
//! uncompressed tar, `diffid`), its tar entries read to bounds (`tar`), and what each layer
//! adds, changes and deletes over the ones below (`changes`). Next: applying them to a
//! directory.
pub mod apply;
pub mod changes;
pub mod decompress;
pub mod diffid;
pub mod root;
pub mod tar;
