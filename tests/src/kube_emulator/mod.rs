//! `kube-emulator`: a **stand-in** for a Kubernetes API server, for tests only.
//!
//! k3s cannot be downloaded on these machines and no apiserver is packaged in
//! any reachable registry, so the harness carries this stateful emulator. It
//! serves HTTPS (rustls, aws-lc-rs, HTTP/1.1 only) with its own CA, and
//! behaves like an apiserver wherever a client such as kube-rs or kubectl
//! touches it: authentication by bearer token or client certificate (CN =
//! user, O = groups), RBAC authorization from Role/ClusterRole and binding
//! objects it stores (`system:masters` bypasses it), discovery (legacy
//! `APIVersions`/`APIGroupList`/`APIResourceList`, including resources of
//! CRDs registered at run time), OpenAPI v3 documents just detailed enough for
//! kubectl's field validation check, `meta.k8s.io/v1` Tables for `kubectl get`,
//! and objects with uid, creationTimestamp, generation and one global
//! resourceVersion. Verbs: get, list (label and field selectors, `limit` and
//! `continue`), watch (from a resourceVersion, `timeoutSeconds`, 410 `Expired`
//! past the retained history), create (`generateName`), update (optimistic
//! concurrency), patch (JSON, merge, strategic merge, server-side apply with
//! `managedFields`, conflicts and `force`), delete (finalizers,
//! deletionTimestamp, namespace termination) and deletecollection; `/status`
//! for types that have it; `pods/eviction`; SelfSubjectAccessReview. The
//! controllers a cluster join relies on run in one task per emulator (see
//! [`controllers`]). No production code path uses it. As on a real
//! apiserver, a body whose kind, apiVersion, name or namespace does not match
//! the path is a 400 BadRequest, a bad name or a changed immutable field a
//! 422 Invalid.
//!
//! Strategic merge patch is a merge patch except for the list merge keys the
//! emulator knows: `containers`, `initContainers`, `ephemeralContainers`,
//! `env`, `volumes`, `imagePullSecrets` (by `name`), `volumeMounts`
//! (`mountPath`), `conditions` (`type`), `hostAliases` (`ip`), container
//! `ports` (`containerPort`), service `ports` (`port`), `ownerReferences`
//! (`uid`); `metadata.finalizers` merges as a set; `$patch: delete|replace`,
//! `$deleteFromPrimitiveList/…` and `$setElementOrder/…` are honoured.
//! Server-side apply uses the same list shapes for built-in types and the
//! `x-kubernetes-list-type` annotations of a CRD's schema for custom
//! resources (other lists are atomic).
//!
//! What it does **not** model, so nobody mistakes it for an apiserver:
//! admission (webhooks, defaulting beyond a few fields, validation beyond names,
//! immutable fields and CRD naming), protobuf and CBOR bodies (answered with
//! 415: kubectl's typed `create <kind>` generators and `auth can-i` send
//! protobuf and fail here, `kubectl apply -f` sends JSON and works), HTTP/2, aggregated
//! discovery (clients fall back to the legacy documents), a full OpenAPI
//! schema for built-in types (strict field validation checks their top-level
//! and metadata fields only), garbage collection of ownerReferences
//! (propagationPolicy is accepted and ignored), graceful pod deletion (no
//! kubelet: pods go at once), workload controllers (Deployments get no
//! ReplicaSets or status), watch bookmarks, `sendInitialEvents`, watch
//! events for objects leaving a selector, CRD version conversion (every
//! version serves the stored object with its apiVersion rewritten),
//! impersonation, audit, quota, PodDisruptionBudgets for evictions, and
//! service-account token signing (tokens are JWT-shaped but checked by value).

pub mod auth;
pub mod controllers;
pub mod faults;
pub mod fields;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use auth::{Identity, StaticToken};
pub use faults::{Faults, RequestFilter, RequestRecord};
pub use status::ApiError;
pub use store::{DEFAULT_WATCH_HISTORY, StateError, Store};
pub use tls::{Ca, TlsError};

