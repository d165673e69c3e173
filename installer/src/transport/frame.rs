//! Framed commands over one long-lived `sh`: the fast path of every transport.
//!
//! A [`FramedShell`] owns a running `sh` (an SSH exec channel or a local
//! child process, behind [`ShellIo`]) and writes one command at a time to its
//! standard input. Each command runs in a subshell (`( eval '…' )`, so `exit`
//! and `cd` stay inside it) with its stdin from `/dev/null` or from a
//! base64 heredoc; after it the shell prints an end marker on stdout (with the
//! exit status) and on stderr. The markers carry a random per-session nonce
//! and a sequence number, so output that imitates them cannot end a frame
//! early, and binary or huge output passes through untouched.

use std::future::Future;
use std::io;
use std::time::Duration;

use futures_util::FutureExt;

use super::{ExecOutput, Secret};

/// One piece of what the shell sent back.
pub(crate) enum Chunk {
    /// Bytes from standard output.
    Stdout(Vec<u8>),
    /// Bytes from standard error.
    Stderr(Vec<u8>),
    /// The shell is gone; its exit status when known.
    Closed(Option<i32>),
}

/// The byte pipes of a running shell (SSH channel or local process).
pub(crate) trait ShellIo: Send {
    /// Writes bytes to the shell's standard input.
    fn send(&mut self, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Waits for the next piece of output.
    fn recv(&mut self) -> impl Future<Output = io::Result<Chunk>> + Send;
    /// Kills the shell and releases its pipes.
    fn kill(&mut self) -> impl Future<Output = ()> + Send;
}

/// Why a framed command could not complete.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The shell exited or its channel closed before the command's end marker.
    #[error("the remote shell ended unexpectedly{}", describe_end(*.status, .stderr))]
    Closed {
        /// Exit status of the shell, when known.
        status: Option<i32>,
        /// The last bytes the shell wrote to stderr.
        stderr: String,
    },
    /// Reading from or writing to the shell failed.
    #[error("talking to the remote shell failed")]
    Io(#[source] io::Error),
    /// The shell cannot decode stdin (no `base64` on the host).
    #[error("the host has no `base64` command, so standard input cannot be fed to commands")]
    NoBase64,
    /// sudo refused the password or asked for one that was not configured.
    #[error("{0}")]
    Sudo(String),
    /// The script contains a NUL byte, which no shell can read.
    #[error("the script contains a NUL byte")]
    NulInScript,
}

fn describe_end(status: Option<i32>, stderr: &str) -> String {
    let mut s = String::new();
    if let Some(code) = status {
        s.push_str(&format!(" (exit status {code})"));
    }
    let tail = stderr.trim();
    if !tail.is_empty() {
        s.push_str(&format!(": {tail}"));
    }
    s
}

/// A running `sh` that executes framed commands one at a time.
pub(crate) struct FramedShell<I: ShellIo> {
    io: I,
    nonce: String,
    seq: u64,
    out: Vec<u8>,
    err: Vec<u8>,
    has_base64: bool,
    /// The shell's process group, whose members a timed-out command leaves.
    pgid: Option<u32>,
}

impl<I: ShellIo> FramedShell<I> {
    /// Wraps a freshly started `sh` and checks that it answers framed commands.
    pub(crate) async fn start(io: I) -> Result<Self, FrameError> {
        let mut shell = FramedShell {
            io,
            nonce: random_hex(16),
            seq: 0,
            out: Vec::new(),
            err: Vec::new(),
            has_base64: false,
            pgid: None,
        };
        let probe = shell
            .run(
                "s=; read -r s < /proc/$$/stat 2>/dev/null; set -- ${s##*) }; echo \"${3:-}\"; \
                 command -v base64 >/dev/null 2>&1 && echo base64",
                None,
            )
            .await?;
        let probe = String::from_utf8_lossy(&probe.stdout);
        let mut lines = probe.lines();
        // Group 0 and 1 are never ours to kill.
        shell.pgid = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .filter(|g| *g > 1);
        shell.has_base64 = lines.next() == Some("base64");
        Ok(shell)
    }

