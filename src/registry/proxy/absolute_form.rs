//! Plain HTTP through an `http://` proxy in absolute form (RFC 9112 section 3.2.2), as Go's
//! transport and curl send it: the connection goes to the proxy, and each request line names
//! the whole URL (`GET http://registry:5000/v2/ HTTP/1.1`) with the proxy's credentials beside
//! it. ureq 3 only knows `CONNECT` for an HTTP proxy, which proxies allowing `CONNECT` to port
//! 443 alone (squid's default) refuse for a registry on port 5000, so three small parts
//! plug into ureq's connection chain:
//! - a resolver that, for such a URL, resolves the proxy's host instead of the registry's (a
//!   name only the proxy can resolve, as on many corporate networks, still works);
//! - a connector that wraps the plain TCP connection to the proxy;
//! - a transport that rewrites the request line each request starts with, from origin form
//!   into absolute form, and adds `Proxy-Authorization`.
//!
//! ureq writes a request's head in one piece at the start of the output buffer, then its body,
//! then reads the answer: so the first bytes sent after a connection opens, or after an answer
//! was read, are a request line. (It would read before the body only for `Expect:
//! 100-continue`, which imagec never sends.) The connection ureq makes to a `CONNECT` proxy
//! for HTTPS goes through the same resolver and connector under the proxy's own `http://`
//! URL: [`ProxyRules::forwards`] leaves that one alone. Keep-alive, chunked bodies, timeouts and the pool are ureq's
//! as for any connection; the pool keys connections by the registry's origin, which always
//! goes the same way.

use base64::Engine as _;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

use super::ProxyRules;

/// Resolves the proxy's address for URLs that go to it in absolute form.
#[derive(Debug)]
pub struct ProxyResolver {
    rules: ProxyRules,
    inner: DefaultResolver,
}

impl ProxyResolver {
    pub fn new(rules: ProxyRules) -> ProxyResolver {
        ProxyResolver {
            rules,
            inner: DefaultResolver::default(),
        }
    }
}

impl Resolver for ProxyResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        match self.rules.forwards(&uri.to_string()) {
            Some(proxy) => self.inner.resolve(proxy.uri(), config, timeout),
            None => self.inner.resolve(uri, config, timeout),
        }
    }
}

/// Wraps the connection to the proxy (opened by ureq's TCP connector, from the resolver's
/// addresses) in an [`AbsoluteForm`] transport.
#[derive(Debug)]
pub struct ProxyConnector {
    rules: ProxyRules,
}

impl ProxyConnector {
    pub fn new(rules: ProxyRules) -> ProxyConnector {
        ProxyConnector { rules }
    }
}

