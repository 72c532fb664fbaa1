//! Layer diff_ids (image-spec `config.md`: the digest of the uncompressed layer tar), computed
//! from a tee of the download while it streams in, so converting a schema1 image needs no second
//! pass over its layers. A layer that is not gzip (it does not start with the gzip magic) is
//! its own diff_id.

use std::io::{self, Read, Write};
use std::path::Path;

use flate2::write::MultiGzDecoder;

use crate::digest::{Digest, Hasher};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Writes the uncompressed bytes into a hasher.
struct HashSink(Hasher);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum State {
    /// Fewer than two bytes seen: not yet known whether it is gzip.
    Sniff(Vec<u8>),
    Gzip(Box<MultiGzDecoder<HashSink>>),
    Plain,
}

/// Feed it the blob's bytes in order; `finish` gives the diff_id and whether it was gzip.
pub struct DiffId {
    state: State,
}

impl Default for DiffId {
    fn default() -> Self {
        DiffId {
            state: State::Sniff(Vec::new()),
        }
    }
}

impl DiffId {
    pub fn new() -> DiffId {
        DiffId::default()
    }

    pub fn update(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let State::Sniff(seen) = &mut self.state {
            seen.extend_from_slice(bytes);
            if seen.len() < 2 {
                return Ok(());
            }
            let seen = std::mem::take(seen);
            if seen[..2] == GZIP_MAGIC {
                let mut d = Box::new(MultiGzDecoder::new(HashSink(Hasher::new())));
                d.write_all(&seen)?;
                self.state = State::Gzip(d);
            } else {
                self.state = State::Plain;
            }
            return Ok(());
        }
        match &mut self.state {
            State::Gzip(d) => d.write_all(bytes),
            _ => Ok(()),
        }
    }

    /// The diff_id and whether the layer is gzip; `blob` is the compressed blob's own digest
    /// (the diff_id of a layer that is not compressed).
    pub fn finish(self, blob: &Digest) -> io::Result<(Digest, bool)> {
        match self.state {
            State::Gzip(d) => {
                let sink = d.finish()?;
                Ok((sink.0.finish(), true))
            }
            State::Plain | State::Sniff(_) => Ok((blob.clone(), false)),
        }
    }
}

/// The diff_id of a blob already in the store (a local pass over the file).
pub fn of_file(path: &Path, blob: &Digest) -> io::Result<(Digest, bool)> {
    let mut f = std::fs::File::open(path)?;
    let mut d = DiffId::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return d.finish(blob);
        }
        d.update(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_layers_are_hashed_uncompressed_in_any_chunking() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let gz = gzip(&data);
        let blob = Digest::sha256_of(&gz);
        for chunk in [1, 2, 3, 1000, gz.len()] {
            let mut d = DiffId::new();
            for c in gz.chunks(chunk) {
                d.update(c).unwrap();
            }
            assert_eq!(
                d.finish(&blob).unwrap(),
                (Digest::sha256_of(&data), true),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn plain_tars_are_their_own_diff_id() {
        let tar = vec![0u8; 1024];
        let blob = Digest::sha256_of(&tar);
        let mut d = DiffId::new();
        d.update(&tar).unwrap();
        assert_eq!(d.finish(&blob).unwrap(), (blob, false));
    }

    #[test]
    fn a_truncated_gzip_is_an_error() {
        let gz = gzip(&[1u8; 10_000]);
        let mut d = DiffId::new();
        d.update(&gz[..gz.len() / 2]).unwrap();
        assert!(d.finish(&Digest::sha256_of(&gz)).is_err());
    }
}
