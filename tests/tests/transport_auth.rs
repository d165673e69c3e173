//! Client authentication against real sshd: key types, passphrases, refusals.

use std::time::Duration;

use edgeforge::transport::{Secret, SshTransport, TransportError};
use edgeforge_tests::transport_checks::sh;
use edgeforge_tests::{KeyKind, SshdFleet, sshd};

async fn connect_with_key(kind: KeyKind, passphrase: Option<&str>) -> Result<(), TransportError> {
    let fleet = SshdFleet::start(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    sshd::keygen(&key, kind, passphrase).unwrap();
    fleet.authorize(&sshd::pub_path(&key)).unwrap();
    let mut target = fleet.target(0);
    target.identity_files = vec![key];
    target.passphrase = passphrase.map(Secret::new);
    let t = SshTransport::connect(&target).await?;
    assert_eq!(sh(&t, "whoami").await.stdout, b"root\n");
    Ok(())
}

#[tokio::test]
async fn ed25519_ecdsa_and_rsa_keys() {
    connect_with_key(KeyKind::Ed25519, None).await.unwrap();
    connect_with_key(KeyKind::Ecdsa, None).await.unwrap();
    // RSA signs with rsa-sha2-512/256 (OpenSSH 9 refuses ssh-rsa/SHA-1).
    connect_with_key(KeyKind::Rsa, None).await.unwrap();
}

#[tokio::test]
async fn passphrase_protected_key() {
    connect_with_key(KeyKind::Ed25519, Some("correct horse"))
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_passphrase_is_reported_without_the_passphrase() {
    let fleet = SshdFleet::start(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    sshd::keygen(&key, KeyKind::Ed25519, Some("the-right-one")).unwrap();
    fleet.authorize(&sshd::pub_path(&key)).unwrap();
    let mut target = fleet.target(0);
    target.identity_files = vec![key.clone()];
    target.passphrase = Some(Secret::new("wrong-passphrase-xyz"));
    let err = SshTransport::connect(&target)
        .await
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, TransportError::Auth { .. }), "{msg}");
    assert!(
        msg.contains(&key.display().to_string()) && msg.contains("not loaded"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-passphrase-xyz")
            && !format!("{err:?}").contains("wrong-passphrase-xyz")
    );
}

#[tokio::test]
async fn wrong_client_key_is_refused() {
    let fleet = SshdFleet::start(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("stranger");
    sshd::keygen(&stranger, KeyKind::Ed25519, None).unwrap();
    let mut target = fleet.target(0);
    target.identity_files = vec![stranger.clone()];
    target.connect_timeout = Duration::from_secs(5);
    let err = SshTransport::connect(&target)
        .await
        .err()
        .expect("must be refused");
    let msg = err.to_string();
    assert!(matches!(err, TransportError::Auth { .. }), "{msg}");
    assert!(
        msg.contains(&format!("key {}", stranger.display())),
        "{msg}"
    );
    assert!(msg.contains("authorized_keys"), "{msg}");
}
