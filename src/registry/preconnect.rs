//! Connections opened ahead. While the first request to a registry is in flight (the
//! manifest, which is also the probe), the connections its blob transfers will want are
//! opened beside it, so that each transfer after the manifest does not first wait a round trip
//! for its TCP handshake: what a browser's preconnect does. The agents' connector takes one of
//! these before it opens a connection of its own; TLS, when the URL wants it, is set up on it
//! as on any other.
//!
//! They are opened only when that request has no answer [`OPEN_AFTER`] after its own
//! connection was made (a registry on this machine or its network has answered by then), and
//! only for hosts reached directly: a request that goes through a proxy never gets one, and
//! nothing is opened ahead to a host the proxy rules send through a proxy. A connection
//! opened ahead and not taken within [`FRESH_FOR`], or closed by the server meanwhile, is
//! dropped rather than used.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, LazyBuffers, NextTimeout,
    RustlsConnector, Transport,
};

/// How long the first request to a host may take, from the moment its connection is made,
/// before connections are opened ahead: a registry on this machine or its network has answered
/// by then, and the connections would cost this process and the registry more than they save.
/// One further away takes a round trip for the answer, and the connections opened ahead (a
/// round trip each, side by side) are ready about this much after it.
pub const OPEN_AFTER: Duration = Duration::from_millis(5);

/// The most connections opened ahead to one host: a pull at a high `--jobs` opens the rest as
/// it goes, as before (an image with one layer would leave most of 63 unused).
pub const MAX_AHEAD: usize = 8;

/// A connection opened ahead is used within this long or not at all: servers close idle
/// connections (nginx after 60 s by default, some load balancers sooner).
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// Dropped when the request that asked for connections ahead has its answer.
#[must_use]
pub struct Opening(Arc<AtomicBool>);

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A host's wish for connections ahead, until its first request's connection is made.
#[derive(Debug)]
struct Want {
    n: usize,
    timeout: Duration,
    answered: Arc<AtomicBool>,
}

/// The connections opened ahead, shared by every agent of a run.
#[derive(Debug, Default)]
pub struct Ahead {
    ready: Mutex<Vec<(SocketAddr, TcpStream, Instant)>>,
    /// By authority (`host[:port]`, lowercase, as URLs name it), every host asked for once
    /// per run: its wish until its first connection is made (None after, or for none).
    wants: Mutex<HashMap<String, Option<Want>>>,
}

impl Ahead {
    /// The request about to be sent to `authority` is followed by others: once its own
    /// connection is made, open `n` more (at most [`MAX_AHEAD`]) unless it has its answer
    /// within [`OPEN_AFTER`]; the returned guard says it has when dropped. Once per authority
    /// and run; failures are left for the requests themselves to meet and report.
    pub fn want(&self, authority: &str, n: usize, timeout: Duration) -> Opening {
        let answered = Arc::new(AtomicBool::new(false));
        let want = (n > 0).then(|| Want {
            n: n.min(MAX_AHEAD),
            timeout,
            answered: answered.clone(),
        });
        lock(&self.wants)
            .entry(authority.to_ascii_lowercase())
            .or_insert(want);
        Opening(answered)
    }

    /// The connector made a connection of its own to `authority`, whose addresses are
    /// `addrs`: when that host wants connections ahead, start opening them (after
    /// [`OPEN_AFTER`], if its request has no answer by then).
    fn connected(self: &Arc<Self>, authority: &str, addrs: &[SocketAddr]) {
        let want = lock(&self.wants)
            .get_mut(&authority.to_ascii_lowercase())
            .and_then(Option::take);
        let Some(want) = want else {
            return;
        };
        let addrs = addrs.to_vec();
        let ahead = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("preconnect".into())
            .spawn(move || {
                std::thread::sleep(OPEN_AFTER);
                if want.answered.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::scope(|s| {
                    for _ in 0..want.n {
                        // A thread that cannot be started (a pids limit) is one fewer.
                        let _ = std::thread::Builder::new().spawn_scoped(s, || {
                            // The first address that connects, in the resolver's order (ureq's).
                            for addr in &addrs {
                                if let Ok(stream) = TcpStream::connect_timeout(addr, want.timeout) {
                                    let _ = stream.set_nodelay(true);
                                    ahead.put(*addr, stream);
                                    return;
                                }
                            }
                        });
                    }
                });
            });
        // No thread (a pids limit): nothing is opened ahead, and the transfers connect as
        // they go. Not logged: `-v` lines must not depend on how fast a registry answered.
        drop(spawned);
    }

    fn put(&self, addr: SocketAddr, stream: TcpStream) {
        lock(&self.ready).push((addr, stream, Instant::now()));
    }

