//! A pseudo-terminal for the tests of what a terminal shows: imagec runs with its stderr (and,
//! where asked, stdin) on the pty's slave side at a given size, and everything it writes there
//! is collected from the master side.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
use rustix::termios::{tcsetwinsize, Winsize};

pub struct PtyRun {
    child: Child,
    master: File,
    /// The slave side's path, to look at the terminal's modes after the child is gone.
    slave_name: String,
    output: Arc<Mutex<Vec<u8>>>,
    /// When each read from the terminal arrived, and its length.
    chunks: Arc<Mutex<Vec<(Instant, usize)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Which of the child's streams are the terminal (stderr always is).
#[derive(Clone, Copy)]
pub struct On {
    pub stdin: bool,
    pub stdout: bool,
}

/// Start `cmd` with its stderr on a new `cols` x `rows` terminal.
pub fn spawn(cmd: &mut Command, cols: u16, rows: u16, on: On) -> PtyRun {
    let master: OwnedFd = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    tcsetwinsize(
        &master,
        Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("setting the terminal size");
    let slave_name = name.to_str().expect("a UTF-8 pty name").to_string();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_name)
        .expect("opening the pty's slave side");
    let stdio = |yes: bool| {
        if yes {
            Stdio::from(slave.try_clone().expect("dup"))
        } else {
            Stdio::piped()
        }
    };
    cmd.stderr(stdio(true));
    cmd.stdout(stdio(on.stdout));
    if on.stdin {
        cmd.stdin(stdio(true));
    }
    let mut child = cmd.spawn().expect("starting imagec on a pty");
    // The slave side must be closed here, so that reading the master ends when the child exits.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    drop(slave);
    if !on.stdout {
        // Drain stdout so that the child never blocks on a full pipe.
        let mut out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
    }
    let master = File::from(master);
    let output = Arc::new(Mutex::new(Vec::new()));
    let chunks = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let mut m = master.try_clone().expect("dup master");
        let output = output.clone();
        let chunks = chunks.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // EIO once the last slave descriptor closes: the child is gone.
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output.lock().unwrap().extend_from_slice(&buf[..n]);
                chunks.lock().unwrap().push((Instant::now(), n));
            }
        })
    };
    PtyRun {
        child,
        master,
        output,
        chunks,
        slave_name,
        reader: Some(reader),
    }
}

impl PtyRun {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the terminal received so far.
    pub fn output(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Wait (at most `timeout`) until the terminal has received `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if String::from_utf8_lossy(&self.output()).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The bytes the terminal received between `from` and `to`.
    pub fn output_between(&self, from: Instant, to: Instant) -> Vec<u8> {
        let all = self.output();
        let mut at = 0;
        let mut out = Vec::new();
        for (t, n) in self.chunks.lock().unwrap().iter() {
            if *t >= from && *t < to {
                out.extend_from_slice(&all[at..at + n]);
            }
            at += n;
        }
        out
    }

    /// Does the terminal echo what is typed (its modes as the child left them)?
    pub fn echoes(&self) -> bool {
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.slave_name)
            .expect("opening the pty's slave side");
        let modes = rustix::termios::tcgetattr(&slave).expect("reading the terminal's modes");
        modes
            .local_modes
            .contains(rustix::termios::LocalModes::ECHO)
    }

    /// Resize the terminal, as a user dragging the window's edge.
    pub fn resize(&self, cols: u16, rows: u16) {
        tcsetwinsize(
            &self.master,
            Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .expect("resizing the terminal");
    }

    /// Type on the terminal.
    pub fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("writing to the pty");
    }

    /// Wait for the child (killing it after `timeout`) and everything it wrote.
    pub fn finish(self, timeout: Duration) -> (ExitStatus, Vec<u8>) {
        let (status, bytes, _) = self.finish_keeping(timeout);
        (status, bytes)
    }

    /// [`PtyRun::finish`], keeping the run for [`PtyRun::output_between`].
    pub fn finish_keeping(mut self, timeout: Duration) -> (ExitStatus, Vec<u8>, PtyRun) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waiting for imagec") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "imagec did not finish within {timeout:?}; the terminal shows:\n{}",
                    String::from_utf8_lossy(&self.output())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let bytes = self.output();
        (status, bytes, self)
    }
}

/// The screen as a terminal would show it at the end: escape sequences applied for the few
/// that indicatif and imagec use (cursor up, erase line, carriage return, newline), lines cut
/// at `cols` columns and wrapped as a terminal wraps them.
pub fn screen(bytes: &[u8], cols: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() != Some(&'[') {
                    continue;
                }
                chars.next();
                let mut arg = String::new();
                let mut fin = ' ';
                for c in chars.by_ref() {
                    if c.is_ascii_digit() || c == ';' || c == '?' {
                        arg.push(c);
                    } else {
                        fin = c;
                        break;
                    }
                }
                let n: usize = arg.trim_start_matches('?').parse().unwrap_or(1);
                match fin {
                    'A' => row = row.saturating_sub(n),
                    'B' => row += n,
                    'C' => col += n,
                    'D' => col = col.saturating_sub(n),
                    'G' => col = n.saturating_sub(1),
                    'K' => {
                        let line = &mut lines[row];
                        match arg.as_str() {
                            "2" => line.clear(),
                            _ => line.truncate(col),
                        }
                    }
                    'J' => {
                        lines.truncate(row + 1);
                        lines[row].truncate(col);
                    }
                    _ => {}
                }
            }
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
            }
            c => {
                if col >= cols {
                    row += 1;
                    col = 0;
                }
                while lines.len() <= row {
                    lines.push(Vec::new());
                }
                let line = &mut lines[row];
                while line.len() < col {
                    line.push(' ');
                }
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.push(c);
                }
                col += 1;
            }
        }
        while lines.len() <= row {
            lines.push(Vec::new());
        }
    }
    let mut out: Vec<String> = lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_string())
        .collect();
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}
