//! `kube-emulator`: runs the harness's Kubernetes API server stand-in out of
//! process (see `edgeforge_tests::kube_emulator`). Prints its URL on stdout
//! once it serves, then runs until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use edgeforge_tests::kube_emulator::{Ca, Emulator, EmulatorOptions, StaticToken};

/// A STAND-IN for a Kubernetes API server, for edgeforge's tests: a stateful
/// emulator over HTTPS with its own CA, token and client-certificate
/// authentication, RBAC, discovery, CRDs, watches and server-side apply. It is
/// not an apiserver: no admission, no protobuf, no HTTP/2, no workload
/// controllers.
#[derive(Parser)]
#[command(name = "kube-emulator", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// IP address or DNS name the serving certificate covers (repeatable; default 127.0.0.1 and localhost).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// A bearer token, TOKEN:USER[:GROUP,...] (repeatable). Visible in the process list: prefer --token-file.
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// A file of TOKEN:USER[:GROUP,...] lines (repeatable; `#` starts a comment).
    #[arg(long = "token-file")]
    token_files: Vec<PathBuf>,
    /// Persist objects in this JSON file (loaded at start, written after each write).
    #[arg(long = "state")]
    state: Option<PathBuf>,
    /// A CustomResourceDefinition (YAML or JSON file) to register at start (repeatable).
    #[arg(long = "crd")]
    crds: Vec<PathBuf>,
    /// Write an admin kubeconfig here (mode 0600).
    #[arg(long = "kubeconfig-out")]
    kubeconfig_out: Option<PathBuf>,
    /// Name of the cluster, user and context in the kubeconfig written.
    #[arg(long = "kubeconfig-name", default_value = "kube-emulator")]
    kubeconfig_name: String,
    /// CA certificate (PEM) to sign with instead of a new CA; needs --ca-key.
    #[arg(long = "ca-cert", requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// CA private key (PKCS#8 PEM) for --ca-cert.
    #[arg(long = "ca-key", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// The gitVersion `/version` reports.
    #[arg(long = "git-version", default_value = edgeforge_tests::kube_emulator::DEFAULT_GIT_VERSION)]
    git_version: String,
}

fn parse_token(spec: &str, origin: &str) -> Result<StaticToken> {
    let mut parts = spec.splitn(3, ':');
    let token = parts.next().unwrap_or_default();
    let user = parts.next().unwrap_or_default();
    if token.is_empty() || user.is_empty() {
        bail!("{origin}: a token is TOKEN:USER[:GROUP,...]");
    }
    let groups: Vec<&str> = parts
        .next()
        .map(|g| g.split(',').filter(|g| !g.is_empty()).collect())
        .unwrap_or_default();
    Ok(StaticToken::new(token, user, &groups))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut options = EmulatorOptions {
        git_version: args.git_version,
        state_path: args.state,
        ..EmulatorOptions::default()
    };
    if !args.sans.is_empty() {
        options.sans = args.sans;
    }
    for (i, spec) in args.tokens.iter().enumerate() {
        options
            .tokens
            .push(parse_token(spec, &format!("--token #{}", i + 1))?);
    }
    for file in &args.token_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading token file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            options.tokens.push(parse_token(
                line,
                &format!("{} line {}", file.display(), n + 1),
            )?);
        }
    }
    for file in &args.crds {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading CRD file {}", file.display()))?;
        let crd: serde_json::Value = serde_saphyr::from_str(&text)
            .with_context(|| format!("{} is not a YAML or JSON document", file.display()))?;
        options.crds.push(crd);
    }
    if let (Some(cert), Some(key)) = (&args.ca_cert, &args.ca_key) {
        let cert_pem =
            std::fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key_pem =
            std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
        options.ca = Some(
            Ca::from_pem(&cert_pem, &key_pem)
                .context("loading the CA given by --ca-cert/--ca-key")?,
        );
    }
    let emulator = Emulator::start(options, args.listen)
        .await
        .context("starting the emulator")?;
    if let Some(path) = &args.kubeconfig_out {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing the kubeconfig {}", path.display()))?;
        file.write_all(emulator.kubeconfig(&args.kubeconfig_name).as_bytes())
            .with_context(|| format!("writing the kubeconfig {}", path.display()))?;
    }
    println!("{}", emulator.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    emulator.shutdown().await;
    Ok(())
}
