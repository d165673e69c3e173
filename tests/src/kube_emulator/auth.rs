//! Authentication (bearer tokens: static and service-account; client
//! certificates signed by the emulator's CA) and authorization (members of
//! `system:masters` may do anything; everyone else is checked against the
//! Role/ClusterRole and binding objects in the store, as the RBAC authorizer
//! does), with the apiserver's Forbidden message shape.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::Value;

use super::resources::StorageKey;
use super::status::{ApiError, Subject};
use super::store::Store;

/// A bearer token known from the start or added later: who it authenticates as.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticToken {
    /// The secret token.
    pub token: String,
    /// The user name it authenticates as.
    pub user: String,
    /// The groups it is in (besides `system:authenticated`, always added).
    pub groups: Vec<String>,
}

impl StaticToken {
    /// A token for `user` in `groups`.
    pub fn new(token: &str, user: &str, groups: &[&str]) -> StaticToken {
        StaticToken {
            token: token.to_string(),
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name (`system:serviceaccount:<ns>:<name>` for service accounts).
    pub user: String,
    /// Its groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

impl Identity {
    fn new(user: String, mut groups: Vec<String>) -> Identity {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Identity { user, groups }
    }

    /// True for members of `system:masters` (RBAC is not consulted for them).
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// The tokens an emulator accepts.
#[derive(Default)]
pub(crate) struct Authenticator {
    tokens: Mutex<HashMap<String, Identity>>,
    revoked: Mutex<HashSet<String>>,
}

impl Authenticator {
    pub fn add(&self, token: StaticToken) {
        lock(&self.revoked).remove(&token.token);
        lock(&self.tokens).insert(token.token, Identity::new(token.user, token.groups));
    }

    /// Makes a token (static or service-account) fail authentication from now on.
    pub fn revoke(&self, token: &str) {
        lock(&self.tokens).remove(token);
        lock(&self.revoked).insert(token.to_string());
    }

    /// The identity of a request: Ok(None) for anonymous, Err(401) for a token nobody issued.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        client_cert: Option<&(String, Vec<String>)>,
        store: &Store,
    ) -> Result<Option<Identity>, ApiError> {
        if let Some(header) = authorization {
            let token = header
                .strip_prefix("Bearer ")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(ApiError::unauthorized)?;
            if lock(&self.revoked).contains(token) {
                return Err(ApiError::unauthorized());
            }
            if let Some(identity) = lock(&self.tokens).get(token) {
                return Ok(Some(identity.clone()));
            }
            if let Some((ns, name)) = store.service_account_for_token(token) {
                return Ok(Some(service_account_identity(&ns, &name)));
            }
            return Err(ApiError::unauthorized());
        }
        Ok(client_cert.map(|(user, groups)| Identity::new(user.clone(), groups.clone())))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The identity a service account's token carries.
pub(crate) fn service_account_identity(ns: &str, name: &str) -> Identity {
    Identity::new(
        format!("system:serviceaccount:{ns}:{name}"),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ],
    )
}

/// What a request asks to do, as the authorizer sees it.
#[derive(Debug, Clone)]
pub(crate) enum Attributes {
    /// A verb on a resource (possibly a subresource, possibly named, possibly in a namespace).
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    /// A verb on a path outside the resource tree (`/version`, `/apis`, ...).
    NonResource { verb: String, path: String },
}

/// Ok when RBAC allows `attrs` for `identity`, else the apiserver's 403.
pub(crate) fn authorize(
    store: &Store,
    identity: &Identity,
    attrs: &Attributes,
) -> Result<(), ApiError> {
    if identity.is_master() || allowed(store, identity, attrs) {
        return Ok(());
    }
    Err(forbidden(identity, attrs))
}

/// True when some binding grants `attrs` to `identity`.
pub(crate) fn allowed(store: &Store, identity: &Identity, attrs: &Attributes) -> bool {
    if identity.is_master() {
        return true;
    }
    let rbac = |resource: &str| StorageKey {
        group: "rbac.authorization.k8s.io".into(),
        resource: resource.into(),
    };
    let objects = store.all_of(&[
        rbac("clusterrolebindings"),
        rbac("rolebindings"),
        rbac("clusterroles"),
        rbac("roles"),
    ]);
    let [cluster_bindings, bindings, cluster_roles, roles] = &objects[..] else {
        return false;
    };
    let find = |list: &[Value], ns: &str, name: &str| -> Option<Value> {
        list.iter()
            .find(|o| {
                o["metadata"]["name"].as_str() == Some(name)
                    && o["metadata"]["namespace"].as_str().unwrap_or_default() == ns
            })
            .cloned()
    };
    let role_rules = |binding: &Value, ns: &str| -> Vec<Value> {
        let role_ref = &binding["roleRef"];
        let name = role_ref["name"].as_str().unwrap_or_default();
        let role = match role_ref["kind"].as_str() {
            Some("ClusterRole") => find(cluster_roles, "", name),
            Some("Role") => find(roles, ns, name),
            _ => None,
        };
        role.and_then(|r| r["rules"].as_array().cloned())
            .unwrap_or_default()
    };
    let grants = |rules: &[Value], cluster_wide: bool| {
        rules
            .iter()
            .any(|rule| rule_allows(rule, attrs, cluster_wide))
    };
    for binding in cluster_bindings {
        if binds(binding, identity, "") && grants(&role_rules(binding, ""), true) {
            return true;
        }
    }
    if let Attributes::Resource { namespace, .. } = attrs
        && !namespace.is_empty()
    {
        for binding in bindings
            .iter()
            .filter(|b| b["metadata"]["namespace"].as_str() == Some(namespace))
        {
            if binds(binding, identity, namespace) && grants(&role_rules(binding, namespace), false)
            {
                return true;
            }
        }
    }
    false
}

/// True when a binding's subjects include the identity.
fn binds(binding: &Value, identity: &Identity, binding_ns: &str) -> bool {
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|subject| {
            let name = subject["name"].as_str().unwrap_or_default();
            match subject["kind"].as_str() {
                Some("User") => identity.user == name,
                Some("Group") => identity.groups.iter().any(|g| g == name),
                Some("ServiceAccount") => {
                    let ns = subject["namespace"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(binding_ns);
                    identity.user == format!("system:serviceaccount:{ns}:{name}")
                }
                _ => false,
            }
        })
}

fn contains(list: &Value, wanted: &str) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .any(|v| v.as_str() == Some("*") || v.as_str() == Some(wanted))
}

/// One PolicyRule against the request.
fn rule_allows(rule: &Value, attrs: &Attributes, cluster_wide: bool) -> bool {
    match attrs {
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            if rule.get("resources").is_none() {
                return false;
            }
            let full = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let resource_ok = rule["resources"].as_array().into_iter().flatten().any(|r| {
                let r = r.as_str().unwrap_or_default();
                r == "*"
                    || r == full
                    || (!subresource.is_empty() && r == format!("*/{subresource}"))
            });
            let names_ok = match rule["resourceNames"].as_array() {
                Some(names) if !names.is_empty() => names.iter().any(|n| n.as_str() == Some(name)),
                _ => true,
            };
            contains(&rule["verbs"], verb)
                && contains(&rule["apiGroups"], group)
                && resource_ok
                && names_ok
        }
        Attributes::NonResource { verb, path } => {
            // Only ClusterRoles bound cluster-wide grant non-resource URLs.
            cluster_wide
                && contains(&rule["verbs"], verb)
                && rule["nonResourceURLs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|u| {
                        let u = u.as_str().unwrap_or_default();
                        u == path
                            || u.strip_suffix('*')
                                .is_some_and(|prefix| path.starts_with(prefix))
                    })
        }
    }
}

/// The 403 the RBAC authorizer answers with.
fn forbidden(identity: &Identity, attrs: &Attributes) -> ApiError {
    match attrs {
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let full = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let qualified = if group.is_empty() {
                full.clone()
            } else {
                format!("{full}.{group}")
            };
            let object = if name.is_empty() {
                qualified
            } else {
                format!("{qualified} \"{name}\"")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{namespace}\"")
            };
            let message = format!(
                "{object} is forbidden: User \"{}\" cannot {verb} resource \"{full}\" in API group \"{group}\" {scope}",
                identity.user
            );
            ApiError::forbidden(
                Subject {
                    group,
                    kind: resource,
                    name,
                },
                message,
            )
        }
        Attributes::NonResource { verb, path } => ApiError::forbidden(
            Subject {
                group: "",
                kind: "",
                name: "",
            },
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                identity.user
            ),
        ),
    }
}

impl Store {
    /// Every object of each key, in the order asked.
    pub(crate) fn all_of(&self, keys: &[StorageKey]) -> Vec<Vec<Value>> {
        let all = self.all_objects_by_key(keys);
        keys.iter()
            .map(|k| all.get(k).cloned().unwrap_or_default())
            .collect()
    }
}
