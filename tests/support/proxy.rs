//! A proxy in front of a real registry for what the registry cannot be made to do itself:
//! forwarding manifest requests with a schema1-only `Accept` (as an old client or a proxy that
//! rewrites headers would), or serving schema1 manifests unsigned (`v1+json`, as some old
//! registries do). Everything else passes through unchanged. Bodies are buffered: test images
//! are small.

use super::client;
use super::httpd::{self, Request, Response};
use super::schema1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything unchanged (with `start_overriding`, all but what the hook answers).
    Pass,
    /// Ask the registry for manifests with `Accept: ...v1+prettyjws` only.
    Schema1Accept,
    /// Answer schema1 manifests without their signatures, as `v1+json`.
    Unsigned,
}

/// Start a proxy to `upstream` (`host:port`, plain HTTP); returns its `host:port`.
pub fn start(upstream: &str, mode: Mode) -> String {
    start_overriding(upstream, mode, |_| None)
}

/// Like [`start`], but `hook` may answer a request itself (a crafted manifest, say).
pub fn start_overriding<H>(upstream: &str, mode: Mode, hook: H) -> String
where
    H: Fn(&Request) -> Option<Response> + Send + Sync + 'static,
{
    let upstream = upstream.to_string();
    let addr = httpd::serve(move |req: &Request| {
        hook(req).unwrap_or_else(|| forward(&upstream, mode, req))
    })
    .expect("starting the proxy");
    addr.to_string()
}

fn forward(upstream: &str, mode: Mode, req: &Request) -> Response {
    let url = format!("http://{upstream}{}", req.target);
    let agent = client::agent();
    let manifest = req.path().contains("/manifests/");
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("host") && !n.eq_ignore_ascii_case("content-length")
        })
        .filter(|(n, _)| {
            !(manifest && mode == Mode::Schema1Accept && n.eq_ignore_ascii_case("accept"))
        })
        .cloned()
        .collect();
    if manifest && mode == Mode::Schema1Accept {
        headers.push(("Accept".into(), schema1::SIGNED.into()));
    }
    let mut resp = match call_upstream(&agent, &req.method, &url, &headers) {
        Ok(r) => r,
        Err(e) => return httpd::error_response(502, "UPSTREAM", &e.to_string()),
    };
    let mut out_headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            !matches!(
                n,
                "connection" | "transfer-encoding" | "content-length" | "date"
            )
        })
        .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = if req.method == "HEAD" {
        if let Some(l) = length {
            out_headers.push(("Content-Length".into(), l));
        }
        Vec::new()
    } else {
        resp.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_default()
    };
    let is_signed = out_headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("content-type") && v == schema1::SIGNED);
    if mode == Mode::Unsigned && manifest && is_signed {
        for (n, v) in out_headers.iter_mut() {
            if n.eq_ignore_ascii_case("content-type") {
                *v = schema1::UNSIGNED.into();
            }
        }
        if req.method != "HEAD" {
            body = schema1::unsign(&body);
        }
    }
    Response {
        status: resp.status().as_u16(),
        headers: out_headers,
        body,
    }
}

/// A proxy that cuts one blob short: the first GET without `Range` whose path contains
/// `path_part` gets its full headers and only the first half of its body, and then nothing
/// for 20 s (a stalled connection). Every other request is forwarded whole. Returns the proxy's
/// `host:port` and a counter of body bytes it sent.
pub fn start_stalling(
    upstream: &str,
    path_part: &str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the stalling proxy");
    let addr = listener.local_addr().expect("its address").to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let stalled = Arc::new(AtomicBool::new(false));
    let (upstream, path_part, counter) =
        (upstream.to_string(), path_part.to_string(), sent.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (upstream, path_part, sent, stalled) = (
                upstream.clone(),
                path_part.clone(),
                counter.clone(),
                stalled.clone(),
            );
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(30)));
                let mut reader = BufReader::new(stream.try_clone().expect("a stream clone"));
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                let Some(first) = head.first() else { return };
                let mut parts = first.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let headers: Vec<(String, String)> = head[1..]
                    .iter()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
                    .collect();
                let ranged = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("range"));
                let url = format!("http://{upstream}{target}");
                let agent = client::agent();
                let Ok(mut resp) = call_upstream(&agent, method, &url, &headers) else {
                    return;
                };
                let body = if method == "HEAD" {
                    Vec::new()
                } else {
                    resp.body_mut()
                        .with_config()
                        .limit(1 << 30)
                        .read_to_vec()
                        .unwrap_or_default()
                };
                let mut out = stream;
                let mut text = format!("HTTP/1.1 {} X\r\n", resp.status().as_u16());
                for (n, v) in resp.headers() {
                    if matches!(n.as_str(), "connection" | "transfer-encoding") {
                        continue;
                    }
                    text.push_str(&format!("{n}: {}\r\n", v.to_str().unwrap_or("")));
                }
                text.push_str("Connection: close\r\n\r\n");
                let _ = out.write_all(text.as_bytes());
                let cut = method == "GET"
                    && !ranged
                    && target.contains(&path_part)
                    && !stalled.swap(true, Ordering::SeqCst);
                let part = if cut {
                    &body[..body.len() / 2]
                } else {
                    &body[..]
                };
                if out.write_all(part).is_ok() {
                    sent.fetch_add(part.len() as u64, Ordering::SeqCst);
                }
                let _ = out.flush();
                if cut {
                    std::thread::sleep(std::time::Duration::from_secs(20));
                }
            });
        }
    });
    (addr, sent)
}

/// Send `method` (HEAD, else GET) to `url` with `headers`.
fn call_upstream(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(String, String)],
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    match method {
        "HEAD" => headers
            .iter()
            .fold(agent.head(url), |r, (n, v)| r.header(n, v))
            .call(),
        _ => headers
            .iter()
            .fold(agent.get(url), |r, (n, v)| r.header(n, v))
            .call(),
    }
}
