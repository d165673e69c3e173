//! `k3s agent`: requires `server: https://...` and a token (the agent token
//! or the server token), checks the token's CA hash against the server's
//! `/cacerts`, fetches `/v1-k3s/config`, gets the kubelet's certificate
//! against the node password and registers its Node through the server.
//! Like k3s, an agent that cannot join (wrong token, wrong CA, rejected node
//! password, server down) logs why and retries until it is stopped, so
//! `systemctl start` of its `Type=notify` unit does not return.

use std::path::PathBuf;
use std::time::Duration;

use super::client::{Auth, ClientError, Server};
use super::flags::{self, Command};
use super::node::{self, NodeSpec};
use super::server::{node_ips, node_name, read_secret};
use super::{Release, default_path, env_seconds, leftovers, log, tokens};

/// Runs `k3s agent` with `args` (after the subcommand); returns the exit code.
pub async fn run(args: Vec<String>, release: &Release) -> i32 {
    let settings = match flags::parse(
        Command::Agent,
        "agent",
        &args,
        &default_path("/etc/rancher/k3s/config.yaml"),
    ) {
        Ok(s) => s,
        Err(e) => return log::fatal(e.to_string()),
    };
    if settings.flag("debug") {
        log::set_debug(true);
    }
    let Some(url) = settings.get("server").map(str::to_string) else {
        return log::fatal("Error: --server is required");
    };
    let token_text = match read_secret(&settings, "token", "token-file") {
        Ok(Some(t)) => t,
        Ok(None) => return log::fatal("Error: --token is required"),
        Err(e) => return log::fatal(e),
    };
    let token = match tokens::parse(&token_text) {
        Ok(t) => t,
        Err(e) => return log::fatal(format!("Error: {e}")),
    };
    if let Err(e) = super::client::normalize(&url) {
        return log::fatal(format!("Error: {e}"));
    }
    let data_dir = settings
        .get("data-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_path("/var/lib/rancher/k3s"));
    if let Err(e) = std::fs::create_dir_all(data_dir.join("agent")) {
        return log::fatal(format!("Error: can not mkdir {}: {e}", data_dir.display()));
    }
    log::info(format!(
        "Starting k3s agent {} ({})",
        release.version, release.commit
    ));
    let spec = NodeSpec {
        name: node_name(&settings),
        server: false,
        etcd: None,
        version: release.version.clone(),
        labels: settings.raw_list("node-label"),
        taints: settings.raw_list("node-taint"),
        internal_ips: node_ips(&settings),
        external_ips: settings.list("node-external-ip"),
        node_args: settings.node_args.clone(),
        flannel_backend: "vxlan".into(),
    };
    let password = match node::node_password(&default_path("/etc/rancher/node/password")) {
        Ok(p) => p,
        Err(e) => return log::fatal(format!("Error: failed to write the node password: {e}")),
    };
    let api = loop {
        match join(&url, &token, &spec, &password).await {
            Ok(api) => break api,
            Err(message) => log::error(message),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = super::terminated() => {
                log::info("Received termination signal, shutting down k3s agent");
                return 0;
            }
        }
    };
    super::import_airgap_images(&data_dir);
    let gateway = "10.42.0.1/24".to_string();
    let root = super::root();
    let _ = tokio::task::spawn_blocking(move || leftovers::create(&root, &gateway)).await;
    super::notify_ready();
    log::info("k3s agent is up and running");
    let ready = {
        let spec = spec.clone();
        tokio::spawn(async move {
            let delay = env_seconds("EDGEFORGE_K3S_STANDIN_READY_SECONDS", 1.0);
            if let Err(e) = node::mark_ready(&api, &spec, delay).await {
                log::error(format!("Failed to update node {} status: {e}", spec.name));
            }
        })
    };
    super::terminated().await;
    log::info("Received termination signal, shutting down k3s agent");
    ready.abort();
    0
}

/// One attempt at joining; the error is the line to log.
async fn join(
    url: &str,
    token: &tokens::Token,
    spec: &NodeSpec,
    password: &str,
) -> Result<Server, String> {
    let server = Server::connect(url, token)
        .await
        .map_err(|e| format!("Failed to validate connection to cluster at {url}: {e}"))?;
    let auth = Auth::from_token(token, "node");
    server.get("/v1-k3s/config", &auth).await.map_err(|e| {
        format!("Failed to retrieve agent configuration: failed to retrieve configuration from server: {e}")
    })?;
    let (cert, key) = node::kubelet_certificate(&server, &auth, &spec.name, password)
        .await
        .map_err(|e| match e {
            ClientError::Status {
                code: 403, body, ..
            } => {
                format!("Failed to retrieve agent configuration: {body}")
            }
            other => format!("Failed to retrieve agent configuration: {other}"),
        })?;
    let api = Server::with_ca(&server.base, &server.ca_pem, Some((&cert, &key)))
        .map_err(|e| e.to_string())?;
    node::register(&api, spec)
        .await
        .map_err(|e| format!("Failed to register node {}: {e}", spec.name))?;
    Ok(api)
}
