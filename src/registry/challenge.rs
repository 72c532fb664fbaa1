//! `WWW-Authenticate` parsing (RFC 7235 section 4.1, RFC 7230 section 3.2.6 quoted-string).
//!
//! This module owns turning a header value into [`Challenge`]s; choosing a scheme and fetching a
//! token is the auth module's business. The grammar (SPEC: Registry protocol):
//!
//! ```text
//! WWW-Authenticate = 1#challenge
//! challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param       = token BWS "=" BWS ( token / quoted-string )
//! ```
//!
//! Commas separate both challenges and the params inside one, so a new challenge is recognised
//! by a token that is *not* followed by `=`. Quoted strings may hold commas, `=` and
//! backslash escapes (distribution's `scope="repository:a/b:pull,push"`). Parsing is lenient and
//! total: a malformed part is skipped up to the next top-level comma, never an error or a panic.

/// One challenge: a scheme (lowercased) and its auth-params (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of a parameter, by case-insensitive name. RFC 7235 allows each name once per
    /// challenge; should a server repeat one, the first wins.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// All challenges in one header value. Never panics; malformed parts are skipped.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut c = Cursor { s: header, pos: 0 };
    let mut out = Vec::new();
    let mut current: Option<Challenge> = None;
    loop {
        // `#rule` lists may have empty elements (RFC 7230 section 7).
        c.skip_while(|ch| is_ows(ch) || ch == ',');
        if c.eof() {
            break;
        }
        let Some(token) = c.token() else {
            c.skip_element();
            continue;
        };
        let after_token = c.pos;
        c.skip_while(is_ows);
        if c.eat('=') {
            // auth-param of the current challenge.
            c.skip_while(is_ows);
            match (c.value(), current.as_mut()) {
                (Some(value), Some(challenge)) if c.at_element_end() => {
                    challenge.params.push((token.to_ascii_lowercase(), value));
                }
                // A bad value, trailing junk, or a param before any scheme.
                _ => c.skip_element(),
            }
            continue;
        }
        // A token not followed by '=' starts a new challenge.
        out.extend(current.take());
        current = Some(Challenge {
            scheme: token.to_ascii_lowercase(),
            params: Vec::new(),
        });
        if c.at_element_end() {
            continue;
        }
        if c.pos == after_token {
            // Something glued to the scheme (`Basic"x"`): not a challenge we can read.
            current = None;
            c.skip_element();
            continue;
        }
        // `Basic abc==`: a token68 stands alone; otherwise what follows are auth-params, which
        // the loop reads next (`realm="x"` also starts like a token68, hence the backtrack).
        let before = c.pos;
        if !(c.token68() && c.at_element_end()) {
            c.pos = before;
        }
    }
    out.extend(current);
    out
}

/// RFC 7230 section 3.2.3: OWS is spaces and horizontal tabs.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 7230 section 3.2.6 tchar.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// RFC 7235 section 2.1 token68 characters (before the trailing `=` padding).
fn is_token68_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/".contains(c)
}

