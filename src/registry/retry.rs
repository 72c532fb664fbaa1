//! When to try again: one pure classifier over errors, the backoff schedule, and the one loop
//! that every retried operation goes through ([`RetryPolicy::run`]: manifests, tokens, blob
//! streams), which checks the deadline before each wait and, when it gives up, says how many
//! attempts it made and for how long (SPEC: Registry protocol, transient failures; `--retries`).

use std::time::{Duration, Instant};

use crate::report::Reporter;

/// First backoff step; doubles per attempt. 500 ms keeps a 5-attempt run of refused
/// connections well inside SPEC's "fails within about a minute". The test suite sets
/// `IMAGEC_RETRY_BASE_MS=0` (read by the settings) so that retries cost no wall time.
pub const DEFAULT_BASE: Duration = Duration::from_millis(500);
/// No single wait is longer than this, whatever the server's Retry-After says.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// Is this HTTP status worth another attempt?
pub fn status_is_transient(status: u16) -> bool {
    match status {
        // 408 Request Timeout and 429 Too Many Requests say "later", not "never".
        408 | 429 => true,
        // 5xx: the registry or its storage backend failed; Docker Hub and S3-backed registries
        // answer 502/503 under load and succeed on the next attempt.
        500..=599 => true,
        // Every other 4xx is the client's fault or a refusal: asking again changes nothing.
        _ => false,
    }
}

/// Is this I/O error (connecting, or reading a body) worth another attempt?
pub fn io_is_transient(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    // A peer that reset or closed the connection, a timeout, or a truncated stream are what
    // flaky networks and restarting registries produce; permission or format errors are not.
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
            | WouldBlock
            | UnexpectedEof
            | Interrupted
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    )
}

/// Is this I/O error from reading a response body worth another attempt? ureq reports its own
/// failures mid-body (a read that timed out, a stalled stream) as `io::Error`s that wrap a
/// `ureq::Error`, of kind `Other`: judge those by the ureq error inside.
pub fn body_error_is_transient(e: &std::io::Error) -> bool {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
    {
        Some(inner) => ureq_is_transient(inner),
        None => io_is_transient(e.kind()),
    }
}

/// Did the connection never get established (nothing listening, or nothing answering)? Then
/// another scheme on the same host and port cannot do better.
pub fn never_connected(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
        ),
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => true,
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        _ => false,
    }
}

/// Is this ureq error (from sending a request or reading its body) worth another attempt?
pub fn ureq_is_transient(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::Io(e) => io_is_transient(e.kind()),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::BodyStalled => true,
        // A malformed or truncated response head is what a connection cut mid-answer gives.
        ureq::Error::Protocol(_) => true,
        // A certificate the user does not trust will not become trusted by asking again;
        // other TLS failures (handshake EOF from an overloaded load balancer) can pass.
        ureq::Error::Rustls(e) => !matches!(
            e,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
        ),
        ureq::Error::Tls(_) => false,
        // A name that does not resolve is almost always a typo; failing fast is kinder.
        ureq::Error::HostNotFound => false,
        _ => false,
    }
}

/// What a retried operation's error must tell the loop.
pub trait Retryable: Sized + std::fmt::Display {
    /// Worth another attempt?
    fn is_transient(&self) -> bool;
    /// The server's `Retry-After`, when it sent one.
    fn retry_after(&self) -> Option<Duration>;
    /// The final error after `attempts` attempts over `elapsed`.
    fn retried(self, attempts: u32, elapsed: Duration) -> Self;
    /// The error for a run whose `--timeout` of `seconds` would pass during the next wait.
    fn deadline(seconds: u64, last: String) -> Self;
}

/// How often and how patiently to try again; resolved once from the settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (`--retries`), at least 1.
    pub attempts: u32,
    /// First backoff step.
    pub base: Duration,
    /// The whole run's deadline (`--timeout`) and its length.
    pub deadline: Option<(Instant, Duration)>,
}

impl RetryPolicy {
    /// Run `op` until it succeeds, fails finally, runs out of attempts, or the deadline would
    /// pass during the wait. `op` is told nothing and reports nothing about progress; see
    /// [`RetryPolicy::run_resumable`] for operations that continue where they stopped.
    pub fn run<T, E: Retryable>(
        &self,
        what: &str,
        reporter: &dyn Reporter,
        mut op: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_resumable(what, reporter, |_| op())
    }

