//! `imagec tags` against the real registry: every tag across `Link` pages, the same auth and
//! exit codes as every command, and skopeo's `list-tags` as the oracle.

mod support;

use support::faults::FaultProxy;
use support::*;

const TAGS: [&str; 5] = ["1.0", "1.1", "2.0", "edge", "latest"];

/// A repository with [`TAGS`] on the plain registry (which shares storage with the others).
fn tagged(repo: &str, seed: u64) {
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(seed, 3000)],
    );
    for t in TAGS {
        push_image(&world().plain().host(), repo, t, &img);
    }
}

fn sorted<'a>(tags: &[&'a str]) -> Vec<&'a str> {
    let mut v = tags.to_vec();
    v.sort_unstable();
    v
}

fn skopeo_tags(name: &str) -> Vec<String> {
    let out = oracle(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tags_lists_every_tag_one_per_line_as_skopeo_does() {
    tagged("tags/plain", 1);
    let name = format!("{}/tags/plain", world().plain().host());
    let out = run(imagec().arg("tags").arg(&name)).expect(0);
    let got: Vec<&str> = out.stdout.lines().collect();
    // In the registry's order, as skopeo and crane print them (distribution's is not sorted).
    assert_eq!(got, skopeo_tags(&name));
    assert_eq!(sorted(&got), TAGS);
    assert_eq!(out.stderr, "");

    let out = run(imagec().args(["tags", "--json"]).arg(&name)).expect(0);
    assert_eq!(
        out.json(),
        serde_json::json!({ "repository": name, "tags": got })
    );
}

/// Debian's distribution (2.8) sends every tag in one answer whatever `n` asks, so the pages
/// are served in front of it, shaped as paging registries send them for `n=2`: each `Link` a
/// path with `last=` the page's last tag, the last page without one.
#[test]
fn tags_follows_link_pages_to_the_end() {
    let proxy = FaultProxy::start(&world().plain().host()).unwrap();
    let page = |tags: &str, next: Option<&str>| {
        let body = format!(r#"{{"name":"tags/paged","tags":[{tags}]}}"#).into_bytes();
        let link = next.map(|n| format!("</v2/tags/paged/tags/list?last={n}&n=2>; rel=\"next\""));
        (body, link)
    };
    for (part, tags, next) in [
        ("/tags/list?n=2", r#""1.0","1.1""#, Some("1.1")),
        ("/tags/list?last=1.1&n=2", r#""2.0","edge""#, Some("edge")),
        ("/tags/list?last=edge&n=2", r#""latest""#, None),
    ] {
        let (body, link) = page(tags, next);
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(l) = &link {
            headers.push(("Link", l.as_str()));
        }
        proxy.serve(part, 200, &headers, body);
    }
    let name = format!("{}/tags/paged", proxy.host());
    let out = run(imagec().env("IMAGEC_TAGS_PAGE", "2").arg("tags").arg(&name)).expect(0);
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), TAGS);
    assert_eq!(proxy.requests("GET", "/tags/list"), 3);
}

#[test]
fn tags_of_a_private_repository_use_the_token_and_credentials() {
    tagged("auth/tags-private", 3);
    let name = format!("{}/auth/tags-private", world().token().host());
    let out = run(imagec().arg("tags").arg(&name)).expect(3);
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
    let out = run(imagec()
        .env("IMAGEC_USERNAME", USER)
        .env("IMAGEC_PASSWORD", PASSWORD)
        .arg("tags")
        .arg(&name))
    .expect(0);
    assert_eq!(sorted(&out.stdout.lines().collect::<Vec<_>>()), TAGS);
}

#[test]
fn tags_exit_codes_and_messages() {
    let reg = world().plain().host();
    let out = run(imagec().arg("tags").arg(format!("{reg}/tags/none-such"))).expect(4);
    assert!(
        out.stderr
            .contains(&format!("tag list of {reg}/tags/none-such not found")),
        "{}",
        out.stderr
    );
    let out = run(imagec().arg("tags").arg(format!("{reg}/tags/plain:1.0"))).expect(2);
    assert!(out.stderr.contains("drop \":1.0\""), "{}", out.stderr);
    // Options that do nothing for tags are refused.
    for flag in [
        "--dest=x",
        "--platform=linux/amd64",
        "-q",
        "-j2",
        "--format=oci",
    ] {
        run(imagec()
            .args(["tags", flag])
            .arg(format!("{reg}/tags/plain")))
        .expect(2);
    }
}

/// A `Link` to another origin would carry our credentials somewhere the user did not point
/// us: the listing stops with an error instead.
#[test]
fn a_next_link_to_another_origin_is_refused() {
    let proxy = FaultProxy::start(&world().plain().host()).unwrap();
    proxy.serve(
        "/v2/tags/evil/tags/list",
        200,
        &[
            ("Content-Type", "application/json"),
            (
                "Link",
                "<http://127.0.0.2:9/v2/tags/evil/tags/list?n=1&last=a>; rel=\"next\"",
            ),
        ],
        br#"{"name":"tags/evil","tags":["a"]}"#.to_vec(),
    );
    let out = run(imagec()
        .arg("tags")
        .arg(format!("{}/tags/evil", proxy.host())))
    .expect(1);
    assert!(
        out.stderr.contains("leaves the repository"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}
