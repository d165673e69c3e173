//! Placing and reading files, shared by the SSH and local transports.
//!
//! Small in-memory content (rendered templates) is placed with one framed
//! command that compares and, when needed, writes. Anything else is at most
//! three framed commands: one that reports the current
//! sha256, mode and owner (the only one when nothing changed), the content
//! written to a temporary name in the destination directory (through the shell
//! for small in-memory content, through the transport's bulk upload for files
//! and large content), and one that checks the temporary file's sha256 on the
//! host, sets mode and owner and renames it into place. A crash before the
//! rename, or content that arrived damaged, leaves the old file; leftovers of
//! an interrupted put are removed by the next put of that path.

use std::io::Read;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::frame::random_hex;
use super::{ExecOutput, PutOutcome, PutRequest, PutSource, TransportError};

/// In-memory content up to this size travels inside the framed command
/// (base64 on the shell's stdin); files and larger content go through the
/// transport's bulk upload (SFTP). Sending 1 MiB files inline instead was
/// measured: it saves the SFTP session (one more login on the host) but costs
/// more CPU on both sides (base64, the shell reading a large here-document)
/// and, at 200 hosts, twice the controller memory (each connection keeps a
/// send buffer as large as its largest message).
const INLINE_LIMIT: usize = 256 * 1024;

/// Bulk uploads in flight at once over all hosts. Each holds a read buffer
/// and up to a channel window of unsent data (about 1.3 MB together), so this
/// bounds the controller's memory on a fleet of hundreds; on one controller
/// the uploads share the same CPU and uplink anyway.
static BULK_TRANSFERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

/// In-memory content up to this size is compared and written in one framed
/// command (see [`put_one_trip`]).
const ONE_TRIP_LIMIT: usize = 64 * 1024;

/// What a transport provides so that [`put`] and [`get`] can work on it.
pub(crate) trait FileBackend: Sync {
    /// user@host:port, for messages.
    fn label(&self) -> &str;
    /// Runs a framed command (privileged: as root).
    fn run<'a>(
        &'a self,
        script: &'a str,
        stdin: Option<&'a [u8]>,
        privileged: bool,
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>>;
    /// Copies content to `remote` as the connecting user, streaming files.
    fn upload<'a>(
        &'a self,
        source: PutSource<'a>,
        remote: &'a str,
    ) -> BoxFuture<'a, Result<(), TransportError>>;
    /// Whether privileged writes must be staged in a user-writable place
    /// first (the connecting user is not root).
    fn stages_privileged(&self) -> bool;
}