    /// Like [`RetryPolicy::run`], for an operation that resumes (a blob stream continued with
    /// Range): when an attempt sets its `progressed` flag, the stream is not failing but flaky,
    /// so the count of attempts starts again (the run stays bounded by `--timeout`).
    pub fn run_resumable<T, E: Retryable>(
        &self,
        what: &str,
        reporter: &dyn Reporter,
        mut op: impl FnMut(&mut bool) -> Result<T, E>,
    ) -> Result<T, E> {
        let attempts = self.attempts.max(1);
        let start = Instant::now();
        let mut total = 0;
        let mut attempt = 1;
        loop {
            let mut progressed = false;
            total += 1;
            match op(&mut progressed) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() => {
                    if progressed {
                        attempt = 1;
                    }
                    if attempt >= attempts {
                        return Err(if total > 1 {
                            e.retried(total, start.elapsed())
                        } else {
                            e
                        });
                    }
                    let delay = schedule(self.base, attempt, e.retry_after(), jitter());
                    if let Some((deadline, length)) = self.deadline {
                        if Instant::now() + delay >= deadline {
                            return Err(E::deadline(length.as_secs(), e.to_string()));
                        }
                    }
                    reporter.retrying(what, attempt, delay, &e.to_string());
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The pure part of [`backoff`]: `jitter` in [0, 1).
fn schedule(base: Duration, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    if let Some(after) = retry_after {
        return after.min(MAX_DELAY);
    }
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let exp = exp.min(MAX_DELAY);
    let half = exp / 2;
    half + half.mul_f64(jitter)
}

/// A number in [0, 1) that differs between processes and calls; good enough to spread retries.
fn jitter() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = parse_http_date(value)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(when.saturating_sub(now)))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to seconds since the epoch.
fn parse_http_date(s: &str) -> Option<u64> {
    let rest = s.split_once(", ")?.1;
    let mut parts = rest.split_whitespace();
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    // IMF-fixdate has a four-digit year; anything else is not a date we can trust (and would
    // overflow the arithmetic below).
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    if days < 0 {
        return None;
    }
    Some(days as u64 * 86400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_inside_a_body_is_transient() {
        // Regression: ureq wraps its read timeout in an io::Error of kind Other, which was
        // judged final, so a stalled blob stream was abandoned instead of resumed.
        let stalled = std::io::Error::other(ureq::Error::Timeout(ureq::Timeout::RecvBody));
        assert!(body_error_is_transient(&stalled));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(body_error_is_transient(&reset));
        let perm = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!body_error_is_transient(&perm));
    }

    #[test]
    fn statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status_is_transient(s), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 416] {
            assert!(!status_is_transient(s), "{s}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("Sun, 99 Nov 1994 08:49:37 GMT"), None);
        // Regression: a huge year overflowed (a panic in debug builds).
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 99999999999999 08:49:37 GMT"),
            None
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let base = DEFAULT_BASE;
        assert_eq!(schedule(base, 1, None, 0.0), Duration::from_millis(250));
        assert_eq!(schedule(base, 1, None, 0.999).as_millis(), 499);
        assert_eq!(schedule(base, 3, None, 0.0), Duration::from_secs(1));
        assert_eq!(schedule(base, 30, None, 0.999).as_secs(), 29);
        assert_eq!(
            schedule(base, 1, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(3)
        );
        assert_eq!(
            schedule(base, 1, Some(Duration::from_secs(3600)), 0.5),
            MAX_DELAY
        );
        assert_eq!(
            schedule(Duration::ZERO, 4, Some(Duration::from_secs(3)), 0.5),
            Duration::ZERO
        );
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    proptest::proptest! {
        #[test]
        fn retry_after_never_panics(v in "\\PC{0,40}", w in "[A-Za-z]{3}, [0-9]{1,2} [A-Za-z]{3} -?[0-9]{1,5} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2} GMT") {
            let _ = parse_retry_after(&v);
            let _ = parse_retry_after(&w);
        }
    }
}