    /// A fresh, still open connection to one of `addrs`, if one was opened ahead.
    fn take(&self, addrs: &[SocketAddr]) -> Option<TcpStream> {
        let mut ready = lock(&self.ready);
        ready.retain(|(_, _, at)| at.elapsed() < FRESH_FOR);
        while let Some(i) = ready.iter().position(|(a, _, _)| addrs.contains(a)) {
            let (_, stream, _) = ready.swap_remove(i);
            if still_open(&stream) {
                return Some(stream);
            }
        }
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Nothing to read and no end of stream: the server has not closed it (nor sent anything,
/// which before a request would be a protocol error).
fn still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let idle = matches!(
        stream.peek(&mut [0u8; 1]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    );
    stream.set_nonblocking(false).is_ok() && idle
}

/// ureq's own connector chain, except that a direct connection to an address with a
/// connection opened ahead takes that one (TLS set up on it when the URL is HTTPS).
///
/// A connection from here registers no shutdown handle with the agent (ureq keeps that call
/// to itself); imagec never shuts an agent down, so nothing waits on one.
#[derive(Debug)]
pub struct PreconnectingConnector {
    ahead: Arc<Ahead>,
    tls: RustlsConnector,
    default: DefaultConnector,
}

impl PreconnectingConnector {
    pub fn new(ahead: Arc<Ahead>) -> PreconnectingConnector {
        PreconnectingConnector {
            ahead,
            tls: RustlsConnector::default(),
            default: DefaultConnector::new(),
        }
    }
}

impl Connector<()> for PreconnectingConnector {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        // A SOCKS or CONNECT proxy for this request: the connection is to the proxy.
        let direct = details.config.proxy().is_none();
        if direct {
            if let Some(stream) = self.ahead.take(&details.addrs) {
                let buffers = LazyBuffers::new(
                    details.config.input_buffer_size(),
                    details.config.output_buffer_size(),
                );
                let tcp = OpenedAhead {
                    stream,
                    buffers,
                    read_timeout: None,
                    write_timeout: None,
                };
                return Ok(self
                    .tls
                    .connect(details, Some(tcp))?
                    .map(|t| Box::new(t) as Box<dyn Transport>));
            }
        }
        let made = self.default.connect(details, chained)?;
        if made.is_some() && direct {
            if let Some(authority) = details.uri.authority() {
                self.ahead.connected(authority.as_str(), &details.addrs);
            }
        }
        Ok(made)
    }
}

/// A connection opened ahead, as a transport: plain TCP with the per-read and per-write
/// timeouts ureq asks for (ureq's own TCP transport cannot be made from a socket outside it).
#[derive(Debug)]
struct OpenedAhead {
    stream: TcpStream,
    buffers: LazyBuffers,
    /// What the socket is set to now, so that it is set again only when that changes.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Transport for OpenedAhead {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let limit = limit_of(&timeout)?;
        if self.write_timeout != limit {
            self.stream.set_write_timeout(limit)?;
            self.write_timeout = limit;
        }
        let output = &self.buffers.output()[..amount];
        (&self.stream)
            .write_all(output)
            .map_err(|e| io_error(e, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let limit = limit_of(&timeout)?;
        if self.read_timeout != limit {
            self.stream.set_read_timeout(limit)?;
            self.read_timeout = limit;
        }
        let input = self.buffers.input_append_buf();
        // A signal (the Ctrl-C handler) interrupts a read that has a timeout even under
        // SA_RESTART: read again (cancellation is checked between reads, above this).
        let read = loop {
            match (&self.stream).read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let amount = read.map_err(|e| io_error(e, timeout))?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        still_open(&self.stream)
    }
}

/// The socket timeout for what is left of `timeout`; a timeout error once none is.
fn limit_of(timeout: &NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|d| *d))
}

/// A socket timeout is ureq's timeout error, as its own transport reports it.
fn io_error(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ureq::Error::Timeout(timeout.reason),
        _ => ureq::Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn takes_open_connections_to_the_address_asked_only() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let ahead = Ahead::default();
        ahead.put(addr, TcpStream::connect(addr).unwrap());
        let (accepted, _) = listener.accept().unwrap();
        assert!(ahead.take(&[other]).is_none());
        assert!(ahead.take(&[addr]).is_some());
        assert!(ahead.take(&[addr]).is_none(), "each is taken once");

        // One the server closed meanwhile is dropped, not handed out.
        ahead.put(addr, TcpStream::connect(addr).unwrap());
        drop(accepted);
        let (second, _) = listener.accept().unwrap();
        drop(second);
        std::thread::sleep(Duration::from_millis(50));
        assert!(ahead.take(&[addr]).is_none());
    }
}
