//! KubeFed, as `kubefedctl join` and `unjoin` do it (cluster scope):
//! - member: namespace `kube-federation-system`; service account
//!   `<cluster>-<host>`; ClusterRole and ClusterRoleBinding
//!   `kubefed-controller-manager:<cluster>-<host>` (all resources and verbs,
//!   GET on non-resource URLs); its token Secret `<cluster>-<host>-token`
//!   (kubefedctl waited for the one Kubernetes before 1.24 made by itself;
//!   edgeforge creates it, as Karmada does);
//! - host: a Secret (generateName `<cluster>-`, data `token`) and the
//!   `core.kubefed.io/v1beta1` KubeFedCluster (`apiEndpoint`, `caBundle`,
//!   `secretRef`) in the KubeFed namespace.
//!
//! KubeFedCluster has no cluster id, so edgeforge records the member's
//! `kube-system` UID in the annotation `edgeforge.io/cluster-id` (a name
//! registered without it was made by another tool: a conflict), labels the
//! host Secret `edgeforge.io/kubefed-cluster: <cluster>` so a join
//! interrupted after creating it finds it again instead of making a second
//! one, and puts the site's labels on the KubeFedCluster for placement by
//! selector.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::json;

use super::karmada::{Registration, claim_id, secret_text};
use super::objects::{self, Token};
use super::{FederationError, Identity, Kube, SiteSpec};

/// The annotation with the member's `kube-system` UID.
pub const ID_ANNOTATION: &str = "edgeforge.io/cluster-id";
/// The label of the host Secret naming its cluster.
pub const CLUSTER_LABEL: &str = "edgeforge.io/kubefed-cluster";

/// The KubeFedCluster resource.
pub fn kubefed_cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("core.kubefed.io", "v1beta1", "KubeFedCluster"),
        "kubefedclusters",
    )
}

/// `<cluster>-<host>`: the member's service account.
pub fn member_account(spec: &SiteSpec) -> String {
    format!("{}-{}", spec.cluster, spec.kubefed_host)
}

/// `kubefed-controller-manager:<account>`: its ClusterRole and binding.
pub fn member_role(spec: &SiteSpec) -> String {
    format!("kubefed-controller-manager:{}", member_account(spec))
}

/// The host's KubeFedClusters.
fn kubefed_clusters(host: &Kube<'_>, spec: &SiteSpec) -> kube::Api<DynamicObject> {
    kube::Api::namespaced_with(
        host.client(),
        &spec.kubefed_namespace,
        &kubefed_cluster_resource(),
    )
}

/// Checks the host before anything is written on the member: the name must
/// be free or hold this cluster, and the id must not be registered under
/// another name.
pub async fn check(
    host: &Kube<'_>,
    spec: &SiteSpec,
    identity: &Identity,
    reregister: bool,
) -> Result<Registration, FederationError> {
    let namespaces: kube::Api<Namespace> = kube::Api::all(host.client());
    if host
        .get(&namespaces, &spec.kubefed_namespace)
        .await?
        .is_none()
    {
        return Err(FederationError::Invalid(format!(
            "the federation host {} has no namespace {}: KubeFed is not installed there (helm install kubefed into {})",
            host.conn().url,
            spec.kubefed_namespace,
            spec.kubefed_namespace
        )));
    }
    let live = host
        .get(&kubefed_clusters(host, spec), &spec.cluster)
        .await?;
    let registration = match live {
        None => Registration::New,
        Some(c) => {
            let host_id = annotation_id(&c);
            if host_id == identity.id {
                Registration::Registered
            } else if reregister {
                Registration::Replace { old_id: host_id }
            } else {
                return Err(FederationError::IdConflict {
                    cluster: spec.cluster.clone(),
                    site: spec.site.clone(),
                    host_id: if host_id.is_empty() {
                        format!("unknown (no {ID_ANNOTATION} annotation: joined by another tool)")
                    } else {
                        host_id
                    },
                    member_id: identity.id.clone(),
                });
            }
        }
    };
    claim_id(host, "kubefedclusters", spec, identity).await?;
    Ok(registration)
}

/// Name → id of the KubeFedClusters edgeforge registered on the host.
pub(crate) async fn registered_ids(
    host: &Kube<'_>,
) -> Result<BTreeMap<String, String>, FederationError> {
    let all: kube::Api<DynamicObject> =
        kube::Api::all_with(host.client(), &kubefed_cluster_resource());
    Ok(host
        .list(&all, &ListParams::default())
        .await?
        .into_iter()
        .filter_map(|c| {
            let id = annotation_id(&c);
            (!id.is_empty()).then_some((c.metadata.name?, id))
        })
        .collect())
}

fn annotation_id(c: &DynamicObject) -> String {
    c.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ID_ANNOTATION))
        .cloned()
        .unwrap_or_default()
}

/// On the member, as `kubefedctl join`: namespace, service account,
/// ClusterRole and binding, and the token (waited on). `None` in check mode
/// when the token does not exist yet.
pub async fn member(member: &Kube<'_>, spec: &SiteSpec) -> Result<Option<Token>, FederationError> {
    let none = BTreeMap::new();
    let ns = &spec.kubefed_namespace;
    let account = member_account(spec);
    let client = member.client();
    member
        .ensure(
            &kube::Api::<Namespace>::all(client.clone()),
            &objects::namespace(ns, &none),
        )
        .await?;
    member
        .ensure(
            &kube::Api::<ServiceAccount>::namespaced(client.clone(), ns),
            &objects::service_account(ns, &account, &none),
        )
        .await?;
    let role = member_role(spec);
    member
        .ensure(
            &kube::Api::<ClusterRole>::all(client.clone()),
            &objects::cluster_role(&role, &none, objects::all_access_rules()),
        )
        .await?;
    member
        .ensure(
            &kube::Api::<ClusterRoleBinding>::all(client),
            &objects::cluster_role_binding(
                &role,
                &none,
                vec![objects::service_account_subject(ns, &account)],
            ),
        )
        .await?;
    objects::ensure_token(member, ns, &format!("{account}-token"), &account, spec.wait).await
}

