//! Behaviour every [`Transport`] must show, as reusable checks.
//!
//! The SSH suites (against real sshd) and the local-transport suite call the
//! same functions, so the framed-shell protocol is held to one standard on
//! both. Each check panics with a message on the first deviation.

use std::path::Path;
use std::time::{Duration, Instant};

use edgeforge::transport::{
    ExecOutput, ExecRequest, PutOutcome, PutRequest, PutSource, Transport, TransportError,
};
use sha2::{Digest, Sha256};

/// Runs a script without stdin, unprivileged, and unwraps the result.
pub async fn sh(t: &dyn Transport, script: &str) -> ExecOutput {
    run(t, script, None).await
}

/// Runs a script with optional stdin and unwraps the result.
pub async fn run(t: &dyn Transport, script: &str, stdin: Option<&[u8]>) -> ExecOutput {
    t.exec(ExecRequest {
        script,
        stdin,
        privileged: false,
        timeout: Some(Duration::from_secs(60)),
    })
    .await
    .unwrap_or_else(|e| panic!("`{script}` failed: {e}"))
}

/// Exit codes, separate stdout and stderr, `exit`/`cd`/variables contained
/// in the command's subshell, syntax errors survived, quotes passed intact.
pub async fn exit_codes_and_streams(t: &dyn Transport) {
    let out = sh(t, "echo out; echo err >&2; exit 3").await;
    assert_eq!(
        (out.status, out.stdout.as_slice(), out.stderr.as_slice()),
        (3, &b"out\n"[..], &b"err\n"[..])
    );
    assert_eq!(sh(t, "true").await.status, 0);
    assert_eq!(sh(t, "false").await.status, 1);
    let here = sh(t, "pwd").await.stdout;
    assert_eq!(sh(t, "cd / && X=1 && pwd").await.stdout, b"/\n");
    assert_eq!(
        sh(t, "pwd").await.stdout,
        here,
        "cd leaked out of a command"
    );
    assert_eq!(sh(t, "echo ${X:-unset}").await.stdout, b"unset\n");
    let bad = sh(t, "if then fi (").await;
    assert_ne!(bad.status, 0, "a syntax error must fail");
    assert_eq!(
        sh(t, "echo 'it'\"'\"'s' \"$((1+2))\"").await.stdout,
        b"it's 3\n"
    );
    let heredoc = sh(t, "cat <<'EOF'\nline 'one'\nEOF").await;
    assert_eq!(heredoc.stdout, b"line 'one'\n");
    assert_eq!(sh(t, "printf 'no newline'").await.stdout, b"no newline");
    assert_eq!(sh(t, "exit 0").await.status, 0);
    assert_eq!(sh(t, "echo still-alive").await.stdout, b"still-alive\n");
}

/// A command killed by signal N reports 128 + N.
pub async fn signals(t: &dyn Transport) {
    assert_eq!(sh(t, "sh -c 'kill -TERM $$'").await.status, 143);
    assert_eq!(sh(t, "sh -c 'kill -KILL $$'").await.status, 137);
    assert_eq!(sh(t, "echo after").await.stdout, b"after\n");
}

/// Every byte value survives stdin and stdout; 12 MB of stdout and 1 MB of
/// stderr from one command arrive whole.
pub async fn binary_and_large_output(t: &dyn Transport) {
    let all: Vec<u8> = (0..=255u8).cycle().take(256 * 40).collect();
    assert_eq!(run(t, "cat", Some(&all)).await.stdout, all);
    let out = sh(
        t,
        "head -c 12000000 /dev/zero | tr '\\0' 'x'; head -c 1000000 /dev/zero | tr '\\0' 'e' >&2",
    )
    .await;
    assert_eq!(out.status, 0);
    assert_eq!(out.stdout.len(), 12_000_000);
    assert!(out.stdout.iter().all(|b| *b == b'x'));
    assert_eq!(out.stderr.len(), 1_000_000);
    assert!(out.stderr.iter().all(|b| *b == b'e'));
}

/// Output shaped like end markers (hex nonce, sequence, status; heredoc
/// delimiters) is passed through as output, not taken as a frame end.
pub async fn fake_frame_markers(t: &dyn Transport) {
    let fake = "0123456789abcdef0123456789abcdef:1:0\n\
                0123456789abcdef0123456789abcdef:2:\n\
                EFIN0123_2_\n__ef=$?\n";
    let script = format!("printf '%s' '{fake}'; printf '%s' '{fake}' >&2; exit 4");
    for _ in 0..3 {
        let out = sh(t, &script).await;
        assert_eq!(out.status, 4);
        assert_eq!(out.stdout, fake.as_bytes());
        assert_eq!(out.stderr, fake.as_bytes());
    }
}

/// Stdin bytes reach the command and end there; the next command sees none.
pub async fn stdin_feeding(t: &dyn Transport) {
    assert_eq!(
        run(t, "cat", Some(b"hello\nworld")).await.stdout,
        b"hello\nworld"
    );
    let big = vec![b'z'; 1_000_000];
    assert_eq!(
        run(t, "wc -c", Some(&big)).await.stdout.trim_ascii(),
        b"1000000"
    );
    assert_eq!(run(t, "cat", Some(b"")).await.stdout, b"");
    assert_eq!(
        sh(t, "cat").await.stdout,
        b"",
        "stdin must be empty without input"
    );
    let marker_like = b"EOF\nEFIN\n'\n".to_vec();
    assert_eq!(run(t, "cat", Some(&marker_like)).await.stdout, marker_like);
}

