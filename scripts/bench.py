"""Helpers for scripts/bench: image generation, push, log accounting, the fault proxy, and the
summary tables. Each is a subcommand (`python3 scripts/bench.py NAME ARGS...`); importing the
module runs nothing."""
import fcntl, gzip, hashlib, http.client, io, json, os, random, re, shutil, signal, socket, stat, statistics, struct
import subprocess, sys, tarfile, threading, time
import urllib.parse

MB = 1000 * 1000


class HashWriter:
    """Pass writes through to `inner`, hashing and counting them."""

    def __init__(self, inner):
        self.inner, self.h, self.n = inner, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.inner.write(b)

    def flush(self):
        pass


def walk(root):
    """Every directory, regular file and symlink under root, depth first, names sorted bytewise."""
    try:
        names = sorted(os.listdir(root.encode()))
    except OSError:
        return
    for name in names:
        path = os.path.join(root.encode(), name).decode(errors="surrogateescape")
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            yield path
            yield from walk(path)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            yield path


def entries(src):
    """(path, arcname) forever: src, then src again under new top-level names (usr.1/, usr.2/ ...)."""
    base = os.path.basename(src.rstrip("/")) or "root"
    rep = 0
    while True:
        top = base if rep == 0 else f"{base}.{rep}"
        n = 0
        for path in walk(src):
            n += 1
            yield path, top + path[len(src.rstrip("/")):]
        if n == 0:
            sys.exit(f"bench: nothing to archive under {src}")
        rep += 1


def add(tar, path, arcname):
    try:
        ti = tar.gettarinfo(path, arcname)
    except OSError:
        return False
    if ti is None:
        return False
    # Deterministic headers: no times, owners or names from this machine.
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "root", "root"
    if ti.isreg():
        try:
            with open(path, "rb") as f:
                tar.addfile(ti, f)
        except OSError:
            return False
    else:
        tar.addfile(ti)
    return True


def generate(size_mb, layers, src, out):
    """Write layer-N.tar.gz, config.json, manifest.json, image.json into out."""
    os.makedirs(out, exist_ok=True)
    target_total = size_mb * MB
    target_layer = target_total / layers
    it = entries(src)
    pending = None
    done_bytes = 0
    descs, diff_ids = [], []
    for i in range(layers):
        target = (target_total - done_bytes) / (layers - i)
        tmp = os.path.join(out, f"layer-{i}.tar.gz.tmp")
        with open(tmp, "wb") as raw:
            comp = HashWriter(raw)
            gz = gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=comp, mtime=0)
            plain = HashWriter(gz)
            tar = tarfile.open(fileobj=plain, mode="w|", format=tarfile.GNU_FORMAT)
            tar.copybufsize = 1 << 20
            count = 0
            while comp.n < target:
                path, arc = pending or next(it)
                pending = None
                try:
                    size = os.lstat(path).st_size
                except OSError:
                    continue
                # Files bigger than a whole layer are left out, so the layers come out about equal.
                if size > target_layer:
                    continue
                # Start the next layer rather than overshoot this one by more than 10%.
                ratio = comp.n / plain.n if plain.n > MB else 0.5
                if count and comp.n + size * ratio > target * 1.1:
                    pending = (path, arc)
                    break
                if add(tar, path, arc):
                    count += 1
            tar.close()
            gz.close()
        digest = "sha256:" + comp.h.hexdigest()
        os.replace(tmp, os.path.join(out, f"layer-{i}.tar.gz"))
        done_bytes += comp.n
        descs.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                      "size": comp.n, "digest": digest, "file": f"layer-{i}.tar.gz"})
        diff_ids.append("sha256:" + plain.h.hexdigest())
        print(f"  layer {i}: {count} entries, {plain.n / MB:.1f} MB tar -> {comp.n / MB:.1f} MB gzip",
              file=sys.stderr)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = {
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"imagec bench layer {i}"}
                    for i in range(layers)],
        "created": "1970-01-01T00:00:00Z",
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    with open(os.path.join(out, "config.json"), "wb") as f:
        f.write(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config_bytes),
                   "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest()},
        "layers": [{k: d[k] for k in ("mediaType", "size", "digest")} for d in descs],
    }
    manifest_bytes = json.dumps(manifest, indent=3).encode()
    with open(os.path.join(out, "manifest.json"), "wb") as f:
        f.write(manifest_bytes)
    with open(os.path.join(out, "image.json"), "w") as f:
        json.dump({"size_mb": size_mb, "layers": descs, "config": manifest["config"],
                   "manifest_digest": "sha256:" + hashlib.sha256(manifest_bytes).hexdigest(),
                   "total": sum(d["size"] for d in descs)}, f, indent=1)


def conn(base):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600, blocksize=1 << 20)


