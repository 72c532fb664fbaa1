//! `--timeout` bounds the whole run. A real registry cannot be made to stall, so this uses a
//! small fake that answers `/v2/` and then never answers a manifest request.

mod support;

use std::time::{Duration, Instant};

use support::httpd::{self, Request, Response};
use support::*;

#[test]
fn a_stalled_registry_is_given_up_on_at_the_timeout() {
    let addr = httpd::serve(|req: &Request| {
        if req.path() == "/v2/" {
            return Response::json(200, &serde_json::json!({}));
        }
        // Longer than the test's --timeout, shorter than the harness's I/O timeout.
        std::thread::sleep(Duration::from_secs(20));
        httpd::error_response(404, "NAME_UNKNOWN", "too late")
    })
    .unwrap();
    let start = Instant::now();
    let out = run(imagec()
        .args(["pull", "--timeout", "2", "--dest"])
        .arg(support::temp_dir())
        .arg(format!("{addr}/slow/app:1")))
    .expect(1);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "took {took:?}: {}",
        out.stderr
    );
    assert!(out.stderr.contains("--timeout"), "{}", out.stderr);
}
