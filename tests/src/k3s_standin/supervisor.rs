//! The cluster's side of a k3s server that holds the datastore (the
//! `cluster-init` server, or a single server without `cluster-init`): the
//! supervisor routes k3s serves on its HTTPS port before the Kubernetes API
//! (`/cacerts`, `/ping`, `/v1-k3s/config` with the critical settings a
//! joining server compares, `/v1-k3s/server-bootstrap` with the CA a joining
//! server takes, `/v1-k3s/client-kubelet.crt` behind the node password,
//! `/db/info` with the etcd member list), the etcd member list itself, and
//! the controllers k3s runs around it: learners are promoted after a few
//! seconds and every etcd Node carries the `EtcdIsVoter` condition with
//! k3s's reasons (`MemberIsLearner`, `MemberNotLearner`, `NotAMember`); a
//! deleted Node loses its node-password Secret and its etcd member, which is
//! what lets a reinstalled node register again.
//!
//! Stand-in choice: etcd's `MemberAddAsLearner` (gRPC on port 2379 in real
//! k3s) is `POST /db/standin-member-add` here, and it refuses a second
//! learner with etcd's `etcdserver: too many learner members in cluster`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::log;
use super::node::{ETCD_LABEL, ETCD_NAME_ANNOTATION};
use crate::kube_emulator::{Ca, Extension, ExtensionRequest, ExtensionResponse, Store};

/// etcd's error for a second learner.
pub const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";

/// k3s's answer to a node whose password does not match its Secret.
pub const NODE_PASSWORD_REJECTED: &str = "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag";

/// One etcd member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Member ID.
    #[serde(rename = "ID")]
    pub id: u64,
    /// Member name (`<node>-<8 hex>`).
    pub name: String,
    /// Peer URLs (`https://IP:2380`).
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Client URLs (`https://IP:2379`).
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
    /// Not yet promoted.
    #[serde(default)]
    pub is_learner: bool,
    /// When it was added (ms since the epoch; the stand-in's promotion clock).
    #[serde(default, rename = "standinAddedMs")]
    pub added_ms: u64,
}

/// The answer of `/db/info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Members {
    /// Every member.
    pub members: Vec<Member>,
}

/// What a cluster-holding server knows and serves.
pub struct Cluster {
    /// The cluster CA (server CA and client CA in one, see the module docs of `k3s_standin`).
    pub ca: Ca,
    /// The server token's secret.
    pub server_secret: String,
    /// The agent token's secret (the server's when no agent token is set).
    pub agent_secret: String,
    /// The critical settings (`/v1-k3s/config`).
    pub critical: Value,
    /// `server/cred/passwd`, as bootstrap data.
    pub passwd: String,
    /// The etcd member list; None for a server without embedded etcd.
    pub members: Option<Mutex<Members>>,
    members_path: PathBuf,
    self_member: Option<String>,
    /// How long a learner waits for promotion.
    pub learner_delay: Duration,
}

impl Cluster {
    /// A cluster; `members` None without etcd, else loaded from `members_path` (or started with `first`).
    pub fn new(
        ca: Ca,
        server_secret: String,
        agent_secret: String,
        critical: Value,
        passwd: String,
        etcd: Option<(PathBuf, Member)>,
        learner_delay: Duration,
    ) -> Cluster {
        let self_member = etcd.as_ref().map(|(_, first)| first.name.clone());
        let (members, members_path) = match etcd {
            Some((path, first)) => {
                let loaded: Option<Members> = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
                let members = loaded.unwrap_or(Members {
                    members: vec![first],
                });
                (Some(Mutex::new(members)), path)
            }
            None => (None, PathBuf::new()),
        };
        let cluster = Cluster {
            ca,
            server_secret,
            agent_secret,
            critical,
            passwd,
            members,
            members_path,
            self_member,
            learner_delay,
        };
        cluster.save_members();
        cluster
    }

