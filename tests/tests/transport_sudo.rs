//! Privileged work as a non-root user through sudo with a password.

use edgeforge::transport::{
    ExecRequest, PutOutcome, PutRequest, PutSource, Secret, SshTransport, SudoMode, Transport,
};
use edgeforge_tests::transport_checks::sh;
use edgeforge_tests::{SshdFleet, SudoUser};

async fn privileged(t: &SshTransport, script: &str) -> edgeforge::transport::ExecOutput {
    t.exec(ExecRequest {
        script,
        stdin: None,
        privileged: true,
        timeout: None,
    })
    .await
    .unwrap()
}

/// Every process argument list on this machine (sshd children included).
fn all_cmdlines() -> String {
    let mut all = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&c).replace('\0', " "));
            all.push('\n');
        }
    }
    all
}

#[tokio::test]
async fn sudo_with_password_for_a_non_root_user() {
    let fleet = SshdFleet::start(1).unwrap();
    let user = SudoUser::create().unwrap();
    let mut target = fleet.target(0);
    target.user = user.name().into();
    target.sudo = SudoMode::Password(Secret::new(user.password()));
    let t = SshTransport::connect(&target).await.unwrap();

    assert_eq!(
        sh(&t, "whoami").await.stdout,
        format!("{}\n", user.name()).as_bytes()
    );
    assert_eq!(privileged(&t, "whoami").await.stdout, b"root\n");
    assert_eq!(privileged(&t, "id -u; cat").await.stdout, b"0\n");
    assert!(
        !all_cmdlines().contains(user.password()),
        "the password is in a process argument list"
    );

    // A root-owned file placed through sudo (inline content and a staged SFTP upload).
    let root = fleet.node(0).root();
    let path = root.join("root-only.conf").display().to_string();
    let req = PutRequest {
        path: &path,
        source: PutSource::Bytes(b"secret config\n"),
        sha256: None,
        mode: 0o600,
        owner: None,
        privileged: true,
    };
    assert_eq!(t.put(req).await.unwrap(), PutOutcome::Written);
    assert_eq!(t.put(req).await.unwrap(), PutOutcome::Unchanged);
    let meta = privileged(&t, &format!("stat -c '%U %a' '{path}'"))
        .await
        .stdout;
    assert_eq!(meta, b"root 600\n");
    let scratch = tempfile::tempdir().unwrap();
    let big = scratch.path().join("big");
    std::fs::write(&big, vec![1u8; 600_000]).unwrap();
    let big_path = root.join("big.bin").display().to_string();
    let big_req = PutRequest {
        path: &big_path,
        source: PutSource::File(&big),
        mode: 0o644,
        ..req
    };
    assert_eq!(t.put(big_req).await.unwrap(), PutOutcome::Written);
    assert_eq!(
        privileged(&t, &format!("stat -c '%U %s' '{big_path}'"))
            .await
            .stdout,
        b"root 600000\n"
    );
    assert_eq!(t.put(big_req).await.unwrap(), PutOutcome::Unchanged);
    assert_eq!(
        t.get(&path, true).await.unwrap().as_deref(),
        Some(&b"secret config\n"[..])
    );
    assert!(
        edgeforge_tests::transport_checks::listing(root)
            .iter()
            .all(|n| !n.contains("ef-tmp")),
        "temporary files left behind"
    );
    let staged: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".edgeforge-upload-")
        })
        .collect();
    assert!(staged.is_empty(), "staged uploads left in /tmp");
    // Debug output of the target never shows the password.
    assert!(!format!("{target:?}").contains(user.password()));
}

#[tokio::test]
async fn wrong_sudo_password_fails_without_leaking_it() {
    let fleet = SshdFleet::start(1).unwrap();
    let user = SudoUser::create().unwrap();
    let wrong = "not-the-password-4711";
    let mut target = fleet.target(0);
    target.user = user.name().into();
    target.sudo = SudoMode::Password(Secret::new(wrong));
    let t = SshTransport::connect(&target).await.unwrap();
    let err = t
        .exec(ExecRequest {
            script: "true",
            stdin: None,
            privileged: true,
            timeout: None,
        })
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
    assert!(shown.contains("sudo rejected the password"), "{shown}");
    assert!(
        !shown.contains(wrong) && !shown.contains(user.password()),
        "{shown}"
    );
    // Unprivileged commands still work on the same connection.
    assert_eq!(sh(&t, "echo fine").await.stdout, b"fine\n");
}

#[tokio::test]
async fn passwordless_mode_reports_a_needed_password() {
    let fleet = SshdFleet::start(1).unwrap();
    let user = SudoUser::create().unwrap();
    let mut target = fleet.target(0);
    target.user = user.name().into();
    target.sudo = SudoMode::Passwordless;
    let t = SshTransport::connect(&target).await.unwrap();
    let err = t
        .exec(ExecRequest {
            script: "true",
            stdin: None,
            privileged: true,
            timeout: None,
        })
        .await
        .unwrap_err();
    let shown = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(shown.contains("password is required"), "{shown}");
}
