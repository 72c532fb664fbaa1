//! The one proxy in front of a real registry, streaming, for what a flaky network or an odd
//! server does and the registry cannot be made to do: a connection reset mid-body, a body that
//! stalls mid-way, 5xx/429 answers (with `Retry-After`), a flipped byte, `Range` ignored, a 206
//! with the wrong `Content-Range`, latency added to requests; and for what an old client or
//! registry does: manifests asked for with a schema1-only `Accept`, schema1 served unsigned, a
//! crafted answer for one path, part of a registry opened to everyone by the proxy's own
//! credentials. A test arms faults at runtime; each fires a bounded number of times, on the
//! requests whose path contains a given substring (or is exactly the one given after `=`).
//! Counters say what went over the wire. Request and response heads are read by the same code
//! as the test servers' (`httpd::read_head`).
//!
//! Raw TCP, one request per connection (`Connection: close` to both sides). Response bodies are
//! relayed as they arrive, never buffered whole: tests move 100 MB through it. Listens on
//! 127.0.0.1 only. Bad input never panics: it gets a 400 (a 502 when the upstream fails) or a
//! closed connection. Every connection thread ends when either side stalls for [`IO_TIMEOUT`];
//! the accept thread ends when the [`FaultProxy`] is dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::httpd::{read_head, Head};
use super::schema1;

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
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

#[derive(Default)]
struct State {
    faults: Vec<Fault>,
    exchanges: Vec<Exchange>,
}

