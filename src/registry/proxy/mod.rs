//! HTTP proxies chosen per request, as Go's `httpproxy` does (docker, skopeo and crane are Go;
//! SPEC: Networks): `HTTPS_PROXY` for https URLs, `HTTP_PROXY` for http ones, `ALL_PROXY` for
//! either when the first is unset (upper case before lower); `NO_PROXY` entries are host names
//! (the name and its subdomains; a leading `.` for subdomains only), IP addresses, CIDR ranges,
//! any of them with `:port`, or `*`. Loopback is never proxied. ureq reads none of this itself:
//! its own environment lookup is turned off. HTTPS goes through `CONNECT` (ureq's); plain HTTP
//! through an `http://` proxy goes in absolute form ([`absolute_form`]).

pub mod absolute_form;

use std::net::IpAddr;

/// The proxies of the environment, resolved once.
#[derive(Debug, Clone, Default)]
pub struct ProxyRules {
    http: Option<Chosen>,
    https: Option<Chosen>,
    no_proxy: Vec<String>,
}

/// A request's proxy, as errors and `-v` speak of it.
#[derive(Debug, Clone)]
pub struct Via {
    /// `scheme://host:port`, without credentials.
    pub shown: String,
    /// The proxy URL carries `user:password@` (sent as `Proxy-Authorization`).
    pub credentials: bool,
}

#[derive(Debug, Clone)]
struct Chosen {
    proxy: ureq::Proxy,
    /// `scheme://host:port`, without credentials: what messages and `-v` show.
    shown: String,
}

impl ProxyRules {
    /// From environment variables (`get` returns a variable's value).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<ProxyRules, String> {
        let any = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()))
        };
        let all = any(&["ALL_PROXY", "all_proxy"]);
        let chosen = |value: Option<String>| -> Result<Option<Chosen>, String> {
            let Some(v) = value.or_else(|| all.clone()) else {
                return Ok(None);
            };
            let v = v.trim();
            // Go assumes http:// for a proxy written without a scheme.
            let url = if v.contains("://") {
                v.to_string()
            } else {
                format!("http://{v}")
            };
            let proxy =
                ureq::Proxy::new(&url).map_err(|e| format!("proxy {}: {e}", shown(&url)))?;
            Ok(Some(Chosen {
                proxy,
                shown: shown(&url),
            }))
        };
        Ok(ProxyRules {
            http: chosen(any(&["HTTP_PROXY", "http_proxy"]))?,
            https: chosen(any(&["HTTPS_PROXY", "https_proxy"]))?,
            no_proxy: any(&["NO_PROXY", "no_proxy"])
                .map(|v| {
                    v.split(',')
                        .map(|e| e.trim().to_ascii_lowercase())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The proxy for a URL, and how to name it; None to go direct.
    pub fn for_url(&self, url: &str) -> Option<(&ureq::Proxy, &str)> {
        let (scheme, rest) = url.split_once("://")?;
        let chosen = match scheme {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        }?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = split_host_port(authority, if scheme == "https" { 443 } else { 80 });
        if is_loopback(&host) || self.exempt(&host, port) {
            return None;
        }
        Some((&chosen.proxy, &chosen.shown))
    }

    /// The proxy a URL goes through, as messages name it; None to go direct.
    pub fn via(&self, url: &str) -> Option<Via> {
        self.for_url(url).map(|(p, shown)| Via {
            shown: shown.to_string(),
            credentials: p.username().is_some() || p.password().is_some(),
        })
    }

    /// The proxy a plain-HTTP URL is sent to in absolute form: an `http://` proxy chosen for
    /// an `http://` URL. None for anything else.
    pub fn forwards(&self, url: &str) -> Option<&ureq::Proxy> {
        if !url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        {
            return None;
        }
        // ureq connects to a CONNECT proxy through the same resolver and connectors, with
        // the proxy's own `http://` URL: that connection is to the proxy itself, never
        // forwarded to another one (nor given its credentials).
        if self.is_a_proxy(url) {
            return None;
        }
        let (proxy, _) = self.for_url(url)?;
        (proxy.protocol() == ureq::ProxyProtocol::Http).then_some(proxy)
    }

    /// The proxy ureq tunnels a request through with `CONNECT`: None when it goes direct or in
    /// absolute form.
    pub fn tunnel_for(&self, url: &str) -> Option<&ureq::Proxy> {
        if self.forwards(url).is_some() {
            return None;
        }
        self.for_url(url).map(|(p, _)| p)
    }

    /// Is this URL's `host:port` one of the proxies'?
    fn is_a_proxy(&self, url: &str) -> bool {
        let Some((scheme, rest)) = url.split_once("://") else {
            return false;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = split_host_port(authority, if scheme == "https" { 443 } else { 80 });
        [&self.http, &self.https].into_iter().flatten().any(|c| {
            c.proxy
                .host()
                .trim_matches(['[', ']'])
                .eq_ignore_ascii_case(&host)
                && c.proxy.port() == port
        })
    }

    /// Is `host:port` in NO_PROXY?
    fn exempt(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                return match (ip, net.parse::<IpAddr>(), bits.parse::<u8>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                    _ => false,
                };
            }
            let (name, entry_port) = split_host_port(entry, 0);
            if entry_port != 0 && entry_port != port {
                return false;
            }
            if let (Some(ip), Ok(e)) = (ip, name.parse::<IpAddr>()) {
                return ip == e;
            }
            match name.strip_prefix('.') {
                // `.example.com`: subdomains only.
                Some(domain) => host.ends_with(&format!(".{domain}")),
                // `example.com` (or `*.example.com`): the name and its subdomains.
                None => {
                    let name = name.strip_prefix("*.").unwrap_or(&name);
                    host == name || host.ends_with(&format!(".{name}"))
                }
            }
        })
    }
}

/// `scheme://host:port` of a proxy URL, without `user:password@`.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            format!("{scheme}://{}", rest.trim_end_matches('/'))
        }
        None => url.to_string(),
    }
}

