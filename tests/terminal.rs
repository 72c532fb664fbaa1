//! What a terminal shows, through a real pseudo-terminal: bars that fit its width, redraws
//! capped, bars frozen at their true values on Ctrl-C, `TERM=dumb` as plain lines, and the
//! `--password-stdin` prompt (SPEC: Output).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::faults::FaultProxy;
use support::pty::{screen, spawn, On};
use support::*;

const STDERR_ONLY: On = On {
    stdin: false,
    stdout: false,
};

/// An image of two layers whose second stalls halfway for `hold` (then the connection closes
/// and imagec resumes it), so that a pull shows bars for a while.
fn slow_image(repo: &str, seed: u64, hold: Duration) -> (FaultProxy, String, Image) {
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![
            random_layer(seed, 3_000_000),
            random_layer(seed + 1, 4_000_000),
        ],
    );
    push_image(&world().plain().host(), repo, "1", &img);
    let proxy = FaultProxy::start(&world().plain().host()).unwrap();
    let layer = &img.layers[1];
    proxy.stall_after(
        &format!("/blobs/{}", layer.digest),
        layer.data.len() as u64 / 2,
        hold,
        1,
    );
    let name = format!("{}/{repo}:1", proxy.host());
    (proxy, name, img)
}

/// A pull (on a terminal) of a two-layer image (2 MB and `second` bytes) through a proxy that
/// sends each blob at `rate` bytes a second.
fn throttled_pull(repo: &str, seed: u64, second: usize, rate: u64) -> (FaultProxy, Command) {
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![
            random_layer(seed, 2_000_000),
            random_layer(seed + 1, second),
        ],
    );
    push_image(&world().plain().host(), repo, "1", &img);
    let proxy = FaultProxy::start(&world().plain().host()).unwrap();
    proxy.throttle("/blobs/", rate);
    let mut cmd = imagec();
    on_terminal(&mut cmd)
        .args(["pull", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg(format!("{}/{repo}:1", proxy.host()));
    (proxy, cmd)
}

fn on_terminal(cmd: &mut Command) -> &mut Command {
    cmd.env("TERM", "xterm-256color")
}

/// Each piece of text between line breaks and cursor movements: what one terminal line holds.
fn segments(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // An escape sequence ends at its final letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            '\r' | '\n' => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Every terminal row that starts a bar (`total`, a stage's total, or a blob's 12 hex digits
/// and a space), as
/// the terminal lays text out: indicatif pads each line with spaces to the width and lets the
/// terminal wrap, so a row is `cols` characters of a segment.
fn bar_rows(bytes: &[u8], cols: usize) -> Vec<String> {
    let is_bar = |row: &str| {
        ["total ", "unpacking ", "reading ", "saving "]
            .iter()
            .any(|p| row.starts_with(p))
            || (row.len() > 13
                && row.as_bytes()[..12].iter().all(u8::is_ascii_hexdigit)
                && row.as_bytes()[12] == b' ')
    };
    let mut rows = Vec::new();
    for s in segments(bytes) {
        let chars: Vec<char> = s.chars().collect();
        for chunk in chars.chunks(cols) {
            let row: String = chunk.iter().collect();
            if is_bar(&row) {
                rows.push(row);
            }
        }
    }
    rows
}

/// At 60 columns every bar wrapped onto two lines; after the pull the screen holds one line
/// per blob, the total and the summary, each within the width.
#[test]
fn bars_fit_the_terminal_width_and_the_screen_ends_clean() {
    for cols in [60u16, 100, 40] {
        let (_proxy, name, img) = slow_image(
            &format!("term/width-{cols}"),
            7000 + cols as u64,
            Duration::from_millis(1200),
        );
        let dest = world().temp_dir().join("store");
        let mut cmd = imagec();
        on_terminal(&mut cmd)
            .args(["pull", "--dest"])
            .arg(&dest)
            .arg(&name);
        let (status, bytes) =
            spawn(&mut cmd, cols, 30, STDERR_ONLY).finish(Duration::from_secs(60));
        assert!(status.success(), "{}", String::from_utf8_lossy(&bytes));
        for row in bar_rows(&bytes, cols as usize) {
            assert!(
                row.trim_end().chars().count() < cols as usize,
                "{cols} columns: a bar as wide as the terminal wraps: {row:?}"
            );
        }
        let shown = screen(&bytes, cols as usize);
        let text = shown.join("\n");
        for l in &img.layers {
            let short = &l.digest["sha256:".len()..][..12];
            assert_eq!(
                shown
                    .iter()
                    .filter(|line| line.starts_with(&format!("{short} ")))
                    .count(),
                1,
                "{cols} columns: one line for {short}:\n{text}"
            );
        }
        // Two layers, the config and the total.
        let done: Vec<&String> = shown.iter().filter(|l| l.contains(" done (")).collect();
        assert_eq!(done.len(), 4, "{cols} columns:\n{text}");
        // Bars and summary agree on the figures (human_size, one decimal).
        assert!(
            text.contains("done (4.0 MB)") && text.contains("done (3.0 MB)"),
            "{cols} columns:\n{text}"
        );
        // The summary comes last (a plain line, wrapped by the terminal where it is long).
        // (Rows are compared without spaces: a row that wrapped at a space loses it.)
        let unwrapped: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let summary = unwrapped.find("Pulled").expect(&text);
        let want: String = format!("Pulled {name} (2 layers, 0 already present; 7.0 MB")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        assert!(
            unwrapped[summary..].starts_with(&want),
            "{cols} columns:\n{text}"
        );
        // No frame showed a rate of zero or an ETA of nothing before bytes arrived.
        let raw = String::from_utf8_lossy(&bytes);
        assert!(!raw.contains(" 0 B/s"), "{raw}");
        assert!(!raw.contains("eta 0s"), "{raw}");
    }
}

/// After the window narrows, every later frame fits the new width (the bars are laid out
/// from the width at each frame).
#[test]
fn bars_follow_a_resize() {
    let (_proxy, mut cmd) = throttled_pull("term/resize", 7500, 2_500_000, 1_000_000);
    let run = spawn(&mut cmd, 120, 30, STDERR_ONLY);
    assert!(run.wait_for("total", Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(500));
    run.resize(50, 30);
    let resized = Instant::now() + Duration::from_millis(250);
    let (status, _, run) = run.finish_keeping(Duration::from_secs(60));
    assert!(status.success());
    let after = run.output_between(resized, Instant::now());
    let rows = bar_rows(&after, 50);
    assert!(!rows.is_empty(), "no frame after the resize");
    for row in rows {
        assert!(
            row.trim_end().chars().count() < 50,
            "after the resize: {row:?}"
        );
    }
}

/// Bars were redrawn about 48 times a second; SPEC asks for at most about 10. Measured over
/// the middle of a pull throttled to take a few seconds (indicatif allows a burst of frames
/// after an idle moment, at the start).
#[test]
fn redraws_are_capped_near_ten_a_second() {
    let (_proxy, mut cmd) = throttled_pull("term/rate", 7100, 3_000_000, 800_000);
    let start = Instant::now();
    let (status, all, run) =
        spawn(&mut cmd, 120, 30, STDERR_ONLY).finish_keeping(Duration::from_secs(60));
    let took = start.elapsed();
    assert!(status.success());
    assert!(
        took > Duration::from_secs(3),
        "the throttle did not hold: {took:?}"
    );
    let (from, to) = (
        start + Duration::from_secs(1),
        start + took - Duration::from_millis(500),
    );
    // Every frame redraws the total line once.
    let frames = String::from_utf8_lossy(&run.output_between(from, to))
        .matches("total")
        .count();
    let window = (to - from).as_secs_f64();
    let per_second = frames as f64 / window;
    eprintln!(
        "{frames} frames in {window:.2} s: {per_second:.1}/s; {} bytes to the terminal in {:.2} s",
        all.len(),
        took.as_secs_f64()
    );
    assert!(per_second <= 11.0, "{frames} frames in {window:.2} s");
    assert!(
        per_second >= 3.0,
        "the bars were hardly drawn: {frames} frames in {window:.2} s"
    );
}

/// On Ctrl-C the total sat at 100% with "1.99 GB/s" after 151 of 599 MB, and a bar was drawn
/// twice: the bars must stop at their true values before the message.
#[test]
fn ctrl_c_freezes_the_bars_at_their_true_values() {
    let (_proxy, name, img) = slow_image("term/interrupt", 7200, Duration::from_secs(20));
    let dest = world().temp_dir().join("store");
    let mut cmd = imagec();
    on_terminal(&mut cmd)
        .args(["pull", "--dest"])
        .arg(&dest)
        .arg(&name);
    let run = spawn(&mut cmd, 100, 30, STDERR_ONLY);
    let stalled = &img.layers[1].digest["sha256:".len()..][..12];
    assert!(
        run.wait_for("done (3.0 MB)", Duration::from_secs(30)),
        "{}",
        String::from_utf8_lossy(&run.output())
    );
    // The stalled layer is at half; give the bars a frame to show it.
    std::thread::sleep(Duration::from_millis(400));
    let killed = Command::new("kill")
        .args(["-INT", &run.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, bytes) = run.finish(Duration::from_secs(10));
    let shown = screen(&bytes, 100);
    assert_eq!(status.code(), Some(130), "{}", shown.join("\n"));
    let text = shown.join("\n");
    assert_eq!(
        shown
            .iter()
            .filter(|l| l.starts_with(&format!("{stalled} ")))
            .count(),
        1,
        "one line for the stalled layer:\n{text}"
    );
    let total = shown.iter().find(|l| l.starts_with("total")).expect(&text);
    // 3.0 MB + half of 4.0 MB arrived: the total says so and no more.
    assert!(total.contains("5.0 MB/7.0 MB"), "{text}");
    assert!(!total.contains("7.0 MB/7.0 MB"), "{text}");
    assert!(
        shown.last().unwrap().starts_with("imagec: interrupted"),
        "{text}"
    );
}

/// TERM=dumb on a terminal printed nothing until the end (bars indicatif could not draw).
#[test]
fn term_dumb_on_a_terminal_gets_plain_lines() {
    let (_proxy, name, img) = slow_image("term/dumb", 7300, Duration::from_millis(300));
    let mut cmd = imagec();
    cmd.env("TERM", "dumb")
        .args(["pull", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg(&name);
    let (status, bytes) = spawn(&mut cmd, 80, 30, STDERR_ONLY).finish(Duration::from_secs(60));
    assert!(status.success());
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains('\x1b'),
        "escape codes for TERM=dumb: {text:?}"
    );
    for l in &img.layers {
        let short = &l.digest["sha256:".len()..][..12];
        assert!(text.contains(&format!("{short}: downloading")), "{text}");
        assert!(text.contains(&format!("{short}: done")), "{text}");
    }
}

#[test]
fn password_stdin_on_a_terminal_prompts_without_echo() {
    push_image(
        &world().plain().host(),
        "auth/prompt",
        "1",
        &image(
            Format::Docker,
            "linux",
            "amd64",
            vec![random_layer(7400, 2000)],
        ),
    );
    let name = format!("{}/auth/prompt:1", world().basic().host());
    let mut cmd = imagec();
    on_terminal(&mut cmd)
        .args(["pull", "-q", "-u", USER, "--password-stdin", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg(&name);
    let both = On {
        stdin: true,
        stdout: false,
    };
    let mut run = spawn(&mut cmd, 80, 30, both);
    let prompt = format!("Password for {USER}@{}: ", world().basic().host());
    assert!(
        run.wait_for(&prompt, Duration::from_secs(10)),
        "{}",
        String::from_utf8_lossy(&run.output())
    );
    run.type_keys(format!("{PASSWORD}\r").as_bytes());
    let (status, bytes) = run.finish(Duration::from_secs(30));
    let text = String::from_utf8_lossy(&bytes);
    assert!(status.success(), "{text}");
    assert!(
        !text.contains(PASSWORD),
        "the password was echoed: {text:?}"
    );

    // Ctrl-C at the prompt: exit 130, nothing pulled.
    let mut cmd = imagec();
    on_terminal(&mut cmd)
        .args(["pull", "-u", USER, "--password-stdin", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg(&name);
    let mut run = spawn(&mut cmd, 80, 30, both);
    assert!(run.wait_for(&prompt, Duration::from_secs(10)));
    assert!(!run.echoes(), "echo is on at the password prompt");
    run.type_keys(b"half\x03");
    let (status, _, run) = run.finish_keeping(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
    // The prompt turned echo off; Ctrl-C there must leave the user's terminal as it was.
    assert!(run.echoes(), "Ctrl-C at the prompt left echo off");
}

/// `save -o -` with stdout on a terminal would write a binary archive onto the screen.
#[test]
fn save_to_a_terminal_is_refused() {
    let mut cmd = imagec();
    on_terminal(&mut cmd).args(["save", "-o", "-", "alpine:3.20"]);
    let on = On {
        stdin: false,
        stdout: true,
    };
    let (status, bytes) = spawn(&mut cmd, 80, 24, on).finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("standard output is a terminal"), "{text}");
}

/// `unpack`, `layers --files` and `save` draw a second set of bars after the pull's, one per
/// blob they read and a total named for the stage, each within the width (SPEC: Output).
#[test]
fn commands_over_stored_blobs_draw_their_own_bars_after_the_pull() {
    let cols = 60u16;
    let (_proxy, name, img) = slow_image("term/stages", 7300, Duration::from_millis(600));
    let dest = world().temp_dir().join("store");
    let out = world().temp_dir().join("image.tar");
    let runs: [(&str, Vec<std::ffi::OsString>); 3] = [
        (
            "unpacking",
            vec![
                "unpack".into(),
                name.clone().into(),
                world().temp_dir().join("rootfs").into(),
            ],
        ),
        (
            "reading",
            vec!["layers".into(), "--files".into(), name.clone().into()],
        ),
        (
            "saving",
            vec!["save".into(), "-o".into(), out.into(), name.clone().into()],
        ),
    ];
    for (i, (stage, args)) in runs.iter().enumerate() {
        let mut cmd = imagec();
        on_terminal(&mut cmd)
            .arg(&args[0])
            .arg("--dest")
            .arg(&dest)
            .args(&args[1..]);
        let (status, bytes) =
            spawn(&mut cmd, cols, 30, STDERR_ONLY).finish(Duration::from_secs(60));
        assert!(status.success(), "{}", String::from_utf8_lossy(&bytes));
        for row in bar_rows(&bytes, cols as usize) {
            assert!(
                row.trim_end().chars().count() < cols as usize,
                "{stage}: a bar as wide as the terminal wraps: {row:?}"
            );
        }
        let shown = screen(&bytes, cols as usize);
        let text = shown.join("\n");
        let total = shown
            .iter()
            .position(|l| l.starts_with(&format!("{stage:<12} done (")))
            .unwrap_or_else(|| panic!("{stage}:\n{text}"));
        // The first run downloads (the pull's bars come first), later ones find every blob.
        let pulled = shown.iter().position(|l| {
            l.starts_with("total ") && l.contains("done (") || l.ends_with("already exists")
        });
        assert!(pulled.is_some_and(|p| p < total), "{stage}:\n{text}");
        if i == 0 {
            assert!(shown.iter().any(|l| l.starts_with("total ")), "{text}");
        }
        for l in &img.layers {
            let short = &l.digest["sha256:".len()..][..12];
            let after: Vec<&String> = shown[pulled.unwrap()..total]
                .iter()
                .filter(|line| line.starts_with(&format!("{short} done (")))
                .collect();
            assert_eq!(
                after.len(),
                1,
                "{stage}: one done line for {short}:\n{text}"
            );
        }
    }
}