impl Connector<Box<dyn Transport>> for ProxyConnector {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        let Some(proxy) = self.rules.forwards(&details.uri.to_string()) else {
            return Ok(Some(transport));
        };
        let Some(authority) = details.uri.authority() else {
            return Ok(Some(transport));
        };
        let credentials = (proxy.username().is_some() || proxy.password().is_some()).then(|| {
            let pair = format!(
                "{}:{}",
                proxy.username().unwrap_or_default(),
                proxy.password().unwrap_or_default()
            );
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(Some(Box::new(AbsoluteForm {
            inner: transport,
            origin: format!("http://{authority}"),
            credentials,
            at_request: true,
        })))
    }
}

/// A connection to a forward proxy: the request line of each request goes out in absolute
/// form, followed by `Proxy-Authorization` when the proxy URL has credentials.
struct AbsoluteForm {
    inner: Box<dyn Transport>,
    /// `http://host[:port]` of the registry the requests are for.
    origin: String,
    /// `Basic ...`: a secret, never shown (see the Debug impl).
    credentials: Option<String>,
    /// The next bytes sent begin a request (nothing sent yet, or an answer read since).
    at_request: bool,
}

impl std::fmt::Debug for AbsoluteForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbsoluteForm")
            .field("origin", &self.origin)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Transport for AbsoluteForm {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if !self.at_request || amount == 0 {
            return self.inner.transmit_output(amount, timeout);
        }
        self.at_request = false;
        let output = self.inner.buffers().output();
        let Some(head) =
            absolute_head(&output[..amount], &self.origin, self.credentials.as_deref())
        else {
            return self.inner.transmit_output(amount, timeout);
        };
        // The longer head goes out through the same output buffer, in as many pieces as it
        // takes (one in practice: a head is far smaller than the buffer).
        let mut rest = head.as_slice();
        while !rest.is_empty() {
            let output = self.inner.buffers().output();
            let n = rest.len().min(output.len());
            output[..n].copy_from_slice(&rest[..n]);
            self.inner.transmit_output(n, timeout)?;
            rest = &rest[n..];
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.at_request = true;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// `sent` with its request line in absolute form and `Proxy-Authorization` after it; None
/// when it does not start with an origin-form request line (then it goes out unchanged).
fn absolute_head(sent: &[u8], origin: &str, credentials: Option<&str>) -> Option<Vec<u8>> {
    let line_end = sent.windows(2).position(|w| w == b"\r\n")?;
    let line = &sent[..line_end];
    let space = line.iter().position(|b| *b == b' ')?;
    if line.get(space + 1) != Some(&b'/') {
        return None;
    }
    let mut head = Vec::with_capacity(sent.len() + origin.len() + 64);
    head.extend_from_slice(&line[..=space]);
    head.extend_from_slice(origin.as_bytes());
    head.extend_from_slice(&line[space + 1..]);
    head.extend_from_slice(b"\r\n");
    if let Some(c) = credentials {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(c.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(&sent[line_end + 2..]);
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_become_absolute() {
        let sent = b"GET /v2/a/manifests/1 HTTP/1.1\r\nHost: reg:5000\r\n\r\n";
        let head = absolute_head(sent, "http://reg:5000", Some("Basic eDp5")).unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET http://reg:5000/v2/a/manifests/1 HTTP/1.1\r\n\
             Proxy-Authorization: Basic eDp5\r\nHost: reg:5000\r\n\r\n"
        );
        let post = b"POST /token HTTP/1.1\r\nContent-Length: 3\r\n\r\na=b";
        let head = absolute_head(post, "http://auth", None).unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST http://auth/token HTTP/1.1\r\nContent-Length: 3\r\n\r\na=b"
        );
    }

    #[test]
    fn a_connect_proxys_own_address_is_resolved_as_itself() {
        let rules = ProxyRules::from_env(|k| match k {
            "HTTP_PROXY" => Some("http://u:pw1@192.0.2.1:1111".into()),
            "HTTPS_PROXY" => Some("http://u:pw2@192.0.2.2:2222".into()),
            _ => None,
        })
        .unwrap();
        let resolver = ProxyResolver::new(rules.clone());
        let config = ureq::config::Config::default();
        let resolve = |uri: &str| {
            resolver
                .resolve(&uri.parse().unwrap(), &config, NextTimeout::default())
                .unwrap()[0]
                .to_string()
        };
        let https_proxy = rules.for_url("https://reg.example/v2/").unwrap().0;
        assert_eq!(resolve(&https_proxy.uri().to_string()), "192.0.2.2:2222");
        assert_eq!(resolve("http://reg.example:5000/v2/"), "192.0.2.1:1111");
        assert_eq!(resolve("http://192.0.2.9:5000/v2/"), "192.0.2.1:1111");
    }

    #[test]
    fn what_is_not_an_origin_form_line_goes_out_unchanged() {
        assert_eq!(
            absolute_head(b"GET http://x/ HTTP/1.1\r\n\r\n", "http://x", None),
            None
        );
        assert_eq!(absolute_head(b"some body bytes", "http://x", None), None);
        assert_eq!(absolute_head(b"", "http://x", None), None);
    }
}
