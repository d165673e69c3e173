//! Karmada: push mode (what `karmadactl join` creates, field by field, plus
//! the site's labels on the Cluster), pull mode (the host RBAC `karmadactl
//! register` creates, a token credential scoped to it, and the agent's
//! objects on the member; the karmada-agent then registers its Cluster
//! itself) and unregistering in the order `karmadactl unjoin` and
//! `unregister` use.
//!
//! Push, as `karmadactl join`:
//! - member: namespace `karmada-cluster`; service accounts
//!   `karmada-impersonator` and `karmada-<cluster>`; ClusterRole and
//!   ClusterRoleBinding `karmada-controller-manager:karmada-<cluster>` (all
//!   resources and verbs, GET on non-resource URLs), all labelled
//!   `karmada.io/system: "true"`; a legacy token Secret per service account
//!   (named like it), waited on until the token controller fills it;
//! - host: namespace `karmada-cluster`; Secret `<cluster>` (`caBundle`,
//!   `token`) and `<cluster>-impersonator` (`token`); the Cluster (syncMode
//!   Push, apiEndpoint, id, secretRef, impersonatorSecretRef, provider,
//!   region, zones); then both Secrets get a controller ownerReference to it.
//!
//! Pull: `karmadactl register` gets the agent a client certificate through a
//! bootstrap token and a CSR. edgeforge holds the host's credentials, so it
//! gives the agent a service-account token on the host instead, bound to
//! exactly the agent's RBAC (`system:karmada:<cluster>:agent` ClusterRole
//! and binding, the `agent-secret` Role in `karmada-cluster` and the
//! `agent-work` Role in `karmada-es-<cluster>`), with nothing to approve and
//! nothing that expires unnoticed; deleting the service account revokes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, PodSpec, PodTemplateSpec, Secret, SecretVolumeSource,
    ServiceAccount, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{Value, json};

use super::objects::{self, Token, karmada_labels};
use super::{FederationError, Identity, Kube, SiteSpec};

/// The namespace of member credentials, on both sides.
pub const CLUSTER_NAMESPACE: &str = "karmada-cluster";
/// The namespace of the karmada-agent on a pull-mode member.
pub const AGENT_NAMESPACE: &str = "karmada-system";
/// The karmada-agent's Deployment, ClusterRole and binding on a member.
pub const AGENT_NAME: &str = "karmada-agent";
/// The karmada-agent's service account on a member.
pub const AGENT_SERVICE_ACCOUNT: &str = "karmada-agent-sa";
/// The Secret with the agent's kubeconfig for the host (and its key).
pub const AGENT_KUBECONFIG: &str = "karmada-kubeconfig";
/// The impersonator service account on a member.
pub const IMPERSONATOR: &str = "karmada-impersonator";
/// The Cluster API version.
pub const CLUSTER_API_VERSION: &str = "cluster.karmada.io/v1alpha1";

/// The Cluster resource (`cluster.karmada.io/v1alpha1`, cluster-scoped).
pub fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.karmada.io", "v1alpha1", "Cluster"),
        "clusters",
    )
}

/// The Work resource (`work.karmada.io/v1alpha1`, in execution namespaces).
pub fn work_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("work.karmada.io", "v1alpha1", "Work"),
        "works",
    )
}

/// `karmada-<cluster>`: the member service account of push mode.
pub fn member_account(cluster: &str) -> String {
    format!("karmada-{cluster}")
}

/// `karmada-controller-manager:karmada-<cluster>`: its ClusterRole and binding.
pub fn member_role(cluster: &str) -> String {
    format!("karmada-controller-manager:{}", member_account(cluster))
}

/// `karmada-es-<cluster>`: the cluster's execution namespace on the host.
pub fn execution_namespace(cluster: &str) -> String {
    format!("karmada-es-{cluster}")
}

/// `karmada-agent-<cluster>`: the agent's service account on the host.
pub fn agent_account(cluster: &str) -> String {
    format!("karmada-agent-{cluster}")
}

/// `system:karmada:<cluster>:<suffix>`: the agent's RBAC names on the host.
pub fn agent_rbac(cluster: &str, suffix: &str) -> String {
    format!("system:karmada:{cluster}:{suffix}")
}

/// What the member gives the host in push mode.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberCredentials {
    /// Token of `karmada-<cluster>`.
    pub token: String,
    /// The member's CA bundle (PEM), from that token Secret.
    pub ca_bundle: String,
    /// Token of `karmada-impersonator`.
    pub impersonator_token: String,
}

impl std::fmt::Debug for MemberCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberCredentials(********)")
    }
}

/// What the agent gets to reach the host in pull mode.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentAccess {
    /// The token of `karmada-agent-<cluster>` on the host.
    pub token: String,
    /// The host's CA bundle (PEM), if known.
    pub host_ca: Option<String>,
    /// The host's API URL as the agent reaches it.
    pub host_url: String,
}

impl std::fmt::Debug for AgentAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAccess")
            .field("host_url", &self.host_url)
            .finish_non_exhaustive()
    }
}