    fn save_members(&self) {
        let Some(members) = &self.members else { return };
        let text = serde_json::to_string_pretty(&*lock(members)).unwrap_or_default();
        if let Some(dir) = self.members_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Best effort, like the emulator's own persistence.
        let _ = super::write_private(&self.members_path, text.as_bytes());
    }

    /// Who the request's credentials are: `server`, `node`, or None.
    fn caller(&self, request: &ExtensionRequest, store: &Store) -> Option<&'static str> {
        let header = request
            .headers
            .get(hyper::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        if let Some(basic) = header.strip_prefix("Basic ") {
            let decoded = data_encoding::BASE64.decode(basic.trim().as_bytes()).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, pass) = decoded.split_once(':')?;
            return match user {
                "server" if pass == self.server_secret => Some("server"),
                "node" if pass == self.agent_secret || pass == self.server_secret => Some("node"),
                _ => None,
            };
        }
        let bearer = header.strip_prefix("Bearer ")?.trim();
        let (id, secret) = bearer.split_once('.')?;
        let token = store.get(
            "v1",
            "secrets",
            Some("kube-system"),
            &format!("bootstrap-token-{id}"),
        )?;
        let field = |k: &str| {
            token["data"][k]
                .as_str()
                .and_then(|v| data_encoding::BASE64.decode(v.as_bytes()).ok())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        (field("token-secret").as_deref() == Some(secret)
            && field("usage-bootstrap-authentication").as_deref() == Some("true"))
        .then_some("node")
    }

    async fn route(&self, request: &ExtensionRequest, store: &Store) -> Option<ExtensionResponse> {
        let path = request.path.as_str();
        let method = request.method.as_str();
        match (method, path) {
            ("GET", "/cacerts") => return Some(text(200, &self.ca.cert_pem())),
            ("GET", "/ping") => return Some(text(200, "pong")),
            _ => {}
        }
        let needs = match path {
            "/v1-k3s/config" | "/v1-k3s/readyz" | "/v1-k3s/client-kubelet.crt" => "node",
            "/v1-k3s/server-bootstrap" | "/db/info" | "/db/standin-member-add" => "server",
            _ => return None,
        };
        let caller = self.caller(request, store);
        let allowed = matches!(
            (needs, caller),
            ("node", Some(_)) | ("server", Some("server"))
        );
        if !allowed {
            log::error(format!(
                "Failed to authenticate request from {}: invalid username/password combination",
                request.peer
            ));
            return Some(text(401, "Unauthorized"));
        }
        Some(match (method, path) {
            ("GET", "/v1-k3s/readyz") => text(200, "ok"),
            ("GET", "/v1-k3s/config") => json_response(200, &self.critical),
            ("GET", "/v1-k3s/server-bootstrap") => {
                log::info(format!(
                    "Serving HTTP bootstrap from datastore for {}",
                    request.peer
                ));
                let file = |content: &str| json!({"Content": data_encoding::BASE64.encode(content.as_bytes())});
                json_response(
                    200,
                    &json!({
                        "ServerCA": file(&self.ca.cert_pem()),
                        "ServerCAKey": file(&self.ca.key_pem()),
                        "ClientCA": file(&self.ca.cert_pem()),
                        "ClientCAKey": file(&self.ca.key_pem()),
                        "PasswdFile": file(&self.passwd),
                    }),
                )
            }
            ("GET", "/db/info") => match &self.members {
                Some(members) => json_response(
                    200,
                    &serde_json::to_value(&*lock(members)).unwrap_or_default(),
                ),
                None => text(404, "404 page not found"),
            },
            ("POST", "/db/standin-member-add") => self.add_member(&request.body),
            ("GET", "/v1-k3s/client-kubelet.crt") => self.kubelet_cert(request, store),
            _ => text(405, "method not allowed"),
        })
    }

