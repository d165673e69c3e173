//! Running a program on a pseudo-terminal of a given size, as an operator's
//! terminal would, and reading back what it drew: the bytes go through a
//! terminal emulator (vt100 in the tests) so a test sees the screen, not the
//! escape sequences.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Instant;

/// A child on a pty and the chunks it writes there.
pub struct PtyChild {
    /// The process.
    pub child: Child,
    /// Each chunk the terminal received, with when it arrived.
    pub output: Receiver<(Instant, Vec<u8>)>,
}

impl Drop for PtyChild {
    /// A test that fails halfway leaves no process behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `cmd` with stdin, stdout and stderr on a new pty of `rows` x `cols`.
pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> std::io::Result<PtyChild> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the out-pointers; the name
    // and termios pointers may be null, the winsize pointer is valid.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened by openpty and are owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR");
    let child = cmd.spawn()?;
    let (tx, rx) = channel();
    let mut reader = std::fs::File::from(master);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        // EIO once the child side is closed ends the loop.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    Ok(PtyChild { child, output: rx })
}
