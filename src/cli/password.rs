//! `--password-stdin` on a terminal: a prompt on stderr and one line read without echo, as
//! `docker login` does. Piped input is read to its end as before; on a terminal that would
//! look like a hang (Enter does nothing, only Ctrl-D ends it).
//!
//! The terminal is put in a raw-ish mode (no echo, no line editing, Ctrl-C as a key) and
//! restored on every way out, including Ctrl-C: with signals left on, a Ctrl-C at the prompt
//! would kill the process with echo still off in the user's shell.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

/// How reading the password ended without one.
#[derive(Debug)]
pub enum PromptError {
    Interrupted,
    Io(io::Error),
}

/// Restores the terminal's modes when dropped.
struct Restore<'a, Fd: AsFd> {
    fd: &'a Fd,
    saved: Termios,
}

impl<Fd: AsFd> Drop for Restore<'_, Fd> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, OptionalActions::Now, &self.saved);
    }
}

/// Prompt on stderr and read one line from the terminal on stdin, without echo.
pub fn read_from_terminal(prompt: &str) -> Result<String, PromptError> {
    let stdin = io::stdin();
    let saved = termios::tcgetattr(&stdin).map_err(|e| PromptError::Io(e.into()))?;
    let mut raw = saved.clone();
    raw.local_modes
        .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG | LocalModes::IEXTEN);
    raw.special_codes[SpecialCodeIndex::VMIN] = 1;
    raw.special_codes[SpecialCodeIndex::VTIME] = 0;
    let _restore = Restore { fd: &stdin, saved };
    termios::tcsetattr(&stdin, OptionalActions::Flush, &raw)
        .map_err(|e| PromptError::Io(e.into()))?;
    let mut err = io::stderr();
    let _ = write!(err, "{prompt}");
    let _ = err.flush();
    let result = read_line(&mut stdin.lock());
    let _ = writeln!(err);
    result
}

/// One line of key presses: Enter ends it, Backspace and Ctrl-U edit it, Ctrl-C interrupts,
/// Ctrl-D on an empty line is the end of input.
fn read_line(input: &mut impl Read) -> Result<String, PromptError> {
    let mut line: Vec<u8> = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PromptError::Io(e)),
        }
        match byte[0] {
            b'\r' | b'\n' => break,
            0x03 => return Err(PromptError::Interrupted),
            0x04 if line.is_empty() => break,
            0x7f | 0x08 => {
                // Remove the last character, not the last byte of a multi-byte one.
                while let Some(b) = line.pop() {
                    if b & 0xC0 != 0x80 {
                        break;
                    }
                }
            }
            0x15 => line.clear(),
            b => line.push(b),
        }
    }
    String::from_utf8(line)
        .map_err(|_| PromptError::Io(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[u8]) -> Result<String, PromptError> {
        read_line(&mut &k[..])
    }

    #[test]
    fn keys_edit_the_line() {
        assert_eq!(keys(b"secret\r").unwrap(), "secret");
        assert_eq!(keys(b"secrex\x7ft\n").unwrap(), "secret");
        assert_eq!(
            keys("pässw\u{f6}\x7f\x7f\x7frd\r".as_bytes()).unwrap(),
            "päsrd"
        );
        assert_eq!(keys(b"wrong\x15right\r").unwrap(), "right");
        assert_eq!(keys(b"\x04").unwrap(), "");
        assert_eq!(keys(b"no newline").unwrap(), "no newline");
        assert!(matches!(
            keys(b"sec\x03ret\r"),
            Err(PromptError::Interrupted)
        ));
    }
}
