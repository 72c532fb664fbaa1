//! A tar reader that yields entry headers and lets the caller read or skip each body, held to
//! bounds (SPEC: unpack, "Tar input is held to bounds"): ustar and GNU headers, GNU long names
//! and link names (`L`, `K`), PAX extended headers (`x`) and global headers (`g`), each at most
//! [`MAX_EXTENDED`] bytes; a PAX `size` that disagrees with the header's is an error (the shape
//! of TARmageddon, CVE-2025-62518: two readers that believe different sizes see different
//! entries), as is a header whose checksum is wrong or whose numbers do not parse.
//!
//! Why not the `tar` crate's reader: it keeps PAX records in memory whatever their size and
//! prefers the PAX size silently; here both are refused. It owns nothing else: no path on disk
//! is touched, names come out as the bytes the archive holds.

use std::io::{self, Read};

/// A PAX or GNU long-name header larger than this is refused: a path is at most 4 KiB on Linux,
/// and a header a thousand times that is an attack, not an archive.
pub const MAX_EXTENDED: u64 = 1 << 20;

const BLOCK: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Hardlink => "hardlink",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Fifo => "fifo",
        }
    }
}

/// One entry's header, with PAX and GNU extensions applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name as the archive holds it (not cleaned).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Bytes of the body that follows (regular files; 0 for the rest).
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// PAX `SCHILY.xattr.*` records.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("reading the layer: {0}")]
    Io(#[from] io::Error),
    #[error("entry {entry}: {reason}")]
    Bad { entry: String, reason: String },
    #[error("the layer ends inside an entry")]
    Truncated,
}

fn bad(entry: &[u8], reason: impl Into<String>) -> TarError {
    TarError::Bad {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
}

/// Reads entries one after the other from an uncompressed tar stream.
pub struct TarReader<R> {
    inner: R,
    /// Body bytes (plus padding) of the current entry not read yet.
    left: u64,
    pad: u64,
    /// PAX global records, applied to every later entry.
    global: Records,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            left: 0,
            pad: 0,
            global: Vec::new(),
            done: false,
        }
    }

    /// The next entry's header, after skipping what is left of the current body; `None` at the
    /// end of the archive (two zero blocks, or the end of the stream after one).
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Records = Vec::new();
        loop {
            let mut block = [0u8; BLOCK];
            if !self.read_block(&mut block)? {
                self.done = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                // End of archive: a second zero block may follow, or nothing.
                self.done = true;
                return Ok(None);
            }
            let name = field_str(&block[0..100]);
            check_sum(&block, &name)?;
            let size = number(&block[124..136])
                .ok_or_else(|| bad(&name, "its size field does not parse"))?;
            let typeflag = block[156];
            match typeflag {
                b'L' | b'K' | b'x' | b'g' => {
                    if size > MAX_EXTENDED {
                        return Err(bad(
                            long_name.as_deref().unwrap_or(&name),
                            format!("an extended header of {size} bytes (at most {MAX_EXTENDED})"),
                        ));
                    }
                    let data = self.read_exact_body(size)?;
                    match typeflag {
                        b'L' => long_name = Some(trim_nul(&data).to_vec()),
                        b'K' => long_link = Some(trim_nul(&data).to_vec()),
                        b'x' => pax.extend(parse_pax(&data).map_err(|r| bad(&name, r))?),
                        _ => self
                            .global
                            .extend(parse_pax(&data).map_err(|r| bad(&name, r))?),
                    }
                    continue;
                }
                _ => {}
            }
            let mut header = ustar(&block, typeflag, size, &name)?;
            if let Some(n) = long_name {
                header.path = n;
            }
            if let Some(l) = long_link {
                header.link = l;
            }
            // Global records first, then this entry's own, later ones winning.
            for (k, v) in self.global.iter().chain(pax.iter()) {
                apply_pax(&mut header, k, v, size)?;
            }
            if header.kind != Kind::File {
                // Only regular files carry data that is part of the entry; a size on anything
                // else is a body to skip, never to write.
                header.size = 0;
            }
            self.left = size;
            self.pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
            return Ok(Some(header));
        }
    }

    /// Read the current entry's body (at most what is left of it).
    pub fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(TarError::Truncated);
        }
        self.left -= n as u64;
        Ok(n)
    }

    /// Skip what is left of the current body and its padding, reading through it (a
    /// compressed stream cannot seek).
    fn skip_rest(&mut self) -> Result<(), TarError> {
        let total = self.left + self.pad;
        if total > 0 {
            let copied = io::copy(&mut (&mut self.inner).take(total), &mut io::sink())?;
            if copied < total {
                return Err(TarError::Truncated);
            }
        }
        self.left = 0;
        self.pad = 0;
        Ok(())
    }

    fn read_exact_body(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        let mut data = Vec::with_capacity(size as usize);
        let got = (&mut self.inner).take(size).read_to_end(&mut data)?;
        if (got as u64) < size {
            return Err(TarError::Truncated);
        }
        self.left = 0;
        self.pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.skip_rest()?;
        Ok(data)
    }

    /// A whole block, or `false` at a clean end of stream; a partial block is truncation.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(TarError::Truncated),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// The decompressed stream, for reading to its end once the archive is done (a diff_id
    /// covers the padding and trailing blocks too).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

