//! `imagec rm` and `imagec gc` on stores filled by real pulls: what is removed, what is kept,
//! and that other tools still read what is kept.

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn pull(dest: &Path, name: &str) {
    run(imagec().args(["pull", "-q", "--dest"]).arg(dest).arg(name)).expect(0);
}

/// Two images sharing a base layer, and a multi-platform one, pulled into one store.
fn filled_store(tag: &str) -> (PathBuf, String, String, Image, Image) {
    let reg = world().plain().host();
    let base = random_layer(1000, 50_000);
    let a = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![base.clone(), random_layer(1001, 3000)],
    );
    let b = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![base, random_layer(1002, 3000)],
    );
    // Repositories of their own per test: GET counts are per repository.
    push_image(&reg, &format!("gc/{tag}-a"), "1", &a);
    push_image(&reg, &format!("gc/{tag}-b"), "1", &b);
    let dest = world().temp_dir().join("store");
    let (na, nb) = (format!("{reg}/gc/{tag}-a:1"), format!("{reg}/gc/{tag}-b:1"));
    pull(&dest, &na);
    pull(&dest, &nb);
    (dest, na, nb, a, b)
}

#[test]
fn rm_removes_entries_and_says_which_were_not_there() {
    let (dest, na, nb, _, _) = filled_store("rm");
    let out = run(imagec()
        .args(["rm", "--json", "--dest"])
        .arg(&dest)
        .arg(&na))
    .expect(0);
    assert_eq!(out.json()[0]["reference"], na.as_str());
    assert_eq!(index(&dest)["manifests"].as_array().unwrap().len(), 1);
    entry(&dest, &nb);
    // A name that is not there: exit 4, and the others in the same call are still removed.
    let out = run(imagec().args(["rm", "--dest"]).arg(&dest).args([&na, &nb])).expect(4);
    assert!(out.stderr.contains(&na), "{}", out.stderr);
    assert!(index(&dest)["manifests"].as_array().unwrap().is_empty());
    run(imagec().args(["rm", "--dest"]).arg(&dest).arg("Not/Valid")).expect(2);
    run(imagec()
        .args(["rm", "--dest"])
        .arg(world().temp_dir().join("none"))
        .arg(&na))
    .expect(4);
}

