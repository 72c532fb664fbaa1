//! A SOCKS5 proxy for the proxy tests (RFC 1928, no authentication, `CONNECT` only), with a
//! host map like the HTTP proxy's, so that a name that resolves nowhere reaches a test
//! registry only through it, and a log of every target asked for. Listens on 127.0.0.1; one
//! thread per connection, each bounded by timeouts.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SocksProxy {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl SocksProxy {
    /// `map`: (`host:port`, `127.0.0.1:PORT`) pairs a target is replaced by.
    pub fn start(map: Vec<(String, String)>) -> io::Result<SocksProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let targets = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new((map, targets.clone()));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &shared.0, &shared.1);
                });
            }
        });
        Ok(SocksProxy { addr, targets })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every target asked for so far, as `host:port` (a name as sent, or an address).
    pub fn targets(&self) -> Vec<String> {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn serve(
    mut client: TcpStream,
    map: &[(String, String)],
    targets: &Mutex<Vec<String>>,
) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "not SOCKS5");
    // Greeting: version 5, the methods offered; "no authentication" is the one we take.
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting)?;
    let mut methods = vec![0u8; greeting[1] as usize];
    client.read_exact(&mut methods)?;
    if greeting[0] != 5 || !methods.contains(&0) {
        client.write_all(&[5, 0xff])?;
        return Err(invalid());
    }
    client.write_all(&[5, 0])?;
    // Request: version, CONNECT (1), reserved, address type, address, port.
    let mut request = [0u8; 4];
    client.read_exact(&mut request)?;
    if request[0] != 5 || request[1] != 1 {
        client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0])?;
        return Err(invalid());
    }
    let host = match request[3] {
        1 => {
            let mut a = [0u8; 4];
            client.read_exact(&mut a)?;
            Ipv4Addr::from(a).to_string()
        }
        3 => {
            let mut n = [0u8; 1];
            client.read_exact(&mut n)?;
            let mut name = vec![0u8; n[0] as usize];
            client.read_exact(&mut name)?;
            String::from_utf8_lossy(&name).into_owned()
        }
        4 => {
            let mut a = [0u8; 16];
            client.read_exact(&mut a)?;
            format!("[{}]", Ipv6Addr::from(a))
        }
        _ => return Err(invalid()),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port)?;
    let target = format!("{host}:{}", u16::from_be_bytes(port));
    targets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(target.clone());
    let upstream = map
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, to)| to.as_str())
        .unwrap_or(&target);
    let Ok(up) = TcpStream::connect(upstream) else {
        // Reply 5: connection refused.
        client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0])?;
        return Ok(());
    };
    up.set_read_timeout(Some(IO_TIMEOUT))?;
    client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])?;
    let mut from_client = client.try_clone()?;
    let mut to_up = up.try_clone()?;
    let pump = thread::spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_up);
        let _ = to_up.shutdown(std::net::Shutdown::Write);
    });
    let mut from_up = up;
    let _ = io::copy(&mut from_up, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = pump.join();
    Ok(())
}