    fn add_member(&self, body: &[u8]) -> ExtensionResponse {
        let Some(members) = &self.members else {
            return text(404, "404 page not found");
        };
        let Ok(wanted) = serde_json::from_slice::<Member>(body) else {
            return text(400, "bad member");
        };
        let mut list = lock(members);
        if list.members.iter().any(|m| m.is_learner) {
            return text(400, TOO_MANY_LEARNERS);
        }
        if list.members.iter().any(|m| m.peer_urls == wanted.peer_urls) {
            return text(400, "etcdserver: Peer URLs already exists");
        }
        let id = u64::from_be_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .unwrap_or([1; 8]),
        );
        list.members.push(Member {
            id,
            is_learner: true,
            added_ms: now_ms(),
            ..wanted
        });
        let answer = json_response(200, &serde_json::to_value(&*list).unwrap_or_default());
        drop(list);
        self.save_members();
        answer
    }

    fn kubelet_cert(&self, request: &ExtensionRequest, store: &Store) -> ExtensionResponse {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let node = header("k3s-Node-Name");
        let password = header("k3s-Node-Password");
        if node.is_empty() || password.is_empty() {
            return text(400, "missing node name or password");
        }
        let hash = data_encoding::BASE64
            .encode(hex::encode(Sha256::digest(password.as_bytes())).as_bytes());
        let name = format!("{node}.node-password.k3s");
        match store.get("v1", "secrets", Some("kube-system"), &name) {
            Some(secret) if secret["data"]["hash"].as_str() != Some(hash.as_str()) => {
                log::error(format!(
                    "Failed to get node password for {node}: {NODE_PASSWORD_REJECTED}"
                ));
                return text(403, NODE_PASSWORD_REJECTED);
            }
            Some(_) => {}
            None => {
                let secret = json!({
                    "apiVersion": "v1", "kind": "Secret", "type": "k3s.cattle.io/node-password",
                    "metadata": {"name": name, "namespace": "kube-system", "labels": {"k3s.io/node-name": node}},
                    "data": {"hash": hash},
                });
                if let Err(e) = store.create(secret) {
                    return text(500, &e.message);
                }
            }
        }
        match self
            .ca
            .issue_client(&format!("system:node:{node}"), &["system:nodes"])
        {
            Ok((cert, key)) => text(200, &format!("{cert}{key}")),
            Err(e) => text(500, &e.to_string()),
        }
    }

    /// One round of the controllers: node deletions, learner promotion, `EtcdIsVoter`.
    /// `known` holds the Nodes of the last round and `rv` where it read them;
    /// a Node created and deleted between two rounds counts as known too.
    fn reconcile(&self, store: &Store, known: &mut BTreeMap<String, Option<String>>, rv: &mut u64) {
        let (at, touched) = store.touched_since("nodes", *rv);
        *rv = at;
        for node in touched {
            if let Some(name) = node["metadata"]["name"].as_str() {
                let member = node["metadata"]["annotations"][ETCD_NAME_ANNOTATION]
                    .as_str()
                    .map(str::to_string);
                let entry = known.entry(name.to_string()).or_default();
                if member.is_some() {
                    *entry = member;
                }
            }
        }
        let nodes = store.list("v1", "nodes", None);
        let mut now: BTreeMap<String, Option<String>> = BTreeMap::new();
        for node in &nodes {
            let name = node["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let member = node["metadata"]["annotations"][ETCD_NAME_ANNOTATION]
                .as_str()
                .map(str::to_string);
            now.insert(name, member);
        }
        for (gone, member) in known.iter().filter(|(n, _)| !now.contains_key(*n)) {
            let secret = format!("{gone}.node-password.k3s");
            if store
                .delete("v1", "secrets", Some("kube-system"), &secret)
                .is_ok()
            {
                log::info(format!(
                    "Removed node password secret for deleted node {gone}"
                ));
            }
            if let (Some(member), Some(members)) = (member, &self.members) {
                let mut list = lock(members);
                let before = list.members.len();
                // k3s never removes its own member ("not removing self from etcd cluster").
                let own = self.self_member.as_deref();
                list.members
                    .retain(|m| m.name != *member || Some(m.name.as_str()) == own);
                if list.members.len() != before {
                    log::info(format!(
                        "Removed member {member} from etcd cluster (node {gone} was deleted)"
                    ));
                }
                drop(list);
                self.save_members();
            }
        }
        *known = now;
        let Some(members) = &self.members else { return };
        let mut promoted = false;
        let snapshot = {
            let mut list = lock(members);
            for m in list.members.iter_mut() {
                if m.is_learner
                    && now_ms().saturating_sub(m.added_ms) >= self.learner_delay.as_millis() as u64
                {
                    m.is_learner = false;
                    promoted = true;
                    log::info(format!("Promoted learner {}", m.name));
                }
            }
            list.clone()
        };
        if promoted {
            self.save_members();
        }
        for node in nodes
            .iter()
            .filter(|n| n["metadata"]["labels"][ETCD_LABEL] == "true")
        {
            let member_name = node["metadata"]["annotations"][ETCD_NAME_ANNOTATION].as_str();
            let member = snapshot
                .members
                .iter()
                .find(|m| Some(m.name.as_str()) == member_name);
            let (status, reason, message) = match member {
                Some(m) if m.is_learner => (
                    "False",
                    "MemberIsLearner",
                    "Node has not been promoted to voting member of the etcd cluster",
                ),
                Some(_) => (
                    "True",
                    "MemberNotLearner",
                    "Node is a voting member of the etcd cluster",
                ),
                None => (
                    "False",
                    "NotAMember",
                    "Node is not a member of the etcd cluster",
                ),
            };
            set_condition(store, node, "EtcdIsVoter", status, reason, message);
        }
    }
}

