//! Kubernetes API access for the cluster and federation targets: API clients
//! built from kubeconfigs (kube-rs over rustls, the server verified against the
//! kubeconfig's CA), and the errors of talking to an API server.
//!
//! A leaf beside transport: the executor builds clients here, step kinds use
//! them. Nothing here shells out to kubectl.

use std::path::Path;

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
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// An API client from the kubeconfig file at `path` (its current context, or `context`).
pub async fn client_from_file(
    path: &Path,
    context: Option<&str>,
) -> Result<kube::Client, KubeError> {
    let text = std::fs::read_to_string(path).map_err(|source| KubeError::Read {
        path: path.display().to_string(),
        source,
    })?;
    client_from_yaml(&path.display().to_string(), &text, context).await
}

/// An API client from kubeconfig text; `origin` names it in errors.
pub async fn client_from_yaml(
    origin: &str,
    yaml: &str,
    context: Option<&str>,
) -> Result<kube::Client, KubeError> {
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
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(config_err)?;
    kube::Client::try_from(config).map_err(KubeError::Client)
}