/// On the host, as `kubefedctl join`: the token Secret (found again by its
/// label, else created with generateName `<cluster>-`) and the
/// KubeFedCluster, replacing one of another id when `reregister`.
pub async fn register(
    host: &Kube<'_>,
    spec: &SiteSpec,
    identity: &Identity,
    token: &str,
    ca_bundle: &str,
    reregister: bool,
) -> Result<(), FederationError> {
    let ns = &spec.kubefed_namespace;
    let clusters = kubefed_clusters(host, spec);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(host.client(), ns);
    let mut live = host.get(&clusters, &spec.cluster).await?;
    if let Some(c) = &live
        && annotation_id(c) != identity.id
    {
        if !reregister {
            return Err(FederationError::IdConflict {
                cluster: spec.cluster.clone(),
                site: spec.site.clone(),
                host_id: annotation_id(c),
                member_id: identity.id.clone(),
            });
        }
        unregister(host, spec).await?;
        live = None;
    }
    let label = BTreeMap::from([(CLUSTER_LABEL.to_string(), spec.cluster.clone())]);
    let known = match live
        .as_ref()
        .and_then(|c| c.data["spec"]["secretRef"]["name"].as_str())
    {
        Some(name) => host.get(&secrets, name).await?,
        None => None,
    };
    let known = match known {
        Some(s) => Some(s),
        None => host
            .list(
                &secrets,
                &ListParams::default().labels(&format!("{CLUSTER_LABEL}={}", spec.cluster)),
            )
            .await?
            .into_iter()
            .next(),
    };
    let secret_name = match known {
        Some(s) => {
            let name = s.metadata.name.clone().unwrap_or_default();
            if secret_text(&s, "token") != token {
                let wanted =
                    objects::opaque_secret(ns, &name, &label, &[("token", token.as_bytes())]);
                host.ensure(&secrets, &wanted).await?;
            }
            name
        }
        None => {
            let mut fresh = objects::opaque_secret(ns, "", &label, &[("token", token.as_bytes())]);
            fresh.metadata.name = None;
            fresh.metadata.generate_name = Some(format!("{}-", spec.cluster));
            match host.create(&secrets, &fresh).await? {
                Some(created) => created.metadata.name.unwrap_or_default(),
                None => format!("{}-(generated)", spec.cluster),
            }
        }
    };
    let mut s = json!({
        "apiEndpoint": identity.api_endpoint,
        "caBundle": data_encoding::BASE64.encode(ca_bundle.as_bytes()),
        "secretRef": {"name": secret_name},
    });
    if identity.insecure {
        s["disabledTLSValidations"] = json!(["*"]);
    }
    let mut cluster = DynamicObject::new(&spec.cluster, &kubefed_cluster_resource())
        .within(ns)
        .data(json!({"spec": s}));
    cluster.metadata.annotations = Some(BTreeMap::from([(
        ID_ANNOTATION.to_string(),
        identity.id.clone(),
    )]));
    cluster.metadata.labels = Some(spec.labels.clone());
    host.ensure(&clusters, &cluster).await?;
    Ok(())
}

/// On the member, as `kubefedctl unjoin`: the ClusterRoleBinding and
/// ClusterRole, the service account and its token, then the namespace
/// (waited out) unless KubeFed itself runs there (the member is the host).
pub async fn cleanup(member: &Kube<'_>, spec: &SiteSpec) -> Result<(), FederationError> {
    let ns = &spec.kubefed_namespace;
    let account = member_account(spec);
    let role = member_role(spec);
    let client = member.client();
    member
        .delete(&kube::Api::<ClusterRoleBinding>::all(client.clone()), &role)
        .await?;
    member
        .delete(&kube::Api::<ClusterRole>::all(client.clone()), &role)
        .await?;
    member
        .delete(
            &kube::Api::<ServiceAccount>::namespaced(client.clone(), ns),
            &account,
        )
        .await?;
    member
        .delete(
            &kube::Api::<Secret>::namespaced(client.clone(), ns),
            &format!("{account}-token"),
        )
        .await?;
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), ns);
    if member
        .get(&deployments, "kubefed-controller-manager")
        .await?
        .is_none()
    {
        member
            .delete_and_wait(&kube::Api::<Namespace>::all(client), ns, spec.wait)
            .await?;
    }
    Ok(())
}

/// On the host, as `kubefedctl unjoin`: the Secret, then the KubeFedCluster.
pub async fn unregister(host: &Kube<'_>, spec: &SiteSpec) -> Result<(), FederationError> {
    let ns = &spec.kubefed_namespace;
    let clusters = kubefed_clusters(host, spec);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(host.client(), ns);
    let live = host.get(&clusters, &spec.cluster).await?;
    if let Some(name) = live
        .as_ref()
        .and_then(|c| c.data["spec"]["secretRef"]["name"].as_str())
    {
        host.delete(&secrets, name).await?;
    }
    for s in host
        .list(
            &secrets,
            &ListParams::default().labels(&format!("{CLUSTER_LABEL}={}", spec.cluster)),
        )
        .await?
    {
        if let Some(name) = &s.metadata.name {
            host.delete(&secrets, name).await?;
        }
    }
    if live.is_some() {
        host.delete_and_wait(&clusters, &spec.cluster, spec.wait)
            .await?;
    }
    Ok(())
}