impl Extension for Cluster {
    fn handle<'a>(
        &'a self,
        request: &'a ExtensionRequest,
        store: &'a Store,
    ) -> BoxFuture<'a, Option<ExtensionResponse>> {
        Box::pin(self.route(request, store))
    }
}

/// Runs the controllers every `tick` until the task is aborted.
pub async fn run_controllers(cluster: Arc<Cluster>, store: Store, tick: Duration) {
    let mut known = BTreeMap::new();
    let mut rv = 0;
    loop {
        cluster.reconcile(&store, &mut known, &mut rv);
        tokio::time::sleep(tick).await;
    }
}

/// Sets a Node condition unless it already reads the same (k3s's `setEtcdStatusCondition`).
fn set_condition(
    store: &Store,
    node: &Value,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
    let mut node = node.clone();
    let conditions = node["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let existing = conditions.iter().find(|c| c["type"] == kind);
    if let Some(c) = existing
        && c["status"] == status
        && c["reason"] == reason
        && c["message"] == message
    {
        return;
    }
    let now = super::node::now();
    let mut updated: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != kind)
        .collect();
    updated.push(
        json!({"type": kind, "status": status, "reason": reason, "message": message,
                        "lastHeartbeatTime": now, "lastTransitionTime": now}),
    );
    node["status"]["conditions"] = json!(updated);
    let name = node["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match store.update_status(node) {
        Ok(_) => log::info(format!("Set node {name} {kind}={status} ({reason})")),
        // A kubelet write in between: the next round tries again.
        Err(e) => log::debug(format!(
            "Unable to set {kind} condition on {name}: {}",
            e.message
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn text(status: u16, body: &str) -> ExtensionResponse {
    ExtensionResponse {
        status,
        content_type: "text/plain; charset=utf-8".into(),
        body: body.as_bytes().to_vec(),
    }
}

fn json_response(status: u16, value: &Value) -> ExtensionResponse {
    ExtensionResponse {
        status,
        content_type: "application/json".into(),
        body: serde_json::to_vec(value).unwrap_or_default(),
    }
}

/// RBAC for kubelet client certificates (group `system:nodes`) on Nodes, seeded into a new cluster.
pub fn seed_node_rbac(store: &Store) {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "system:k3s-standin:node"},
        "rules": [{"apiGroups": [""], "resources": ["nodes", "nodes/status"], "verbs": ["*"]}],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:k3s-standin:node"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:k3s-standin:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
    });
    for object in [role, binding] {
        // Present already after a restart: the persisted copy stays.
        let _ = store.create(object);
    }
}