struct Fault {
    path_part: String,
    kind: Kind,
    /// Matching requests to let through before it fires.
    skip: u32,
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
    RangedStatus {
        status: u16,
    },
    Flip {
        offset: u64,
    },
    IgnoreRange,
    BadContentRange,
    Stall {
        after: u64,
        hold: Duration,
    },
    CutShort {
        after: u64,
    },
    Accept(String),
    Authorize(String),
    Unsign,
    Throttle {
        bytes_per_sec: u64,
    },
    Delay {
        by: Duration,
    },
    Serve {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

/// One request seen, and the response body bytes sent back for it so far.
struct Exchange {
    method: String,
    path: String,
    /// The `Range` header it carried.
    range: Option<String>,
    body_bytes: Arc<AtomicU64>,
    /// When its connection was accepted, and when its head had come.
    accepted: Instant,
    received: Instant,
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
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
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

    /// Every request from now on: wait `by` before answering or forwarding it (a round trip
    /// to a distant registry).
    pub fn delay(&self, path_part: &str, by: Duration) {
        self.shared.arm(path_part, Kind::Delay { by }, u32::MAX);
    }

    /// As [`FaultProxy::fail_first`], once `skip` matching requests have passed (a signed URL
    /// that expires in the middle of a download).
    pub fn fail_after(&self, path_part: &str, status: u16, skip: u32, times: u32) {
        let kind = Kind::Status {
            status,
            retry_after: None,
        };
        self.shared.arm_after(path_part, kind, skip, times);
    }

    /// The next `times` requests with `Range` (a resume): answer `status` without contacting
    /// the upstream; requests without `Range` pass.
    pub fn fail_ranged(&self, path_part: &str, status: u16, times: u32) {
        self.shared
            .arm(path_part, Kind::RangedStatus { status }, times);
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

    /// The next `times` GETs without `Range` with a 2xx answer: after `n_body_bytes` bytes of
    /// the body, send nothing more for `hold` (a stalled connection), then close.
    pub fn stall_after(&self, path_part: &str, n_body_bytes: u64, hold: Duration, times: u32) {
        let kind = Kind::Stall {
            after: n_body_bytes,
            hold,
        };
        self.shared.arm(path_part, kind, times);
    }

    /// The next `times` GETs with a 2xx answer: relay it without `Content-Length` (a body
    /// delimited by the connection's close, as old proxies send) and close cleanly (FIN) after
    /// `n_body_bytes` bytes: the client sees a body that simply ends early.
    pub fn cut_short(&self, path_part: &str, n_body_bytes: u64, times: u32) {
        let kind = Kind::CutShort {
            after: n_body_bytes,
        };
        self.shared.arm(path_part, kind, times);
    }

    /// Every request from now on: forward it with `Accept: value` instead of the client's (as
    /// an old client, or a proxy that rewrites headers, would ask).
    pub fn rewrite_accept(&self, path_part: &str, value: &str) {
        let value = value.replace(['\r', '\n'], "");
        self.shared.arm(path_part, Kind::Accept(value), u32::MAX);
    }

    /// Every request from now on: forward it with `Authorization: value` instead of the
    /// client's, as a front end that opens part of a registry to everyone would (the
    /// registry behind it asks for a login everywhere else).
    pub fn authorize(&self, path_part: &str, value: &str) {
        let value = value.replace(['\r', '\n'], "");
        self.shared.arm(path_part, Kind::Authorize(value), u32::MAX);
    }

    /// Every signed schema1 manifest from now on: serve it without its signatures, as
    /// `application/vnd.docker.distribution.manifest.v1+json` (as some old registries do).
    pub fn unsign_schema1(&self, path_part: &str) {
        self.shared.arm(path_part, Kind::Unsign, u32::MAX);
    }

    /// Every GET from now on whose path contains `path_part`: relay its body at most
    /// `bytes_per_sec` (a slow link, per connection).
    pub fn throttle(&self, path_part: &str, bytes_per_sec: u64) {
        let kind = Kind::Throttle { bytes_per_sec };
        self.shared.arm(path_part, kind, u32::MAX);
    }

    /// Every request from now on: answer this instead of forwarding (a crafted manifest, say).
    /// `Content-Length` is added unless given (a HEAD answer may name a body it does not send).
    pub fn serve(&self, path_part: &str, status: u16, headers: &[(&str, &str)], body: Vec<u8>) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.replace(['\r', '\n'], "")))
            .collect();
        let kind = Kind::Serve {
            status,
            headers,
            body,
        };
        self.shared.arm(path_part, kind, u32::MAX);
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

    /// The `Range` headers of the GETs whose path contains `path_part`, in order (None for a
    /// GET without one).
    pub fn ranges(&self, path_part: &str) -> Vec<Option<String>> {
        self.shared
            .state()
            .exchanges
            .iter()
            .filter(|e| e.method == "GET" && e.path.contains(path_part))
            .map(|e| e.range.clone())
            .collect()
    }

    /// Every request so far, in the order they came: (method, path).
    pub fn seen(&self) -> Vec<(String, String)> {
        self.shared
            .state()
            .exchanges
            .iter()
            .map(|e| (e.method.clone(), e.path.clone()))
            .collect()
    }

    /// Every request so far, in the order they came: (method, path, when its connection was
    /// accepted, when its head had come). One request per connection.
    pub fn timeline(&self) -> Vec<(String, String, Instant, Instant)> {
        self.shared
            .state()
            .exchanges
            .iter()
            .map(|e| (e.method.clone(), e.path.clone(), e.accepted, e.received))
            .collect()
    }

    /// The most requests it was answering at one time.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
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

/// A proxy in front of `upstream` that sends half of `layer`'s first GET, then nothing for 20 s
/// (a stalled connection), then closes; every other request passes.
pub fn stall_halfway(upstream: &str, layer: &super::Blob) -> FaultProxy {
    let proxy = FaultProxy::start(upstream).expect("starting the fault proxy");
    let half = layer.data.len() as u64 / 2;
    let path = format!("/blobs/{}", layer.digest);
    proxy.stall_after(&path, half, Duration::from_secs(20), 1);
    proxy
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
        self.arm_after(path_part, kind, 0, times);
    }

    fn arm_after(&self, path_part: &str, kind: Kind, skip: u32, times: u32) {
        self.state().faults.push(Fault {
            path_part: path_part.to_string(),
            kind,
            skip,
            left: times,
        });
    }

    /// Use up one firing of the first armed fault for `path` that `wanted` accepts.
    fn take(&self, path: &str, wanted: impl Fn(&Kind) -> bool) -> Option<Kind> {
        let mut state = self.state();
        let fault = state
            .faults
            .iter_mut()
            .find(|f| f.left > 0 && matches_target(&f.path_part, path) && wanted(&f.kind))?;
        if fault.skip > 0 {
            fault.skip -= 1;
            return None;
        }
        fault.left -= 1;
        Some(fault.kind.clone())
    }

    fn record(
        &self,
        method: &str,
        path: &str,
        range: Option<&str>,
        accepted: Instant,
    ) -> Arc<AtomicU64> {
        let body_bytes = Arc::new(AtomicU64::new(0));
        self.state().exchanges.push(Exchange {
            method: method.to_string(),
            path: path.to_string(),
            range: range.map(str::to_string),
            body_bytes: Arc::clone(&body_bytes),
            accepted,
            received: Instant::now(),
        });
        body_bytes
    }
}

/// Does a fault armed for `path_part` apply to `target`: `=/v2/` names one target exactly,
/// anything else is a part of it.
fn matches_target(path_part: &str, target: &str) -> bool {
    match path_part.strip_prefix('=') {
        Some(exact) => target == exact,
        None => target.contains(path_part),
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
        let accepted = Instant::now();
        let shared = Arc::clone(&shared);
        // A thread that cannot be started drops the connection: the client sees a reset.
        let _ = thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || {
                // Errors are a peer going away or sending garbage: the connection just ends.
                let _ = handle(&shared, &stream, accepted);
            });
    }
}

