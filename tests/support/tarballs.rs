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