def request(c, method, url, body=None, headers=None, ok=(200, 201, 202)):
    c.request(method, url, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if r.status not in ok:
        sys.exit(f"bench: {method} {url}: {r.status} {data[:500]!r}")
    return r


def push_blob(base, repo, path, digest, size):
    c = conn(base)
    r = request(c, "HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404))
    if r.status == 200:
        return
    r = request(c, "POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    loc = urllib.parse.urlsplit(urllib.parse.urljoin(base, r.getheader("Location")))
    url = loc.path + "?" + (loc.query + "&" if loc.query else "") + "digest=" + urllib.parse.quote(digest)
    with open(path, "rb") as f:  # streamed: http.client reads the file in 1 MiB blocks
        request(c, "PUT", url, body=f, ok=(201,), headers={
            "Content-Length": str(size), "Content-Type": "application/octet-stream"})
    c.close()


def push(base, repo, tag, image_dir):
    info = json.load(open(os.path.join(image_dir, "image.json")))
    for d in info["layers"]:
        push_blob(base, repo, os.path.join(image_dir, d["file"]), d["digest"], d["size"])
    push_blob(base, repo, os.path.join(image_dir, "config.json"), info["config"]["digest"],
              info["config"]["size"])
    body = open(os.path.join(image_dir, "manifest.json"), "rb").read()
    c = conn(base)
    r = request(c, "PUT", f"/v2/{repo}/manifests/{tag}", body=body, ok=(201,), headers={
        "Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
    got = r.getheader("Docker-Content-Digest")
    if got != info["manifest_digest"]:
        sys.exit(f"bench: registry digest {got} != {info['manifest_digest']}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(port)


def wait_up(base, seconds):
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        try:
            c = conn(base)
            c.request("GET", "/v2/")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"bench: registry at {base} did not answer within {seconds}s")


ACCESS = re.compile(r'"(\w+) (\S+) [^"]*" (\d{3}) (\d+|-)')


def served(logfile, start, requests_out):
    """Bytes and requests in the registry access log (combined format) after byte offset start;
    the requests themselves ("METHOD path status bytes-as-logged") go to requests_out."""
    total = reqs = 0
    with open(logfile, "rb") as f, open(requests_out, "w") as out:
        f.seek(int(start))
        for line in f.read().decode(errors="replace").splitlines():
            m = ACCESS.search(line)
            if m:
                reqs += 1
                out.write(" ".join(m.groups()) + "\n")
                # A HEAD response has no body, although the access log shows the size the handler
                # wrote (Go's server discards it); count response bodies only.
                if m.group(4) != "-" and m.group(1) != "HEAD":
                    total += int(m.group(4))
    print(total, reqs)


def check_store(dest, image_dir, layers_only=False):
    """Every layer and the config (not with layers_only) are in dest/blobs with the right size and
    digest."""
    info = json.load(open(os.path.join(image_dir, "image.json")))
    for d in info["layers"] + ([] if layers_only else [info["config"]]):
        algo, hexd = d["digest"].split(":")
        p = os.path.join(dest, "blobs", algo, hexd)
        if not os.path.isfile(p) or os.path.getsize(p) != d["size"]:
            sys.exit(f"bench: {p} missing or of the wrong size after the pull")
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != hexd:
            sys.exit(f"bench: {p} does not match its digest after the pull")


def describe(image_dir):
    info = json.load(open(os.path.join(image_dir, "image.json")))
    sizes = ", ".join(f"{d['size'] / MB:.1f}" for d in info["layers"])
    print(f"- image {info['size_mb']}MB: {len(info['layers'])} gzip layers, {info['total']} bytes "
          f"({sizes} MB), manifest {info['manifest_digest']}")


def parse_time(path):
    """Last line of /usr/bin/time -f '%e %U %S %M' output (earlier lines may be a status note)."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        lines = []
    stats = [l for l in lines if re.fullmatch(r"[\d.]+ [\d.]+ [\d.]+ \d+", l.strip())]
    print(stats[-1].strip() if stats else "nan nan nan 0")


SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def make_schema1(base, repo, out):
    """Make `repo:s1`, a schema1 copy of `repo:1`: GET the registry's on-the-fly schema1 rewrite of
    the schema2 manifest, PUT exactly those bytes under s1, and check that a later GET of s1 has the
    same Docker-Content-Digest. Also record the schema2 image's layers and config diff_ids (from the
    registry) in `out`, for the checks after each schema1 pull."""
    c = conn(base)

    # Like request(), but keeps the body on the response for the caller.
    def req_keep(method, url, body=None, headers=None, ok=(200,)):
        c.request(method, url, body=body, headers=headers or {})
        r = c.getresponse()
        r._body = r.read()
        if r.status not in ok:
            sys.exit(f"bench: {method} {url}: {r.status} {r._body[:500]!r}")
        return r

    def get(ref, accept):
        r = req_keep("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
        return r, r._body

    r1, body1 = get("1", SCHEMA1_SIGNED)
    ctype, digest1 = r1.getheader("Content-Type"), r1.getheader("Docker-Content-Digest")
    if ctype != SCHEMA1_SIGNED or json.loads(body1).get("schemaVersion") != 1:
        sys.exit(f"bench: GET {repo}:1 as schema1 gave {ctype}, schemaVersion "
                 f"{json.loads(body1).get('schemaVersion')}")
    # A second GET: re-signed (other bytes) but the digest (over the JWS payload) must be the same.
    r1b, body1b = get("1", SCHEMA1_SIGNED)
    if r1b.getheader("Docker-Content-Digest") != digest1:
        sys.exit(f"bench: two schema1 GETs of {repo}:1 gave digests {digest1} and "
                 f"{r1b.getheader('Docker-Content-Digest')}")
    r = req_keep("PUT", f"/v2/{repo}/manifests/s1", body=body1, ok=(201,),
                 headers={"Content-Type": SCHEMA1_SIGNED, "Content-Length": str(len(body1))})
    put_digest = r.getheader("Docker-Content-Digest")
    r2, body2 = get("s1", SCHEMA1_SIGNED)
    digest2 = r2.getheader("Docker-Content-Digest")
    if digest2 != digest1:
        sys.exit(f"bench: {repo}:s1 has digest {digest2}, the schema1 GET of {repo}:1 had {digest1}")
    if put_digest != digest1:
        sys.exit(f"bench: PUT {repo}:s1 answered digest {put_digest}, expected {digest1}")
    # The schema2 side, from the registry.
    _, m2 = get("1", SCHEMA2)
    m2 = json.loads(m2)
    cfg = req_keep("GET", f"/v2/{repo}/blobs/{m2['config']['digest']}")._body
    diff_ids = json.loads(cfg)["rootfs"]["diff_ids"]
    fs_layers = json.loads(body1)["fsLayers"]
    info = {"schema1_digest": digest1, "schema1_bytes": len(body1),
            "schema1_regets_differ": body1 != body1b, "schema1_fs_layers": len(fs_layers),
            "schema1_distinct_layers": len({l["blobSum"] for l in fs_layers}),
            "schema2_layers": [{k: l[k] for k in ("digest", "size")} for l in m2["layers"]],
            "schema2_config": m2["config"]["digest"], "diff_ids": diff_ids}
    with open(out, "w") as f:
        json.dump(info, f, indent=1)
    print(f"{repo}:s1 = {digest1} ({len(body1)} bytes, {len(fs_layers)} fsLayers; "
          f"re-signed bytes differ between GETs: {'yes' if body1 != body1b else 'no'})")


def check_schema1(dest, ref, expected):
    """The index.json entry for ref points at an OCI manifest (blob digest checked) whose config's
    rootfs.diff_ids are the schema2 image's, whose layers are the schema2 layers (digest and size,
    in order), and every layer blob is in the store with that size and sha256."""
    exp = json.load(open(expected))

    def blob(digest):
        algo, hexd = digest.split(":")
        p = os.path.join(dest, "blobs", algo, hexd)
        if not os.path.isfile(p):
            sys.exit(f"bench: schema1 check: {p} missing")
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if "sha256:" + h.hexdigest() != digest:
            sys.exit(f"bench: schema1 check: {p} does not match its digest")
        return p

    index = json.load(open(os.path.join(dest, "index.json")))
    entries = [m for m in index.get("manifests", [])
               if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref]
    if len(entries) != 1:
        sys.exit(f"bench: schema1 check: {len(entries)} index.json entries for {ref}")
    e = entries[0]
    if e.get("mediaType") != OCI_MANIFEST:
        sys.exit(f"bench: schema1 check: index entry for {ref} has mediaType {e.get('mediaType')}")
    mp = blob(e["digest"])
    if os.path.getsize(mp) != e["size"]:
        sys.exit(f"bench: schema1 check: manifest {e['digest']} size {os.path.getsize(mp)} != {e['size']}")
    m = json.load(open(mp))
    if m.get("mediaType", OCI_MANIFEST) != OCI_MANIFEST or m.get("schemaVersion") != 2:
        sys.exit(f"bench: schema1 check: manifest {e['digest']} is not an OCI manifest: "
                 f"{m.get('mediaType')} / schemaVersion {m.get('schemaVersion')}")
    config = json.load(open(blob(m["config"]["digest"])))
    got = (config.get("rootfs") or {}).get("diff_ids")
    if got != exp["diff_ids"]:
        sys.exit(f"bench: schema1 check: diff_ids {got} != schema2 diff_ids {exp['diff_ids']}")
    layers = [{"digest": l["digest"], "size": l["size"]} for l in m["layers"]]
    if layers != exp["schema2_layers"]:
        sys.exit(f"bench: schema1 check: layers {layers} != schema2 layers {exp['schema2_layers']}")
    for l in m["layers"]:
        if os.path.getsize(blob(l["digest"])) != l["size"]:
            sys.exit(f"bench: schema1 check: layer {l['digest']} has the wrong size")
    print(f"ok: {len(got)} diff_ids equal to the schema2 config's, manifest {e['digest']}, "
          f"config {m['config']['digest']}")


def inflate_ref(image_dir):
    """Inflate and sha256 every layer (the work imagec adds for schema1 diff_ids), as a reference;
    checks the diff_ids against config.json and prints the uncompressed size."""
    import zlib
    info = json.load(open(os.path.join(image_dir, "image.json")))
    config = json.load(open(os.path.join(image_dir, "config.json")))
    total = 0
    for d, want in zip(info["layers"], config["rootfs"]["diff_ids"]):
        z, h = zlib.decompressobj(wbits=31), hashlib.sha256()
        with open(os.path.join(image_dir, d["file"]), "rb") as f:
            while chunk := f.read(1 << 20):
                b = z.decompress(chunk)
                h.update(b)
                total += len(b)
        b = z.flush()
        h.update(b)
        total += len(b)
        if "sha256:" + h.hexdigest() != want:
            sys.exit(f"bench: inflate reference: {d['file']} diff_id mismatch")
    print(total)


# --- fault proxy and fault runs ---------------------------------------------------------------------
# Hop-by-hop headers: the proxy sets its own `Connection: close` both ways.
HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}


def read_head(sock, limit=1 << 20):
    """Bytes up to the blank line ending an HTTP head, and whatever came after it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk or len(buf) > limit:
            return None, b""
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def header(lines, name):
    for l in lines:
        k, _, v = l.partition(":")
        if k.strip().lower() == name:
            return v.strip()
    return None


class FaultProxy:
    """HTTP/1.1 proxy in front of the registry, one request per connection (`Connection: close`
    both ways). Response bodies are relayed as they arrive (256 KiB reads), never buffered whole;
    the body bytes sent to clients are counted per request. Control requests (`/_proxy/clear`,
    `/_proxy/arm?mode=reset|kill&path=P&at=N&pidfile=F`, `/_proxy/stats`) are answered by the
    proxy itself. Once armed, the first GET of path P is cut after exactly N body bytes: `reset`
    closes the client connection with SO_LINGER 0 (a TCP RST); `kill` SIGKILLs the pid in F first
    (the client process), then does the same."""

    def __init__(self, upstream, rate=None):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        # Bytes per second each client connection may carry (None: as fast as it goes), as a
        # CDN or object store caps one connection.
        self.rate = rate
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.clear()

    def clear(self):
        with self.lock:
            self.body, self.reqs, self.tls_probes, self.arm, self.fired = 0, [], 0, None, None

    def reply(self, c, obj):
        data = json.dumps(obj).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)

    def control(self, c, target):
        u = urllib.parse.urlsplit(target)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/_proxy/clear":
            self.clear()
            if "peak" in q:
                with self.lock:
                    self.peak = self.active
            return self.reply(c, {"ok": True})
        if u.path == "/_proxy/arm":
            with self.lock:
                self.arm = {"mode": q["mode"], "path": q["path"], "at": int(q["at"]),
                            "pidfile": q.get("pidfile")}
                self.fired = None
            return self.reply(c, {"ok": True})
        with self.lock:
            return self.reply(c, {"body": self.body, "requests": list(self.reqs), "active": self.active,
                                  "peak": self.peak, "tls_probes": self.tls_probes, "fired": self.fired})

    def handle(self, c):
        c.settimeout(120)
        up = None
        counted = False
        try:
            first = c.recv(1, socket.MSG_PEEK)
            if not first:
                return
            if first[0] == 0x16:  # a TLS ClientHello: plain HTTP only here, so the client falls back
                with self.lock:
                    self.tls_probes += 1
                return
            head, rest = read_head(c)
            if head is None:
                return
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            if target.startswith("/_proxy/"):
                return self.control(c, target)
            hdrs = [l for l in lines[1:] if l and l.partition(":")[0].strip().lower() not in HOP]
            length = int(header(hdrs, "content-length") or 0)
            while len(rest) < length:
                chunk = c.recv(65536)
                if not chunk:
                    return
                rest += chunk
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
                counted = True
            path = urllib.parse.unquote(target.split("?", 1)[0])
            rec = {"method": method, "path": path, "range": header(hdrs, "range"), "status": None,
                   "bytes": 0, "fault": None}
            with self.lock:
                self.reqs.append(rec)
            up = socket.create_connection(self.upstream, timeout=120)
            up.sendall((f"{method} {target} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in hdrs) +
                        "Connection: close\r\n\r\n").encode("latin-1") + rest)
            rhead, buf = read_head(up)
            if rhead is None:
                return
            rlines = rhead.split("\r\n")
            status = int(rlines[0].split(" ", 2)[1])
            rec["status"] = status
            rh = [l for l in rlines[1:] if l and l.partition(":")[0].strip().lower() not in HOP]
            c.sendall(("\r\n".join([rlines[0]] + rh + ["Connection: close"]) + "\r\n\r\n").encode("latin-1"))
            if method == "HEAD" or status in (204, 304) or status < 200:
                expect = 0
            else:
                cl = header(rh, "content-length")
                expect = int(cl) if cl is not None else None  # None: until the registry closes
            fault = None
            with self.lock:
                if self.arm and not self.fired and method == "GET" and path == self.arm["path"]:
                    fault = self.arm
                    self.fired = {"mode": fault["mode"], "at": fault["at"], "time": time.time()}
            sent = 0
            started = time.monotonic()
            while expect is None or sent < expect:
                if not buf:
                    buf = up.recv(1 << 18)
                    if not buf:
                        break
                piece = buf if expect is None else buf[:expect - sent]
                if fault:
                    piece = piece[:fault["at"] - sent]
                if self.rate:
                    # At most a tenth of a second's worth at a time, each sent when it is due.
                    piece = piece[:max(1, self.rate // 10)]
                    wait = started + sent / self.rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                c.sendall(piece)
                sent += len(piece)
                rec["bytes"] = sent
                with self.lock:
                    self.body += len(piece)
                buf = buf[len(piece):]
                if fault and sent >= fault["at"]:
                    note = f"reset after {sent} body bytes"
                    if fault["mode"] == "kill":
                        pid, deadline = None, time.time() + 10
                        while pid is None and time.time() < deadline:
                            try:
                                pid = int(open(fault["pidfile"]).read())
                            except (OSError, ValueError):
                                time.sleep(0.01)
                        try:
                            os.kill(pid, signal.SIGKILL)
                            note = f"SIGKILL after {sent} body bytes"
                        except (TypeError, OSError) as e:
                            note = f"kill failed ({e!r}) after {sent} body bytes"
                    rec["fault"] = note
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
        except (OSError, ValueError, IndexError) as e:
            if counted:
                rec["error"] = repr(e)
        finally:
            c.close()
            if up is not None:
                up.close()
            if counted:
                with self.lock:
                    self.active -= 1


def serve(handle, portfile):
    """Listen on a free loopback port (written to `portfile` once listening) and run
    `handle(connection)` on a thread per connection, until killed."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(256)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(s.getsockname()[1]))
    os.replace(portfile + ".tmp", portfile)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def proxy(upstream, portfile, rate=None):
    serve(FaultProxy(upstream, int(rate) if rate else None).handle, portfile)


def ctl_reset_peak(base):
    """`clear` keeps the peak of concurrent requests unless asked to reset it too."""
    return ctl(base, "clear", peak="0")


def ctl(base, what, **query):
    c = conn(base)
    c.request("GET", f"/_proxy/{what}?" + urllib.parse.urlencode(query))
    r = c.getresponse()
    data = json.loads(r.read())
    c.close()
    return data


# --- many small images through a latency proxy (issue 12) ------------------------------------------
def generate_many(count, out):
    """`count` small images (about 0.5 MB each) that share a base layer, as a set of services
    built on one base does: image-NN/ each in the layout `push` reads."""
    count = int(count)
    rng = random.Random(12)

    def layer(files):
        plain = io.BytesIO()
        with tarfile.open(fileobj=plain, mode="w", format=tarfile.GNU_FORMAT) as t:
            for name, data in files:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
                t.addfile(ti, io.BytesIO(data))
        tar = plain.getvalue()
        raw = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0) as gz:
            gz.write(tar)
        return raw.getvalue(), "sha256:" + hashlib.sha256(tar).hexdigest()

    base = layer([(f"usr/lib/base/{i}.so", rng.randbytes(40_000)) for i in range(12)])
    for n in range(count):
        d = os.path.join(out, f"image-{n:02d}")
        os.makedirs(d, exist_ok=True)
        layers = [base, layer([(f"app/lib{n}.so", rng.randbytes(60_000))]),
                  layer([(f"app/main{n}", rng.randbytes(20_000)), ("etc/app.conf", f"name={n}\n".encode())])]
        descs, diff_ids = [], []
        for i, (data, diff_id) in enumerate(layers):
            with open(os.path.join(d, f"layer-{i}.tar.gz"), "wb") as f:
                f.write(data)
            descs.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(data),
                          "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "file": f"layer-{i}.tar.gz"})
            diff_ids.append(diff_id)
        config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": [f"/app/main{n}"]},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}, "created": "1970-01-01T00:00:00Z"}
        cb = json.dumps(config, sort_keys=True).encode()
        with open(os.path.join(d, "config.json"), "wb") as f:
            f.write(cb)
        m = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(cb),
                        "digest": "sha256:" + hashlib.sha256(cb).hexdigest()},
             "layers": [{k: x[k] for k in ("mediaType", "size", "digest")} for x in descs]}
        mb = json.dumps(m, indent=3).encode()
        with open(os.path.join(d, "manifest.json"), "wb") as f:
            f.write(mb)
        with open(os.path.join(d, "image.json"), "w") as f:
            json.dump({"layers": descs, "config": m["config"], "total": sum(x["size"] for x in descs),
                       "manifest_digest": "sha256:" + hashlib.sha256(mb).hexdigest()}, f)
    with open(os.path.join(out, "done"), "w") as f:
        f.write(str(count))


class LatencyProxy:
    """HTTP/1.1 with keep-alive, one upstream connection per client connection, `delay` seconds
    added to each new connection (its handshake) and to each request (its round trip). The
    handshake's round trip counts from the connection's accept, as a real one does: a client
    that connects and sends at once waits both; one that connected ahead waits only what is
    left of the handshake when its first request comes. Counts
    client connections and requests; GET /_latency/stats and /_latency/clear answer itself.
    A TLS hello is answered as Go's HTTP server does (400), so a client probing HTTPS first
    gets its answer at once."""

    def __init__(self, upstream, delay):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.delay = delay
        self.lock = threading.Lock()
        self.stats = {"connections": 0, "requests": 0}

    def handle(self, c):
        accepted = time.monotonic()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cf, cw, u = c.makefile("rb", buffering=1 << 20), c.makefile("wb", buffering=1 << 20), None
        try:
            if cf.peek(1)[:1] == b"\x16":
                cw.write(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                cw.flush()
                return
            counted = False  # a connection counts from its first request that is not a control one
            while True:
                head = read_lines(cf)
                if not head:
                    return
                method, target = head[0].split()[:2]
                if target.startswith("/_latency/"):
                    if target == "/_latency/clear":
                        with self.lock:
                            self.stats = {"connections": 0, "requests": 0}
                    body = json.dumps(self.stats).encode()
                    cw.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                             % len(body) + body)
                    cw.flush()
                    continue
                with self.lock:
                    self.stats["connections"] += not counted
                    self.stats["requests"] += 1
                counted = True
                if u is None:
                    # What is left of the handshake's round trip.
                    time.sleep(max(0.0, accepted + self.delay - time.monotonic()))
                    u = socket.create_connection(self.upstream)
                    u.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    uf, uw = u.makefile("rb", buffering=1 << 20), u.makefile("wb", buffering=1 << 20)
                time.sleep(self.delay)  # the request's round trip
                n = int(header(head, "content-length") or 0)
                uw.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (cf.read(n) if n else b""))
                uw.flush()
                resp = read_lines(uf)
                if not resp:
                    return
                status = int(resp[0].split()[1])
                cw.write(("\r\n".join(resp) + "\r\n\r\n").encode("latin-1"))
                if method != "HEAD" and status not in (204, 304):
                    n = header(resp, "content-length")
                    if n is not None and "chunked" not in (header(resp, "transfer-encoding") or "").lower():
                        splice_body(uf, u, cw, c, int(n))
                    else:
                        relay_body(resp, uf, cw)
                cw.flush()
                if "close" in ((header(resp, "connection") or "") + (header(head, "connection") or "")).lower():
                    return
        except (OSError, ValueError):
            return
        finally:
            c.close()
            if u:
                u.close()


def read_lines(f):
    """An HTTP head from a buffered file, as its lines (None at the end of the stream)."""
    lines = []
    while True:
        line = f.readline(1 << 16)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line.decode("latin-1").rstrip("\r\n"))


def splice_body(src_file, src_sock, dst_file, dst_sock, n):
    """Copy exactly n body bytes from one socket to the other: what the buffered reader holds
    already, then the rest in the kernel (splice through a pipe), so that the proxy adds
    latency but caps no bandwidth (a Python copy loop managed 150-300 MB/s per connection)."""
    held = src_file.peek(1)[:n] if n else b""
    src_file.read(len(held))
    dst_file.write(held)
    dst_file.flush()
    n -= len(held)
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: up to 1 MiB per splice
        while n > 0:
            k = os.splice(src_sock.fileno(), w, min(n, 1 << 20))
            if k == 0:
                return
            left = k
            while left:
                left -= os.splice(r, dst_sock.fileno(), left)
            n -= k
    finally:
        os.close(r)
        os.close(w)


def relay_body(resp, src, dst):
    """Copy one response body: chunked, by Content-Length, or to the end of the stream."""
    if "chunked" in (header(resp, "transfer-encoding") or "").lower():
        while True:
            line = src.readline(1 << 16)
            dst.write(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:
                    t = src.readline(1 << 16)
                    dst.write(t)
                    if t in (b"\r\n", b"\n", b""):
                        return
            left = size + 2
            while left:
                b = src.read1(min(left, 1 << 20))
                if not b:
                    return
                dst.write(b)
                left -= len(b)
    n = header(resp, "content-length")
    left = int(n) if n is not None else None
    while left is None or left > 0:
        b = src.read1(1 << 16 if left is None else min(left, 1 << 20))
        if not b:
            return
        dst.write(b)
        if left is not None:
            left -= len(b)


def latency_proxy(upstream, delay_ms, portfile):
    serve(LatencyProxy(upstream, int(delay_ms) / 1000).handle, portfile)


def latency_ctl(base, what):
    c = conn(base)
    c.request("GET", f"/_latency/{what}")
    data = json.loads(c.getresponse().read())
    c.close()
    return data


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def fault_run(pbase, scenario, tool, image_dir, repo, dest, logprefix, timeout, rep, out, *cmd):
    """One scenario for one tool, into a fresh dest, through the proxy; appends a JSON line to out.
    clean: one run, no fault. reset: the first GET of the largest layer is reset after 60% of
    its bytes; a failed run is re-run once (unarmed) in the same dest. kill: the tool is SIGKILLed
    when the proxy has sent 60% of the largest layer, then run again in the same dest. Each run's
    proxy stats (body bytes to the client, requests) are taken once its connections are closed."""
    info = json.load(open(os.path.join(image_dir, "image.json")))
    big = max(info["layers"], key=lambda d: d["size"])
    path = f"/v2/{repo}/blobs/{big['digest']}"
    at = int(big["size"] * 0.6)
    shutil.rmtree(dest, ignore_errors=True)
    pidfile = logprefix + ".pid"
    runs = []

    def run(i, armed):
        ctl(pbase, "clear")
        if armed:
            ctl(pbase, "arm", mode=scenario, path=path, at=at, pidfile=pidfile)
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        os.sync()
        timed_out = False
        t0 = time.monotonic()
        with open(f"{logprefix}-{i}.log", "wb") as log:
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            with open(pidfile + ".tmp", "w") as f:
                f.write(str(p.pid))
            os.replace(pidfile + ".tmp", pidfile)
            try:
                code = p.wait(timeout=float(timeout))
            except subprocess.TimeoutExpired:
                p.kill()
                code, timed_out = p.wait(), True
        wall = time.monotonic() - t0
        deadline = time.time() + 10
        st = ctl(pbase, "stats")
        while st["active"] and time.time() < deadline:
            time.sleep(0.05)
            st = ctl(pbase, "stats")
        layer = [r for r in st["requests"] if r["path"] == path and r["method"] == "GET"]
        runs.append({"run": i, "armed": armed, "exit": code, "timed_out": timed_out, "wall": wall,
                     "bytes": st["body"], "layer_bytes": sum(r["bytes"] for r in layer),
                     "requests": len(st["requests"]), "tls_probes": st["tls_probes"],
                     "fired": st["fired"], "layer_gets": layer,
                     "errors": [r for r in st["requests"] if r.get("error") or (r["status"] or 0) >= 400],
                     "partial_bytes": dir_bytes(os.path.join(dest, ".imagec", "partial")),
                     "dest_bytes": dir_bytes(dest)})
        return code

    code = run(1, scenario != "clean")
    if scenario == "kill" or (scenario == "reset" and code != 0):
        code = run(2, False)
    check = "not checked (last run failed)"
    if code == 0:
        try:
            # skopeo re-encodes the config when it converts to OCI (a new digest): layers only.
            check_store(dest, image_dir, layers_only=tool != "imagec")
            check = "ok"
        except SystemExit as e:
            check = f"FAILED: {e}"
    rec = {"tool": tool, "scenario": scenario, "rep": int(rep), "image": f"{info['size_mb']}MB",
           "image_bytes": info["total"], "layer": big["digest"], "layer_size": big["size"], "at": at,
           "runs": runs, "check": check, "logs": logprefix}
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    fired_ok = scenario == "clean" or bool(runs[0]["fired"])
    print(f"{tool} {scenario} rep {rep}: exits {[r['exit'] for r in runs]}, "
          f"{sum(r['bytes'] for r in runs) / MB:.1f} MB moved, {sum(r['wall'] for r in runs):.2f} s, "
          f"fault fired: {'n/a' if scenario == 'clean' else fired_ok}, store check: {check}",
          file=sys.stderr)
    if code != 0 or check != "ok" or not fired_ok:
        sys.exit(1)


def fault_summary(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    if not recs:
        return []
    med = statistics.median
    out = [f"\n## Faults through a streaming proxy, {recs[0]['image']} image "
           f"(largest layer {recs[0]['layer_size'] / MB:.1f} MB, fault at {recs[0]['at'] / MB:.1f} MB = 60%)\n",
           "| tool | scenario | reps | runs per rep | exit codes (per rep) | MB moved (median) | "
           "moved / image (each rep) | largest layer moved / its size (each rep) | wall s, sum of runs "
           "(median) | wall s (each rep) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    keys = []
    for r in recs:
        if (r["tool"], r["scenario"]) not in keys:
            keys.append((r["tool"], r["scenario"]))
    order = {"clean": 0, "reset": 1, "kill": 2}
    keys.sort(key=lambda k: (k[0] != "imagec", order[k[1]]))

    def code(r):
        return "SIGKILL" if r["exit"] == -9 and r["armed"] else str(r["exit"]) + (" (timeout)" if r["timed_out"] else "")
    for k in keys:
        rs = [r for r in recs if (r["tool"], r["scenario"]) == k]
        moved = [sum(x["bytes"] for x in r["runs"]) for r in rs]
        walls = [sum(x["wall"] for x in r["runs"]) for r in rs]
        out.append(f"| {k[0]} | {k[1]} | {len(rs)} | {', '.join(str(len(r['runs'])) for r in rs)} | "
                   f"{'; '.join(' + '.join(code(x) for x in r['runs']) for r in rs)} | "
                   f"{med(moved) / MB:.1f} | {', '.join('%.4f' % (m / r['image_bytes']) for m, r in zip(moved, rs))} | "
                   f"{', '.join('%.4f' % (sum(x['layer_bytes'] for x in r['runs']) / r['layer_size']) for r in rs)} | "
                   f"{med(walls):.2f} | {', '.join('%.2f' % w for w in walls)} |")
    out.append("\nLargest-layer GETs of rep 1 (status, Range asked, body bytes the proxy sent, fault), "
               "what was left in DEST/.imagec/partial after each imagec run, and the size of DEST after "
               "the last run:\n")
    for k in keys:
        r = [r for r in recs if (r["tool"], r["scenario"]) == k][0]
        parts = []
        for x in r["runs"]:
            gets = ", ".join(f"{g['status']} {('Range ' + g['range']) if g['range'] else 'no Range'} "
                             f"{g['bytes']}" + (f" [{g['fault']}]" if g["fault"] else "") for g in x["layer_gets"])
            parts.append(f"run {x['run']} (exit {code(x)}, {x['requests']} requests, {x['wall']:.2f} s, "
                         f"{x['bytes'] / MB:.1f} MB): {gets or 'no GET'}"
                         + (f"; partial after: {x['partial_bytes']} bytes" if k[0] == "imagec" else ""))
        out.append(f"- {k[0]} {k[1]}: " + "; ".join(parts) +
                   f"; DEST after the last run: {r['runs'][-1]['dest_bytes'] / MB:.1f} MB")
    bad = [r for r in recs if r["check"] != "ok"]
    out.append(f"\nStore check after the last run (every layer, and for imagec the config, in DEST/blobs "
               f"with the right size and sha256; skopeo re-encodes the config when converting to OCI): "
               f"{len(recs) - len(bad)} of {len(recs)} passed."
               + "".join(f"\n- {r['tool']} {r['scenario']} rep {r['rep']}: {r['check']} (logs {r['logs']}-*.log)"
                         for r in bad))
    # A killed client resets its open connections: expected, not listed.
    errs = [(r, x, e) for r in recs for x in r["runs"] for e in x["errors"] if x["exit"] != -9]
    if errs:
        out.append("Proxy-side errors or 4xx/5xx answers (runs not killed): " + "; ".join(
            f"{r['tool']} {r['scenario']} rep {r['rep']} run {x['run']}: {e['method']} {e['path'][-20:]} "
            f"{e['status']} {e.get('error', '')}" for r, x, e in errs[:10]))
    return out


def use_table(rows):
    """unpack, layers --files and save of the largest image, each beside its peer (umoci, the
    tar floor, cat of the blobs) measured in the same run: the issue 10 targets."""
    med = statistics.median
    use = [r for r in rows if r["kind"] in ("unpack", "files", "save") and r["exit"] == "0"]
    if not use:
        return []
    out = ["\n## Using a pulled image: imagec beside its peers, same run\n",
           "| scenario | tool | image | runs | median wall s | median CPU s | max peak RSS MB | "
           "imagec/this |",
           "|---|---|---|---|---|---|---|---|"]
    seen = []
    for r in use:
        k = (r["kind"], r["tool"], r["image"])
        if k not in seen:
            seen.append(k)
    for kind, tool, image in seen:
        rs = [r for r in use if (r["kind"], r["tool"], r["image"]) == (kind, tool, image)]
        mine = [r for r in use if (r["kind"], r["image"]) == (kind, image) and r["tool"] == "imagec"]
        wall = med([r["wall"] for r in rs])
        ratio = ""
        if tool != "imagec" and mine and wall > 0:
            ratio = f"{med([r['wall'] for r in mine]) / wall:.2f}"
        out.append(f"| {kind} | {tool} | {image} | {len(rs)} | {wall:.2f} | "
                   f"{med([r['cpu'] for r in rs]):.2f} | {max(r['rss'] for r in rs):.1f} | {ratio} |")
    return out


def local_work_tables(rows):
    """Warm schema1 re-pulls and `layers` (work that needs no network), and, with a baseline
    build in the same run, this build against it for every imagec scenario."""
    med = statistics.median
    out = []

    def ok(kind, tool, image):
        return [r for r in rows if r["kind"] == kind and r["tool"] == tool and r["image"] == image
                and r["exit"] == "0"]

    local = [r for r in rows if r["kind"] in ("warm-s1", "layers")]
    if local:
        out.append("\n## Work without downloads: warm schema1 re-pulls and `layers` of a stored image\n")
        out.append("| scenario | build | image | runs | failed | median wall s | median CPU s (user+sys) |")
        out.append("|---|---|---|---|---|---|---|")
        seen = []
        for r in local:
            k = (r["kind"], r["tool"], r["image"])
            if k not in seen:
                seen.append(k)
        for kind, tool, image in seen:
            rs = [r for r in local if (r["kind"], r["tool"], r["image"]) == (kind, tool, image)]
            good = [r for r in rs if r["exit"] == "0"] or rs
            out.append(f"| {kind} | {tool} | {image} | {len(rs)} | {sum(r['exit'] != '0' for r in rs)} | "
                       f"{med([r['wall'] for r in good]):.3f} | {med([r['cpu'] for r in good]):.3f} |")
    if not any(r["tool"].startswith("baseline") for r in rows):
        return out
    out.append("\n## This build against the baseline (BENCH_BASELINE), measured in the same run\n")
    out.append("| scenario | image | runs (this/baseline) | median wall s this | baseline | ratio | "
               "median CPU s this | baseline | ratio |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    scenarios = [("cold", "", "cold pull"), ("warm", "", "warm re-pull"),
                 ("warm-s1", "", "warm schema1 re-pull"), ("layers", " schema2", "layers, schema2"),
                 ("layers", " schema1", "layers, schema1")]
    # Image sizes only: the latency rows name their delay ("+25ms") in that column.
    images = sorted({r["image"] for r in rows if r["image"].endswith("MB")},
                    key=lambda s: int(s.rstrip("MB")))
    for kind, suffix, label in scenarios:
        for image in images:
            new, base = ok(kind, "imagec" + suffix, image), ok(kind, "baseline" + suffix, image)
            if not new or not base:
                continue
            w_new, w_base = med([r["wall"] for r in new]), med([r["wall"] for r in base])
            c_new, c_base = med([r["cpu"] for r in new]), med([r["cpu"] for r in base])
            ratio = lambda a, b: f"{a / b:.2f}" if b > 0 else "-"
            out.append(f"| {label} | {image} | {len(new)}/{len(base)} | {w_new:.3f} | {w_base:.3f} | "
                       f"{ratio(w_new, w_base)} | {c_new:.3f} | {c_base:.3f} | {ratio(c_new, c_base)} |")
    return out


def blob_urls(base, repo, image_dir):
    """The URL of every blob (config and layers) of a generated image, one per line."""
    info = json.load(open(os.path.join(image_dir, "image.json")))
    for d in [info["config"]] + info["layers"]:
        print(f"{base}/v2/{repo}/blobs/{d['digest']}")


def walls(n, prepare, *cmd):
    """Run `prepare` (a shell line, untimed) then CMD, n times; print each CMD's wall in ms.
    GNU time's 0.01 s steps cannot tell a 5 ms pull from a 9 ms one."""
    out = []
    for _ in range(int(n)):
        subprocess.run(prepare, shell=True, check=True)
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((time.perf_counter() - t) * 1000)
    print(",".join(f"{w:.2f}" for w in out))


def tools_of(rows):
    """The tools of `rows`, in the order they first ran."""
    return list(dict.fromkeys(r["tool"] for r in rows))


def summary(results, machine):
    rows = [l.rstrip("\n").split("\t") for l in open(results)]
    head, rows = rows[0], rows[1:]
    rows = [dict(zip(head, r)) for r in rows]
    for r in rows:
        for k in ("wall", "user", "sys"):
            r[k] = float(r[k])
        r["cpu"] = r["user"] + r["sys"]
        r["rss"] = int(r["rss_kib"]) / 1024
        r["served"] = int(r["served_bytes"]) / MB
    med = statistics.median
    out = []
    out.append("## Machine\n")
    out.append(open(machine).read().rstrip() + "\n")

    def group(kind):
        keys = []
        for r in rows:
            k = (r["tool"], r["image"])
            if r["kind"] == kind and k not in keys:
                keys.append(k)
        return keys, lambda k: [r for r in rows if r["kind"] == kind and (r["tool"], r["image"]) == k]

    keys, sel = group("cold")
    out.append("## Cold pulls (fresh destination each run)\n")
    out.append("| tool | image | runs | failed | median wall s | median CPU s (user+sys) | "
               "median peak RSS MB | max peak RSS MB | median MB served | wall imagec/skopeo | "
               "CPU imagec/skopeo | wall imagec/floor |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    images = sorted({k[1] for k in keys}, key=lambda s: int(s.rstrip("MB")))
    for image in images:
        for tool in ("imagec", "baseline", "skopeo", "floor"):
            rs = sel((tool, image))
            if not rs:
                continue
            ok = [r for r in rs if r["exit"] == "0"]
            ratio_w = ratio_c = ratio_f = ""
            sk = [r for r in sel(("skopeo", image)) if r["exit"] == "0"]
            fl = [r for r in sel(("floor", image)) if r["exit"] == "0"]
            if tool == "imagec" and ok and sk:
                ratio_w = f"{med([r['wall'] for r in ok]) / med([r['wall'] for r in sk]):.2f}"
                ratio_c = f"{med([r['cpu'] for r in ok]) / med([r['cpu'] for r in sk]):.2f}"
            if tool == "imagec" and ok and fl:
                ratio_f = f"{med([r['wall'] for r in ok]) / med([r['wall'] for r in fl]):.2f}"
            if ok:
                out.append(f"| {tool} | {image} | {len(rs)} | {len(rs) - len(ok)} | "
                           f"{med([r['wall'] for r in ok]):.2f} | {med([r['cpu'] for r in ok]):.2f} | "
                           f"{med([r['rss'] for r in ok]):.1f} | {max(r['rss'] for r in ok):.1f} | "
                           f"{med([r['served'] for r in ok]):.1f} | {ratio_w} | {ratio_c} | {ratio_f} |")
            else:
                out.append(f"| {tool} | {image} | {len(rs)} | {len(rs)} | - | - | - | - | - | | | |")
    keys, sel = group("warm")
    if keys:
        out.append("\n## Warm re-pull with imagec (everything already in the store)\n")
        out.append("| build | image | runs | failed | median wall s | median CPU s | max peak RSS MB | "
                   "bytes served (per run) | requests (per run) |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for k in keys:
            rs = sel(k)
            ok = [r for r in rs if r["exit"] == "0"] or rs
            out.append(f"| {k[0]} | {k[1]} | {len(rs)} | {sum(r['exit'] != '0' for r in rs)} | "
                       f"{med([r['wall'] for r in ok]):.2f} | {med([r['cpu'] for r in ok]):.2f} | "
                       f"{max(r['rss'] for r in ok):.1f} | "
                       f"{', '.join(r['served_bytes'] for r in rs)} | {', '.join(r['requests'] for r in rs)} |")
        for k in keys:
            first = sel(k)[0]
            reqs = open(first["log"].replace("/log-", "/requests-")).read().split("\n")
            out.append(f"\nRequests of warm run {first['run']} ({k[1]}): " +
                       "; ".join(f"`{r}`" for r in reqs if r))
            changes = os.path.join(os.path.dirname(first["log"]), f"warm-file-changes-{k[1]}")
            n = len(open(changes).read().splitlines()) if os.path.exists(changes) else 0
            out.append(f"Store entries added/changed/replaced by the warm re-pulls ({k[1]}, all runs, "
                       f"path size mtime inode): {n // 2 if n else 0} (raw diff lines: {n}).")
    out.extend(local_work_tables(rows))
    out.extend(use_table(rows))
    crows = [r for r in rows if r["kind"] == "chunks"]
    if crows:
        image = crows[0]["image"]
        work = os.path.dirname(results)
        rate = open(os.path.join(work, "chunk-rate")).read().strip() if os.path.exists(
            os.path.join(work, "chunk-rate")) else "?"
        out.append(f"\n## One large layer through a proxy capping each connection at {rate} "
                   f"(the {image} single-layer image, cold pulls)\n")
        out.append("| tool | runs | failed | wall s (each run) | median wall s | median CPU s | "
                   "max peak RSS MB | median MB served | speed-up over imagec one stream |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        tools = tools_of(crows)
        one = [r["wall"] for r in crows if r["tool"] == "imagec one stream" and r["exit"] == "0"]
        for t in tools:
            rs = [r for r in crows if r["tool"] == t]
            ok = [r for r in rs if r["exit"] == "0"] or rs
            speed = f"{med(one) / med([r['wall'] for r in ok]):.2f}x" if one else ""
            out.append(f"| {t} | {len(rs)} | {sum(r['exit'] != '0' for r in rs)} | "
                       f"{', '.join('%.2f' % r['wall'] for r in rs)} | {med([r['wall'] for r in ok]):.2f} | "
                       f"{med([r['cpu'] for r in ok]):.2f} | {max(r['rss'] for r in ok):.1f} | "
                       f"{med([r['served'] for r in ok]):.1f} | {speed} |")
        peaks = os.path.join(work, "chunk-peaks")
        if os.path.exists(peaks):
            out.append("\nMost requests the proxy carried at once, per run: " +
                       "; ".join(l.strip() for l in open(peaks) if l.strip()))
    krows = [r for r in rows if r["kind"] == "cache"]
    kwalls = os.path.join(os.path.dirname(results), "cache-walls")
    if krows:
        image = krows[0]["image"]
        fine = {}
        if os.path.exists(kwalls):
            for line in open(kwalls):
                tool, ms = line.rstrip("\n").split("\t")
                fine.setdefault(tool, []).extend(float(x) for x in ms.split(","))
        out.append(f"\n## A second store from the shared cache (the {image} image; a first pull filled "
                   f"the cache)\n")
        out.append("| tool | timed runs | median wall ms | min ms | max ms | wall / imagec warm re-pull | "
                   "bytes served (per run) | requests (per run) | max peak RSS MB |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        tools = tools_of(krows)
        warm = fine.get("imagec warm re-pull")
        for t in tools:
            rs = [r for r in krows if r["tool"] == t]
            ok = [r for r in rs if r["exit"] == "0"] or rs
            w = fine.get(t, [])
            ratio = f"{med(w) / med(warm):.2f}" if w and warm else ""
            figures = f"{med(w):.1f} | {min(w):.1f} | {max(w):.1f}" if w else "- | - | -"
            out.append(f"| {t} | {len(w)} | {figures} | {ratio} | "
                       f"{', '.join(r['served_bytes'] for r in rs)} | {', '.join(r['requests'] for r in rs)} | "
                       f"{max(r['rss'] for r in ok):.1f} |")
        out.append("\nWalls from a Python timer around each run (the store removed before each, untimed); "
                   "bytes served and requests from the registry's access log, one row per measured run.")
    lrows = [r for r in rows if r["kind"] == "latency"]
    if lrows:
        work = os.path.dirname(results)
        conns = {}
        lstats = os.path.join(work, "latency-stats")
        if os.path.exists(lstats):
            for line in open(lstats):
                tool, _, js = line.rstrip("\n").split("\t")
                conns.setdefault(tool, []).append(json.loads(js))
        delay = lrows[0]["image"]
        out.append(f"\n## Many images, high latency (a proxy adding {delay.lstrip('+')} to each connection "
                   f"and each request)\n")
        out.append("| tool | runs | failed | wall s (each run) | median wall s | skopeo / imagec | "
                   "TCP connections (per run) | requests (per run) | max peak RSS MB |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        tools = tools_of(lrows)

        def wall(t):
            ok = [r["wall"] for r in lrows if r["tool"] == t and r["exit"] == "0"]
            return med(ok) if ok else None
        for t in tools:
            rs = [r for r in lrows if r["tool"] == t]
            ok = [r for r in rs if r["exit"] == "0"] or rs
            peer = t.replace("imagec", "skopeo").replace("images in one pull", "runs")
            ratio = ""
            if t.startswith("imagec") and wall(peer) and wall(t):
                ratio = f"{wall(peer) / wall(t):.2f}x"
            st = conns.get(t, [])
            out.append(f"| {t} | {len(rs)} | {sum(r['exit'] != '0' for r in rs)} | "
                       f"{', '.join('%.2f' % r['wall'] for r in rs)} | {med([r['wall'] for r in ok]):.2f} | "
                       f"{ratio} | {', '.join(str(x['connections']) for x in st)} | "
                       f"{', '.join(str(x['requests']) for x in st)} | {max(r['rss'] for r in ok):.1f} |")
        lwalls = os.path.join(work, "latency-walls")
        fine = {}
        if os.path.exists(lwalls):
            for line in open(lwalls):
                tool, ms = line.rstrip("\n").split("\t")
                fine.setdefault(tool, []).extend(float(x) for x in ms.split(","))
        mine = [t for t in fine if t.startswith("imagec")]
        if mine:
            t = mine[0]
            peer = t.replace("imagec", "skopeo")
            if fine.get(peer):
                out.append(f"\n{t}, timed by a Python timer (the two tools alternating, a `sync` "
                           f"before each run): imagec {med(fine[t]):.0f} ms (min {min(fine[t]):.0f}), "
                           f"skopeo {med(fine[peer]):.0f} ms (min {min(fine[peer]):.0f}), medians of "
                           f"{len(fine[t])} and {len(fine[peer])} runs: "
                           f"**{med(fine[peer]) / med(fine[t]):.2f}x**.")
    jrows = [r for r in rows if r["kind"] == "jobs"]
    if jrows:
        image = jrows[0]["image"]
        out.append(f"\n## imagec --jobs sweep, cold pulls of the {image} image\n")
        out.append("| -j | runs | failed | wall s (each run) | median wall s | median CPU s | max peak RSS MB |")
        out.append("|---|---|---|---|---|---|---|")
        for j in sorted({r["tool"] for r in jrows}, key=lambda t: int(t.split()[-1])):
            rs = [r for r in jrows if r["tool"] == j]
            ok = [r for r in rs if r["exit"] == "0"] or rs
            out.append(f"| {j.split()[-1]} | {len(rs)} | {sum(r['exit'] != '0' for r in rs)} | "
                       f"{', '.join('%.2f' % r['wall'] for r in rs)} | {med([r['wall'] for r in ok]):.2f} | "
                       f"{med([r['cpu'] for r in ok]):.2f} | {max(r['rss'] for r in ok):.1f} |")
    srows = [r for r in rows if r["kind"] == "schema"]
    if srows:
        work = os.path.dirname(results)
        out.append("\n## Schema1 vs schema2, same content (imagec cold pulls, fresh destination each run)\n")
        out.append("| image | format | runs | failed | median wall s | median CPU s (user+sys) | "
                   "max peak RSS MB | requests per run | median MB served | wall schema1/schema2 | "
                   "CPU schema1/schema2 |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        images = sorted({r["image"] for r in srows}, key=lambda s: int(s.rstrip("MB")))
        runs_out = []
        for image in images:
            ok = {}
            for fmt in ("schema2", "schema1"):
                rs = [r for r in srows if r["image"] == image and r["tool"] == f"imagec {fmt}"]
                ok[fmt] = [r for r in rs if r["exit"] == "0"]
                if not rs:
                    continue
                runs_out.append(f"| {fmt} | {image} | " + " | ".join(
                    f"{r['wall']:.2f} / {r['user']:.2f} / {r['sys']:.2f} / {r['rss_kib']}" +
                    ("" if r["exit"] == "0" else f" (exit {r['exit']})") for r in rs) + " |")
                ratio_w = ratio_c = ""
                if fmt == "schema1" and ok["schema1"] and ok["schema2"]:
                    s1, s2 = ok["schema1"], ok["schema2"]
                    ratio_w = f"{med([r['wall'] for r in s1]) / med([r['wall'] for r in s2]):.2f}"
                    ratio_c = f"{med([r['cpu'] for r in s1]) / med([r['cpu'] for r in s2]):.2f}"
                g = ok[fmt]
                if g:
                    out.append(f"| {image} | {fmt} | {len(rs)} | {len(rs) - len(g)} | "
                               f"{med([r['wall'] for r in g]):.2f} | {med([r['cpu'] for r in g]):.2f} | "
                               f"{max(r['rss'] for r in g):.1f} | "
                               f"{', '.join(sorted({r['requests'] for r in g}))} | "
                               f"{med([r['served'] for r in g]):.1f} | {ratio_w} | {ratio_c} |")
                else:
                    out.append(f"| {image} | {fmt} | {len(rs)} | {len(rs)} | - | - | - | - | - | | |")
        nruns = max(int(r["run"]) for r in srows)
        out.append("\nIndividual runs (wall s / user s / sys s / peak RSS KiB):\n")
        out.append("| format | image | " + " | ".join(f"run {i}" for i in range(1, nruns + 1)) + " |")
        out.append("|---|---|" + "---|" * nruns)
        out.extend(runs_out)
        for image in images:
            first = [r for r in srows if r["image"] == image and r["tool"] == "imagec schema1"]
            if first:
                reqs = [l.split() for l in open(first[0]["log"].replace("/log-", "/requests-")) if l.strip()]
                counts = {}
                for q in reqs:
                    kind = "blobs" if "/blobs/" in q[1] else "manifests" if "/manifests/" in q[1] else q[1]
                    counts[f"{q[0]} {kind} {q[2]}"] = counts.get(f"{q[0]} {kind} {q[2]}", 0) + 1
                out.append(f"\nRequests of schema1 run {first[0]['run']} ({image}): " +
                           ", ".join(f"{n}× `{k}`" for k, n in counts.items()))
            made = os.path.join(work, f"schema1-made-{image}")
            if os.path.exists(made):
                out.append(f"Schema1 tag ({image}): " + open(made).read().strip())
            vlog = os.path.join(work, f"verbose-s1-{image}")
            if os.path.exists(vlog):
                t = {}
                for line in open(vlog, errors="replace"):
                    m = re.match(r"(HEAD|GET) \S*/(manifests|blobs)/\S+ -> \d+ \((\d+) ms", line.strip())
                    if m:
                        t.setdefault(f"{m.group(1)} {m.group(2)}", []).append(int(m.group(3)))
                if t:
                    out.append(f"imagec -v, one extra untimed schema1 pull ({image}), ms to response "
                               f"headers: " + "; ".join(f"{k}: {len(v)} requests, sum {sum(v)}, max {max(v)}"
                                                        for k, v in t.items()))
            ref = os.path.join(work, f"inflate-ref-{image}")
            if os.path.exists(ref):
                out.append(f"Reference, inflate + sha256 of all layers in one process "
                           f"(Python: C zlib + OpenSSL sha256) ({image}): " + open(ref).read().strip())
        checks = os.path.join(work, "schema1-checks")
        lines = open(checks).read().splitlines() if os.path.exists(checks) else []
        good = sum(1 for l in lines if "\tok:" in l)
        out.append(f"\nUntimed checks after each schema1 pull (index.json entry -> OCI manifest -> config "
                   f"rootfs.diff_ids equal to the schema2 config's, same layer digests and sizes, every "
                   f"blob's sha256): {good} of {len(lines)} passed.")
        for l in lines:
            if "\tok:" not in l:
                out.append(f"- FAILED {l}")
    faults = os.path.join(os.path.dirname(results), "faults.jsonl")
    if os.path.exists(faults):
        out.extend(fault_summary(faults))
    bad = [r for r in rows if r["exit"] != "0"]
    if bad:
        out.append("\n## Failed runs\n")
        for r in bad:
            out.append(f"- {r['kind']} {r['tool']} {r['image']} run {r['run']}: exit {r['exit']} (log: {r['log']})")
    print("\n".join(out))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"generate": lambda: generate(int(args[0]), int(args[1]), args[2], args[3]),
     "push": lambda: push(*args), "free-port": free_port, "wait-up": lambda: wait_up(*args),
     "served": lambda: served(*args), "check-store": lambda: check_store(*args),
     "parse-time": lambda: parse_time(*args), "describe": lambda: describe(*args),
     "summary": lambda: summary(*args), "make-schema1": lambda: make_schema1(*args),
     "check-schema1": lambda: check_schema1(*args), "inflate-ref": lambda: inflate_ref(*args),
     "proxy": lambda: proxy(*args), "walls": lambda: walls(*args),
     "blob-urls": lambda: blob_urls(*args), "generate-many": lambda: generate_many(*args), "latency-proxy": lambda: latency_proxy(*args),
     "latency-clear": lambda: latency_ctl(args[0], "clear"),
     "latency-stats": lambda: print(json.dumps(latency_ctl(args[0], "stats"))), "fault-run": lambda: fault_run(*args),
     "ctl-clear": lambda: (ctl(args[0], "clear"), ctl_reset_peak(args[0])),
     "ctl-peak": lambda: print(f"{ctl(args[0], 'stats')['peak']} at once"),
     "fault-summary": lambda: print("\n".join(fault_summary(*args)))}[cmd]()