/// A position in the header value; every index it slices at is next to an ASCII delimiter or
/// at an end, so slicing stays on char boundaries.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn eof(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, want: char) -> bool {
        if self.peek() == Some(want) {
            self.pos += want.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.pos]
    }

    fn token(&mut self) -> Option<&'a str> {
        Some(self.skip_while(is_tchar)).filter(|t| !t.is_empty())
    }

    fn token68(&mut self) -> bool {
        let body = self.skip_while(is_token68_char);
        self.skip_while(|c| c == '=');
        !body.is_empty()
    }

    /// After OWS, only a comma or the end may follow a complete element. Consumes the OWS.
    fn at_element_end(&mut self) -> bool {
        self.skip_while(is_ows);
        matches!(self.peek(), None | Some(','))
    }

    /// A param value: a quoted-string, or else an unquoted run. The RFC says the unquoted form
    /// is a token; we also take other visible characters up to the next comma or space, so a
    /// server writing `realm=https://auth/token` unquoted is still understood. For well-formed
    /// input both readings end at the same place.
    fn value(&mut self) -> Option<String> {
        if self.peek() == Some('"') {
            return self.quoted_string();
        }
        let run = self.skip_while(|c| !(is_ows(c) || c == ',' || c == '"' || c.is_control()));
        Some(run.to_string()).filter(|v| !v.is_empty())
    }

    /// `"` *( qdtext / quoted-pair ) `"`, unescaped. None if unterminated.
    fn quoted_string(&mut self) -> Option<String> {
        if !self.eat('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match self.bump()? {
                '"' => return Some(value),
                '\\' => value.push(self.bump()?),
                c => value.push(c),
            }
        }
    }

    /// Skip a malformed element: up to (not including) the next comma outside a quoted string.
    fn skip_element(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ',' => return,
                '"' => {
                    if self.quoted_string().is_none() {
                        return;
                    }
                }
                _ => {
                    self.bump();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ch(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.into(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn docker_hub() {
        let got = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            got,
            vec![ch(
                "bearer",
                &[
                    ("realm", "https://auth.docker.io/token"),
                    ("service", "registry.docker.io"),
                    ("scope", "repository:library/alpine:pull"),
                ]
            )]
        );
        assert_eq!(got[0].param("Realm"), Some("https://auth.docker.io/token"));
        assert_eq!(got[0].param("missing"), None);
    }

    #[test]
    fn ghcr() {
        let got = parse(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:owner/repo:pull""#,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].param("service"), Some("ghcr.io"));
        assert_eq!(got[0].param("scope"), Some("repository:owner/repo:pull"));
    }

    #[test]
    fn distribution_insufficient_scope() {
        let got = parse(
            r#"Bearer realm="http://127.0.0.1:5001/auth",service="Docker registry",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(
            got,
            vec![ch(
                "bearer",
                &[
                    ("realm", "http://127.0.0.1:5001/auth"),
                    ("service", "Docker registry"),
                    ("scope", "repository:a/b:pull,push"),
                    ("error", "insufficient_scope"),
                ]
            )]
        );
    }

    #[test]
    fn basic_realm() {
        assert_eq!(
            parse(r#"Basic realm="Registry Realm""#),
            vec![ch("basic", &[("realm", "Registry Realm")])]
        );
    }

    #[test]
    fn escapes_and_delimiters_inside_quotes() {
        let got = parse(r#"Bearer realm="a \"quoted\" \\ path", scope="x=1, y=2""#);
        assert_eq!(
            got,
            vec![ch(
                "bearer",
                &[("realm", r#"a "quoted" \ path"#), ("scope", "x=1, y=2")]
            )]
        );
    }

    #[test]
    fn several_challenges_and_token68() {
        let got = parse(
            r#"Basic realm="x", NEGOTIATE abc+/9==, Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            got,
            vec![
                ch("basic", &[("realm", "x")]),
                ch("negotiate", &[]),
                ch(
                    "bearer",
                    &[
                        ("realm", "https://auth/token"),
                        ("service", "reg"),
                        ("scope", "repository:a/b:pull")
                    ]
                ),
            ]
        );
        assert_eq!(parse("Basic abc=="), vec![ch("basic", &[])]);
        assert_eq!(parse("Basic"), vec![ch("basic", &[])]);
        assert_eq!(
            parse("Basic, Bearer"),
            vec![ch("basic", &[]), ch("bearer", &[])]
        );
    }

    #[test]
    fn whitespace_tokens_and_case() {
        let got = parse("  bEaReR   Realm = \"r\" ,\tService=svc ,, ERROR = invalid_token  ");
        assert_eq!(
            got,
            vec![ch(
                "bearer",
                &[
                    ("realm", "r"),
                    ("service", "svc"),
                    ("error", "invalid_token")
                ]
            )]
        );
        // Unquoted URL, which some servers send although it is not an RFC token.
        assert_eq!(
            parse("Bearer realm=https://auth.example/token,service=x"),
            vec![ch(
                "bearer",
                &[("realm", "https://auth.example/token"), ("service", "x")]
            )]
        );
    }

    #[test]
    fn empty_and_garbage() {
        assert_eq!(parse(""), vec![]);
        assert_eq!(parse("   ,  , "), vec![]);
        assert_eq!(parse("realm=\"x\""), vec![], "a param without a scheme");
        assert_eq!(parse("\"just a string\""), vec![]);
        assert_eq!(parse("=,=,=\"\\"), vec![]);
        // The bad part is skipped, the rest survives.
        // The quote closes before `s`, leaving junk glued to the value: the param is dropped.
        assert_eq!(
            parse(r#"Bearer realm="unterminated, service="s""#),
            vec![ch("bearer", &[])],
        );
        assert_eq!(
            parse(r#"Bearer realm=a b, service="s""#),
            vec![ch("bearer", &[("service", "s")])]
        );
        assert_eq!(
            parse(r#"Bearer realm=, service="s""#),
            vec![ch("bearer", &[("service", "s")])]
        );
        assert_eq!(
            parse(r#"Bearer realm="x"junk, service="s""#),
            vec![ch("bearer", &[("service", "s")])]
        );
        assert_eq!(
            parse(r#"Basic"x", Bearer realm="r""#),
            vec![ch("bearer", &[("realm", "r")])]
        );
        assert_eq!(parse(r#"Bearer realm="ends in \"#), vec![ch("bearer", &[])]);
        assert_eq!(
            parse("Bearer realm=\"ü\u{1F600}\""),
            vec![ch("bearer", &[("realm", "ü\u{1F600}")])]
        );
    }

    fn quote(v: &str) -> String {
        let mut out = String::from("\"");
        for c in v.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }

    fn challenges() -> impl Strategy<Value = Vec<Challenge>> {
        let value = prop_oneof!["[a-zA-Z0-9 ,=\"\\\\/:;_.-]{0,24}", "\\PC{0,12}",];
        let params = prop::collection::vec(("[a-zA-Z][a-zA-Z0-9_-]{0,8}", value), 0..5);
        let challenge = ("[a-zA-Z][a-zA-Z0-9!#$%&'*+.^_`|~-]{0,10}", params);
        prop::collection::vec(challenge, 0..4).prop_map(|list| {
            list.into_iter()
                .map(|(scheme, params)| Challenge { scheme, params })
                .collect()
        })
    }

    fn render(list: &[Challenge]) -> String {
        list.iter()
            .map(|c| {
                let params: Vec<String> = c
                    .params
                    .iter()
                    .map(|(n, v)| format!("{n}={}", quote(v)))
                    .collect();
                if params.is_empty() {
                    c.scheme.clone()
                } else {
                    format!("{} {}", c.scheme, params.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_header_like_noise(s in "[a-zA-Z =,\"\\\\\t/+ü]{0,60}") {
            let _ = parse(&s);
        }

        #[test]
        fn generated_challenges_round_trip(list in challenges()) {
            let header = render(&list);
            let want: Vec<Challenge> = list
                .iter()
                .map(|c| Challenge {
                    scheme: c.scheme.to_ascii_lowercase(),
                    params: c
                        .params
                        .iter()
                        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                        .collect(),
                })
                .collect();
            prop_assert_eq!(parse(&header), want, "header: {}", header);
        }
    }
}
