//! `WWW-Authenticate` parsing (RFC 7235 section 4.1, RFC 7230 quoted-string).
//! STUB: to be implemented.

/// One challenge: a scheme (lowercased) and its auth-params (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of a parameter, by case-insensitive name.
    pub fn param(&self, _name: &str) -> Option<&str> {
        todo!()
    }
}

/// All challenges in one header value. Never panics; malformed parts are skipped.
pub fn parse(_header: &str) -> Vec<Challenge> {
    todo!()
}
