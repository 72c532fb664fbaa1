//! Credentials never follow a redirect to another origin (SPEC: Registry protocol). A registry
//! with filesystem storage never redirects, so this one is a small fake in front of nothing:
//! it answers like a Basic-auth registry and sends blob GETs to a second server (another port,
//! so another origin), as registries backed by S3 or a CDN do.

mod support;

use std::sync::{Arc, Mutex};

use support::httpd::{self, Request, Response};
use support::*;

/// A request the storage server got: its path and its Authorization header.
type Seen = (String, Option<String>);

#[test]
fn credentials_are_not_sent_to_the_redirect_target() {
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(300, 20_000)],
    );
    let blobs: Vec<(String, Vec<u8>)> = std::iter::once(&img.config)
        .chain(&img.layers)
        .map(|b| (b.digest.clone(), b.data.clone()))
        .collect();

    // The storage server records the Authorization header of every request it gets.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let storage = {
        let seen = seen.clone();
        let blobs = blobs.clone();
        httpd::serve(move |req: &Request| {
            seen.lock().unwrap().push((
                req.path().to_string(),
                req.header("authorization").map(str::to_string),
            ));
            let digest = req.path().trim_start_matches("/storage/");
            match blobs.iter().find(|(d, _)| d == digest) {
                Some((_, data)) => Response {
                    status: 200,
                    headers: vec![],
                    body: data.clone(),
                },
                None => httpd::error_response(404, "BLOB_UNKNOWN", "no such blob"),
            }
        })
        .unwrap()
    };

    let expected_auth = client::basic_auth(USER, PASSWORD);
    let manifest = img.manifest.clone();
    let digest = img.digest.clone();
    let registry = httpd::serve(move |req: &Request| {
        if req.header("authorization") != Some(expected_auth.as_str()) {
            let mut r = httpd::error_response(401, "UNAUTHORIZED", "authentication required");
            r.headers
                .push(("WWW-Authenticate".into(), "Basic realm=\"fake\"".into()));
            return r;
        }
        let path = req.path();
        if path == "/v2/" {
            return Response::json(200, &serde_json::json!({}));
        }
        if path == "/v2/redir/app/manifests/1" {
            return Response {
                status: 200,
                headers: vec![
                    (
                        "Content-Type".into(),
                        "application/vnd.docker.distribution.manifest.v2+json".into(),
                    ),
                    ("Docker-Content-Digest".into(), digest.clone()),
                ],
                body: manifest.clone(),
            };
        }
        if let Some(d) = path.strip_prefix("/v2/redir/app/blobs/") {
            return Response {
                status: 307,
                // A presigned URL, as S3 gives: its query works as a credential.
                headers: vec![(
                    "Location".into(),
                    format!("http://{storage}/storage/{d}?X-Amz-Signature=presigned-secret"),
                )],
                body: vec![],
            };
        }
        httpd::error_response(404, "NAME_UNKNOWN", "unknown")
    })
    .unwrap();

    let dest = world().temp_dir().join("store");
    let name = format!("{registry}/redir/app:1");
    let out = run(imagec()
        .env("IMAGEC_USERNAME", USER)
        .env("IMAGEC_PASSWORD", PASSWORD)
        .args(["pull", "-q", "-v", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    entry(&dest, &name);
    assert!(
        out.stderr.contains("not sending credentials"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("presigned-secret"),
        "a presigned query was logged: {}",
        out.stderr
    );

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        blobs.len(),
        "every blob came from the storage server: {seen:?}"
    );
    for (path, auth) in seen.iter() {
        assert_eq!(
            auth, &None,
            "credentials were sent to the other origin for {path}"
        );
    }
}