/// A command over its timeout fails with `Timeout` promptly, its processes
/// are killed, and the transport keeps working afterwards.
pub async fn timeout(t: &dyn Transport) {
    // Durations unique to this call, to find exactly these processes in /proc.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let (first, second) = (format!("sleep 47.{nanos}"), format!("sleep 48.{nanos}"));
    let script = format!("{first} & {second}");
    let started = Instant::now();
    let err = t
        .exec(ExecRequest {
            script: &script,
            stdin: None,
            privileged: false,
            timeout: Some(Duration::from_millis(300)),
        })
        .await
        .expect_err("sleep 30 must time out");
    assert!(matches!(err, TransportError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The target shares this machine (loopback sshd or local), so /proc
    // shows it. SIGKILL is delivered asynchronously: allow the processes a
    // moment to die.
    let mut survivors = Vec::new();
    for _ in 0..50 {
        survivors = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.trim() == first || c.trim() == second)
            .collect::<Vec<String>>();
        if survivors.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(survivors.is_empty(), "left running: {survivors:?}");
    assert_eq!(sh(t, "echo recovered").await.stdout, b"recovered\n");
}

/// Many commands at once on one transport all get their own output.
pub async fn concurrent_commands(t: &dyn Transport) {
    let runs = (0..24).map(|i| async move {
        let out = sh(t, &format!("sleep 0.0{}; echo {i}; echo e{i} >&2", i % 5)).await;
        (i, out)
    });
    for (i, out) in futures_util::future::join_all(runs).await {
        assert_eq!(out.stdout, format!("{i}\n").as_bytes());
        assert_eq!(out.stderr, format!("e{i}\n").as_bytes());
    }
}

/// put writes, a second identical put is `Unchanged`, a mode change is
/// `Written`, and no temporary file is left next to the target.
pub async fn put_and_skip(t: &dyn Transport, dir: &Path) {
    let path = dir.join("conf.txt").display().to_string();
    let req = |content: &'static [u8], mode| PutRequest {
        path: &path,
        source: PutSource::Bytes(content),
        sha256: None,
        mode,
        owner: None,
        privileged: false,
    };
    assert_eq!(
        t.put(req(b"v1\n", 0o644)).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        t.put(req(b"v1\n", 0o644)).await.unwrap(),
        PutOutcome::Unchanged
    );
    assert_eq!(
        t.put(req(b"v1\n", 0o600)).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        t.put(req(b"v2\n", 0o600)).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        t.get(&path, false).await.unwrap().as_deref(),
        Some(&b"v2\n"[..])
    );
    let mode = sh(t, &format!("stat -c %a '{path}'")).await.stdout;
    assert_eq!(mode, b"600\n");
    assert_eq!(listing(dir), ["conf.txt"]);
    let missing = dir.join("missing").display().to_string();
    assert_eq!(t.get(&missing, false).await.unwrap(), None);
}

/// A file source (larger than the inline limit) is streamed, verified by
/// sha256 on the host, and skipped the second time.
pub async fn put_file_source(t: &dyn Transport, dir: &Path, scratch: &Path) {
    let local = scratch.join("payload.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let path = dir.join("payload.bin").display().to_string();
    let req = PutRequest {
        path: &path,
        source: PutSource::File(&local),
        sha256: None,
        mode: 0o640,
        owner: None,
        privileged: false,
    };
    assert_eq!(t.put(req).await.unwrap(), PutOutcome::Written);
    let remote_sha = sh(t, &format!("sha256sum '{path}' | cut -c1-64"))
        .await
        .stdout;
    assert_eq!(
        String::from_utf8_lossy(&remote_sha).trim(),
        hex::encode(Sha256::digest(&data))
    );
    assert_eq!(t.put(req).await.unwrap(), PutOutcome::Unchanged);
    assert_eq!(listing(dir), ["payload.bin"]);
}

/// An upload cut short leaves the old file intact; the next put of the same
/// path succeeds and sweeps the leftover temporary file.
pub async fn interrupted_put_keeps_old_file(t: &dyn Transport, dir: &Path, scratch: &Path) {
    let path = dir.join("state.db").display().to_string();
    let old = PutRequest {
        path: &path,
        source: PutSource::Bytes(b"old content\n"),
        sha256: None,
        mode: 0o644,
        owner: None,
        privileged: false,
    };
    t.put(old).await.unwrap();
    let local = scratch.join("big.bin");
    let data = vec![7u8; 64 * 1024 * 1024];
    std::fs::write(&local, &data).unwrap();
    let sha = hex::encode(Sha256::digest(&data));
    let big = PutRequest {
        source: PutSource::File(&local),
        sha256: Some(&sha),
        ..old
    };
    // Cut the upload once its temporary file exists, however slow the machine.
    let mut upload = t.put(big);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::select! {
            done = &mut upload => panic!(
                "the 64 MB upload finished before a temporary file was seen; \
                 cannot test interruption: {done:?}"
            ),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {
                if listing(dir).iter().any(|n| n.starts_with(".state.db.ef-tmp-")) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no temporary file appeared within 60 s: {:?}",
                    listing(dir)
                );
            }
        }
    }
    drop(upload);
    assert_eq!(
        t.get(&path, false).await.unwrap().as_deref(),
        Some(&b"old content\n"[..])
    );
    let new = PutRequest {
        source: PutSource::Bytes(b"new content\n"),
        ..old
    };
    assert_eq!(t.put(new).await.unwrap(), PutOutcome::Written);
    assert_eq!(
        t.get(&path, false).await.unwrap().as_deref(),
        Some(&b"new content\n"[..])
    );
    assert_eq!(listing(dir), ["state.db"]);
}

/// File names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
