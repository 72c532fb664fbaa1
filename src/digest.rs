//! Content digests (`sha256:<hex>`) and the streaming reader that verifies them.
//!
//! A [`Digest`] is parsed once and validated, so a digest string that is not valid never
//! reaches a file path. [`HashingReader`] hashes and counts bytes as they stream past, refuses
//! to read beyond the expected size, and [`HashingReader::finish`] drains to EOF before comparing
//! (image-spec `descriptor.md`: size and digest must both match).

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Algorithms we can verify. The OCI spec also registers sha512; registries in practice serve
/// sha256 only, and a digest we cannot verify is refused when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
        }
    }
}

/// A validated content digest: algorithm plus lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected <algorithm>:<hex>")]
    Format(String),
    #[error("unsupported digest algorithm {0:?} (only sha256 is supported)")]
    Algorithm(String),
    #[error("invalid digest {0:?}: sha256 needs 64 lowercase hex digits")]
    Hex(String),
}

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    pub fn from_sha256(raw: [u8; 32]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex(&raw),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, safe to use as a file name (validated on construction).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as docker names layers in its progress output.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Format(s.to_string()))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "" => return Err(DigestError::Format(s.to_string())),
            other => return Err(DigestError::Algorithm(other.to_string())),
        };
        let valid = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::Hex(s.to_string()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Incremental sha256 over bytes seen so far, with a byte count.
#[derive(Clone, Default)]
pub struct Hasher {
    state: Sha256,
    count: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.state.update(bytes);
        self.count += bytes.len() as u64;
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.state.finalize().into())
    }
}

/// Why a stream did not match its descriptor.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    Size {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
}

/// A `Read` wrapper that hashes and counts what passes through and never yields more than
/// `limit` bytes: a server that sends more than the descriptor's size gets an error, not our
/// memory or disk.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    limit: u64,
}

impl<R: Read> HashingReader<R> {
    /// `hasher` may already hold a prefix (a resumed download); `limit` is the total size.
    pub fn new(inner: R, hasher: Hasher, limit: u64) -> Self {
        HashingReader {
            inner,
            hasher,
            limit,
        }
    }

    /// Drain to EOF (so a longer body is noticed), then compare size and digest.
    pub fn finish(mut self, expected: &Digest) -> io::Result<Result<u64, VerifyError>> {
        io::copy(&mut self, &mut io::sink())?;
        let count = self.hasher.count();
        if count != self.limit {
            return Ok(Err(VerifyError::Size {
                digest: expected.clone(),
                expected: self.limit,
                actual: count,
            }));
        }
        let actual = self.hasher.finish();
        if &actual != expected {
            return Ok(Err(VerifyError::Digest {
                expected: expected.clone(),
                actual,
            }));
        }
        Ok(Ok(count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.limit - self.hasher.count();
        if remaining == 0 {
            // Probe for one more byte: a body longer than the descriptor says is an error.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("stream is longer than the expected {} bytes", self.limit),
                )),
            };
        }
        let want = buf.len().min(remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::sha256_of(b""));
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn hashing_reader_verifies_size_and_digest() {
        let data = b"hello world";
        let d = Digest::sha256_of(data);
        let r = HashingReader::new(&data[..], Hasher::new(), data.len() as u64);
        assert_eq!(r.finish(&d).unwrap().unwrap(), 11);

        let r = HashingReader::new(&data[..], Hasher::new(), 5);
        assert!(r.finish(&d).is_err(), "a longer stream must be an error");

        let r = HashingReader::new(&data[..5], Hasher::new(), 11);
        assert!(matches!(
            r.finish(&d).unwrap(),
            Err(VerifyError::Size { actual: 5, .. })
        ));

        let r = HashingReader::new(&b"hello worle"[..], Hasher::new(), 11);
        assert!(matches!(
            r.finish(&d).unwrap(),
            Err(VerifyError::Digest { .. })
        ));
    }
}
