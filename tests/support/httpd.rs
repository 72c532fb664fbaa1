//! A minimal HTTP/1.1 server for the in-process test servers that are servers, not proxies (the
//! token server, a blob store on another origin, a registry that is too slow): one thread per
//! connection, one request per connection, `Connection: close`. Its head parser is also the
//! fault proxy's.
//! Bad input never panics the test process: it gets a 400 or a closed connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Longest request head (request line + headers) a test server reads.
const MAX_HEAD: u64 = 64 * 1024;
/// Longest request body a test server reads (and then ignores).
const MAX_BODY: u64 = 1024 * 1024;
/// A client that stalls this long is dropped, so no connection thread lives forever.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One request: its head, and its body (up to [`MAX_BODY`]).
pub struct Request {
    pub method: String,
    /// The request target as sent: path plus optional `?query`.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query parameters, percent-decoded, in order (a name may repeat, like `scope`).
    pub fn query(&self) -> Vec<(String, String)> {
        let Some((_, query)) = self.target.split_once('?') else {
            return Vec::new();
        };
        pairs(query)
    }

    /// The body's fields as `application/x-www-form-urlencoded` decodes them, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        pairs(&String::from_utf8_lossy(&self.body).replace('+', " "))
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `a=1&b=2` as decoded pairs.
fn pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// What a handler answers; `Content-Length` and `Connection: close` are added when sent.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }
}

/// Binds 127.0.0.1 on a free port and serves `handler` on a detached thread for the rest of the
/// process. Returns the bound address.
pub fn serve<H>(handler: H) -> io::Result<SocketAddr>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let handler = Arc::clone(&handler);
            thread::spawn(move || {
                // Errors here are the client's problem (it went away, sent garbage): drop it.
                let _ = handle_connection(stream, &*handler);
            });
        }
    });
    Ok(addr)
}

fn handle_connection<H>(stream: TcpStream, handler: &H) -> io::Result<()>
where
    H: Fn(&Request) -> Response,
{
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let response = match read_request(&mut reader) {
        Ok(request) => catch_unwind(AssertUnwindSafe(|| handler(&request))).unwrap_or_else(|_| {
            error_response(500, "INTERNAL", "the test server's handler panicked")
        }),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            error_response(400, "BAD_REQUEST", &e.to_string())
        }
        Err(e) => return Err(e),
    };
    write_response(&mut writer, &response)
}

/// A response in the registry's error format, `{"errors":[{"code","message"}]}`.
pub fn error_response(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &serde_json::json!({ "errors": [{ "code": code, "message": message }] }),
    )
}

/// The first line and headers of a request or response.
pub struct Head {
    pub first: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }
}

/// A head of at most [`MAX_HEAD`] bytes, up to its empty line: the one parser the test servers
/// and the fault proxy share. Too long, cut short or without a first line: `InvalidData`.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Head> {
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

fn read_request(reader: &mut impl BufRead) -> io::Result<Request> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    // A TLS ClientHello (record type 0x16) on this plain-HTTP port: answer 400 at once, as
    // Go's and nginx's HTTP servers do, instead of waiting for a request head that never comes.
    if reader.fill_buf()?.first() == Some(&0x16) {
        return Err(invalid("TLS handshake sent to a plain HTTP server"));
    }
    let head = read_head(reader)?;
    let mut request_line = head.first.split(' ');
    let method = request_line.next().unwrap_or("").to_string();
    let target = request_line.next().unwrap_or("").to_string();
    if method.is_empty() || !target.starts_with('/') {
        return Err(invalid("malformed request line"));
    }
    let mut request = Request {
        method,
        target,
        headers: head.headers,
        body: Vec::new(),
    };
    // Read the (small) body: handlers may want it, and closing the socket before it is read
    // would reset the connection under the client before it has read the response.
    let length = request
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    reader
        .take(length.min(MAX_BODY))
        .read_to_end(&mut request.body)?;
    Ok(request)
}

fn write_response(writer: &mut impl Write, response: &Response) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // A handler may set Content-Length itself: a HEAD answer names the size of a body it
    // does not send.
    if !response
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    writer.write_all(head.as_bytes())?;
    writer.write_all(&response.body)?;
    writer.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// `application/x-www-form-urlencoded` decoding; a malformed escape is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