    /// Runs one script and returns its status, stdout and stderr.
    ///
    /// Cancelling the returned future leaves the shell mid-command: the
    /// caller must then [`kill`](Self::kill) it instead of reusing it.
    pub(crate) async fn run(
        &mut self,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, FrameError> {
        if script.contains('\0') {
            return Err(FrameError::NulInScript);
        }
        if stdin.is_some_and(|s| !s.is_empty()) && !self.has_base64 {
            return Err(FrameError::NoBase64);
        }
        self.seq += 1;
        let token = format!("{}:{}:", self.nonce, self.seq);
        let command = frame_command(&token, script, stdin);
        self.io.send(&command).await.map_err(FrameError::Io)?;

        let err_token = format!("{token}\n");
        let mut out_end: Option<(usize, usize, i32)> = None;
        let mut err_end: Option<usize> = None;
        let (mut out_scan, mut err_scan) = (0, 0);
        loop {
            if out_end.is_none() {
                if let Some(pos) = find(&self.out, token.as_bytes(), out_scan) {
                    let after = pos + token.len();
                    if let Some(nl) = self
                        .out
                        .get(after..)
                        .and_then(|t| t.iter().position(|b| *b == b'\n'))
                    {
                        let status = std::str::from_utf8(&self.out[after..after + nl])
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                            .unwrap_or(-1);
                        out_end = Some((pos, after + nl + 1, status));
                    }
                } else {
                    out_scan = self.out.len().saturating_sub(token.len());
                }
            }
            if err_end.is_none() {
                if let Some(pos) = find(&self.err, err_token.as_bytes(), err_scan) {
                    err_end = Some(pos);
                } else {
                    err_scan = self.err.len().saturating_sub(err_token.len());
                }
            }
            if let (Some((out_pos, out_next, status)), Some(err_pos)) = (out_end, err_end) {
                let stdout = self.out[..out_pos].to_vec();
                self.out.drain(..out_next);
                let stderr = self.err[..err_pos].to_vec();
                self.err.drain(..err_pos + err_token.len());
                return Ok(ExecOutput {
                    status,
                    stdout,
                    stderr,
                });
            }
            match self.io.recv().await.map_err(FrameError::Io)? {
                Chunk::Stdout(d) => self.out.extend_from_slice(&d),
                Chunk::Stderr(d) => self.err.extend_from_slice(&d),
                Chunk::Closed(status) => {
                    let tail = self.err.len().saturating_sub(2000);
                    return Err(FrameError::Closed {
                        status,
                        stderr: String::from_utf8_lossy(&self.err[tail..]).into_owned(),
                    });
                }
            }
        }
    }

    /// Whether the idle shell has ended; output it printed between commands
    /// (background jobs) is dropped.
    fn is_closed(&mut self) -> bool {
        loop {
            match self.io.recv().now_or_never() {
                None => return false,
                Some(Ok(Chunk::Closed(_)) | Err(_)) => return true,
                Some(Ok(Chunk::Stdout(_) | Chunk::Stderr(_))) => {}
            }
        }
    }

    /// Kills the shell (after a timeout or an error).
    pub(crate) async fn kill(mut self) {
        self.io.kill().await;
    }
}

/// Up to `max` framed shells of one kind on one host, reused between commands.
pub(crate) struct ShellPool<I: ShellIo> {
    idle: std::sync::Mutex<Vec<FramedShell<I>>>,
    slots: tokio::sync::Semaphore,
}

impl<I: ShellIo> ShellPool<I> {
    /// An empty pool that will hold at most `max` shells.
    pub(crate) fn new(max: usize) -> Self {
        ShellPool {
            idle: std::sync::Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(max),
        }
    }