/// Places a file atomically unless its content, mode and owner already match.
pub(crate) async fn put<B: FileBackend>(
    b: &B,
    req: PutRequest<'_>,
) -> Result<PutOutcome, TransportError> {
    let sha = match req.sha256 {
        Some(s) => s.to_ascii_lowercase(),
        None => sha256_of(req.source).await?,
    };
    let (dir, base) = match req.path.rsplit_once('/') {
        Some((d, f)) if !f.is_empty() && req.path.starts_with('/') => {
            (if d.is_empty() { "/" } else { d }, f)
        }
        _ => {
            return Err(TransportError::Other(format!(
                "cannot place `{}`: the destination must be an absolute file path",
                req.path
            )));
        }
    };
    if let PutSource::Bytes(bytes) = req.source
        && bytes.len() <= ONE_TRIP_LIMIT
    {
        return put_one_trip(b, &req, bytes, &sha, dir, base).await;
    }
    let size = match req.source {
        PutSource::Bytes(bytes) => bytes.len() as u64,
        PutSource::File(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
    };
    let dest = crate::sh::quote(req.path);
    let check = format!(
        "[ -d {} ] || {{ echo nodir; exit 0; }}; f={dest}; if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then \
         if command -v sha256sum >/dev/null 2>&1 || command -v openssl >/dev/null 2>&1; then s=$({}); echo \"${{s%% *}}\"; else echo nosha; fi; \
         stat -c '%a %U:%G %u:%g' \"$f\"; else echo absent; fi",
        crate::sh::quote(dir),
        host_sha256("\"$f\"", size)
    );
    let out = checked(b, &check, None, req.privileged, "checking", req.path).await?;
    let report = String::from_utf8_lossy(&out.stdout);
    if report.starts_with("nodir") {
        return Err(TransportError::Other(format!(
            "cannot place {} on {}: directory {dir} does not exist; create it first (a `dir` step)",
            req.path,
            b.label()
        )));
    }
    if matches_current(&report, &sha, req.mode, req.owner) {
        return Ok(PutOutcome::Unchanged);
    }

    let tmp_prefix = format!("{}/.{base}.ef-tmp-", dir.trim_end_matches('/'));
    let tmp = format!("{tmp_prefix}{}", random_hex(8));
    let staged = req.privileged && b.stages_privileged();
    let mut finalize = String::new();
    match req.source {
        PutSource::Bytes(bytes) if bytes.len() <= INLINE_LIMIT => {
            let write = format!("umask 077; cat > {}", crate::sh::quote(&tmp));
            checked(b, &write, Some(bytes), req.privileged, "writing", req.path).await?;
        }
        source if staged => {
            let _slot = bulk_slot().await?;
            let stage = format!("/tmp/.edgeforge-upload-{}", random_hex(8));
            b.upload(source, &stage).await?;
            finalize.push_str(&format!(
                "mv -f {} {} || {{ rm -f {0}; exit 1; }}; ",
                crate::sh::quote(&stage),
                crate::sh::quote(&tmp)
            ));
        }
        source => {
            let _slot = bulk_slot().await?;
            b.upload(source, &tmp).await?;
        }
    }
    let q_tmp = crate::sh::quote(&tmp);
    let owner = match (req.owner, req.privileged) {
        (Some(o), _) => Some(o),
        (None, true) if staged => Some("0:0"),
        _ => None,
    };
    let chown = owner
        .map(|o| format!(" && chown {} {q_tmp}", crate::sh::quote(o)))
        .unwrap_or_default();
    // What arrived is checked on the host before it takes the real name: a
    // file damaged on the way (or on a full disk) never replaces the old one.
    finalize.push_str(&format!(
        "s=$({}); s=${{s%% *}}; if [ \"$s\" != {sha_q} ]; then rm -f {q_tmp}; \
         echo \"{dest_text}: what arrived has sha256 $s, not {sha}; the file was not replaced\" >&2; exit 65; fi; \
         chmod {:o} {q_tmp}{chown} && mv -f {q_tmp} {dest} || {{ rc=$?; rm -f {q_tmp}; exit $rc; }}; \
         for f in {}*; do [ -e \"$f\" ] && rm -f \"$f\"; done; exit 0",
        host_sha256(&q_tmp, size),
        req.mode & 0o7777,
        crate::sh::quote(&tmp_prefix),
        sha_q = crate::sh::quote(&sha),
        dest_text = req.path.replace(['"', '\\', '$', '`'], "_"),
    ));
    checked(b, &finalize, None, req.privileged, "placing", req.path).await?;
    Ok(PutOutcome::Written)
}

/// Files from this size on are hashed on the host by OpenSSL when it is there.
const OPENSSL_FROM: u64 = 8 << 20;

/// A host command printing the sha256 of the file `input` (shell-quoted) of
/// about `size` bytes, as hex digits followed by a space and a name (callers
/// keep `${s%% *}`: no `cut` process). For large files, OpenSSL's digest
/// when the host has `openssl`: it uses the CPU's SHA extensions (1.1 GB/s
/// against coreutils' 160 MB/s on the benchmark machine, where hashing 270 MB
/// on 20 nodes cost more CPU than sending it). Below [`OPENSSL_FROM`],
/// `sha256sum`, which starts in 3 ms where openssl takes 15.
fn host_sha256(input: &str, size: u64) -> String {
    if size < OPENSSL_FROM {
        return format!("sha256sum < {input}");
    }
    format!(
        "if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi < {input}"
    )
}

async fn bulk_slot() -> Result<tokio::sync::SemaphorePermit<'static>, TransportError> {
    BULK_TRANSFERS
        .acquire()
        .await
        .map_err(|_| TransportError::Other("the upload limiter is closed".into()))
}

