//! Test images built in memory, deterministically (same inputs, same digests): gzipped tar
//! layers, a config carrying platform and `rootfs.diff_ids`, and a Docker schema2 or OCI manifest.

use std::io::{Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Every manifest media type, for an `Accept` header that keeps the registry from converting
/// schema2 to schema1.
pub const ACCEPT_ALL: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    /// `sha256:<hex>` of `data`.
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256(&data),
            data,
        }
    }

    /// The descriptor (`mediaType`, `size`, `digest`) a manifest uses for this blob.
    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "size": self.data.len(), "digest": self.digest })
    }
}

#[derive(Clone, Debug)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Vec<u8>,
    pub media_type: String,
    /// `sha256:` of `manifest`.
    pub digest: String,
    /// `sha256:` of each uncompressed layer, base layer first.
    pub diff_ids: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Docker,
    Oci,
}

/// `sha256:<hex>` of `data`. (ring's assembly SHA-256: sha2 is slow in unoptimised test builds.)
pub fn sha256(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A gzipped tar of `files` (path, contents), each with mtime 0, uid/gid 0 and mode 0644,
/// preceded by entries (mode 0755) for their parent directories; Docker layer media type.
pub fn layer_from_files(files: &[(&str, &[u8])]) -> Blob {
    let mut builder = tar::Builder::new(Vec::new());
    let mut directories: Vec<String> = Vec::new();
    for (path, contents) in files {
        let path = path.trim_start_matches('/');
        let mut parent = String::new();
        for component in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, dirs)| dirs)
        {
            parent.push_str(component);
            parent.push('/');
            if !directories.contains(&parent) {
                directories.push(parent.clone());
                append(&mut builder, &parent, tar::EntryType::Directory, 0o755, &[]);
            }
        }
        append(&mut builder, path, tar::EntryType::Regular, 0o644, contents);
    }
    let tar = builder.into_inner().expect("finishing an in-memory tar");
    Blob::new(DOCKER_LAYER, gzip(&tar))
}

/// A layer of the files under `fixtures/DIR` (e.g. `"rootfs"`), in sorted path order.
pub fn layer_from_fixture(dir: &str) -> Blob {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(dir);
    let mut files = Vec::new();
    collect_files(&root, &root, &mut files);
    files.sort();
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    layer_from_files(&borrowed)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("reading a fixture directory entry").path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else {
            let relative = path
                .strip_prefix(root)
                .expect("a path under the fixture root");
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push((relative.to_string_lossy().replace('\\', "/"), data));
        }
    }
}

/// A gzipped tar of one file, `random-SEED.bin`, holding `size` pseudo-random (incompressible)
/// bytes from `seed`, stored uncompressed inside the gzip stream (compressing noise only costs time).
pub fn random_layer(seed: u64, size: usize) -> Blob {
    let mut state = seed;
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        data.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    data.truncate(size);
    let mut builder = tar::Builder::new(Vec::with_capacity(size + 2048));
    append(
        &mut builder,
        &format!("random-{seed}.bin"),
        tar::EntryType::Regular,
        0o644,
        &data,
    );
    let tar = builder.into_inner().expect("finishing an in-memory tar");
    Blob::new(DOCKER_LAYER, gzip_stored(&tar))
}

