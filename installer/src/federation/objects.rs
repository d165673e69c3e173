//! Builders of the core and RBAC objects joins create (typed k8s-openapi
//! objects, so a field name cannot be misspelt), and the wait for a legacy
//! service-account token that Karmada push mode and KubeFed both rely on.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{FederationError, Kube};

/// The label Karmada puts on what it creates.
pub const KARMADA_SYSTEM_LABEL: &str = "karmada.io/system";
/// The annotation naming a token Secret's service account.
pub const SERVICE_ACCOUNT_NAME: &str = "kubernetes.io/service-account.name";
/// The type of legacy service-account token Secrets.
pub const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// The RBAC API group.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// `{karmada.io/system: "true"}`.
pub fn karmada_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(KARMADA_SYSTEM_LABEL.to_string(), "true".to_string())])
}

/// Metadata with a name, an optional namespace and labels (none when empty).
pub fn meta(name: &str, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: (!labels.is_empty()).then(|| labels.clone()),
        ..ObjectMeta::default()
    }
}

/// A namespace.
pub fn namespace(name: &str, labels: &BTreeMap<String, String>) -> Namespace {
    Namespace {
        metadata: meta(name, None, labels),
        ..Namespace::default()
    }
}

/// A service account.
pub fn service_account(ns: &str, name: &str, labels: &BTreeMap<String, String>) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(name, Some(ns), labels),
        ..ServiceAccount::default()
    }
}

/// A legacy token Secret for service account `account`, which the token
/// controller fills with `token`, `ca.crt` and `namespace`.
pub fn token_secret(ns: &str, name: &str, account: &str) -> Secret {
    let mut metadata = meta(name, Some(ns), &BTreeMap::new());
    metadata.annotations = Some(BTreeMap::from([(
        SERVICE_ACCOUNT_NAME.to_string(),
        account.to_string(),
    )]));
    Secret {
        metadata,
        type_: Some(TOKEN_SECRET_TYPE.into()),
        ..Secret::default()
    }
}

/// An Opaque Secret with `data`.
pub fn opaque_secret(
    ns: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    data: &[(&str, &[u8])],
) -> Secret {
    Secret {
        metadata: meta(name, Some(ns), labels),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// A rule.
pub fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        resource_names: (!names.is_empty()).then(|| strings(names)),
        verbs: strings(verbs),
        non_resource_urls: None,
    }
}

/// Everything on every resource, and GET on every non-resource URL (what
/// Karmada's and KubeFed's controllers get on a member).
pub fn all_access_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["*"], &["*"], &[], &["*"]),
        PolicyRule {
            non_resource_urls: Some(vec!["*".into()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        },
    ]
}

/// A cluster role.
pub fn cluster_role(
    name: &str,
    labels: &BTreeMap<String, String>,
    rules: Vec<PolicyRule>,
) -> ClusterRole {
    ClusterRole {
        metadata: meta(name, None, labels),
        rules: Some(rules),
        ..ClusterRole::default()
    }
}

/// A role in `ns`.
pub fn role(ns: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: meta(name, Some(ns), &BTreeMap::new()),
        rules: Some(rules),
    }
}

/// The subject of service account `ns/name`.
pub fn service_account_subject(ns: &str, name: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(ns.into()),
        api_group: None,
    }
}

/// A reference to a role of `kind` (`ClusterRole`, `Role`).
pub fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC_GROUP.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

/// A binding of the cluster role of the same name to `subjects`.
pub fn cluster_role_binding(
    name: &str,
    labels: &BTreeMap<String, String>,
    subjects: Vec<Subject>,
) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None, labels),
        role_ref: role_ref("ClusterRole", name),
        subjects: Some(subjects),
    }
}

/// A binding of the role of the same name in `ns` to `subjects`.
pub fn role_binding(ns: &str, name: &str, subjects: Vec<Subject>) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, Some(ns), &BTreeMap::new()),
        role_ref: role_ref("Role", name),
        subjects: Some(subjects),
    }
}

/// A controller reference to an owner.
pub fn controller_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A filled token Secret's token and CA bundle (the CA may be absent).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The bearer token.
    pub token: String,
    /// `ca.crt`, PEM.
    pub ca: Option<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(********)")
    }
}

/// Makes sure token Secret `ns/name` of service account `account` exists
/// and waits until the token controller filled it; `None` in check mode
/// when the Secret does not exist yet.
pub async fn ensure_token(
    kube: &Kube<'_>,
    ns: &str,
    name: &str,
    account: &str,
    timeout: std::time::Duration,
) -> Result<Option<Token>, FederationError> {
    let secrets: kube::Api<Secret> = kube::Api::namespaced(kube.client(), ns);
    let live = kube
        .ensure(&secrets, &token_secret(ns, name, account))
        .await?;
    if let Some(t) = live.as_ref().and_then(filled) {
        return Ok(Some(t));
    }
    if kube.is_check() {
        return Ok(None);
    }
    let what = format!(
        "the token controller to fill Secret {ns}/{name} for service account {account} (is kube-controller-manager's serviceaccount-token controller running?)"
    );
    kube.wait_for(
        &secrets,
        name,
        &what,
        timeout,
        |s: Option<&Secret>| match s {
            None => Err("the Secret is gone".into()),
            Some(s) => filled(s).ok_or_else(|| "the Secret has no token yet".to_string()),
        },
    )
    .await
    .map(Some)
}

/// The token and CA of a filled token Secret.
fn filled(secret: &Secret) -> Option<Token> {
    let data = secret.data.as_ref()?;
    let token = data.get("token").filter(|t| !t.0.is_empty())?;
    Some(Token {
        token: String::from_utf8_lossy(&token.0).into_owned(),
        ca: data
            .get("ca.crt")
            .filter(|c| !c.0.is_empty())
            .map(|c| String::from_utf8_lossy(&c.0).into_owned()),
    })
}
