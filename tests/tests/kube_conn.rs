//! edgeforge's Kubernetes connections (what cluster and federation targets
//! open) against the harness's Kubernetes API emulator (a stand-in for an
//! apiserver) over HTTPS: the URL and CA come from the kubeconfig, the
//! server is verified against that CA, and a bad kubeconfig says which.

use edgeforge_tests::kube_emulator::{Emulator, EmulatorOptions};
use k8s_openapi::api::core::v1::Namespace;

async fn emulator() -> Emulator {
    Emulator::start(
        EmulatorOptions::default(),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("the emulator starts")
}

#[tokio::test]
async fn a_kubeconfig_gives_a_verified_connection_with_its_url_and_ca() {
    let emu = emulator().await;
    let conn = edgeforge::kube::connect_yaml("emu.yaml", &emu.kubeconfig("emu"), None)
        .await
        .expect("connect");
    assert_eq!(conn.url, emu.url());
    assert_eq!(
        conn.ca_pem.as_deref().map(str::trim),
        Some(emu.ca().cert_pem().trim())
    );
    let ns: kube::Api<Namespace> = kube::Api::all(conn.client.clone());
    let system = ns.get("kube-system").await.expect("kube-system");
    assert!(system.metadata.uid.is_some_and(|u| !u.is_empty()));

    // The same server with another CA in the kubeconfig is refused at TLS.
    let other = emulator().await;
    let forged = emu.kubeconfig("emu").replace(
        &data_encoding::BASE64.encode(emu.ca().cert_pem().as_bytes()),
        &data_encoding::BASE64.encode(other.ca().cert_pem().as_bytes()),
    );
    assert_ne!(
        forged,
        emu.kubeconfig("emu"),
        "the kubeconfig carries the CA as data"
    );
    let conn = edgeforge::kube::connect_yaml("forged.yaml", &forged, None)
        .await
        .expect("a client is built");
    let err = kube::Api::<Namespace>::all(conn.client)
        .get("kube-system")
        .await
        .expect_err("an unknown CA is refused");
    let text = edgeforge::error::chain(&err);
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[tokio::test]
async fn a_missing_context_names_the_kubeconfig_and_the_context() {
    let emu = emulator().await;
    let err = edgeforge::kube::connect_yaml("site.yaml", &emu.kubeconfig("emu"), Some("nope"))
        .await
        .expect_err("no such context");
    let text = err.to_string();
    assert!(
        text.contains("site.yaml") && text.contains("`nope`"),
        "{text}"
    );
}