/// What the host has under the cluster's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Nothing: a new registration.
    New,
    /// This cluster, in the same mode.
    Registered,
    /// Another cluster (id), or this one in the other mode, to be replaced (`--reregister`).
    Replace {
        /// The id the host has.
        old_id: String,
    },
}

/// Checks the host before anything is written on the member, as
/// `karmadactl join` does: the name must be free or hold this cluster (same
/// id, same mode), and the id must not be registered under another name.
/// With `reregister`, a different cluster under the name is to be replaced.
pub async fn check(
    host: &Kube<'_>,
    spec: &SiteSpec,
    identity: &Identity,
    reregister: bool,
) -> Result<Registration, FederationError> {
    let clusters = clusters(host);
    let live = host.get(&clusters, &spec.cluster).await?;
    let registration = match &live {
        None => Registration::New,
        Some(c) => {
            let host_id = c.data["spec"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let host_mode = c.data["spec"]["syncMode"].as_str().unwrap_or_default();
            let mode = sync_mode(spec);
            if host_id != identity.id {
                if !reregister {
                    return Err(FederationError::IdConflict {
                        cluster: spec.cluster.clone(),
                        site: spec.site.clone(),
                        host_id: if host_id.is_empty() {
                            "(none)".into()
                        } else {
                            host_id
                        },
                        member_id: identity.id.clone(),
                    });
                }
                Registration::Replace { old_id: host_id }
            } else if host_mode != mode {
                if !reregister {
                    return Err(FederationError::ModeConflict {
                        cluster: spec.cluster.clone(),
                        site: spec.site.clone(),
                        host_mode: host_mode.to_lowercase(),
                        mode: mode.to_lowercase(),
                    });
                }
                Registration::Replace { old_id: host_id }
            } else {
                Registration::Registered
            }
        }
    };
    claim_id(host, "clusters", spec, identity).await?;
    Ok(registration)
}

/// Push mode, on the member: the credentials `karmadactl join` creates,
/// waited on until filled. `None` in check mode when they do not exist yet.
pub async fn push_member(
    member: &Kube<'_>,
    spec: &SiteSpec,
) -> Result<Option<MemberCredentials>, FederationError> {
    let labels = karmada_labels();
    let account = member_account(&spec.cluster);
    let client = member.client();
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let accounts: kube::Api<ServiceAccount> =
        kube::Api::namespaced(client.clone(), CLUSTER_NAMESPACE);
    let roles: kube::Api<ClusterRole> = kube::Api::all(client.clone());
    let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(client);
    member
        .ensure(&namespaces, &objects::namespace(CLUSTER_NAMESPACE, &labels))
        .await?;
    member
        .ensure(
            &accounts,
            &objects::service_account(CLUSTER_NAMESPACE, IMPERSONATOR, &labels),
        )
        .await?;
    let impersonator = objects::ensure_token(
        member,
        CLUSTER_NAMESPACE,
        IMPERSONATOR,
        IMPERSONATOR,
        spec.wait,
    )
    .await?;
    member
        .ensure(
            &accounts,
            &objects::service_account(CLUSTER_NAMESPACE, &account, &labels),
        )
        .await?;
    let role = member_role(&spec.cluster);
    member
        .ensure(
            &roles,
            &objects::cluster_role(&role, &labels, objects::all_access_rules()),
        )
        .await?;
    member
        .ensure(
            &bindings,
            &objects::cluster_role_binding(
                &role,
                &labels,
                vec![objects::service_account_subject(
                    CLUSTER_NAMESPACE,
                    &account,
                )],
            ),
        )
        .await?;
    let token =
        objects::ensure_token(member, CLUSTER_NAMESPACE, &account, &account, spec.wait).await?;
    Ok(match (token, impersonator) {
        (Some(t), Some(i)) => Some(MemberCredentials {
            ca_bundle: t
                .ca
                .clone()
                .or_else(|| member.conn().ca_pem.clone())
                .unwrap_or_default(),
            token: t.token,
            impersonator_token: i.token,
        }),
        _ => None,
    })
}

/// Push mode, on the host: the Secrets, the Cluster and the Secrets'
/// ownerReferences, as `karmadactl join` makes them, plus the site's labels.
/// A Cluster of another id (or in pull mode) under the name is replaced only
/// when `reregister`; the check step refused it otherwise.
pub async fn push_register(
    host: &Kube<'_>,
    spec: &SiteSpec,
    identity: &Identity,
    creds: &MemberCredentials,
    reregister: bool,
) -> Result<(), FederationError> {
    let labels = karmada_labels();
    let client = host.client();
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, CLUSTER_NAMESPACE);
    let clusters = clusters(host);
    host.ensure(&namespaces, &objects::namespace(CLUSTER_NAMESPACE, &labels))
        .await?;
    let mut owner = replace_if_other(host, spec, identity, reregister).await?;
    let impersonator_name = format!("{}-impersonator", spec.cluster);
    let host_secrets = |owner: &Option<DynamicObject>| {
        let mut impersonator = objects::opaque_secret(
            CLUSTER_NAMESPACE,
            &impersonator_name,
            &labels,
            &[("token", creds.impersonator_token.as_bytes())],
        );
        let mut credentials = objects::opaque_secret(
            CLUSTER_NAMESPACE,
            &spec.cluster,
            &labels,
            &[
                ("caBundle", creds.ca_bundle.as_bytes()),
                ("token", creds.token.as_bytes()),
            ],
        );
        if let Some(o) = owner {
            let reference = objects::controller_ref(
                CLUSTER_API_VERSION,
                "Cluster",
                &spec.cluster,
                o.metadata.uid.as_deref().unwrap_or_default(),
            );
            impersonator.metadata.owner_references = Some(vec![reference.clone()]);
            credentials.metadata.owner_references = Some(vec![reference]);
        }
        [impersonator, credentials]
    };
    for secret in host_secrets(&owner) {
        host.ensure(&secrets, &secret).await?;
    }
    let cluster = push_cluster(spec, identity, &impersonator_name);
    let live = host.ensure(&clusters, &cluster).await?;
    if owner.is_none() && live.is_some() {
        owner = live;
        for secret in host_secrets(&owner) {
            host.ensure(&secrets, &secret).await?;
        }
    }
    Ok(())
}

