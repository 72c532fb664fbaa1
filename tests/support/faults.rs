//! A streaming fault-injecting HTTP proxy in front of a real registry, for what a flaky network
//! or an odd server does and the registry cannot be made to do: a connection reset mid-body,
//! 5xx/429 answers (with `Retry-After`), a flipped byte, `Range` ignored, a 206 with the wrong
//! `Content-Range`. A test arms faults at runtime; each fires a bounded number of times, on the
//! requests whose path contains a given substring. Counters say what went over the wire.
//!
//! Raw TCP, one request per connection (`Connection: close` to both sides). Response bodies are
//! relayed as they arrive, never buffered whole: tests move 100 MB through it. Listens on
//! 127.0.0.1 only. Bad input never panics: it gets a 400 (a 502 when the upstream fails) or a
//! closed connection. Every connection thread ends when either side stalls for [`IO_TIMEOUT`];
//! the accept thread ends when the [`FaultProxy`] is dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// Longest request or response head the proxy reads.
const MAX_HEAD: u64 = 64 * 1024;
/// Longest request body it forwards (requests with larger bodies are cut: pulls send none).
const MAX_BODY: u64 = 1024 * 1024;
/// A peer that sends or accepts nothing for this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: String,
    stop: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    faults: Vec<Fault>,
    exchanges: Vec<Exchange>,
}

struct Fault {
    path_part: String,
    kind: Kind,
    left: u32,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Reset {
        after: u64,
    },
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    Flip {
        offset: u64,
    },
    IgnoreRange,
    BadContentRange,
}