/// The gitVersion `/version` reports unless told otherwise.
pub const DEFAULT_GIT_VERSION: &str = "v1.34.2";

/// What can stop an emulator from starting.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The CA or the serving certificate could not be made.
    #[error("Could not set up the emulator's TLS")]
    Tls(#[source] TlsError),
    /// The listen address could not be bound.
    #[error("Could not listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The persisted state could not be loaded.
    #[error("Could not load the emulator's state")]
    State(#[source] StateError),
}

/// Extra routes an embedder serves on the emulator's port (the k3s stand-in's `/cacerts`, `/ping`, join endpoints).
pub trait Extension: Send + Sync {
    /// Called for each request before authentication; None falls through to the emulator.
    fn handle<'a>(
        &'a self,
        request: &'a ExtensionRequest,
        store: &'a Store,
    ) -> BoxFuture<'a, Option<ExtensionResponse>>;
}

/// A request as an [`Extension`] sees it.
#[derive(Debug, Clone)]
pub struct ExtensionRequest {
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Request headers (including Authorization: extensions do their own checks).
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The client's address.
    pub peer: SocketAddr,
}

/// An [`Extension`]'s answer.
#[derive(Debug, Clone)]
pub struct ExtensionResponse {
    /// HTTP status code.
    pub status: u16,
    /// Content-Type header.
    pub content_type: String,
    /// Body.
    pub body: Vec<u8>,
}

/// How to start an emulator. `Default`: a new CA, SANs `127.0.0.1` and `localhost`, gitVersion `v1.34.2`.
#[derive(Clone)]
pub struct EmulatorOptions {
    /// The CA to sign with (share one between emulators); None makes a new one.
    pub ca: Option<Ca>,
    /// IP addresses and DNS names the serving certificate covers.
    pub sans: Vec<String>,
    /// What `/version` reports as gitVersion.
    pub git_version: String,
    /// Where to persist objects (loaded at start, written after each write); None keeps them in memory.
    pub state_path: Option<PathBuf>,
    /// Bearer tokens accepted from the start.
    pub tokens: Vec<StaticToken>,
    /// CRD objects registered at start.
    pub crds: Vec<serde_json::Value>,
    /// Extra routes of an embedder.
    pub extension: Option<Arc<dyn Extension>>,
    /// How many watch events are kept for watches resuming from a resourceVersion.
    pub watch_history: usize,
}

impl Default for EmulatorOptions {
    fn default() -> EmulatorOptions {
        EmulatorOptions {
            ca: None,
            sans: vec!["127.0.0.1".into(), "localhost".into()],
            git_version: DEFAULT_GIT_VERSION.into(),
            state_path: None,
            tokens: Vec::new(),
            crds: Vec::new(),
            extension: None,
            watch_history: DEFAULT_WATCH_HISTORY,
        }
    }
}

/// A running emulator (stops when dropped or shut down).
pub struct Emulator {
    addr: SocketAddr,
    ca: Ca,
    admin_token: String,
    store: Store,
    auth: Arc<auth::Authenticator>,
    faults: Faults,
    log: faults::RequestLog,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    controllers: JoinHandle<()>,
}

