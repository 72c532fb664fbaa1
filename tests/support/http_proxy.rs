//! A forward HTTP proxy for the proxy tests (SPEC: Networks): `CONNECT host:port` tunnels, an
//! optional Basic `Proxy-Authorization` it demands (407 otherwise), a log of every CONNECT
//! target, and a host map, so that a name that resolves nowhere (`registry.imagec.test`)
//! reaches a test registry only through the proxy. Listens on 127.0.0.1; one thread per
//! connection, each bounded by timeouts.

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::httpd::read_head;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub struct HttpProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl HttpProxy {
    /// `map`: (name, `127.0.0.1:PORT`) pairs a CONNECT target's host:port is replaced by;
    /// `credentials`: the `user:password` it demands, if any.
    pub fn start(map: Vec<(String, String)>, credentials: Option<&str>) -> io::Result<HttpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let want = credentials.map(|c| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(c)
            )
        });
        let shared = Arc::new((map, want, log.clone()));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &shared.0, shared.1.as_deref(), &shared.2);
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
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn serve(
    client: TcpStream,
    map: &[(String, String)],
    want: Option<&str>,
    log: &Mutex<Vec<String>>,
) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = client.try_clone()?;
    let mut reader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut reader)?;
    let mut parts = head.first.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "CONNECT" {
        writer.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    }
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(target.to_string());
    if let Some(want) = want {
        if head.header("proxy-authorization") != Some(want) {
            writer.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
            )?;
            return Ok(());
        }
    }
    let upstream = map
        .iter()
        .find(|(name, _)| name == target)
        .map(|(_, to)| to.as_str())
        .unwrap_or(target);
    let Ok(up) = TcpStream::connect(upstream) else {
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