/// Places small in-memory content with a single framed command: the script
/// compares sha256, mode and owner on the host and only writes (temporary
/// name, chown, rename) when they differ. The content rides along in the
/// script either way (cheaper than a second round trip): quoted text, or
/// base64 for binary content.
async fn put_one_trip<B: FileBackend>(
    b: &B,
    req: &PutRequest<'_>,
    bytes: &[u8],
    sha: &str,
    dir: &str,
    base: &str,
) -> Result<PutOutcome, TransportError> {
    let tmp_prefix = format!("{}/.{base}.ef-tmp-", dir.trim_end_matches('/'));
    let tmp = format!("{tmp_prefix}{}", random_hex(8));
    let mode = format!("{:o}", req.mode & 0o7777);
    // One `sha256sum` and one `stat` on the host; the rest is shell builtins.
    let (owner_same, chown) = match req.owner {
        Some(o) => {
            // `user:group` must equal the names or the ids; `user` alone the user part.
            let pattern = if o.contains(':') {
                format!("*\" \"{}\" \"*", crate::sh::quote(o))
            } else {
                format!("*\" \"{}:*", crate::sh::quote(o))
            };
            (
                format!(" && case \" $st \" in {pattern}) ;; *) false;; esac"),
                format!(" && chown {} \"$t\"", crate::sh::quote(o)),
            )
        }
        None => (String::new(), String::new()),
    };
    // Text is written by the shell's own printf and a mode without execute
    // bits comes from the umask, so an unchanged file costs two processes
    // (sha256sum, stat) and a changed one one more (mv).
    let write = match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => {
            format!("printf %s {} > \"$t\"", crate::sh::quote(text))
        }
        _ => format!(
            "printf %s {} | base64 -d > \"$t\"",
            crate::sh::quote(&data_encoding::BASE64.encode(bytes))
        ),
    };
    let perm = req.mode & 0o7777;
    let (umask, chmod) = if perm & !0o666 == 0 {
        (format!("{:03o}", 0o777 & !perm), String::new())
    } else {
        ("077".to_string(), format!(" && chmod {mode} \"$t\""))
    };
    let script = format!(
        "d={d}; f={f}; t={t}\n\
         [ -d \"$d\" ] || {{ echo nodir; exit 0; }}\n\
         if [ -f \"$f\" ] && [ ! -L \"$f\" ] && s=$(sha256sum < \"$f\" 2>/dev/null) \
         && [ \"${{s%% *}}\" = {sha} ] && st=$(stat -c '%a %U:%G %u:%g' \"$f\") \
         && [ \"${{st%% *}}\" = {mode} ]{owner_same}; \
         then echo unchanged; exit 0; fi\n\
         umask {umask}; {write}{chmod}{chown} && mv -f \"$t\" \"$f\" \
         || {{ rc=$?; rm -f \"$t\"; exit $rc; }}\n\
         for x in {prefix}*; do [ -e \"$x\" ] && rm -f \"$x\"; done; echo written\n",
        d = crate::sh::quote(dir),
        f = crate::sh::quote(req.path),
        t = crate::sh::quote(&tmp),
        sha = crate::sh::quote(sha),
        prefix = crate::sh::quote(&tmp_prefix),
    );
    let out = checked(b, &script, None, req.privileged, "placing", req.path).await?;
    match String::from_utf8_lossy(&out.stdout).lines().last() {
        Some("unchanged") => Ok(PutOutcome::Unchanged),
        Some("written") => Ok(PutOutcome::Written),
        Some("nodir") => Err(TransportError::Other(format!(
            "cannot place {} on {}: directory {dir} does not exist; create it first (a `dir` step)",
            req.path,
            b.label()
        ))),
        _ => Err(command_error(
            b,
            "placing",
            req.path,
            out.status,
            &out.stderr,
        )),
    }
}

/// The state of many files, found with one framed command that starts two
/// processes (one `sha256sum` and one `stat` for all of them). Lets a caller
/// learn that a run of placements has nothing to do in one round trip.
#[derive(Debug, Default)]
pub struct FileProbe {
    /// Path → its report in the `sha\nmode user:group uid:gid` form of the put check.
    reports: std::collections::HashMap<String, String>,
}

impl FileProbe {
    /// Whether `path` was a regular file with this sha256, mode and owner when probed.
    pub fn unchanged(&self, path: &str, sha256: &str, mode: u32, owner: Option<&str>) -> bool {
        self.reports
            .get(path)
            .is_some_and(|r| matches_current(r, &sha256.to_ascii_lowercase(), mode, owner))
    }
}

