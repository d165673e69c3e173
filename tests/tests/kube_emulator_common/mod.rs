//! Shared helpers of the kube-emulator suites: start an emulator, build
//! kube-rs clients from its kubeconfigs, send raw requests, read Status errors.

#![allow(dead_code)]

use edgeforge_tests::kube_emulator::{Emulator, EmulatorOptions};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

/// An emulator on a free loopback port with default options.
pub async fn start() -> Emulator {
    start_with(EmulatorOptions::default()).await
}

/// An emulator on a free loopback port.
pub async fn start_with(options: EmulatorOptions) -> Emulator {
    Emulator::start(options, "127.0.0.1:0".parse().expect("a socket address"))
        .await
        .expect("the emulator starts")
}

/// A kube-rs client for a kubeconfig document.
pub async fn client_from(kubeconfig: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).expect("the emulator's kubeconfig parses");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kube-rs accepts the kubeconfig");
    // kube-rs retries 429/503/504 by default; the suites look at each answer.
    config.default_retry = false;
    Client::try_from(config).expect("a client")
}

/// An admin (system:masters) client.
pub async fn admin(emulator: &Emulator) -> Client {
    client_from(&emulator.kubeconfig("emu")).await
}

/// A client authenticating with `token`.
pub async fn with_token(emulator: &Emulator, token: &str) -> Client {
    client_from(&emulator.kubeconfig_for("emu", token)).await
}

/// A client that sends no credentials at all.
pub async fn anonymous(emulator: &Emulator) -> Client {
    let kubeconfig = emulator.kubeconfig("emu");
    let without_user: String = kubeconfig
        .lines()
        .filter(|l| !l.trim_start().starts_with("token:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("  user:\n", "  user: {}\n");
    client_from(&without_user).await
}

/// The Status of an API error (panics on other errors: the test expected a Status).
pub fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error with a Status, got {other:?}"),
    }
}

/// A raw request: (HTTP status, JSON body or Null).
pub async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let mut builder = hyper::Request::builder().method(method).uri(path);
    if !content_type.is_empty() {
        builder = builder.header("Content-Type", content_type);
    }
    let request = builder
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .expect("a request");
    let response = client
        .send(request)
        .await
        .expect("the request gets a response");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect_bytes()
        .await
        .expect("the body is read");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

/// Polls `probe` until it returns Some (the controllers work asynchronously); panics after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..1000 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 10 s");
}
