//! What a new user meets first, pinned as they see it: a failed pull that leaves no store,
//! `pull --json` records for every reference, options a command would ignore refused, hints
//! where the next step is not obvious, and help pages that end with examples and exit codes.

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn fresh_dest() -> PathBuf {
    world().temp_dir().join("store")
}

fn small(seed: u64) -> Image {
    image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(seed, 4000)],
    )
}

/// Every file under `root` with its bytes, to show a store was left exactly as it was.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// A pull that failed before any blob arrived used to leave a fresh, empty layout at --dest.
#[test]
fn a_pull_that_fails_before_any_blob_creates_no_store() {
    let reg = world().plain().host();
    let dest = fresh_dest();
    // Not found (exit 4) and refused (exit 3): no directory appears.
    run(imagec()
        .args(["pull", "--dest"])
        .arg(&dest)
        .arg(format!("{reg}/newcomer/none-such:1")))
    .expect(4);
    assert!(!dest.exists());
    push_image(&reg, "auth/newcomer", "1", &small(1));
    run(imagec()
        .args(["pull", "--dest"])
        .arg(&dest)
        .arg(format!("{}/auth/newcomer:1", world().basic().host())))
    .expect(3);
    assert!(!dest.exists());

    // A store that existed stays exactly as it was.
    push_image(&reg, "newcomer/ok", "1", &small(2));
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(format!("{reg}/newcomer/ok:1")))
    .expect(0);
    let before = snapshot(&dest);
    run(imagec()
        .args(["pull", "--dest"])
        .arg(&dest)
        .arg(format!("{reg}/newcomer/none-such:1")))
    .expect(4);
    assert_eq!(snapshot(&dest), before);
}

#[test]
fn pull_json_writes_a_record_for_every_reference_in_order() {
    let reg = world().plain().host();
    push_image(&reg, "newcomer/json-a", "1", &small(3));
    push_image(&reg, "newcomer/json-b", "1", &small(4));
    let names = [
        format!("{reg}/newcomer/json-a:1"),
        format!("{reg}/newcomer/json-missing:1"),
        format!("{reg}/newcomer/json-b:1"),
    ];
    let out = run(imagec()
        .args(["pull", "--json", "--dest"])
        .arg(fresh_dest())
        .args(&names))
    .expect(4);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    for (line, name) in lines.iter().zip(&names) {
        assert_eq!(line["reference"], name.as_str());
    }
    assert!(lines[0]["digest"].is_string());
    assert!(lines[0].get("error").is_none());
    assert_eq!(lines[1]["error"]["code"], 4);
    let message = lines[1]["error"]["message"].as_str().unwrap();
    assert!(message.contains("not found"), "{message}");
    // The message is the one stderr shows, without the reference it is about.
    assert!(out.stderr.contains(message), "{}", out.stderr);
    assert!(lines[2]["digest"].is_string());
}

#[test]
fn options_a_command_would_ignore_are_refused() {
    let name = format!("{}/newcomer/opts:1", world().plain().host());
    for (command, flag) in [
        ("layers", "-j2"),
        ("layers", "--format=preserve"),
        ("layers", "-q"),
        ("inspect", "-j2"),
        ("inspect", "--format=oci"),
        ("inspect", "-q"),
        ("images", "-v"),
        ("images", "--platform=linux/amd64"),
        ("rm", "-j2"),
        ("gc", "-u=x"),
    ] {
        let out = run(imagec().args([command, flag, &name])).expect(2);
        assert!(
            out.stderr.contains("unexpected argument"),
            "{command} {flag}: {}",
            out.stderr
        );
    }
    // --json with -q, and --raw with --json, say they conflict.
    let out = run(imagec().args(["pull", "--json", "-q", &name])).expect(2);
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
    let out = run(imagec().args(["inspect", "--raw", "--json", &name])).expect(2);
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
}