#[test]
fn gc_deletes_what_no_reference_reaches_and_keeps_the_rest_readable() {
    let (dest, na, nb, a, b) = filled_store("gc");
    let before = blobs(&dest);
    run(imagec().args(["rm", "--dest"]).arg(&dest).arg(&na)).expect(0);

    // --dry-run lists, deletes nothing.
    let dry = run(imagec()
        .args(["gc", "--dry-run", "--json", "--dest"])
        .arg(&dest))
    .expect(0);
    let listed: Vec<String> = dry.json()["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(blobs(&dest), before);

    // What a's pull added and b does not use: its config, its own layer, its manifests
    // (served and converted). The shared base layer stays.
    let mut want: Vec<String> = vec![
        a.config.digest.clone(),
        a.layers[1].digest.clone(),
        a.digest.clone(),
    ];
    let converted_a: Vec<String> = before
        .iter()
        .filter(|d| {
            let j: serde_json::Value =
                serde_json::from_slice(&std::fs::read(blob_path(&dest, d)).unwrap())
                    .unwrap_or_default();
            j["config"]["digest"] == a.config.digest.as_str()
                && j["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        })
        .cloned()
        .collect();
    assert_eq!(converted_a.len(), 1);
    want.extend(converted_a);
    want.sort();
    assert_eq!(listed, want);

    let out = run(imagec().args(["gc", "--dest"]).arg(&dest)).expect(0);
    assert!(out.stderr.contains("freed 4 blobs"), "{}", out.stderr);
    let after = blobs(&dest);
    for d in &want {
        assert!(!after.contains(d), "{d} survived");
    }
    assert!(
        after.contains(&b.layers[0].digest),
        "the shared base layer was deleted"
    );
    assert!(after.contains(&b.digest), "b's served manifest was deleted");
    skopeo_inspect(&dest, &nb, &[]);
    umoci_unpack(&dest, &nb);
    // Nothing left to collect.
    let out = run(imagec().args(["gc", "--json", "--dest"]).arg(&dest)).expect(0);
    assert_eq!(out.json()["blobs"].as_array().unwrap().len(), 0);
    // Pulling a again fetches only what gc took.
    let base_gets = world()
        .plain()
        .count("GET", &format!("/gc/gc-a/blobs/{}", a.layers[0].digest));
    pull(&dest, &na);
    assert_eq!(
        world()
            .plain()
            .count("GET", &format!("/gc/gc-a/blobs/{}", a.layers[0].digest)),
        base_gets
    );
}

#[test]
fn gc_keeps_every_platform_of_an_index_and_the_list_a_platform_came_from() {
    let reg = world().plain().host();
    let amd = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(1010, 2000)],
    );
    let arm = image(
        Format::Docker,
        "linux",
        "arm64/v8",
        vec![random_layer(1011, 2000)],
    );
    let list = push_index(&reg, "gc/multi", "1", &[&amd, &arm], Format::Docker);
    let dest = world().temp_dir().join("store");
    let name = format!("{reg}/gc/multi:1");
    run(imagec()
        .args(["pull", "-q", "--platform", "all", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let single = format!("{reg}/gc/multi:1-arm");
    push_index(&reg, "gc/multi", "1-arm", &[&amd, &arm], Format::Docker);
    run(imagec()
        .args(["pull", "-q", "--platform", "linux/arm64", "--dest"])
        .arg(&dest)
        .arg(&single))
    .expect(0);
    let before = blobs(&dest);
    let out = run(imagec().args(["gc", "--json", "--dest"]).arg(&dest)).expect(0);
    assert_eq!(
        out.json()["blobs"].as_array().unwrap().len(),
        0,
        "{}",
        out.stdout
    );
    assert_eq!(blobs(&dest), before);
    assert!(before.contains(&list));
    // Without the all-platforms entry, amd64's blobs go; arm64's stay (the single entry).
    run(imagec().args(["rm", "--dest"]).arg(&dest).arg(&name)).expect(0);
    run(imagec().args(["gc", "--dest"]).arg(&dest)).expect(0);
    let after = blobs(&dest);
    assert!(!after.contains(&amd.layers[0].digest));
    assert!(after.contains(&arm.layers[0].digest));
    assert!(
        after.contains(&list),
        "the list the single platform came from is kept"
    );
    skopeo_inspect(&dest, &single, &[]);
}

#[test]
fn gc_removes_partials_of_blobs_already_in_place_and_keeps_live_ones() {
    let (dest, _, nb, _, b) = filled_store("partials");
    let partial_dir = dest.join(".imagec/partial");
    let done = partial_dir.join(&b.layers[0].digest[7..]);
    let live = partial_dir.join("ab".repeat(32));
    std::fs::write(&done, b"left over").unwrap();
    std::fs::write(&live, b"half a blob").unwrap();
    run(imagec().args(["gc", "--dest"]).arg(&dest)).expect(0);
    assert!(!done.exists(), "a partial of a blob in place is garbage");
    assert!(
        live.exists(),
        "a recent partial of a missing blob is kept for resuming"
    );
    entry(&dest, &nb);
}

/// One image pulled into a store of its own; returns the store, the name and the image.
fn single_store(tag: &str) -> (PathBuf, String, Image) {
    let reg = world().plain().host();
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(1020 + tag.len() as u64, 4000)],
    );
    push_image(&reg, &format!("gc/{tag}"), "1", &img);
    let dest = world().temp_dir().join("store");
    let name = format!("{reg}/gc/{tag}:1");
    pull(&dest, &name);
    (dest, name, img)
}

/// Rewrite the index entry named `name` with `edit` (as another tool writing the layout would).
fn edit_entry(dest: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut idx = index(dest);
    let e = idx["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap();
    edit(e);
    std::fs::write(dest.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
}

fn gc_dry_run(dest: &Path) -> Vec<String> {
    let out = run(imagec()
        .args(["gc", "--dry-run", "--json", "--dest"])
        .arg(dest))
    .expect(0);
    out.json()["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn gc_keeps_what_an_entry_with_a_sha512_digest_reaches() {
    // Regression: entries whose digest was not sha256 were dropped from the walk, so gc
    // offered to free that image's manifest, config and layers ("would free 5 blobs").
    use sha2::Digest as _;
    let (dest, name, img) = single_store("sha512");
    let manifest_digest = entry(&dest, &name)["digest"].as_str().unwrap().to_string();
    let bytes = std::fs::read(blob_path(&dest, &manifest_digest)).unwrap();
    let hex: String = sha2::Sha512::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::create_dir_all(dest.join("blobs/sha512")).unwrap();
    std::fs::write(dest.join("blobs/sha512").join(&hex), &bytes).unwrap();
    edit_entry(&dest, &name, |e| {
        e["digest"] = format!("sha512:{hex}").into();
        e["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("dev.imagec.source.digest");
    });
    let freed = gc_dry_run(&dest);
    for d in [&img.config.digest, &img.layers[0].digest] {
        assert!(!freed.contains(d), "gc would free {d}: {freed:?}");
    }
    assert!(!freed.iter().any(|d| d.starts_with("sha512:")), "{freed:?}");
    // The sha256 copy of the manifest and the served one are no longer named by anything.
    assert_eq!(freed.len(), 2, "{freed:?}");
    let out = run(imagec().args(["images", "--json", "--dest"]).arg(&dest)).expect(0);
    assert_eq!(out.json()[0]["digest"], format!("sha512:{hex}").as_str());
    assert_eq!(
        out.json()[0]["platforms"],
        serde_json::json!(["linux/amd64"])
    );
    run(imagec().args(["gc", "--dest"]).arg(&dest)).expect(0);
    assert!(dest.join("blobs/sha512").join(&hex).exists());
    assert!(blobs(&dest).contains(&img.layers[0].digest));
}

#[test]
fn gc_keeps_what_an_entry_with_a_partial_platform_reaches() {
    // Regression: an entry whose `platform` lacks `architecture` did not deserialise, so
    // `images` showed an empty table and gc offered to free everything it reached.
    let (dest, name, img) = single_store("partial-platform");
    edit_entry(&dest, &name, |e| {
        e["platform"] = serde_json::json!({ "os": "linux" });
    });
    let out = run(imagec().args(["images", "--json", "--dest"]).arg(&dest)).expect(0);
    let rows = out.json();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["reference"], name.as_str());
    // The config says what the entry leaves out.
    assert_eq!(rows[0]["platforms"], serde_json::json!(["linux/amd64"]));
    assert_eq!(gc_dry_run(&dest), Vec::<String>::new());
    run(imagec().args(["gc", "--dest"]).arg(&dest)).expect(0);
    assert!(blobs(&dest).contains(&img.layers[0].digest));
}

#[test]
fn gc_stops_on_an_entry_it_cannot_read_unless_forced() {
    let (dest, name, img) = single_store("unreadable");
    // An entry that names a layer as if it were a manifest: the walk cannot read it.
    let odd = format!("{}/gc/odd:1", world().plain().host());
    let mut idx = index(&dest);
    idx["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.layers[0].digest,
            "size": img.layers[0].data.len(),
            "annotations": { "org.opencontainers.image.ref.name": odd },
        }));
    std::fs::write(dest.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    run(imagec().args(["rm", "--dest"]).arg(&dest).arg(&name)).expect(0);
    let before = blobs(&dest);

    for args in [&["gc"][..], &["gc", "--dry-run"], &["gc", "--json"]] {
        let out = run(imagec().args(args).arg("--dest").arg(&dest)).expect(1);
        assert!(out.stderr.contains(&odd), "{}", out.stderr);
        assert!(out.stderr.contains("--force"), "{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert_eq!(blobs(&dest), before, "{args:?} deleted something");
    }
    // `images` lists it, with a warning on stderr.
    let out = run(imagec().args(["images", "--json", "--dest"]).arg(&dest)).expect(0);
    assert_eq!(out.json()[0]["reference"], odd.as_str());
    assert!(
        out.stderr.contains("warning") && out.stderr.contains(&odd),
        "{}",
        out.stderr
    );

    // --force collects the rest and keeps what the entry names.
    let out = run(imagec().args(["gc", "--force", "--dest"]).arg(&dest)).expect(0);
    assert!(out.stderr.contains("warning"), "{}", out.stderr);
    let after = blobs(&dest);
    assert!(after.contains(&img.layers[0].digest));
    assert!(!after.contains(&img.config.digest), "{after:?}");
}