/// The push-mode Cluster `karmadactl join` creates (fields it leaves empty
/// omitted), with the site's labels.
pub fn push_cluster(spec: &SiteSpec, identity: &Identity, impersonator: &str) -> DynamicObject {
    let mut s = json!({
        "syncMode": "Push",
        "apiEndpoint": identity.api_endpoint,
        "id": identity.id,
        "secretRef": {"namespace": CLUSTER_NAMESPACE, "name": spec.cluster},
        "impersonatorSecretRef": {"namespace": CLUSTER_NAMESPACE, "name": impersonator},
    });
    placement_fields(&mut s, spec);
    if identity.insecure {
        s["insecureSkipTLSVerification"] = json!(true);
    }
    let mut cluster =
        DynamicObject::new(&spec.cluster, &cluster_resource()).data(json!({"spec": s}));
    cluster.metadata.labels = Some(spec.labels.clone());
    cluster
}

/// `provider`, `region` and `zones` when the site has them.
fn placement_fields(s: &mut Value, spec: &SiteSpec) {
    if let Some(p) = &spec.provider {
        s["provider"] = json!(p);
    }
    if let Some(r) = &spec.region {
        s["region"] = json!(r);
    }
    if !spec.zones.is_empty() {
        s["zones"] = json!(spec.zones);
    }
}

/// Deletes (and waits out) a Cluster of another id or mode under the name,
/// when `reregister`; returns the Cluster that stays, if any.
async fn replace_if_other(
    host: &Kube<'_>,
    spec: &SiteSpec,
    identity: &Identity,
    reregister: bool,
) -> Result<Option<DynamicObject>, FederationError> {
    let clusters = clusters(host);
    let Some(live) = host.get(&clusters, &spec.cluster).await? else {
        return Ok(None);
    };
    let host_id = live.data["spec"]["id"].as_str().unwrap_or_default();
    let same = host_id == identity.id && live.data["spec"]["syncMode"] == sync_mode(spec);
    if same {
        return Ok(Some(live));
    }
    if !reregister {
        return Err(FederationError::IdConflict {
            cluster: spec.cluster.clone(),
            site: spec.site.clone(),
            host_id: host_id.to_string(),
            member_id: identity.id.clone(),
        });
    }
    host.progress(&format!(
        "replacing the registration of cluster {} (id {host_id})",
        spec.cluster
    ));
    host.delete_and_wait(&clusters, &spec.cluster, spec.wait)
        .await?;
    Ok(None)
}