/// Counts one request in flight while it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn handle(shared: &Shared, client: &TcpStream, accepted: Instant) -> io::Result<()> {
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
    // A request is in flight from its head to the end of its answer (a connection opened
    // ahead of its request is not one).
    let _in_flight = InFlight::enter(shared);
    // Faults match the whole target (query included); exchanges are recorded by path.
    let path = target.split('?').next().unwrap_or("").to_string();
    let sent = shared.record(&method, &path, request.header("range"), accepted);

    // Latency: the request waits before anything else happens to it (a distant registry).
    if let Some(Kind::Delay { by }) = shared.take(&target, |k| matches!(k, Kind::Delay { .. })) {
        thread::sleep(by);
    }
    let status_fault = shared.take(&target, |k| matches!(k, Kind::Status { .. }));
    if let Some(Kind::Status {
        status,
        retry_after,
    }) = status_fault
    {
        return answer(&mut to_client, &method, status, retry_after, &sent);
    }
    if request.header("range").is_some() {
        if let Some(Kind::RangedStatus { status }) =
            shared.take(&target, |k| matches!(k, Kind::RangedStatus { .. }))
        {
            return answer(&mut to_client, &method, status, None, &sent);
        }
    }
    if let Some(Kind::Serve {
        status,
        headers,
        body,
    }) = shared.take(&target, |k| matches!(k, Kind::Serve { .. }))
    {
        let mut head = format!("HTTP/1.1 {status} Served\r\n");
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        to_client.write_all(head.as_bytes())?;
        if method != "HEAD" {
            to_client.write_all(&body)?;
            sent.fetch_add(body.len() as u64, Ordering::SeqCst);
        }
        return to_client.flush();
    }
    let ranged = request.header("range").is_some();
    let drop_range = ranged && shared.take(&target, |k| *k == Kind::IgnoreRange).is_some();
    let accept = match shared.take(&target, |k| matches!(k, Kind::Accept(_))) {
        Some(Kind::Accept(v)) => Some(v),
        _ => None,
    };
    let authorize = match shared.take(&target, |k| matches!(k, Kind::Authorize(_))) {
        Some(Kind::Authorize(v)) => Some(v),
        _ => None,
    };

    // Forward the request, asking the upstream to close after its answer.
    let upstream = match connect(&shared.upstream) {
        Ok(s) => s,
        Err(_) => return answer(&mut to_client, &method, 502, None, &sent),
    };
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in &request.headers {
        if hop_by_hop(name)
            || (drop_range && name.eq_ignore_ascii_case("range"))
            || (accept.is_some() && name.eq_ignore_ascii_case("accept"))
            || (authorize.is_some() && name.eq_ignore_ascii_case("authorization"))
        {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(v) = &accept {
        head.push_str(&format!("Accept: {v}\r\n"));
    }
    if let Some(v) = &authorize {
        head.push_str(&format!("Authorization: {v}\r\n"));
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
    let signed = response
        .header("content-type")
        .is_some_and(|t| t.trim() == schema1::SIGNED);
    if signed && shared.take(&target, |k| *k == Kind::Unsign).is_some() {
        return unsigned(
            &mut to_client,
            &method,
            &response,
            &mut from_upstream,
            &sent,
        );
    }
    let bad_range = ranged
        && status == 206
        && shared
            .take(&target, |k| *k == Kind::BadContentRange)
            .is_some();
    let cut_at = (method == "GET" && (200..300).contains(&status))
        .then(|| shared.take(&target, |k| matches!(k, Kind::CutShort { .. })))
        .flatten()
        .and_then(|k| match k {
            Kind::CutShort { after } => Some(after),
            _ => None,
        });
    let mut head = format!("{}\r\n", response.first);
    for (name, value) in &response.headers {
        if hop_by_hop(name) || (cut_at.is_some() && name.eq_ignore_ascii_case("content-length")) {
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
        .then(|| shared.take(&target, |k| matches!(k, Kind::Reset { .. })))
        .flatten()
        .and_then(|k| match k {
            Kind::Reset { after } => Some(after),
            _ => None,
        });
    let stall = (faultable && !ranged)
        .then(|| shared.take(&target, |k| matches!(k, Kind::Stall { .. })))
        .flatten()
        .and_then(|k| match k {
            Kind::Stall { after, hold } => Some((after, hold)),
            _ => None,
        });
    let reset_at = reset_at.or(stall.map(|(after, _)| after));

    let flip_at = faultable
        .then(|| shared.take(&target, |k| matches!(k, Kind::Flip { .. })))
        .flatten()
        .and_then(|k| match k {
            Kind::Flip { offset } => Some(offset),
            _ => None,
        });
    let throttle = faultable
        .then(|| shared.take(&target, |k| matches!(k, Kind::Throttle { .. })))
        .flatten()
        .and_then(|k| match k {
            Kind::Throttle { bytes_per_sec } => Some(bytes_per_sec.max(1)),
            _ => None,
        });
    let started = std::time::Instant::now();
    // With a length, stop there; without one (chunked), the upstream closes after the body.
    let limit = response.content_length().unwrap_or(u64::MAX);
    let stop_at = limit
        .min(reset_at.unwrap_or(u64::MAX))
        .min(cut_at.unwrap_or(u64::MAX)); // a cut body then ends like a whole one (FIN)
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
        // Throttled: slices of at most a tenth of a second's worth, each sent when due.
        for slice in buf[..n].chunks(throttle.map_or(n, |r| (r / 10).max(1) as usize)) {
            if let Some(rate) = throttle {
                let due = Duration::from_secs_f64(done as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    thread::sleep(wait);
                }
            }
            to_client.write_all(slice)?;
            done += slice.len() as u64;
            sent.fetch_add(slice.len() as u64, Ordering::SeqCst);
        }
    }
    to_client.flush()?;
    if let Some((_, hold)) = stall {
        // The connection stays open and silent; then it closes (FIN, not RST).
        thread::sleep(hold);
        return Ok(());
    }
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

/// A signed schema1 manifest answered without its signatures, as `v1+json`: the body (a
/// manifest, small) is read whole, rewritten, and sent with its new length.
fn unsigned(
    to_client: &mut impl Write,
    method: &str,
    response: &Head,
    from_upstream: &mut impl Read,
    sent: &AtomicU64,
) -> io::Result<()> {
    let mut body = Vec::new();
    if method != "HEAD" {
        from_upstream.take(MAX_BODY).read_to_end(&mut body)?;
        body = schema1::unsign(&body);
    }
    let mut head = format!("{}\r\n", response.first);
    for (name, value) in &response.headers {
        if hop_by_hop(name) || name.eq_ignore_ascii_case("content-type") {
            continue;
        }
        if method != "HEAD" && name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Type: {}\r\n", schema1::UNSIGNED));
    if method != "HEAD" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    to_client.write_all(head.as_bytes())?;
    to_client.write_all(&body)?;
    sent.fetch_add(body.len() as u64, Ordering::SeqCst);
    to_client.flush()
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