    /// Runs a script on an idle shell, or on a new one from `open`.
    ///
    /// A shell that times out or fails is killed, never reused. An idle
    /// shell found closed (its host restarted sshd, the last command killed
    /// it) is replaced before the command is sent, so no command is ever
    /// sent twice.
    pub(crate) async fn run<F, Fut>(
        &self,
        open: F,
        script: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, PoolError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<FramedShell<I>, PoolError>>,
    {
        let _slot = self.slots.acquire().await.map_err(|_| {
            PoolError::Frame(FrameError::Closed {
                status: None,
                stderr: String::new(),
            })
        })?;
        let mut shell = None;
        while let Some(mut idle) = self.pop() {
            if idle.is_closed() {
                idle.kill().await;
            } else {
                shell = Some(idle);
                break;
            }
        }
        let shell = match shell {
            Some(s) => s,
            None => open().await?,
        };
        let pgid = shell.pgid;
        let result = self.run_on(shell, script, stdin, timeout).await;
        if let (Err(PoolError::Timeout(_)), Some(group)) = (&result, pgid) {
            // Killing the shell leaves the command's processes running
            // (a hung `apt-get` would hold its lock): kill its process group
            // from a sibling shell of the same privilege.
            let killer = match self.pop() {
                Some(s) => Ok(s),
                None => open().await,
            };
            if let Ok(killer) = killer {
                let kill = format!("kill -s KILL -- -{group} 2>/dev/null; true");
                let _ = self
                    .run_on(killer, &kill, None, Some(Duration::from_secs(10)))
                    .await;
            }
        }
        result
    }

    /// Kills every idle shell.
    pub(crate) async fn clear(&self) {
        while let Some(shell) = self.pop() {
            shell.kill().await;
        }
    }

    async fn run_on(
        &self,
        mut shell: FramedShell<I>,
        script: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, PoolError> {
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, shell.run(script, stdin)).await {
                Ok(r) => r.map_err(PoolError::Frame),
                Err(_) => Err(PoolError::Timeout(t)),
            },
            None => shell.run(script, stdin).await.map_err(PoolError::Frame),
        };
        match result {
            Ok(out) => {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(shell);
                }
                Ok(out)
            }
            Err(e) => {
                shell.kill().await;
                Err(e)
            }
        }
    }

    fn pop(&self) -> Option<FramedShell<I>> {
        self.idle.lock().ok().and_then(|mut idle| idle.pop())
    }
}

/// Why [`ShellPool::run`] failed.
pub(crate) enum PoolError {
    /// The command did not finish in time; its shell was killed.
    Timeout(Duration),
    /// The shell failed.
    Frame(FrameError),
    /// A new shell could not be opened.
    Open(super::TransportError),
}

/// Becomes root through `sudo` on a shell started as
/// `sudo -S -p PROMPT sh -c 'printf READY; exec sh'` (see [`sudo_shell_command`]):
/// feeds the password once when sudo prompts, then waits for the ready token.
pub(crate) async fn sudo_handshake<I: ShellIo>(
    io: &mut I,
    tokens: &SudoTokens,
    password: Option<&Secret>,
) -> Result<(), FrameError> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut prompts_answered = 0;
    loop {
        if find(&out, tokens.ready.as_bytes(), 0).is_some() {
            return Ok(());
        }
        let prompts = count(&err, tokens.prompt.as_bytes());
        if prompts > prompts_answered {
            match password {
                Some(_) if prompts_answered > 0 => {
                    return Err(FrameError::Sudo(
                        "sudo rejected the password; check the `sudo.password` secret".into(),
                    ));
                }
                Some(pw) => {
                    let mut line = pw.expose().as_bytes().to_vec();
                    line.push(b'\n');
                    io.send(&line).await.map_err(FrameError::Io)?;
                    prompts_answered += 1;
                }
                None => {
                    return Err(FrameError::Sudo(
                        "sudo asks for a password but none is configured; set `sudo.password`"
                            .into(),
                    ));
                }
            }
        }
        match io.recv().await.map_err(FrameError::Io)? {
            Chunk::Stdout(d) => out.extend_from_slice(&d),
            Chunk::Stderr(d) => err.extend_from_slice(&d),
            Chunk::Closed(status) => {
                let text = String::from_utf8_lossy(&err).replace(&tokens.prompt, "");
                let text = text.trim();
                return Err(FrameError::Sudo(format!(
                    "sudo did not start a root shell{}{}",
                    status
                        .map(|s| format!(" (exit status {s})"))
                        .unwrap_or_default(),
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    }
                )));
            }
        }
    }
}