impl Emulator {
    /// Starts serving on `bind` (port 0 picks a free one).
    pub async fn start(
        options: EmulatorOptions,
        bind: SocketAddr,
    ) -> Result<Emulator, EmulatorError> {
        let ca = match options.ca {
            Some(ca) => ca,
            None => Ca::generate("kube-emulator-ca").map_err(EmulatorError::Tls)?,
        };
        let tls = ca
            .server_config(&options.sans)
            .map_err(EmulatorError::Tls)?;
        let (store, work) = Store::new(
            ca.cert_pem(),
            options.state_path.clone(),
            options.watch_history,
            &options.crds,
        )
        .map_err(EmulatorError::State)?;
        let auth = Arc::new(auth::Authenticator::default());
        for token in options.tokens {
            auth.add(token);
        }
        let admin_token = random_token();
        auth.add(StaticToken::new(
            &admin_token,
            "kube-emulator-admin",
            &["system:masters"],
        ));
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| EmulatorError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind { addr: bind, source })?;
        let revoke_auth = auth.clone();
        let faults = Faults::new(Arc::new(move |token: &str| revoke_auth.revoke(token)));
        let log = faults::RequestLog::default();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(server::Shared {
            store: store.clone(),
            auth: auth.clone(),
            faults: faults.clone(),
            log: log.clone(),
            git_version: options.git_version,
            extension: options.extension,
            shutdown: shutdown_rx,
            server_address: addr.to_string(),
        });
        let server = tokio::spawn(server::serve(listener, tls, shared));
        let controllers = tokio::spawn(controllers::run(store.clone(), work));
        Ok(Emulator {
            addr,
            ca,
            admin_token,
            store,
            auth,
            faults,
            log,
            shutdown,
            server: Some(server),
            controllers,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr>` (an unspecified bind address reads as 127.0.0.1).
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("https://{addr}")
    }

    /// Its CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// A token in group `system:masters`.
    pub fn admin_token(&self) -> String {
        self.admin_token.clone()
    }

    /// An admin kubeconfig (token auth, CA data); cluster, user and context are all `name`.
    pub fn kubeconfig(&self, name: &str) -> String {
        self.kubeconfig_for(name, &self.admin_token)
    }

    /// A kubeconfig authenticating with `token`.
    pub fn kubeconfig_for(&self, name: &str, token: &str) -> String {
        kubeconfig(
            name,
            &self.url(),
            &self.ca.cert_pem(),
            &format!("    token: {}\n", yaml_str(token)),
        )
    }

    /// A kubeconfig with a client certificate for `user` in `groups`, signed by the CA.
    pub fn kubeconfig_client_cert(
        &self,
        name: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<String, TlsError> {
        let (cert, key) = self.ca.issue_client(user, groups)?;
        let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
        let user_block = format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&cert),
            b64(&key)
        );
        Ok(kubeconfig(
            name,
            &self.url(),
            &self.ca.cert_pem(),
            &user_block,
        ))
    }

    /// Accepts another bearer token from now on.
    pub fn add_token(&self, token: StaticToken) {
        self.auth.add(token);
    }

    /// Stops accepting a token (static or service-account).
    pub fn revoke_token(&self, token: &str) {
        self.auth.revoke(token);
    }

    /// Direct access to the objects (same resourceVersions and watch events as HTTP writes).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// The fault hooks.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Every request so far (oldest first), admin endpoints excluded.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.all()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.log.clear();
    }

    /// Every object as YAML, grouped by resource (`configmaps`, `deployments.apps`, ...).
    pub fn dump_yaml(&self) -> String {
        dump_yaml(&self.store)
    }

    /// Stops serving: closes the listener, open connections and watches.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.controllers.abort();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.controllers.abort();
    }
}

/// The store as YAML: a map from resource to its objects (sorted by namespace, name).
pub(crate) fn dump_yaml(store: &Store) -> String {
    let all = store.all_objects();
    serde_saphyr::to_string(&all)
        .unwrap_or_else(|e| format!("# the state could not be rendered: {e}\n"))
}

fn random_token() -> String {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    data_encoding::BASE64URL_NOPAD.encode(&bytes)
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn kubeconfig(name: &str, url: &str, ca_pem: &str, user_block: &str) -> String {
    let n = yaml_str(name);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {n}\n  user:\n{user_block}contexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\ncurrent-context: {n}\npreferences: {{}}\n",
        yaml_str(url),
        data_encoding::BASE64.encode(ca_pem.as_bytes()),
    )
}
