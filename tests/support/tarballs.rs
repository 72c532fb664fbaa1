//! Layer tarballs made by real tools for the tests: Python's tarfile (entries in any order and
//! of any kind, as a script says) and gzip.

use std::process::Command;

/// gzip, as layers are mostly compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A tar made by Python's tarfile from `script`, which calls `add(name, kind, ...)`.
pub fn python_tar(script: &str) -> Vec<u8> {
    let program = format!(
        "import io, sys, tarfile\n\
         buf = io.BytesIO()\n\
         t = tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT)\n\
         def add(name, kind='file', data=b'', mode=0o644, link='', mtime=1700000000):\n\
         \x20   i = tarfile.TarInfo(name); i.mode = mode; i.mtime = mtime\n\
         \x20   i.type = {{'file': tarfile.REGTYPE, 'dir': tarfile.DIRTYPE, 'symlink': tarfile.SYMTYPE,\n\
         \x20             'hardlink': tarfile.LNKTYPE, 'fifo': tarfile.FIFOTYPE}}[kind]\n\
         \x20   i.linkname = link\n\
         \x20   if kind == 'file':\n\
         \x20       i.size = len(data); t.addfile(i, io.BytesIO(data))\n\
         \x20   else:\n\
         \x20       t.addfile(i)\n\
         {script}\n\
         t.close()\n\
         sys.stdout.buffer.write(buf.getvalue())\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One PAX record, `LEN KEY=VALUE\n`, its length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// A tar whose PAX header says `path=smuggled` and `size=0` before a 5-byte file named
/// `visible`: TARmageddon's shape (CVE-2025-62518), where two readers disagree on the entries.
pub fn pax_size_smuggler() -> Vec<u8> {
    let records = [pax_record("path", "smuggled"), pax_record("size", "0")].concat();
    let mut b = tar::Builder::new(Vec::new());
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(records.len() as u64);
    b.append_data(&mut x, "PaxHeader", &records[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(5);
    b.append_data(&mut h, "visible", &b"12345"[..]).unwrap();
    b.into_inner().unwrap()
}