/// Probes the regular files among `paths` (others are simply absent from the result).
pub async fn probe_files(
    t: &dyn super::Transport,
    paths: &[&str],
    privileged: bool,
) -> Result<FileProbe, TransportError> {
    // sha256sum escapes names with a newline or backslash; those are left to the per-file check.
    let plain: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| p.starts_with('/') && !p.contains(['\n', '\\']))
        .collect();
    if plain.is_empty() {
        return Ok(FileProbe::default());
    }
    let list: Vec<String> = plain.iter().map(|p| crate::sh::quote(p)).collect();
    let script = format!(
        "set --; for f in {}; do [ -f \"$f\" ] && [ ! -L \"$f\" ] && set -- \"$@\" \"$f\"; done\n\
         [ $# -gt 0 ] || exit 0\n\
         sha256sum -- \"$@\" 2>/dev/null; echo ef-stat; stat -c '%a %U:%G %u:%g %n' -- \"$@\" 2>/dev/null; exit 0\n",
        list.join(" ")
    );
    let out = t
        .exec(super::ExecRequest {
            script: &script,
            stdin: None,
            privileged,
            timeout: None,
        })
        .await?;
    Ok(parse_probe(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_probe(text: &str) -> FileProbe {
    let mut sums = std::collections::HashMap::new();
    let mut reports = std::collections::HashMap::new();
    let mut in_stat = false;
    for line in text.lines() {
        if line == "ef-stat" {
            in_stat = true;
        } else if in_stat {
            let mut f = line.splitn(4, ' ');
            if let (Some(mode), Some(names), Some(ids), Some(path)) =
                (f.next(), f.next(), f.next(), f.next())
                && let Some(sum) = sums.get(path)
            {
                reports.insert(path.to_string(), format!("{sum}\n{mode} {names} {ids}"));
            }
        } else if let Some((sum, rest)) = line.split_once(' ') {
            // `HASH  path` (text mode) or `HASH *path` (binary mode).
            let path = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'));
            if let Some(path) = path {
                sums.insert(path.to_string(), sum.to_string());
            }
        }
    }
    FileProbe { reports }
}

/// Reads a file; `None` when it does not exist.
pub(crate) async fn get<B: FileBackend>(
    b: &B,
    path: &str,
    privileged: bool,
) -> Result<Option<Vec<u8>>, TransportError> {
    let q = crate::sh::quote(path);
    let out = b
        .run(
            &format!("[ -e {q} ] || exit 64; exec cat {q}"),
            None,
            privileged,
        )
        .await?;
    match out.status {
        0 => Ok(Some(out.stdout)),
        64 => Ok(None),
        status => Err(command_error(b, "reading", path, status, &out.stderr)),
    }
}

async fn checked<B: FileBackend>(
    b: &B,
    script: &str,
    stdin: Option<&[u8]>,
    privileged: bool,
    verb: &str,
    path: &str,
) -> Result<ExecOutput, TransportError> {
    let out = b.run(script, stdin, privileged).await?;
    if out.status != 0 {
        return Err(command_error(b, verb, path, out.status, &out.stderr));
    }
    Ok(out)
}

fn command_error<B: FileBackend>(
    b: &B,
    verb: &str,
    path: &str,
    status: i32,
    stderr: &[u8],
) -> TransportError {
    TransportError::Command {
        host: b.label().to_string(),
        context: format!("{verb} {path}"),
        status,
        stderr: String::from_utf8_lossy(stderr).trim().to_string(),
    }
}

/// Whether the check command's report (`sha\nmode user:group uid:gid`) matches.
fn matches_current(report: &str, sha: &str, mode: u32, owner: Option<&str>) -> bool {
    let mut lines = report.lines();
    let (Some(cur_sha), Some(stat)) = (lines.next(), lines.next()) else {
        return false;
    };
    let mut fields = stat.split_whitespace();
    let (Some(cur_mode), Some(names), Some(ids)) = (fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let mode_ok = u32::from_str_radix(cur_mode, 8).is_ok_and(|m| m == mode & 0o7777);
    let owner_ok = owner.is_none_or(|o| {
        [names, ids].iter().any(|have| {
            if o.contains(':') {
                *have == o
            } else {
                have.split(':').next() == Some(o)
            }
        })
    });
    cur_sha == sha && mode_ok && owner_ok
}

/// Hex sha256 of the content, streaming files in 64 KiB blocks.
pub(crate) async fn sha256_of(source: PutSource<'_>) -> Result<String, TransportError> {
    match source {
        PutSource::Bytes(b) => Ok(hex::encode(Sha256::digest(b))),
        PutSource::File(path) => {
            let path = path.to_path_buf();
            let shown = path.display().to_string();
            tokio::task::spawn_blocking(move || -> std::io::Result<String> {
                let mut f = std::fs::File::open(&path)?;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(buf.get(..n).unwrap_or_default());
                }
                Ok(hex::encode(hasher.finalize()))
            })
            .await
            .map_err(|e| TransportError::Other(format!("hashing {shown} failed: {e}")))?
            .map_err(|source| TransportError::Io {
                context: format!("cannot read {shown}"),
                source,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{LocalTransport, Transport};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_host_hash_is_the_same_with_openssl_and_with_sha256sum_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("data");
        std::fs::write(&file, b"edgeforge\n").unwrap();
        let want = data_encoding::HEXLOWER.encode(&Sha256::digest(b"edgeforge\n"));
        // A PATH with sha256sum and cut but no openssl, and the full one.
        let bare = tmp.path().join("bin");
        std::fs::create_dir(&bare).unwrap();
        std::os::unix::fs::symlink(which("sha256sum"), bare.join("sha256sum")).unwrap();
        let with_openssl = std::env::var("PATH").unwrap();
        assert!(
            !which("openssl").as_os_str().is_empty(),
            "the test needs openssl"
        );
        for path in [bare.display().to_string(), with_openssl] {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!(
                    "s=$({}); echo \"${{s%% *}}\"",
                    host_sha256(&crate::sh::quote(&file.display().to_string()), OPENSSL_FROM)
                ))
                .env("PATH", &path)
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                want,
                "PATH={path}"
            );
        }
    }

    fn which(tool: &str) -> std::path::PathBuf {
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().into()
    }

    fn small<'a>(
        path: &'a str,
        bytes: &'a [u8],
        mode: u32,
        owner: Option<&'a str>,
    ) -> PutRequest<'a> {
        PutRequest {
            path,
            source: PutSource::Bytes(bytes),
            sha256: None,
            mode,
            owner,
            privileged: false,
        }
    }

    #[tokio::test]
    async fn one_trip_put_writes_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.conf");
        let p = path.to_str().unwrap();
        let t = LocalTransport::new();
        assert_eq!(
            t.put(small(p, b"a=1\n", 0o644, None)).await.unwrap(),
            PutOutcome::Written
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"a=1\n");
        assert_eq!(
            t.put(small(p, b"a=1\n", 0o644, None)).await.unwrap(),
            PutOutcome::Unchanged
        );
        // Same content, other mode: rewritten with the new mode.
        assert_eq!(
            t.put(small(p, b"a=1\n", 0o600, None)).await.unwrap(),
            PutOutcome::Written
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // Other content: rewritten, and no temporary file is left beside it.
        assert_eq!(
            t.put(small(p, b"", 0o600, None)).await.unwrap(),
            PutOutcome::Written
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // The owner is compared by name or id: the current user matches, a stranger does not.
        let me = String::from_utf8(
            t.exec(crate::transport::ExecRequest {
                script: "id -u",
                stdin: None,
                privileged: false,
                timeout: None,
            })
            .await
            .unwrap()
            .stdout,
        )
        .unwrap();
        let me = me.trim();
        assert_eq!(
            t.put(small(p, b"", 0o600, Some(me))).await.unwrap(),
            PutOutcome::Unchanged
        );
        let missing = dir.path().join("nodir/x.conf");
        let err = t
            .put(small(missing.to_str().unwrap(), b"x", 0o644, None))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[tokio::test]
    async fn one_probe_reports_every_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        let (a, b, spaced) = (p("a.conf"), p("b.conf"), p("with space.conf"));
        std::fs::write(&a, b"a\n").unwrap();
        std::fs::write(&b, b"b\n").unwrap();
        std::fs::write(&spaced, b"s\n").unwrap();
        for (f, mode) in [(&a, 0o644), (&b, 0o600), (&spaced, 0o644)] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink(&a, p("link")).unwrap();
        std::fs::create_dir(p("sub")).unwrap();
        let t = LocalTransport::new();
        let paths = [&a, &b, &spaced, &p("link"), &p("sub"), &p("missing")];
        let paths: Vec<&str> = paths.iter().map(|s| s.as_str()).collect();
        let probe = probe_files(&t, &paths, false).await.unwrap();
        let sha = |c: &[u8]| hex::encode(Sha256::digest(c));
        assert!(probe.unchanged(&a, &sha(b"a\n"), 0o644, None));
        assert!(probe.unchanged(&spaced, &sha(b"s\n"), 0o644, None));
        assert!(probe.unchanged(&b, &sha(b"b\n"), 0o600, None));
        assert!(!probe.unchanged(&b, &sha(b"b\n"), 0o644, None));
        assert!(!probe.unchanged(&a, &sha(b"other\n"), 0o644, None));
        assert!(!probe.unchanged(&a, &sha(b"a\n"), 0o644, Some("nobody-here")));
        for absent in [p("link"), p("sub"), p("missing")] {
            assert!(
                !probe.unchanged(&absent, &sha(b"a\n"), 0o644, None),
                "{absent}"
            );
        }
    }

    #[tokio::test]
    async fn one_trip_put_keeps_binary_content_and_any_mode() {
        let dir = tempfile::tempdir().unwrap();
        let t = LocalTransport::new();
        let cases: [(&str, &[u8], u32); 4] = [
            ("bin", b"\0\xff\xfe'\"$(x)`\\\n", 0o640),
            (
                "text",
                "quotes ' \" $HOME `id` \\ \u{e9}\n%s %d".as_bytes(),
                0o644,
            ),
            ("exec", b"#!/bin/sh\necho hi\n", 0o755),
            ("sticky", b"x", 0o1600),
        ];
        for (name, bytes, mode) in cases {
            let path = dir.path().join(name);
            let p = path.to_str().unwrap();
            assert_eq!(
                t.put(small(p, bytes, mode, None)).await.unwrap(),
                PutOutcome::Written,
                "{name}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}");
            let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(got, mode, "{name}");
            assert_eq!(
                t.put(small(p, bytes, mode, None)).await.unwrap(),
                PutOutcome::Unchanged,
                "{name}"
            );
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    }

    #[tokio::test]
    async fn file_sources_are_placed_and_then_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let t = LocalTransport::new();
        for len in [0, 1024 * 1024 + 1] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let src = dir.path().join(format!("src-{len}"));
            std::fs::write(&src, &data).unwrap();
            let dest = dir.path().join(format!("dest-{len}"));
            let req = PutRequest {
                path: dest.to_str().unwrap(),
                source: PutSource::File(&src),
                sha256: None,
                mode: 0o600,
                owner: None,
                privileged: false,
            };
            assert_eq!(t.put(req).await.unwrap(), PutOutcome::Written);
            assert_eq!(std::fs::read(&dest).unwrap(), data);
            assert_eq!(t.put(req).await.unwrap(), PutOutcome::Unchanged);
        }
    }

    #[tokio::test]
    async fn content_that_arrives_with_another_sha256_never_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = LocalTransport::new();
        let src = dir.path().join("k3s-new");
        std::fs::write(&src, vec![7u8; 300 * 1024]).unwrap();
        let dest = dir.path().join("k3s");
        std::fs::write(&dest, b"old binary").unwrap();
        // The pin says one thing, the bytes are another (a damaged cache, a bad transfer).
        let pinned = hex::encode(Sha256::digest(b"what the manifest pins"));
        let err = t
            .put(PutRequest {
                path: dest.to_str().unwrap(),
                source: PutSource::File(&src),
                sha256: Some(&pinned),
                mode: 0o755,
                owner: None,
                privileged: false,
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("was not replaced") && err.contains(&pinned),
            "{err}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"old binary");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file is left: {left:?}");
    }

    #[test]
    fn current_file_matches_on_sha_mode_and_owner() {
        let r = "abc\n644 root:root 0:0\n";
        assert!(matches_current(r, "abc", 0o644, None));
        assert!(matches_current(r, "abc", 0o100644, Some("root")));
        assert!(matches_current(r, "abc", 0o644, Some("0:0")));
        assert!(!matches_current(r, "abd", 0o644, None));
        assert!(!matches_current(r, "abc", 0o600, None));
        assert!(!matches_current(r, "abc", 0o644, Some("www:www")));
        assert!(!matches_current("absent\n", "abc", 0o644, None));
        assert!(!matches_current("nosha\n644 a:a 1:1\n", "abc", 0o644, None));
    }
}