#[test]
fn every_help_page_ends_with_examples_and_the_exit_codes() {
    let top = run(imagec().arg("--help")).expect(0);
    assert!(
        top.stdout.trim_end().ends_with("130 interrupted (Ctrl-C)"),
        "{}",
        top.stdout
    );
    for command in [
        "pull", "layers", "inspect", "tags", "unpack", "images", "rm", "gc",
    ] {
        let out = run(imagec().args([command, "--help"])).expect(0);
        let help = out.stdout.trim_end();
        assert!(
            help.ends_with("130 interrupted (Ctrl-C)"),
            "{command}: {help}"
        );
        let examples = help
            .split("Examples:\n")
            .nth(1)
            .expect("an Examples section");
        let lines: Vec<&str> = examples.lines().take_while(|l| !l.is_empty()).collect();
        assert!((2..=3).contains(&lines.len()), "{command}: {lines:?}");
        for l in lines {
            assert!(
                l.starts_with(&format!("  imagec {command}")),
                "{command}: {l}"
            );
        }
    }
}

#[test]
fn gc_without_a_store_has_nothing_to_do() {
    let dest = fresh_dest();
    let out = run(imagec().args(["gc", "--dest"]).arg(&dest)).expect(0);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("freed 0 blobs"), "{}", out.stderr);
    let out = run(imagec().args(["gc", "--json", "--dest"]).arg(&dest)).expect(0);
    assert_eq!(out.json()["bytes_freed"], 0);
    assert!(!dest.exists());
}

#[test]
fn a_reference_written_as_a_url_says_to_drop_the_scheme() {
    let out = run(imagec().args(["pull", "http://127.0.0.1:5000/team/app:1"])).expect(2);
    assert!(
        out.stderr
            .contains(r#"drop "http://" and write "127.0.0.1:5000/team/app:1""#),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_tag_says_the_repository_exists_and_lists_its_tags() {
    let reg = world().plain().host();
    let img = small(5);
    for t in ["1.0", "1.1"] {
        push_image(&reg, "newcomer/tagged", t, &img);
    }
    let name = format!("{reg}/newcomer/tagged:nope");
    let out = run(imagec()
        .args(["pull", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(4);
    let line = out.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{line}");
    // The reference is named once (the context), the tag once, and what exists.
    assert_eq!(line.matches("newcomer/tagged").count(), 2, "{line}");
    assert!(
        line.ends_with(&format!(
            "no tag \"nope\" in {reg}/newcomer/tagged; its tags: 1.0, 1.1"
        )),
        "{line}"
    );

    // More than ten: the first ten, and where to see the rest.
    for i in 0..11 {
        push_image(&reg, "newcomer/many-tags", &format!("t{i:02}"), &img);
    }
    let out = run(imagec()
        .arg("layers")
        .arg(format!("{reg}/newcomer/many-tags:nope")))
    .expect(4);
    assert!(
        out.stderr.contains(&format!(
            "(imagec tags {reg}/newcomer/many-tags lists them all)"
        )),
        "{}",
        out.stderr
    );
    // A repository that does not exist keeps the registry's answer.
    let out = run(imagec()
        .arg("layers")
        .arg(format!("{reg}/newcomer/no-repo:1")))
    .expect(4);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    assert!(!out.stderr.contains("its tags"), "{}", out.stderr);
}

#[test]
fn images_shows_the_registry_digest_and_the_stored_one_where_converted() {
    let reg = world().plain().host();
    let digest = push_image(&reg, "newcomer/digests", "1", &small(6));
    let dest = fresh_dest();
    let name = format!("{reg}/newcomer/digests:1");
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let stored = entry(&dest, &name)["digest"].as_str().unwrap().to_string();
    assert_ne!(stored, digest, "a docker manifest is converted");
    let out = run(imagec().args(["images", "--dest"]).arg(&dest)).expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(head, ["REFERENCE", "DIGEST", "STORED", "PLATFORM", "SIZE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[1], &digest[..19]);
    assert_eq!(row[2], &stored[..19]);

    // The stored digest is not the registry's: pulling by it says which one to use.
    let by_stored = format!("{reg}/newcomer/digests@{stored}");
    let out = run(imagec().args(["pull", "--dest"]).arg(&dest).arg(&by_stored)).expect(4);
    assert!(
        out.stderr.contains(&format!(
            "the registry knows that image as {digest}: pull {reg}/newcomer/digests@{digest}"
        )),
        "{}",
        out.stderr
    );

    // Nothing converted: no STORED column.
    let dest = fresh_dest();
    run(imagec()
        .args(["pull", "-q", "--format", "preserve", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let out = run(imagec().args(["images", "--dest"]).arg(&dest)).expect(0);
    assert!(!out.stdout.contains("STORED"), "{}", out.stdout);
    assert!(out.stdout.contains(&digest[..19]), "{}", out.stdout);
}