/// The random prompt and ready markers of one sudo handshake.
pub(crate) struct SudoTokens {
    prompt: String,
    ready: String,
}

/// The command line that starts a root shell through sudo; the password, if
/// any, goes to stdin later, never into this line.
pub(crate) fn sudo_shell_command(password: bool) -> (String, SudoTokens) {
    let nonce = random_hex(12);
    let tokens = SudoTokens {
        prompt: format!("EFSUDO{nonce}:"),
        ready: format!("EFREADY{nonce}"),
    };
    let flag = if password { "-S" } else { "-n" };
    let cmd = format!(
        "sudo {flag} -p '{}' sh -c 'printf %s {}; exec sh'",
        tokens.prompt, tokens.ready
    );
    (cmd, tokens)
}

/// Builds the text that runs `script` in a subshell and prints the end markers.
fn frame_command(token: &str, script: &str, stdin: Option<&[u8]>) -> Vec<u8> {
    let quoted = crate::sh::quote(script);
    let mut cmd = String::with_capacity(script.len() + 200);
    match stdin {
        Some(data) if !data.is_empty() => {
            let delim = format!("EFIN{}", token.replace(':', "_"));
            cmd.push_str(&format!("base64 -d <<'{delim}' | ( eval {quoted} )\n"));
            let encoded = data_encoding::BASE64.encode(data);
            for line in encoded.as_bytes().chunks(76) {
                cmd.push_str(std::str::from_utf8(line).unwrap_or_default());
                cmd.push('\n');
            }
            cmd.push_str(&delim);
            cmd.push('\n');
        }
        _ => cmd.push_str(&format!("( eval {quoted} ) </dev/null\n")),
    }
    cmd.push_str(&format!(
        "__ef=$?; printf '%s%d\\n' '{token}' \"$__ef\"; printf '%s\\n' '{token}' >&2\n"
    ));
    cmd.into_bytes()
}

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // The OS random source does not fail on Linux once booted; should it, a
    // time-derived value still keeps nonces distinct between sessions.
    if getrandom::fill(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8;
        }
    }
    hex::encode(buf)
}

/// Position of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let rest = hay.get(i..)?;
        let off = rest.iter().position(|b| *b == first)?;
        i += off;
        if hay.get(i..i + needle.len())? == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut from = 0;
    while let Some(p) = find(hay, needle, from) {
        n += 1;
        from = p + needle.len();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_locates_needles_across_positions() {
        assert_eq!(find(b"abcabd", b"abd", 0), Some(3));
        assert_eq!(find(b"abcabd", b"abd", 4), None);
        assert_eq!(find(b"ab", b"abc", 0), None);
        assert_eq!(count(b"xPxPxP", b"P"), 3);
    }

    #[test]
    fn frame_command_carries_stdin_as_base64_heredoc() {
        let cmd = String::from_utf8(frame_command("n:1:", "cat", Some(b"hi"))).unwrap();
        assert!(
            cmd.starts_with("base64 -d <<'EFINn_1_' | ( eval cat )\naGk=\nEFINn_1_\n"),
            "{cmd}"
        );
        let cmd = String::from_utf8(frame_command("n:1:", "echo a b", None)).unwrap();
        assert!(cmd.starts_with("( eval 'echo a b' ) </dev/null\n"), "{cmd}");
    }
}