/// An image for `os`/`arch` (`arch` may carry a variant: `"arm64/v8"`) with these layers,
/// base first. Layer media types are set to match `format`.
pub fn image(format: Format, os: &str, arch: &str, layers: Vec<Blob>) -> Image {
    let (layer_type, config_type, manifest_type) = match format {
        Format::Docker => (DOCKER_LAYER, DOCKER_CONFIG, DOCKER_MANIFEST),
        Format::Oci => (OCI_LAYER, OCI_CONFIG, OCI_MANIFEST),
    };
    let layers: Vec<Blob> = layers
        .into_iter()
        .map(|layer| Blob {
            media_type: layer_type.to_string(),
            ..layer
        })
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|layer| diff_id(&layer.data)).collect();
    let (architecture, variant) = match arch.split_once('/') {
        Some((architecture, variant)) => (architecture, Some(variant)),
        None => (arch, None),
    };
    let history: Vec<Value> = (0..layers.len())
        .map(|i| {
            json!({
                "created": "1970-01-01T00:00:00Z",
                "created_by": format!("/bin/sh -c #(nop) ADD layer-{i} /"),
            })
        })
        .collect();
    let mut config = json!({
        "architecture": architecture,
        "os": os,
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Cmd": ["/bin/sh"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    if let Some(variant) = variant {
        config["variant"] = json!(variant);
    }
    let config = Blob::new(
        config_type,
        serde_json::to_vec(&config).expect("serializing JSON"),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec_pretty(&manifest).expect("serializing JSON");
    Image {
        digest: sha256(&manifest),
        config,
        layers,
        manifest,
        media_type: manifest_type.to_string(),
        diff_ids,
    }
}

/// `image` with another config (say, one whose diff_ids lie): a new config blob and manifest.
pub fn image_with_config(image: Image, config: Value) -> Image {
    let config = Blob::new(
        &image.config.media_type,
        serde_json::to_vec(&config).expect("serializing JSON"),
    );
    let mut manifest: Value = serde_json::from_slice(&image.manifest).expect("a JSON manifest");
    manifest["config"] = config.descriptor();
    let manifest = serde_json::to_vec_pretty(&manifest).expect("serializing JSON");
    Image {
        digest: sha256(&manifest),
        config,
        manifest,
        ..image
    }
}

/// `image` with its layers' blobs replaced by other encodings of the same tars (zstd, or none):
/// `(media type, bytes)` per layer. The config's diff_ids stay right: they are the digests
/// of the uncompressed tars, whatever the compression.
pub fn image_with_layers(image: Image, layers: Vec<(&str, Vec<u8>)>) -> Image {
    let layers: Vec<Blob> = layers.into_iter().map(|(t, d)| Blob::new(t, d)).collect();
    let mut manifest: Value = serde_json::from_slice(&image.manifest).expect("a JSON manifest");
    manifest["layers"] = Value::Array(layers.iter().map(Blob::descriptor).collect());
    let manifest = serde_json::to_vec_pretty(&manifest).expect("serializing JSON");
    Image {
        digest: sha256(&manifest),
        layers,
        manifest,
        ..image
    }
}

/// The `platform` object of `image` for a manifest list or index, read from its config.
pub fn platform(image: &Image) -> Value {
    let config: Value = serde_json::from_slice(&image.config.data).expect("a JSON config");
    let mut platform = json!({ "architecture": config["architecture"], "os": config["os"] });
    if let Some(variant) = config.get("variant") {
        platform["variant"] = variant.clone();
    }
    platform
}

/// The decompressed bytes of a gzip stream.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("decompressing a test layer");
    out
}

/// `sha256:` of the decompressed bytes of a gzip stream. Streams of stored blocks (what
/// [`random_layer`] makes) are hashed block by block without inflating: in an unoptimised build
/// flate2's decoder takes about 7 s per 100 MB, for its CRC check.
fn diff_id(data: &[u8]) -> String {
    let Some(blocks) = stored_blocks(data) else {
        return sha256(&gunzip(data));
    };
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for block in blocks {
        context.update(block);
    }
    let hex: String = context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The payloads of a gzip stream that [`gzip_stored`] could have written (its header, stored
/// blocks only, an 8-byte trailer); `None` for anything else.
fn stored_blocks(data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut rest = data.strip_prefix(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255][..])?;
    let mut blocks = Vec::new();
    loop {
        let (&[flags, l0, l1, n0, n1], after) = rest.split_first_chunk::<5>()?;
        let len = u16::from_le_bytes([l0, l1]);
        if flags & !1 != 0 || len != !u16::from_le_bytes([n0, n1]) {
            return None;
        }
        let (block, after) = after.split_at_checked(usize::from(len))?;
        blocks.push(block);
        rest = after;
        if flags == 1 {
            return (rest.len() == 8).then_some(blocks);
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // flate2's header has mtime 0 and no file name: the output depends on the input only.
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2), Compression::default());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// A gzip stream of deflate "stored" blocks: what `Compression::none()` produces, without the
/// seconds that flate2 takes for it in an unoptimised build on a layer of tens of MiB.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 65_535;
    let mut out = Vec::with_capacity(data.len() + data.len() / BLOCK * 5 + 32);
    // magic, deflate, no flags, mtime 0, no extra flags, OS unknown
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut chunks = data.chunks(BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last)); // BFINAL, BTYPE 00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The gzip (ISO-HDLC) CRC-32, eight bytes at a time: `flate2::Crc` takes about 7 s per 100 MB
/// in an unoptimised build (its zlib-rs backend is not among the optimised dev packages), this
/// about 0.6 s.
fn crc32(data: &[u8]) -> u32 {
    let mut tables = [[0u32; 256]; 8];
    for (i, entry) in tables[0].iter_mut().enumerate() {
        *entry = (0..8).fold(i as u32, |c, _| {
            if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            }
        });
    }
    // Table k: the CRC of a byte followed by k zero bytes.
    for k in 1..8 {
        let (done, rest) = tables.split_at_mut(k);
        for (entry, &prev) in rest[0].iter_mut().zip(&done[k - 1]) {
            *entry = (prev >> 8) ^ done[0][(prev & 0xff) as usize];
        }
    }
    let t = &tables;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let low = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(low & 0xff) as usize]
            ^ t[6][((low >> 8) & 0xff) as usize]
            ^ t[5][((low >> 16) & 0xff) as usize]
            ^ t[4][(low >> 24) as usize]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
) {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header
        .set_path(path)
        .unwrap_or_else(|e| panic!("tar path {path:?}: {e}"));
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    builder.append(&header, data).expect("writing to memory");
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
