//! Registering each site's cluster into the federation host, and taking it
//! out again: Karmada in push mode (the objects `karmadactl join` creates),
//! Karmada in pull mode (what `karmadactl register` prepares and the
//! karmada-agent then does itself), KubeFed (the objects `kubefedctl join`
//! creates); the registrations as the host sees them ([`status`]); and
//! federated workloads rendered from templates ([`workload`]).
//!
//! A join alternates between two APIs, so the plan runs it as a chain of
//! tasks per site, each against one target, passing tokens and CA bundles
//! along as secret outputs: [`identify`] the cluster (the `kube-system`
//! namespace UID is its id), [`karmada::check`] the host for the name and
//! the id, create the member's credentials, register on the host. Each
//! function here is one such task's work, given the connections it needs.
//!
//! A leaf over [`crate::kube`]: connections come from the executor; every
//! call goes through [`client::Kube`] (bounded retries, server-side apply
//! with field manager `edgeforge`, reads before writes so a repeated run
//! writes nothing). Nothing here shells out to kubectl or karmadactl, and no
//! token or CA bundle is ever put into a message.

pub mod client;
pub mod karmada;
pub mod kubefed;
pub mod objects;
pub mod spec;
pub mod status;
pub mod workload;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;

pub use client::Kube;
pub use spec::SiteSpec;

/// Errors of registering, unregistering and federating.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The API refused the kubeconfig's credentials.
    #[error(
        "the {role} at {url} refused the credentials of {kubeconfig} while {what} (401 Unauthorized): the token or client certificate is wrong or has expired; renew it in that kubeconfig and run again",
        role = .call.role, url = .call.url, kubeconfig = .call.kubeconfig, what = .call.what
    )]
    Unauthorized {
        /// The API and the call.
        call: Box<ApiCall>,
    },
    /// RBAC does not allow a call.
    #[error(
        "the {role} at {url} does not allow the user of {kubeconfig} {what}: {message}; give that user the permission (or use an admin kubeconfig)",
        role = .call.role, url = .call.url, kubeconfig = .call.kubeconfig, what = .call.what
    )]
    Forbidden {
        /// The API and the call.
        call: Box<ApiCall>,
        /// The server's message.
        message: String,
    },
    /// The API kept failing or could not be reached.
    #[error(
        "{what} on the {role} at {url} failed {attempts} times in {elapsed:.1?}; the API server is unreachable or failing: check that it is up and that {kubeconfig} points at it, then run again (the steps resume where they stopped)",
        role = .call.role, url = .call.url, kubeconfig = .call.kubeconfig, what = .call.what
    )]
    Unavailable {
        /// The API and the call.
        call: Box<ApiCall>,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last failure.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API answered with an error.
    #[error("{what} on the {role} at {url}: {code} {reason}: {message}",
        role = .call.role, url = .call.url, what = .call.what)]
    Refused {
        /// The API and the call.
        call: Box<ApiCall>,
        /// HTTP status.
        code: u16,
        /// The Status reason.
        reason: String,
        /// The server's message.
        message: String,
    },
    /// A request could not be made or its answer read.
    #[error("{what} on the {role} at {url}", role = .call.role, url = .call.url, what = .call.what)]
    Request {
        /// The API and the call.
        call: Box<ApiCall>,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// The name is registered on the host for another cluster.
    #[error(
        "cluster `{cluster}` is registered on the federation host with id {host_id}, but site `{site}`'s cluster has id {member_id}: they are different clusters (the site was rebuilt, or two kubeconfigs are mixed up); unjoin the old registration (`edgeforge federation unjoin -i INVENTORY --site {site}`) or replace it with `edgeforge apply --reregister`"
    )]
    IdConflict {
        /// The cluster name.
        cluster: String,
        /// The site.
        site: String,
        /// The id the host has.
        host_id: String,
        /// The id of the site's cluster.
        member_id: String,
    },
    /// The cluster is registered under another name.
    #[error(
        "site `{site}`'s cluster (id {id}) is already registered on the federation host as `{other}`; one cluster can be registered once: point the site at its own cluster, or unjoin `{other}` first"
    )]
    RegisteredElsewhere {
        /// The site.
        site: String,
        /// The cluster's id.
        id: String,
        /// The name it is registered under.
        other: String,
    },
    /// The host has the cluster in the other Karmada mode.
    #[error(
        "cluster `{cluster}` is registered on the federation host in {host_mode} mode, but the inventory says {mode} for site `{site}`; unjoin it first (`edgeforge federation unjoin`, with the inventory's mode set to {host_mode}) or replace it with `edgeforge apply --reregister`"
    )]
    ModeConflict {
        /// The cluster.
        cluster: String,
        /// The site.
        site: String,
        /// The mode on the host.
        host_mode: String,
        /// The inventory's mode.
        mode: String,
    },
    /// Something awaited did not happen.
    #[error("{what} did not happen within {after:?}; last seen: {seen}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
        /// What was seen last.
        seen: String,
    },
    /// An output of an earlier task is missing.
    #[error(
        "task {task} published no `{name}`; it must run (and succeed) before this one: run the federation layer of this site again"
    )]
    MissingOutput {
        /// The task.
        task: String,
        /// The output.
        name: String,
    },
    /// A federation template did not render.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// The input (app file, placement, a value from the API) makes no sense.
    #[error("{0}")]
    Invalid(String),
}

/// Which API a failed call went to, and what it was (for the error's message).
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// Which API ("federation host", "cluster of site s1").
    pub role: String,
    /// Its URL.
    pub url: String,
    /// The kubeconfig (path and context).
    pub kubeconfig: String,
    /// The call.
    pub what: String,
}

impl FederationError {
    /// 2 for problems of the input (a conflict the operator must resolve), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            FederationError::Invalid(_) | FederationError::Render(_) => 2,
            _ => 1,
        }
    }
}

/// What a cluster is to the federation host: its id and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The UID of its `kube-system` namespace (Karmada's cluster id).
    pub id: String,
    /// The API URL the host (or Karmada's proxy) reaches it at.
    pub api_endpoint: String,
    /// Whether its kubeconfig skips TLS verification (the registration says so too).
    pub insecure: bool,
}

/// Reads the cluster's id (the `kube-system` namespace's UID, as
/// `karmadactl join` and the karmada-agent do) and its API endpoint: the
/// inventory's `federation.apiEndpoint`, else the kubeconfig's server.
pub async fn identify(member: &Kube<'_>, spec: &SiteSpec) -> Result<Identity, FederationError> {
    let namespaces: kube::Api<Namespace> = kube::Api::all(member.client());
    let system = member.get(&namespaces, "kube-system").await?.ok_or_else(|| {
        FederationError::Invalid(format!(
            "the cluster of site {} has no kube-system namespace, so it has no id; is {} a Kubernetes API?",
            spec.site,
            member.conn().url
        ))
    })?;
    let id = system
        .metadata
        .uid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            FederationError::Invalid(format!(
                "the kube-system namespace of site {}'s cluster has no uid",
                spec.site
            ))
        })?;
    Ok(Identity {
        id,
        api_endpoint: spec
            .api_endpoint
            .clone()
            .unwrap_or_else(|| member.conn().url.clone()),
        insecure: member.conn().insecure,
    })
}