/// One request seen, and the response body bytes sent back for it so far.
struct Exchange {
    method: String,
    path: String,
    body_bytes: Arc<AtomicU64>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`, plain HTTP) on a free loopback port, with no fault.
    pub fn start(upstream: &str) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        });
        let accepting = Arc::clone(&shared);
        thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(listener, accepting))?;
        Ok(FaultProxy { addr, shared })
    }

    /// `127.0.0.1:PORT`, to put in front of a repository name.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The next `times` GETs with a 2xx answer: after `n_body_bytes` bytes of the body, reset
    /// the client's connection (RST, as a dropped NAT entry or a crashed peer gives). A shorter
    /// body is relayed whole (the fault is still used up).
    pub fn reset_after(&self, path_part: &str, n_body_bytes: u64, times: u32) {
        let kind = Kind::Reset {
            after: n_body_bytes,
        };
        self.shared.arm(path_part, kind, times);
    }

    /// The next `times` requests (any method): answer `status` (with `Retry-After` when given)
    /// and a registry-style error body, without contacting the upstream.
    pub fn fail_first(&self, path_part: &str, status: u16, retry_after: Option<&str>, times: u32) {
        // A header value cannot hold a line break: drop any rather than split the head.
        let retry_after = retry_after.map(|v| v.replace(['\r', '\n'], ""));
        let kind = Kind::Status {
            status,
            retry_after,
        };
        self.shared.arm(path_part, kind, times);
    }

    /// The next GET with a 2xx answer: flip every bit of the body byte at `offset` (counted
    /// from the start of that response's body). Once: a client that retried would get the
    /// right bytes, so a test sees whether it did.
    pub fn flip_byte(&self, path_part: &str, offset: u64) {
        self.shared.arm(path_part, Kind::Flip { offset }, 1);
    }

    /// Every request with `Range` from now on: forward it without, as a server that does not
    /// support ranges (the upstream answers 200 with the whole body).
    pub fn ignore_range(&self, path_part: &str) {
        self.shared.arm(path_part, Kind::IgnoreRange, u32::MAX);
    }

    /// The next `times` 206 answers to requests with `Range`: rewrite `Content-Range` to start
    /// one byte before what the upstream said (one byte after, when it said 0).
    pub fn bad_content_range(&self, path_part: &str, times: u32) {
        self.shared.arm(path_part, Kind::BadContentRange, times);
    }

    /// Bytes of response bodies sent to the client, over every request whose path contains
    /// `path_part` (faults' own answers included; response heads not).
    pub fn body_bytes(&self, path_part: &str) -> u64 {
        self.shared
            .state()
            .exchanges
            .iter()
            .filter(|e| e.path.contains(path_part))
            .map(|e| e.body_bytes.load(Ordering::SeqCst))
            .sum()
    }

    /// Requests with this method (`GET`, `HEAD`) whose path contains `path_part`, answered by a
    /// fault or forwarded.
    pub fn requests(&self, method: &str, path_part: &str) -> usize {
        self.shared
            .state()
            .exchanges
            .iter()
            .filter(|e| e.method == method && e.path.contains(path_part))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread cannot leave the state half-updated in a way that
        // matters to counters: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arm(&self, path_part: &str, kind: Kind, times: u32) {
        self.state().faults.push(Fault {
            path_part: path_part.to_string(),
            kind,
            left: times,
        });
    }

    /// Use up one firing of the first armed fault for `path` that `wanted` accepts.
    fn take(&self, path: &str, wanted: impl Fn(&Kind) -> bool) -> Option<Kind> {
        let mut state = self.state();
        let fault = state
            .faults
            .iter_mut()
            .find(|f| f.left > 0 && path.contains(&f.path_part) && wanted(&f.kind))?;
        fault.left -= 1;
        Some(fault.kind.clone())
    }

    fn record(&self, method: &str, path: &str) -> Arc<AtomicU64> {
        let body_bytes = Arc::new(AtomicU64::new(0));
        self.state().exchanges.push(Exchange {
            method: method.to_string(),
            path: path.to_string(),
            body_bytes: Arc::clone(&body_bytes),
        });
        body_bytes
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // Out of descriptors, say: do not spin.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let shared = Arc::clone(&shared);
        // A thread that cannot be started drops the connection: the client sees a reset.
        let _ = thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || {
                // Errors are a peer going away or sending garbage: the connection just ends.
                let _ = handle(&shared, &stream);
            });
    }
}

/// The request line and headers of a request or response.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }
}

fn handle(shared: &Shared, client: &TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut from_client = BufReader::new(client);
    let mut to_client = client;
    // imagec tries HTTPS first: a TLS ClientHello (record type 0x16) gets a 400 at once, as
    // from the registry itself, instead of a wait for a request head that never comes.
    if from_client.fill_buf()?.first() == Some(&0x16) {
        return answer(&mut to_client, "GET", 400, None, &AtomicU64::new(0));
    }
    let request = match read_head(&mut from_client) {
        Ok(head) => head,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return answer(&mut to_client, "GET", 400, None, &AtomicU64::new(0));
        }
        Err(e) => return Err(e),
    };
    let mut parts = request.first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    if method.is_empty() || !target.starts_with('/') {
        return answer(&mut to_client, "GET", 400, None, &AtomicU64::new(0));
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let sent = shared.record(&method, &path);

    let status_fault = shared.take(&path, |k| matches!(k, Kind::Status { .. }));
    if let Some(Kind::Status {
        status,
        retry_after,
    }) = status_fault
    {
        return answer(&mut to_client, &method, status, retry_after, &sent);
    }
    let ranged = request.header("range").is_some();
    let drop_range = ranged && shared.take(&path, |k| *k == Kind::IgnoreRange).is_some();

    // Forward the request, asking the upstream to close after its answer.
    let upstream = match connect(&shared.upstream) {
        Ok(s) => s,
        Err(_) => return answer(&mut to_client, &method, 502, None, &sent),
    };
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in &request.headers {
        if hop_by_hop(name) || (drop_range && name.eq_ignore_ascii_case("range")) {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut to_upstream = &upstream;
    to_upstream.write_all(head.as_bytes())?;
    let body_len = request.content_length().unwrap_or(0).min(MAX_BODY);
    io::copy(&mut (&mut from_client).take(body_len), &mut to_upstream)?;
    to_upstream.flush()?;

    let mut from_upstream = BufReader::new(&upstream);
    let response = match read_head(&mut from_upstream) {
        Ok(head) => head,
        Err(_) => return answer(&mut to_client, &method, 502, None, &sent),
    };
    let status: u16 = response
        .first
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let bad_range = ranged
        && status == 206
        && shared
            .take(&path, |k| *k == Kind::BadContentRange)
            .is_some();
    let mut head = format!("{}\r\n", response.first);
    for (name, value) in &response.headers {
        if hop_by_hop(name) {
            continue;
        }
        if bad_range && name.eq_ignore_ascii_case("content-range") {
            head.push_str(&format!("{name}: {}\r\n", shift_content_range(value)));
        } else {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    to_client.write_all(head.as_bytes())?;

    let has_body = method != "HEAD" && status >= 200 && status != 204 && status != 304;
    if !has_body {
        return to_client.flush();
    }
    let faultable = method == "GET" && (200..300).contains(&status);
    let reset_at = faultable
        .then(|| shared.take(&path, |k| matches!(k, Kind::Reset { .. })))
        .flatten()
        .and_then(|k| match k {
            Kind::Reset { after } => Some(after),
            _ => None,
        });
    let flip_at = faultable
        .then(|| shared.take(&path, |k| matches!(k, Kind::Flip { .. })))
        .flatten()
        .and_then(|k| match k {
            Kind::Flip { offset } => Some(offset),
            _ => None,
        });
    // With a length, stop there; without one (chunked), the upstream closes after the body.
    let limit = response.content_length().unwrap_or(u64::MAX);
    let stop_at = limit.min(reset_at.unwrap_or(u64::MAX));
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < stop_at {
        let want = (stop_at - done).min(buf.len() as u64) as usize;
        let n = match from_upstream.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(offset) = flip_at.filter(|o| (done..done + n as u64).contains(o)) {
            buf[(offset - done) as usize] ^= 0xff;
        }
        to_client.write_all(&buf[..n])?;
        done += n as u64;
        sent.fetch_add(n as u64, Ordering::SeqCst);
    }
    to_client.flush()?;
    if reset_at.is_some_and(|at| done >= at && at < limit) {
        // SO_LINGER 0: closing sends RST instead of FIN. The socket closes when its only
        // handle is dropped, by this connection's thread right after this returns.
        socket2::SockRef::from(client).set_linger(Some(Duration::ZERO))?;
    }
    Ok(())
}

fn connect(upstream: &str) -> io::Result<TcpStream> {
    let addr = upstream
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for the upstream"))?;
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Headers about this one connection, which the proxy sets itself (one request per connection).
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// A head of at most [`MAX_HEAD`] bytes, up to its empty line. Too long, cut short or
/// without a first line: `InvalidData`.
fn read_head(reader: &mut impl BufRead) -> io::Result<Head> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut limited = reader.take(MAX_HEAD);
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        limited.read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(invalid("head ended early or is too long"));
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return Err(invalid("empty head"));
    }
    let first = lines.remove(0);
    let headers = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Head { first, headers })
}

/// A fault's (or the proxy's own) answer, in the registry's error format.
fn answer(
    to: &mut impl Write,
    method: &str,
    status: u16,
    retry_after: Option<String>,
    sent: &AtomicU64,
) -> io::Result<()> {
    let body = format!(
        r#"{{"errors":[{{"code":"INJECTED","message":"fault proxy answered {status}"}}]}}"#
    );
    let mut head = format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(after) = retry_after {
        head.push_str(&format!("Retry-After: {after}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    to.write_all(head.as_bytes())?;
    if method != "HEAD" {
        to.write_all(body.as_bytes())?;
        sent.fetch_add(body.len() as u64, Ordering::SeqCst);
    }
    to.flush()
}

/// `bytes S-E/T` with S moved by one byte (down, or up from 0); anything unparsable becomes a
/// range starting at 1.
fn shift_content_range(value: &str) -> String {
    let parsed = value
        .trim()
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('-'))
        .and_then(|(start, rest)| Some((start.trim().parse::<u64>().ok()?, rest)));
    match parsed {
        Some((0, rest)) => format!("bytes 1-{rest}"),
        Some((start, rest)) => format!("bytes {}-{rest}", start - 1),
        None => "bytes 1-1/2".to_string(),
    }
}