/// `host:port`, `[v6]:port`, `host` (then `default`).
fn split_host_port(authority: &str, default: u16) -> (String, u16) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default);
            return (h.to_string(), port);
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(default)),
        _ => (authority.to_string(), default),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(vars: &[(&str, &str)]) -> ProxyRules {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyRules::from_env(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
    }

    fn via(r: &ProxyRules, url: &str) -> Option<String> {
        r.for_url(url).map(|(_, shown)| shown.to_string())
    }

    #[test]
    fn per_scheme_with_all_proxy_as_the_fallback() {
        let r = rules(&[
            ("HTTPS_PROXY", "http://user:secret@tls-proxy:3128"),
            ("all_proxy", "fallback:8080"),
        ]);
        assert_eq!(
            via(&r, "https://reg.example/v2/").as_deref(),
            Some("http://tls-proxy:3128")
        );
        assert_eq!(
            via(&r, "http://reg.example/v2/").as_deref(),
            Some("http://fallback:8080")
        );
        let r = rules(&[("http_proxy", "http://p:1"), ("HTTP_PROXY", "http://P:2")]);
        assert_eq!(via(&r, "http://x/").as_deref(), Some("http://P:2"));
        assert_eq!(via(&r, "https://x/"), None);
    }

    #[test]
    fn loopback_is_never_proxied() {
        let r = rules(&[("HTTPS_PROXY", "http://p:1"), ("HTTP_PROXY", "http://p:1")]);
        for url in [
            "http://127.0.0.1:5000/v2/",
            "https://localhost/v2/",
            "http://[::1]:80/",
            "http://127.8.0.1/",
        ] {
            assert_eq!(via(&r, url), None, "{url}");
        }
    }

    #[test]
    fn no_proxy_forms() {
        let r = rules(&[
            ("HTTPS_PROXY", "http://p:1"),
            (
                "NO_PROXY",
                "corp.example, .internal, 10.0.0.0/8, 192.168.1.7, reg.example:5000, [fd00::1]",
            ),
        ]);
        let direct = [
            "https://corp.example/",
            "https://a.b.corp.example/",
            "https://x.internal/",
            "https://10.2.3.4/",
            "https://192.168.1.7:443/",
            "https://reg.example:5000/",
            "https://[fd00::1]/",
        ];
        for url in direct {
            assert_eq!(via(&r, url), None, "{url}");
        }
        let proxied = [
            "https://notcorp.example/",
            "https://internal/",
            "https://11.0.0.1/",
            "https://reg.example/",
            "https://reg.example:5001/",
        ];
        for url in proxied {
            assert!(via(&r, url).is_some(), "{url}");
        }
        let all = rules(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "*")]);
        assert_eq!(via(&all, "https://anything.example/"), None);
    }

    #[test]
    fn the_connection_to_a_connect_proxy_is_never_forwarded() {
        // Regression: ureq reaches HTTPS_PROXY by its http:// URL through imagec's resolver
        // and connector, which sent it to HTTP_PROXY, with HTTPS_PROXY's credentials.
        let r = rules(&[
            ("HTTP_PROXY", "http://u:pw1@192.0.2.1:1111"),
            ("HTTPS_PROXY", "http://u:pw2@192.0.2.2:2222"),
        ]);
        for own in [
            "http://192.0.2.2:2222",
            "http://192.0.2.2:2222/",
            "http://u:pw2@192.0.2.2:2222/",
            "http://192.0.2.1:1111/",
        ] {
            assert!(r.forwards(own).is_none(), "{own}");
        }
        assert!(r.forwards("http://192.0.2.3:5000/v2/").is_some());
    }

    #[test]
    fn plain_http_goes_in_absolute_form_and_https_through_connect() {
        let r = rules(&[("ALL_PROXY", "http://p:1")]);
        assert!(r.forwards("http://reg.example:5000/v2/").is_some());
        assert!(r.tunnel_for("http://reg.example:5000/v2/").is_none());
        assert!(r.forwards("https://reg.example/v2/").is_none());
        assert!(r.tunnel_for("https://reg.example/v2/").is_some());
        assert!(r.forwards("http://127.0.0.1:5000/v2/").is_none());
        assert!(r.tunnel_for("http://127.0.0.1:5000/v2/").is_none());
        // Another kind of proxy (SOCKS) is left to ureq for either scheme.
        let socks = rules(&[("ALL_PROXY", "socks5://p:1080")]);
        assert!(socks.forwards("http://reg.example/v2/").is_none());
        assert!(socks.tunnel_for("http://reg.example/v2/").is_some());
    }
}