fn ustar(block: &[u8; BLOCK], typeflag: u8, size: u64, name: &[u8]) -> Result<Header, TarError> {
    let kind = match typeflag {
        b'0' | 0 | b'7' => Kind::File,
        b'1' => Kind::Hardlink,
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' => Kind::Dir,
        b'6' => Kind::Fifo,
        other => {
            return Err(bad(
                name,
                format!(
                    "an entry type this reader does not know ({:?})",
                    other as char
                ),
            ))
        }
    };
    let num = |range: std::ops::Range<usize>, what: &str| {
        number(&block[range]).ok_or_else(|| bad(name, format!("its {what} field does not parse")))
    };
    // ustar's prefix field (bytes 345..500) holds the leading directories of a long name.
    let mut path = name.to_vec();
    if &block[257..262] == b"ustar" && block[263..265] != *b" \0" {
        let prefix = field_str(&block[345..500]);
        if !prefix.is_empty() {
            let mut p = prefix;
            p.push(b'/');
            p.extend_from_slice(&path);
            path = p;
        }
    }
    Ok(Header {
        path,
        kind,
        size,
        mode: (num(100..108, "mode")? & 0o7777) as u32,
        uid: num(108..116, "uid")?,
        gid: num(116..124, "gid")?,
        mtime: num(136..148, "mtime")?.min(i64::MAX as u64) as i64,
        link: field_str(&block[157..257]),
        dev_major: num(329..337, "devmajor").unwrap_or(0).min(u32::MAX as u64) as u32,
        dev_minor: num(337..345, "devminor").unwrap_or(0).min(u32::MAX as u64) as u32,
        xattrs: Vec::new(),
    })
}

fn apply_pax(h: &mut Header, key: &[u8], value: &[u8], header_size: u64) -> Result<(), TarError> {
    let text = || std::str::from_utf8(value).ok();
    match key {
        b"path" => h.path = value.to_vec(),
        b"linkpath" => h.link = value.to_vec(),
        b"size" => {
            let pax_size: u64 = text()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| bad(&h.path, "its PAX size does not parse"))?;
            // The body that follows is the header's size; a PAX size that says otherwise
            // would make another reader see other entries (TARmageddon).
            if pax_size != header_size {
                return Err(bad(
                    &h.path,
                    format!(
                        "its PAX size ({pax_size}) disagrees with its header's ({header_size})"
                    ),
                ));
            }
        }
        b"uid" => h.uid = text().and_then(|t| t.parse().ok()).unwrap_or(h.uid),
        b"gid" => h.gid = text().and_then(|t| t.parse().ok()).unwrap_or(h.gid),
        b"mtime" => {
            // Seconds with an optional fraction.
            if let Some(secs) = text()
                .and_then(|t| t.split('.').next())
                .and_then(|s| s.parse::<i64>().ok())
            {
                h.mtime = secs;
            }
        }
        _ => {
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                h.xattrs.push((name.to_vec(), value.to_vec()));
            }
        }
    }
    Ok(())
}

/// PAX records: `LEN KEY=VALUE\n`, LEN counting the whole record.
/// PAX records as (key, value) bytes.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_pax(mut data: &[u8]) -> Result<Records, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a PAX record length that does not parse")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("a PAX record whose length does not match it".into());
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("a PAX record without '='")?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn check_sum(block: &[u8; BLOCK], name: &[u8]) -> Result<(), TarError> {
    let stored =
        number(&block[148..156]).ok_or_else(|| bad(name, "its checksum field does not parse"))?;
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum();
    // Some old tars summed signed bytes.
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as i8 as i64
            }
        })
        .sum();
    if stored != unsigned && stored as i64 != signed {
        return Err(bad(
            name,
            "its header checksum is wrong (not a tar, or a damaged one)",
        ));
    }
    Ok(())
}

