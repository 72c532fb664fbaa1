//! A forward HTTP proxy for the proxy tests (SPEC: Networks), as squid behaves by default:
//! `CONNECT host:port` tunnels, plain HTTP requests in absolute form (`GET http://host/path`)
//! forwarded on kept-alive connections, origin-form requests refused with a 400 (they are not
//! proxy requests), an optional Basic `Proxy-Authorization` it demands (407 otherwise), logs
//! of every CONNECT target, forwarded request and client connection, and a host map, so that a
//! name that resolves nowhere (`registry.imagec.test`) reaches a test registry only through the
//! proxy. Listens on 127.0.0.1; one thread per connection, each bounded by timeouts.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::httpd::read_head;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub struct HttpProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    connects: Vec<String>,
    forwarded: Vec<String>,
    connections: usize,
}

struct Shared {
    map: Vec<(String, String)>,
    want: Option<String>,
    log: Arc<Mutex<Log>>,
}

impl Shared {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the proxy connects for `host:port`.
    fn upstream<'a>(&'a self, target: &'a str) -> &'a str {
        self.map
            .iter()
            .find(|(name, _)| name == target)
            .map(|(_, to)| to.as_str())
            .unwrap_or(target)
    }
}

impl HttpProxy {
    /// `map`: (name, `127.0.0.1:PORT`) pairs a CONNECT target's host:port is replaced by;
    /// `credentials`: the `user:password` it demands, if any.
    pub fn start(map: Vec<(String, String)>, credentials: Option<&str>) -> io::Result<HttpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Log::default()));
        let want = credentials.map(|c| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(c)
            )
        });
        let shared = Arc::new(Shared {
            map,
            want,
            log: log.clone(),
        });
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                shared.log().connections += 1;
                let shared = shared.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        Ok(HttpProxy { addr, log })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every CONNECT target so far, as the client sent it (`host:port`).
    pub fn connects(&self) -> Vec<String> {
        self.log().connects.clone()
    }

    /// Every request forwarded in absolute form so far: `METHOD http://host/path`.
    pub fn forwarded(&self) -> Vec<String> {
        self.log().forwarded.clone()
    }

    /// How many client connections the proxy has accepted.
    pub fn connections(&self) -> usize {
        self.log().connections
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn serve(client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = client.try_clone()?;
    let mut reader = BufReader::new(client.try_clone()?);
    // One upstream connection per client connection, kept alive while the client keeps its.
    let mut upstream: Option<(String, TcpStream, BufReader<TcpStream>)> = None;
    loop {
        let head = match read_head(&mut reader) {
            Ok(head) => head,
            // The client closed its connection, or sent garbage: done either way.
            Err(_) => return Ok(()),
        };
        let mut parts = head.first.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if method == "CONNECT" {
            return tunnel(reader, writer, target, &head, shared);
        }
        let body = read_body(&mut reader, &head)?;
        let Some(rest) = target.strip_prefix("http://") else {
            // squid: "Invalid URL". An origin-form request is for a server, not a proxy.
            writer.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        };
        shared.log().forwarded.push(format!("{method} {target}"));
        if !authorized(&head, shared) {
            writer.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
            )?;
            continue;
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if upstream.as_ref().is_none_or(|(a, _, _)| a != authority) {
            let Ok(up) = TcpStream::connect(shared.upstream(authority)) else {
                writer.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
                return Ok(());
            };
            up.set_read_timeout(Some(IO_TIMEOUT))?;
            let up_reader = BufReader::new(up.try_clone()?);
            upstream = Some((authority.to_string(), up, up_reader));
        }
        let Some((_, up, up_reader)) = upstream.as_mut() else {
            return Ok(());
        };
        let mut request = format!("{method} {path} HTTP/1.1\r\n");
        for (name, value) in &head.headers {
            if !name.eq_ignore_ascii_case("proxy-authorization")
                && !name.eq_ignore_ascii_case("proxy-connection")
            {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        request.push_str("\r\n");
        up.write_all(request.as_bytes())?;
        up.write_all(&body)?;
        let answer = read_head(up_reader)?;
        let mut out = format!("{}\r\n", answer.first);
        for (name, value) in &answer.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        writer.write_all(out.as_bytes())?;
        let status: u16 = answer
            .first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let no_body = method == "HEAD" || status / 100 == 1 || status == 204 || status == 304;
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if no_body {
        } else if chunked {
            relay_chunked(up_reader, &mut writer)?;
        } else if let Some(n) = answer.content_length() {
            let copied = io::copy(&mut up_reader.take(n), &mut writer)?;
            if copied < n {
                return Ok(());
            }
        } else {
            // Delimited by the upstream closing: so is the answer to the client.
            io::copy(up_reader, &mut writer)?;
            return Ok(());
        }
        if answer
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return Ok(());
        }
    }
}

fn authorized(head: &super::httpd::Head, shared: &Shared) -> bool {
    match &shared.want {
        Some(want) => head.header("proxy-authorization") == Some(want.as_str()),
        None => true,
    }
}

/// A request body of `Content-Length` bytes (imagec sends no chunked request bodies).
fn read_body(reader: &mut impl BufRead, head: &super::httpd::Head) -> io::Result<Vec<u8>> {
    let n = head.content_length().unwrap_or(0).min(1024 * 1024);
    let mut body = vec![0; n as usize];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// Copy a chunked body as it is framed: size lines, data, the last chunk and the trailers.
fn relay_chunked(from: &mut impl BufRead, to: &mut impl Write) -> io::Result<()> {
    loop {
        let mut line = String::new();
        from.read_line(&mut line)?;
        to.write_all(line.as_bytes())?;
        let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                from.read_line(&mut trailer)?;
                to.write_all(trailer.as_bytes())?;
                if trailer.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        io::copy(&mut from.take(size + 2), to)?;
    }
}

/// `CONNECT target`: a tunnel to the (mapped) target, after the credentials check.
fn tunnel(
    mut reader: BufReader<TcpStream>,
    mut writer: TcpStream,
    target: &str,
    head: &super::httpd::Head,
    shared: &Shared,
) -> io::Result<()> {
    shared.log().connects.push(target.to_string());
    if !authorized(head, shared) {
        writer.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
        )?;
        return Ok(());
    }
    let Ok(up) = TcpStream::connect(shared.upstream(target)) else {
        writer.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    up.set_read_timeout(Some(IO_TIMEOUT))?;
    writer.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    // Bytes the client sent after its head are in the reader's buffer: copy from the reader.
    let mut up_writer = up.try_clone()?;
    let to_up = thread::spawn(move || {
        let _ = io::copy(&mut reader, &mut up_writer);
        let _ = up_writer.shutdown(std::net::Shutdown::Write);
    });
    let mut up_reader = up;
    let _ = io::copy(&mut up_reader, &mut writer);
    let _ = writer.shutdown(std::net::Shutdown::Write);
    let _ = to_up.join();
    Ok(())
}
