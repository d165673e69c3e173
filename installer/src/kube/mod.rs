//! Kubernetes API access for the cluster and federation targets: API
//! connections built from kubeconfigs (kube-rs over rustls, the server
//! verified against the kubeconfig's CA), and the errors of talking to an API
//! server. [`kubeconfig`] reads, rewrites and merges kubeconfig files;
//! [`nodes`] waits for Nodes and cordons, drains, uncordons and deletes them;
//! [`skew`] holds the (pure) version rules of an upgrade.
//!
//! A kubeconfig that turns verification off (`insecure-skip-tls-verify`) is
//! refused unless the caller says the inventory allows it
//! ([`connect_file_with`]); the connection then says so
//! ([`KubeConn::insecure`]) for the step to warn. kube-rs's built-in retry
//! layer is switched off: it retries 429/503/504 up to 15 times with
//! exponential backoff (minutes in the worst case) and never retries a 500
//! or a dropped connection. Callers that retry use [`retry`], bounded and
//! said in the error.
//!
//! A leaf beside transport: the executor opens connections here, step kinds
//! use them. Nothing here shells out to kubectl.

pub mod kubeconfig;
pub mod nodes;
pub mod retry;
pub mod skew;

use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

/// Errors of reaching a Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig file could not be read.
    #[error("reading the kubeconfig {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig is not valid, or has no such context.
    #[error("the kubeconfig {origin} cannot be used{}", context.as_ref().map(|c| format!(" with context `{c}`")).unwrap_or_default())]
    Config {
        /// Where it came from.
        origin: String,
        /// The context asked for.
        context: Option<String>,
        /// kube-rs's reason.
        #[source]
        source: KubeconfigError,
    },
    /// The client could not be built (TLS material, proxy settings).
    #[error("building the API client")]
    Client(#[source] kube::Error),
    /// The kubeconfig switches TLS verification off and the inventory does not allow it.
    #[error(
        "the kubeconfig {origin} turns TLS verification off (`insecure-skip-tls-verify`); put the API server's CA into it (`certificate-authority-data`), or set `insecureSkipTLSVerify: true` for it in the inventory to accept the risk"
    )]
    Insecure {
        /// Where it came from.
        origin: String,
    },
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// A wait through the API ran out of time.
    #[error("{what} did not happen within {}s; last seen: {last}", after.as_secs())]
    Wait {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
        /// What was seen last.
        last: String,
    },
}

/// A connected Kubernetes API: the client and what it was built from.
#[derive(Clone)]
pub struct KubeConn {
    /// The client (TLS verified against the kubeconfig's CA).
    pub client: kube::Client,
    /// The API server URL, e.g. `https://127.0.0.1:6443`.
    pub url: String,
    /// The CA bundle (PEM) the server is verified against, when the kubeconfig has one.
    pub ca_pem: Option<String>,
    /// Where the kubeconfig came from (path and context), for messages.
    pub source: String,
    /// TLS verification is off (allowed by the inventory): steps warn.
    pub insecure: bool,
}

impl std::fmt::Debug for KubeConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeConn")
            .field("url", &self.url)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// An API connection from the kubeconfig file at `path` (its current context,
/// or `context`); a kubeconfig without TLS verification is refused.
pub async fn connect_file(path: &Path, context: Option<&str>) -> Result<KubeConn, KubeError> {
    connect_file_with(path, context, false).await
}

/// [`connect_file`], accepting a kubeconfig without TLS verification when
/// `allow_insecure` (the inventory's `insecureSkipTLSVerify`).
pub async fn connect_file_with(
    path: &Path,
    context: Option<&str>,
    allow_insecure: bool,
) -> Result<KubeConn, KubeError> {
    let text = std::fs::read_to_string(path).map_err(|source| KubeError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let origin = format!(
        "{}{}",
        path.display(),
        context
            .map(|c| format!(" (context {c})"))
            .unwrap_or_default()
    );
    connect_yaml_with(&origin, &text, context, allow_insecure).await
}

/// An API connection from kubeconfig text; `origin` names it in errors. A
/// kubeconfig without TLS verification is refused.
pub async fn connect_yaml(
    origin: &str,
    yaml: &str,
    context: Option<&str>,
) -> Result<KubeConn, KubeError> {
    connect_yaml_with(origin, yaml, context, false).await
}

/// [`connect_yaml`], accepting a kubeconfig without TLS verification when `allow_insecure`.
pub async fn connect_yaml_with(
    origin: &str,
    yaml: &str,
    context: Option<&str>,
    allow_insecure: bool,
) -> Result<KubeConn, KubeError> {
    let config_err = |source| KubeError::Config {
        origin: origin.to_string(),
        context: context.map(str::to_string),
        source,
    };
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(config_err)?;
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(config_err)?;
    if config.accept_invalid_certs && !allow_insecure {
        return Err(KubeError::Insecure {
            origin: origin.to_string(),
        });
    }
    // Bounded retries belong to the caller (see `retry`), not to kube-rs.
    config.default_retry = false;
    let insecure = config.accept_invalid_certs;
    let url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let ca_pem = config.root_cert.as_ref().map(|certs| {
        certs
            .iter()
            .map(|der| pem_block("CERTIFICATE", der))
            .collect::<String>()
    });
    let client = kube::Client::try_from(config).map_err(KubeError::Client)?;
    Ok(KubeConn {
        client,
        url,
        ca_pem,
        source: origin.to_string(),
        insecure,
    })
}

/// DER bytes as one PEM block.
fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