/// An octal field (NUL or space terminated), or GNU's base-256 form (high bit set).
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] == 0xff {
            return None; // negative
        }
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

fn field_str(field: &[u8]) -> Vec<u8> {
    trim_nul(field).to_vec()
}

fn trim_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Build an archive with the `tar` crate (a different implementation than this one).
    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn headers(bytes: &[u8]) -> Result<Vec<Header>, TarError> {
        let mut r = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(h) = r.next_header()? {
            out.push(h);
        }
        Ok(out)
    }

    #[test]
    fn reads_what_the_tar_crate_writes_long_names_included() {
        let long = format!("{}/file.txt", "d".repeat(200));
        let bytes = archive(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            h.set_mode(0o4755);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
            let mut d = tar::Header::new_ustar();
            d.set_entry_type(tar::EntryType::Directory);
            d.set_size(0);
            d.set_mode(0o700);
            b.append_data(&mut d, "dir/", &[][..]).unwrap();
            let mut l = tar::Header::new_gnu();
            l.set_entry_type(tar::EntryType::Symlink);
            l.set_size(0);
            b.append_link(&mut l, "dir/link", "../target").unwrap();
        });
        let hs = headers(&bytes).unwrap();
        assert_eq!(hs.len(), 3);
        assert_eq!(hs[0].path, long.as_bytes());
        assert_eq!(
            (hs[0].kind, hs[0].size, hs[0].mode),
            (Kind::File, 5, 0o4755)
        );
        assert_eq!((hs[1].kind, hs[1].mode), (Kind::Dir, 0o700));
        assert_eq!(hs[2].kind, Kind::Symlink);
        assert_eq!(hs[2].link, b"../target");
    }

    #[test]
    fn bodies_are_read_or_skipped() {
        let bytes = archive(|b| {
            for (name, data) in [("a", &b"first"[..]), ("b", &b"second body"[..])] {
                let mut h = tar::Header::new_ustar();
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data).unwrap();
            }
        });
        let mut r = TarReader::new(&bytes[..]);
        let a = r.next_header().unwrap().unwrap();
        assert_eq!(a.path, b"a");
        // Not read: skipped on the next call.
        let b = r.next_header().unwrap().unwrap();
        assert_eq!(b.path, b"b");
        let mut buf = vec![0u8; 100];
        let n = r.read_body(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"second body");
        assert!(r.next_header().unwrap().is_none());
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        // The length counts itself.
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    fn with_pax(records: &[u8], body: &[u8]) -> Vec<u8> {
        archive(|b| {
            let mut x = tar::Header::new_ustar();
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_size(records.len() as u64);
            b.append_data(&mut x, "PaxHeader", records).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            b.append_data(&mut h, "short", body).unwrap();
        })
    }

    #[test]
    fn pax_path_applies_and_a_disagreeing_pax_size_is_refused() {
        let ok = with_pax(&pax_record("path", "a/much/longer/name"), b"12345");
        let hs = headers(&ok).unwrap();
        assert_eq!(hs[0].path, b"a/much/longer/name");

        let mut records = pax_record("path", "smuggler");
        records.extend(pax_record("size", "0"));
        let err = headers(&with_pax(&records, b"12345")).unwrap_err();
        assert!(
            err.to_string()
                .contains("PAX size (0) disagrees with its header's (5)"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_extended_header_is_refused_before_it_is_read() {
        // Only the header block: the reader must refuse on the size alone.
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(64 << 20);
        h.set_path("PaxHeader").unwrap();
        h.set_cksum();
        let err = headers(h.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("extended header of 67108864 bytes"),
            "{err}"
        );
    }

    #[test]
    fn damage_is_an_error_not_an_entry() {
        let mut bytes = archive(|b| {
            let mut h = tar::Header::new_ustar();
            h.set_size(3);
            b.append_data(&mut h, "x", &b"abc"[..]).unwrap();
        });
        bytes[10] ^= 0x55; // inside the name: the checksum no longer matches
        assert!(headers(&bytes)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        let whole = archive(|b| {
            let mut h = tar::Header::new_ustar();
            h.set_size(3000);
            b.append_data(&mut h, "x", &vec![7u8; 3000][..]).unwrap();
        });
        let mut r = TarReader::new(&whole[..1024]);
        r.next_header().unwrap().unwrap();
        assert!(matches!(r.next_header(), Err(TarError::Truncated)));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let _ = headers(&bytes);
        }

        #[test]
        fn pax_records_of_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_pax(&bytes);
        }
    }
}
