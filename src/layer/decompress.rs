//! The decompressor a layer's media type names (image-spec `media-types.md`, Docker's
//! `rootfs.diff.tar.gzip`): gzip, zstd, or none. Decided by the media type, not by sniffing:
//! a layer whose bytes do not match its type fails in the decoder, with a message naming it.

use std::io::{self, BufReader, Read};

use crate::manifest::media;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
#[error("layer media type {0:?} is not a tar, tar+gzip or tar+zstd layer")]
pub struct UnknownLayerType(pub String);

impl Compression {
    /// What a layer of this media type is compressed with.
    pub fn of(media_type: &str) -> Result<Compression, UnknownLayerType> {
        match media_type {
            media::OCI_LAYER | media::DOCKER_LAYER => Ok(Compression::None),
            media::OCI_LAYER_GZIP
            | media::OCI_LAYER_NONDIST_GZIP
            | media::DOCKER_LAYER_GZIP
            | media::DOCKER_FOREIGN_GZIP => Ok(Compression::Gzip),
            media::OCI_LAYER_ZSTD
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }
            other => Err(UnknownLayerType(other.to_string())),
        }
    }

    /// The uncompressed tar, read from `blob`.
    pub fn reader<'a>(self, blob: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(blob),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                BufReader::with_capacity(1 << 16, blob),
            )),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn each_compression_reads_back_what_was_written() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::stream::encode_all(&data[..], 3).unwrap();
        for (t, bytes) in [
            (media::OCI_LAYER, data.clone()),
            (media::DOCKER_LAYER_GZIP, gz.clone()),
            (media::OCI_LAYER_GZIP, gz),
            (media::OCI_LAYER_ZSTD, zs),
        ] {
            let mut out = Vec::new();
            Compression::of(t)
                .unwrap()
                .reader(&bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{t}");
        }
        assert!(Compression::of("application/vnd.oci.image.layer.v1.tar+lz4").is_err());
    }
}