/// Pull mode, on the host: the check, the namespaces, the agent's RBAC and
/// a token credential bound to exactly it. `None` in check mode when the
/// token does not exist yet.
pub async fn pull_access(
    host: &Kube<'_>,
    spec: &SiteSpec,
    identity: &Identity,
    reregister: bool,
) -> Result<Option<AgentAccess>, FederationError> {
    if let Registration::Replace { old_id } = check(host, spec, identity, reregister).await? {
        host.progress(&format!(
            "replacing the registration of cluster {} (id {old_id})",
            spec.cluster
        ));
        host.delete_and_wait(&clusters(host), &spec.cluster, spec.wait)
            .await?;
    }
    let labels = karmada_labels();
    let c = &spec.cluster;
    let client = host.client();
    let es = execution_namespace(c);
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let cluster_roles: kube::Api<ClusterRole> = kube::Api::all(client.clone());
    let cluster_bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(client.clone());
    let accounts: kube::Api<ServiceAccount> =
        kube::Api::namespaced(client.clone(), CLUSTER_NAMESPACE);
    host.ensure(&namespaces, &objects::namespace(CLUSTER_NAMESPACE, &labels))
        .await?;
    host.ensure(&namespaces, &objects::namespace(&es, &labels))
        .await?;
    let account = agent_account(c);
    let subject = || {
        vec![objects::service_account_subject(
            CLUSTER_NAMESPACE,
            &account,
        )]
    };
    let agent = agent_rbac(c, "agent");
    host.ensure(
        &cluster_roles,
        &objects::cluster_role(&agent, &BTreeMap::new(), agent_cluster_rules(c)),
    )
    .await?;
    host.ensure(
        &cluster_bindings,
        &objects::cluster_role_binding(&agent, &BTreeMap::new(), subject()),
    )
    .await?;
    for (ns, name, rules) in [
        (
            CLUSTER_NAMESPACE.to_string(),
            agent_rbac(c, "agent-secret"),
            agent_secret_rules(c),
        ),
        (es.clone(), agent_rbac(c, "agent-work"), agent_work_rules()),
    ] {
        let roles: kube::Api<Role> = kube::Api::namespaced(host.client(), &ns);
        let bindings: kube::Api<RoleBinding> = kube::Api::namespaced(host.client(), &ns);
        host.ensure(&roles, &objects::role(&ns, &name, rules))
            .await?;
        host.ensure(&bindings, &objects::role_binding(&ns, &name, subject()))
            .await?;
    }
    host.ensure(
        &accounts,
        &objects::service_account(CLUSTER_NAMESPACE, &account, &labels),
    )
    .await?;
    let token =
        objects::ensure_token(host, CLUSTER_NAMESPACE, &account, &account, spec.wait).await?;
    Ok(token.map(|Token { token, ca }| AgentAccess {
        token,
        host_ca: host.conn().ca_pem.clone().or(ca),
        host_url: spec
            .agent_host_endpoint
            .clone()
            .unwrap_or_else(|| host.conn().url.clone()),
    }))
}

/// The agent's ClusterRole on the host, as `karmadactl register` makes it.
pub fn agent_cluster_rules(cluster: &str) -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    use objects::rule;
    vec![
        rule(
            &["cluster.karmada.io"],
            &["clusters"],
            &[cluster],
            &["get", "delete"],
        ),
        rule(
            &["cluster.karmada.io"],
            &["clusters"],
            &[],
            &["create", "list", "watch"],
        ),
        rule(
            &["cluster.karmada.io"],
            &["clusters/status"],
            &[cluster],
            &["update"],
        ),
        rule(
            &["config.karmada.io"],
            &[
                "resourceinterpreterwebhookconfigurations",
                "resourceinterpretercustomizations",
            ],
            &[],
            &["get", "list", "watch"],
        ),
        rule(&[""], &["namespaces"], &[], &["get"]),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[],
            &["get", "create", "update"],
        ),
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &[],
            &["get", "create"],
        ),
        rule(&[""], &["services"], &[], &["list", "watch"]),
        rule(&[""], &["events"], &[], &["patch", "create", "update"]),
    ]
}

/// The agent's Role in `karmada-cluster` (its own credential Secrets).
pub fn agent_secret_rules(cluster: &str) -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    let impersonator = format!("{cluster}-impersonator");
    vec![
        objects::rule(
            &[""],
            &["secrets"],
            &[cluster, &impersonator],
            &["get", "patch"],
        ),
        objects::rule(&[""], &["secrets"], &[], &["create"]),
    ]
}

/// The agent's Role in its execution namespace (Works).
pub fn agent_work_rules() -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    vec![
        objects::rule(
            &["work.karmada.io"],
            &["works"],
            &[],
            &["get", "create", "list", "watch", "update", "delete"],
        ),
        objects::rule(
            &["work.karmada.io"],
            &["works/status"],
            &[],
            &["patch", "update"],
        ),
    ]
}

/// Pull mode, on the member: the namespace, the agent's kubeconfig Secret,
/// RBAC and service account, and its Deployment, as `karmadactl register`
/// makes them.
pub async fn pull_agent(
    member: &Kube<'_>,
    spec: &SiteSpec,
    identity: &Identity,
    access: &AgentAccess,
) -> Result<(), FederationError> {
    let labels = karmada_labels();
    let client = member.client();
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), AGENT_NAMESPACE);
    let roles: kube::Api<ClusterRole> = kube::Api::all(client.clone());
    let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(client.clone());
    let accounts: kube::Api<ServiceAccount> =
        kube::Api::namespaced(client.clone(), AGENT_NAMESPACE);
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client, AGENT_NAMESPACE);
    member
        .ensure(&namespaces, &objects::namespace(AGENT_NAMESPACE, &labels))
        .await?;
    let kubeconfig = agent_kubeconfig(&spec.cluster, access);
    let mut secret = objects::opaque_secret(
        AGENT_NAMESPACE,
        AGENT_KUBECONFIG,
        &labels,
        &[(AGENT_KUBECONFIG, kubeconfig.as_bytes())],
    );
    secret.type_ = Some("Opaque".into());
    member.ensure(&secrets, &secret).await?;
    member
        .ensure(
            &roles,
            &objects::cluster_role(AGENT_NAME, &labels, objects::all_access_rules()),
        )
        .await?;
    member
        .ensure(
            &accounts,
            &objects::service_account(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, &labels),
        )
        .await?;
    member
        .ensure(
            &bindings,
            &objects::cluster_role_binding(
                AGENT_NAME,
                &labels,
                vec![objects::service_account_subject(
                    AGENT_NAMESPACE,
                    AGENT_SERVICE_ACCOUNT,
                )],
            ),
        )
        .await?;
    member
        .ensure(&deployments, &agent_deployment(spec, identity))
        .await?;
    Ok(())
}

/// The kubeconfig the agent reaches the host with: cluster
/// `karmada-apiserver`, user `<cluster>`, context `<cluster>@karmada-apiserver`
/// (as `karmadactl register` names them), authenticating with the token.
pub fn agent_kubeconfig(cluster: &str, access: &AgentAccess) -> String {
    let context = format!("{cluster}@karmada-apiserver");
    let mut server = json!({"server": access.host_url});
    if let Some(ca) = &access.host_ca {
        server["certificate-authority-data"] = json!(data_encoding::BASE64.encode(ca.as_bytes()));
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "karmada-apiserver", "cluster": server}],
        "users": [{"name": cluster, "user": {"token": access.token}}],
        "contexts": [{"name": context, "context": {"cluster": "karmada-apiserver", "user": cluster}}],
        "current-context": context,
        "preferences": {},
    });
    serde_saphyr::to_string(&config).unwrap_or_else(|_| config.to_string())
}

/// The karmada-agent Deployment as `karmadactl register` makes it, with the
/// image from the inventory (through the site's registry mirror).
pub fn agent_deployment(spec: &SiteSpec, identity: &Identity) -> Deployment {
    let app = BTreeMap::from([("app".to_string(), AGENT_NAME.to_string())]);
    let command = vec![
        "/bin/karmada-agent".to_string(),
        format!("--karmada-kubeconfig=/etc/kubeconfig/{AGENT_KUBECONFIG}"),
        format!("--cluster-name={}", spec.cluster),
        format!("--cluster-api-endpoint={}", identity.api_endpoint),
        format!(
            "--cluster-provider={}",
            spec.provider.as_deref().unwrap_or("")
        ),
        format!("--cluster-region={}", spec.region.as_deref().unwrap_or("")),
        format!("--cluster-zones={}", spec.zones.join(",")),
        "--controllers=*".to_string(),
        "--proxy-server-address=".to_string(),
        format!("--leader-elect-resource-namespace={AGENT_NAMESPACE}"),
        format!("--cluster-namespace={CLUSTER_NAMESPACE}"),
        "--cluster-status-update-frequency=10s".to_string(),
        "--metrics-bind-address=:8080".to_string(),
        "--health-probe-bind-address=0.0.0.0:10357".to_string(),
        "--v=2".to_string(),
    ];
    Deployment {
        metadata: objects::meta(AGENT_NAME, Some(AGENT_NAMESPACE), &app),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(app.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    name: Some(AGENT_NAME.into()),
                    namespace: Some(AGENT_NAMESPACE.into()),
                    labels: Some(app),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(AGENT_SERVICE_ACCOUNT.into()),
                    containers: vec![Container {
                        name: AGENT_NAME.into(),
                        image: Some(spec.agent_image.clone()),
                        command: Some(command),
                        ports: Some(vec![ContainerPort {
                            name: Some("metrics".into()),
                            container_port: 8080,
                            protocol: Some("TCP".into()),
                            ..ContainerPort::default()
                        }]),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "kubeconfig".into(),
                            mount_path: "/etc/kubeconfig".into(),
                            ..VolumeMount::default()
                        }]),
                        ..Container::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "kubeconfig".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(AGENT_KUBECONFIG.into()),
                            ..SecretVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    tolerations: Some(vec![Toleration {
                        key: Some("node-role.kubernetes.io/master".into()),
                        operator: Some("Exists".into()),
                        ..Toleration::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Pull mode, on the host: waits for the agent's Cluster (syncMode Pull,
/// this cluster's id) to appear and become Ready, then puts the site's
/// labels on it. The timeout says what was seen.
pub async fn pull_registered(
    host: &Kube<'_>,
    spec: &SiteSpec,
    identity: &Identity,
) -> Result<(), FederationError> {
    let clusters = clusters(host);
    if host.is_check() {
        if host.get(&clusters, &spec.cluster).await?.is_none() {
            return Ok(());
        }
    } else {
        let what = format!(
            "the karmada-agent of site {} to register cluster {} and report it Ready",
            spec.site, spec.cluster
        );
        let outcome = host
            .wait_for(&clusters, &spec.cluster, &what, spec.wait, |c: Option<&DynamicObject>| {
                let Some(c) = c else {
                    return Err(format!(
                        "no Cluster {} on the host (is the karmada-agent Deployment running on the site? kubectl -n {AGENT_NAMESPACE} logs deploy/{AGENT_NAME})",
                        spec.cluster
                    ));
                };
                let id = c.data["spec"]["id"].as_str().unwrap_or_default();
                if id != identity.id {
                    return Ok(Err(id.to_string()));
                }
                match ready_condition(&c.data) {
                    Some((status, _, _)) if status == "True" => Ok(Ok(())),
                    Some((status, reason, message)) => Err(format!(
                        "Cluster {} is there (syncMode {}), Ready is {status}: {reason} {message}",
                        spec.cluster,
                        c.data["spec"]["syncMode"].as_str().unwrap_or("?")
                    )),
                    None => Err(format!(
                        "Cluster {} is there (syncMode {}) without a Ready condition yet",
                        spec.cluster,
                        c.data["spec"]["syncMode"].as_str().unwrap_or("?")
                    )),
                }
            })
            .await?;
        if let Err(host_id) = outcome {
            return Err(FederationError::IdConflict {
                cluster: spec.cluster.clone(),
                site: spec.site.clone(),
                host_id,
                member_id: identity.id.clone(),
            });
        }
    }
    let mut labels = DynamicObject::new(&spec.cluster, &cluster_resource());
    labels.metadata.labels = Some(spec.labels.clone());
    host.ensure(&clusters, &labels).await?;
    Ok(())
}

/// The Ready condition of a Cluster: status, reason, message.
pub fn ready_condition(cluster: &Value) -> Option<(String, String, String)> {
    cluster["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
}

/// Push mode, on the host, as `karmadactl unjoin`: deletes the Cluster and
/// waits until it is gone, then its two Secrets (a real host's garbage
/// collector removes them through their ownerReferences; edgeforge does not
/// rely on it).
pub async fn push_unregister(host: &Kube<'_>, spec: &SiteSpec) -> Result<(), FederationError> {
    let clusters = clusters(host);
    if let Some(live) = host.get(&clusters, &spec.cluster).await? {
        refuse_other_mode(&live, spec, "Push")?;
        host.delete_and_wait(&clusters, &spec.cluster, spec.wait)
            .await?;
    }
    delete_host_secrets(host, spec).await
}

/// Push mode, on the member, as `karmadactl unjoin`: the ClusterRoleBinding,
/// the ClusterRole, the service account, then the namespace (waited out).
pub async fn push_cleanup(member: &Kube<'_>, spec: &SiteSpec) -> Result<(), FederationError> {
    let client = member.client();
    let role = member_role(&spec.cluster);
    member
        .delete(&kube::Api::<ClusterRoleBinding>::all(client.clone()), &role)
        .await?;
    member
        .delete(&kube::Api::<ClusterRole>::all(client.clone()), &role)
        .await?;
    member
        .delete(
            &kube::Api::<ServiceAccount>::namespaced(client.clone(), CLUSTER_NAMESPACE),
            &member_account(&spec.cluster),
        )
        .await?;
    member
        .delete_and_wait(
            &kube::Api::<Namespace>::all(client),
            CLUSTER_NAMESPACE,
            spec.wait,
        )
        .await?;
    Ok(())
}

/// Pull mode, on the host, as `karmadactl unregister`: the Works first
/// (deleting the Cluster removes the RBAC they need), then the Cluster
/// (waited out), the agent's RBAC and credential, the Secrets the agent
/// created, and the execution namespace edgeforge created.
pub async fn pull_unregister(host: &Kube<'_>, spec: &SiteSpec) -> Result<(), FederationError> {
    let c = &spec.cluster;
    let clusters = clusters(host);
    let live = host.get(&clusters, c).await?;
    if let Some(live) = &live {
        refuse_other_mode(live, spec, "Pull")?;
    }
    let es = execution_namespace(c);
    delete_works(host, &es, spec).await?;
    if live.is_some() {
        host.delete_and_wait(&clusters, c, spec.wait).await?;
    }
    let client = host.client();
    let agent = agent_rbac(c, "agent");
    host.delete(&kube::Api::<ClusterRole>::all(client.clone()), &agent)
        .await?;
    host.delete(
        &kube::Api::<ClusterRoleBinding>::all(client.clone()),
        &agent,
    )
    .await?;
    for (ns, name) in [
        (CLUSTER_NAMESPACE.to_string(), agent_rbac(c, "agent-secret")),
        (es.clone(), agent_rbac(c, "agent-work")),
    ] {
        host.delete(&kube::Api::<Role>::namespaced(client.clone(), &ns), &name)
            .await?;
    }
    for (ns, name) in [
        (CLUSTER_NAMESPACE.to_string(), agent_rbac(c, "agent-secret")),
        (es.clone(), agent_rbac(c, "agent-work")),
    ] {
        host.delete(
            &kube::Api::<RoleBinding>::namespaced(client.clone(), &ns),
            &name,
        )
        .await?;
    }
    let account = agent_account(c);
    host.delete(
        &kube::Api::<ServiceAccount>::namespaced(client.clone(), CLUSTER_NAMESPACE),
        &account,
    )
    .await?;
    host.delete(
        &kube::Api::<Secret>::namespaced(client.clone(), CLUSTER_NAMESPACE),
        &account,
    )
    .await?;
    delete_host_secrets(host, spec).await?;
    host.delete_and_wait(&kube::Api::<Namespace>::all(client), &es, spec.wait)
        .await?;
    Ok(())
}

/// Pull mode, on the member, as `karmadactl unregister` (the agent's
/// Deployment first, so it cannot register again meanwhile): the member
/// credentials the agent made, the agent's RBAC, service account and
/// kubeconfig, and `karmada-system` itself when it carries
/// `karmada.io/system` and holds no other Deployment.
pub async fn pull_cleanup(member: &Kube<'_>, spec: &SiteSpec) -> Result<(), FederationError> {
    let client = member.client();
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), AGENT_NAMESPACE);
    member.delete(&deployments, AGENT_NAME).await?;
    let account = member_account(&spec.cluster);
    let role = member_role(&spec.cluster);
    let cred_accounts: kube::Api<ServiceAccount> =
        kube::Api::namespaced(client.clone(), CLUSTER_NAMESPACE);
    let cred_secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), CLUSTER_NAMESPACE);
    let roles: kube::Api<ClusterRole> = kube::Api::all(client.clone());
    let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(client.clone());
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    member.delete(&cred_accounts, &account).await?;
    member.delete(&roles, &role).await?;
    member.delete(&bindings, &role).await?;
    member.delete(&cred_secrets, &account).await?;
    member.delete(&cred_accounts, IMPERSONATOR).await?;
    member.delete(&cred_secrets, IMPERSONATOR).await?;
    member
        .delete_and_wait(&namespaces, CLUSTER_NAMESPACE, spec.wait)
        .await?;
    member
        .delete(
            &kube::Api::<ServiceAccount>::namespaced(client.clone(), AGENT_NAMESPACE),
            AGENT_SERVICE_ACCOUNT,
        )
        .await?;
    member.delete(&roles, AGENT_NAME).await?;
    member.delete(&bindings, AGENT_NAME).await?;
    member
        .delete(
            &kube::Api::<Secret>::namespaced(client, AGENT_NAMESPACE),
            AGENT_KUBECONFIG,
        )
        .await?;
    if let Some(ns) = member.get(&namespaces, AGENT_NAMESPACE).await?
        && ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(objects::KARMADA_SYSTEM_LABEL))
            .is_some_and(|v| v == "true")
        && member
            .list(&deployments, &ListParams::default())
            .await?
            .is_empty()
    {
        member
            .delete_and_wait(&namespaces, AGENT_NAMESPACE, spec.wait)
            .await?;
    }
    Ok(())
}

/// Deletes every Work in the execution namespace and waits until none is
/// left (a host without the Work resource has none).
async fn delete_works(host: &Kube<'_>, es: &str, spec: &SiteSpec) -> Result<(), FederationError> {
    let works: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(host.client(), es, &work_resource());
    let deadline = std::time::Instant::now() + spec.wait;
    loop {
        let left = match host.list(&works, &ListParams::default()).await {
            Ok(l) => l,
            Err(FederationError::Refused { code: 404, .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        if left.is_empty() || host.is_check() {
            return Ok(());
        }
        for w in &left {
            if w.metadata.deletion_timestamp.is_none()
                && let Some(name) = &w.metadata.name
            {
                host.delete(&works, name).await?;
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(FederationError::Timeout {
                what: format!("the Works in {es} to be deleted"),
                after: spec.wait,
                seen: format!("{} Work(s) left", left.len()),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Deletes Secrets `<cluster>` and `<cluster>-impersonator` on the host.
async fn delete_host_secrets(host: &Kube<'_>, spec: &SiteSpec) -> Result<(), FederationError> {
    let secrets: kube::Api<Secret> = kube::Api::namespaced(host.client(), CLUSTER_NAMESPACE);
    host.delete(&secrets, &spec.cluster).await?;
    host.delete(&secrets, &format!("{}-impersonator", spec.cluster))
        .await?;
    Ok(())
}

/// Refuses to unregister a Cluster registered in the other mode.
fn refuse_other_mode(
    live: &DynamicObject,
    spec: &SiteSpec,
    mode: &str,
) -> Result<(), FederationError> {
    let host_mode = live.data["spec"]["syncMode"].as_str().unwrap_or_default();
    if host_mode != mode {
        return Err(FederationError::ModeConflict {
            cluster: spec.cluster.clone(),
            site: spec.site.clone(),
            host_mode: host_mode.to_lowercase(),
            mode: mode.to_lowercase(),
        });
    }
    Ok(())
}

/// `Push` or `Pull`, as the Cluster's `spec.syncMode` spells it.
fn sync_mode(spec: &SiteSpec) -> &'static str {
    match spec.mode {
        crate::inventory::FederationMode::Push => "Push",
        crate::inventory::FederationMode::Pull => "Pull",
    }
}

/// The host's Clusters.
pub fn clusters(host: &Kube<'_>) -> kube::Api<DynamicObject> {
    kube::Api::all_with(host.client(), &cluster_resource())
}

/// Name → id of the registrations on a host, read once per process per
/// host and resource, then kept up to date with this process's own checks
/// (so two sites of one inventory cannot claim one cluster).
type Index = Arc<Mutex<BTreeMap<String, String>>>;

/// Records on `host`'s index of `resource` that `identity` is registered as
/// `spec.cluster`; an error when another cluster name already holds that id.
pub(crate) async fn claim_id(
    host: &Kube<'_>,
    resource: &str,
    spec: &SiteSpec,
    identity: &Identity,
) -> Result<(), FederationError> {
    let index = host_index(host, resource).await?;
    let mut names = index.lock().unwrap_or_else(|p| p.into_inner());
    let other = names
        .iter()
        .find(|(name, id)| **id == identity.id && **name != spec.cluster)
        .map(|(name, _)| name.clone());
    match other {
        Some(other) => Err(FederationError::RegisteredElsewhere {
            site: spec.site.clone(),
            id: identity.id.clone(),
            other,
        }),
        None => {
            names.insert(spec.cluster.clone(), identity.id.clone());
            Ok(())
        }
    }
}

/// The index of `resource` ("clusters", "kubefedclusters") on `host`.
pub(crate) async fn host_index(host: &Kube<'_>, resource: &str) -> Result<Index, FederationError> {
    static INDEXES: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Index>>>>> =
        OnceLock::new();
    let key = format!("{} {} {resource}", host.conn().url, host.conn().source);
    let cell = INDEXES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_try_init(|| async {
        let names = match resource {
            "clusters" => host
                .list(&clusters(host), &ListParams::default())
                .await?
                .into_iter()
                .filter_map(|c| {
                    let id = c.data["spec"]["id"].as_str()?.to_string();
                    Some((c.metadata.name?, id))
                })
                .collect(),
            _ => super::kubefed::registered_ids(host).await?,
        };
        Ok::<_, FederationError>(Arc::new(Mutex::new(names)))
    })
    .await
    .cloned()
}

/// A Secret's data as text (empty when absent).
pub fn secret_text(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|ByteString(b)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SiteSpec {
        let text = "apiVersion: edgeforge/v1\nfederation: {type: karmada, kubeconfig: k, provider: acme}\n\
            sites:\n  - name: s1\n    region: eu\n    zone: eu-1\n    labels: {rack: r1}\n    \
            nodes: [{name: a, role: server, address: 10.0.0.1}]\n";
        let inv = crate::inventory::load_str("t.yaml", text)
            .unwrap()
            .inventory;
        SiteSpec::new(&inv, &inv.sites[0])
    }

    fn identity() -> Identity {
        Identity {
            id: "uid-1".into(),
            api_endpoint: "https://10.0.0.1:6443".into(),
            insecure: false,
        }
    }

    #[test]
    fn the_push_cluster_has_karmadactls_fields_and_the_site_labels() {
        let c =
            serde_json::to_value(push_cluster(&spec(), &identity(), "s1-impersonator")).unwrap();
        assert_eq!(
            c,
            json!({
                "apiVersion": "cluster.karmada.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": "s1", "labels": {
                    "edgeforge.io/region": "eu", "edgeforge.io/site": "s1",
                    "edgeforge.io/zone": "eu-1", "rack": "r1"}},
                "spec": {
                    "syncMode": "Push",
                    "apiEndpoint": "https://10.0.0.1:6443",
                    "id": "uid-1",
                    "secretRef": {"namespace": "karmada-cluster", "name": "s1"},
                    "impersonatorSecretRef": {"namespace": "karmada-cluster", "name": "s1-impersonator"},
                    "provider": "acme",
                    "region": "eu",
                    "zones": ["eu-1"],
                }
            })
        );
    }

    #[test]
    fn the_agent_kubeconfig_names_things_as_karmadactl_register_does() {
        let access = AgentAccess {
            token: "t0k3n".into(),
            host_ca: Some("PEM".into()),
            host_url: "https://karmada:5443".into(),
        };
        let text = agent_kubeconfig("s1", &access);
        let v: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(v["current-context"], "s1@karmada-apiserver");
        assert_eq!(v["clusters"][0]["name"], "karmada-apiserver");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://karmada:5443"
        );
        assert_eq!(v["users"][0]["user"]["token"], "t0k3n");
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            data_encoding::BASE64.encode(b"PEM")
        );
        assert!(!format!("{access:?}").contains("t0k3n"));
    }

    #[test]
    fn the_agent_deployment_runs_the_inventory_image_with_the_sites_flags() {
        let d = serde_json::to_value(agent_deployment(&spec(), &identity())).unwrap();
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "docker.io/karmada/karmada-agent:v1.18.2");
        let command: Vec<&str> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for flag in [
            "--karmada-kubeconfig=/etc/kubeconfig/karmada-kubeconfig",
            "--cluster-name=s1",
            "--cluster-api-endpoint=https://10.0.0.1:6443",
            "--cluster-provider=acme",
            "--cluster-region=eu",
            "--cluster-zones=eu-1",
            "--cluster-namespace=karmada-cluster",
        ] {
            assert!(command.contains(&flag), "{flag} in {command:?}");
        }
        assert_eq!(
            d["spec"]["template"]["spec"]["serviceAccountName"],
            "karmada-agent-sa"
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
            "karmada-kubeconfig"
        );
    }
}
