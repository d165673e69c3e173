//! The k3s stand-in as a cluster: servers joining a cluster-init server
//! (learner, then voter, seen through `EtcdIsVoter`), a concurrent join
//! caught, join refusals with k3s's wording (CA hash, wrong secret, critical
//! mismatch), agents registering and becoming Ready, and the node password
//! that refuses a reinstalled node until its Node is deleted.

mod k3s_standin_common;

use k3s_standin_common::*;

/// A cluster-init server; returns it, its port and its server token.
fn first_server(
    root: &std::path::Path,
    name: &str,
    learner_seconds: &str,
    extra: &[&str],
) -> (Standin, u16, String) {
    let port = free_port();
    let mut args = vec!["--cluster-init"];
    args.extend(extra);
    let mut s = Standin::spawn(
        root,
        &server_args(name, port, "127.0.0.21", &args),
        &[(
            "EDGEFORGE_K3S_STANDIN_LEARNER_SECONDS",
            learner_seconds.to_string(),
        )],
    );
    s.wait_log("k3s is up and running");
    let token = std::fs::read_to_string(s.server_file("token"))
        .unwrap()
        .trim()
        .to_string();
    (s, port, token)
}

fn join_args(
    name: &str,
    ip: &str,
    url_port: u16,
    token: &str,
    extra: &[&str],
) -> (Vec<String>, u16) {
    let port = free_port();
    let server = format!("https://127.0.0.1:{url_port}");
    let mut flags = vec!["--server", &server, "--token", token];
    flags.extend(extra);
    (server_args(name, port, ip, &flags), port)
}

#[test]
fn a_joining_server_is_a_learner_then_a_voter_and_serves_the_same_objects() {
    let dir = tempfile::tempdir().unwrap();
    let (s1, _port1, token) = first_server(&dir.path().join("s1"), "cl-s1", "3", &[]);
    let (args, port2) = join_args("cl-s2", "127.0.0.22", _port1, &token, &[]);
    let mut s2 = Standin::spawn(&dir.path().join("s2"), &args, &[]);
    let kc1 = s1.kubeconfig();
    // While a learner its Node says so, through the API the k3s layer waits on.
    eventually("EtcdIsVoter=False (MemberIsLearner)", || {
        let out = kubectl(&kc1, &["get", "node", "cl-s2", "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        let n: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (condition(&n, "EtcdIsVoter") == ("False".into(), "MemberIsLearner".into())).then_some(())
    });
    s2.wait_log("k3s is up and running");
    let n = node(&kc1, "cl-s2");
    assert_eq!(
        condition(&n, "EtcdIsVoter"),
        ("True".into(), "MemberNotLearner".into())
    );
    assert_eq!(
        n["metadata"]["labels"]["node-role.kubernetes.io/etcd"],
        "true"
    );
    assert_eq!(
        n["metadata"]["annotations"]["etcd.k3s.cattle.io/node-address"],
        "127.0.0.22"
    );
    // The joined server's own k3s.yaml reaches the same cluster, objects and watches included.
    let kc2 = s2.kubeconfig();
    assert!(
        std::fs::read_to_string(&kc2)
            .unwrap()
            .contains(&format!("https://127.0.0.1:{port2}"))
    );
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  k: v\n",
    )
    .unwrap();
    kubectl_ok(
        &kc2,
        &["apply", "--server-side", "-f", manifest.to_str().unwrap()],
    );
    assert!(kubectl_ok(&kc1, &["get", "configmap", "shared", "-o", "yaml"]).contains("k: v"));
    kubectl_ok(
        &kc2,
        &[
            "wait",
            "--for=condition=Ready",
            "node/cl-s2",
            "--timeout=60s",
        ],
    );
    let nodes = kubectl_ok(&kc2, &["get", "nodes"]);
    assert!(
        nodes.contains("cl-s1") && nodes.contains("cl-s2"),
        "{nodes}"
    );
    // The joined server has the cluster's CA and token.
    assert_eq!(
        std::fs::read(s2.server_file("tls/server-ca.crt")).unwrap(),
        std::fs::read(s1.server_file("tls/server-ca.crt")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(s2.server_file("token"))
            .unwrap()
            .trim(),
        token
    );
    assert!(s2.term().success());
    assert!(s1.term().success());
}

#[test]
fn two_servers_joining_at_once_one_fails_with_too_many_learners() {
    let dir = tempfile::tempdir().unwrap();
    let (s1, port1, token) = first_server(&dir.path().join("s1"), "cc-s1", "30", &[]);
    let (args2, _) = join_args("cc-s2", "127.0.0.32", port1, &token, &[]);
    let (args3, _) = join_args("cc-s3", "127.0.0.33", port1, &token, &[]);
    let mut s2 = Standin::spawn(&dir.path().join("s2"), &args2, &[]);
    let mut s3 = Standin::spawn(&dir.path().join("s3"), &args3, &[]);
    let failed = eventually("one join to fail", || {
        if !s2.running() {
            Some(2)
        } else if !s3.running() {
            Some(3)
        } else {
            None
        }
    });
    let (loser, winner) = if failed == 2 {
        (&mut s2, &mut s3)
    } else {
        (&mut s3, &mut s2)
    };
    let status = loser.wait_exit();
    assert_eq!(status.code(), Some(1));
    let log = loser.log();
    assert!(
        log.contains("level=fatal msg=\"etcd cluster join failed: etcdserver: too many learner members in cluster\""),
        "{log}"
    );
    // The other one is the learner, still waiting for promotion.
    winner.wait_log("has not yet been promoted from learner to voting member");
    assert!(winner.running());
    drop(s2);
    drop(s3);
    assert!(s1.term().success());
}

#[test]
fn joins_are_refused_with_k3s_wording() {
    let dir = tempfile::tempdir().unwrap();
    let (s1, port1, token) = first_server(&dir.path().join("s1"), "rf-s1", "1", &[]);
    // A token pinning another CA.
    let (_, rest) = token.split_once("::").unwrap();
    let other_hash = "0".repeat(64);
    let (args, _) = join_args(
        "rf-s2",
        "127.0.0.42",
        port1,
        &format!("K10{other_hash}::{rest}"),
        &[],
    );
    let mut s = Standin::spawn(&dir.path().join("ca"), &args, &[]);
    assert_eq!(s.wait_exit().code(), Some(1));
    assert!(
        s.log().contains(&format!(
            "token CA hash does not match the Cluster CA certificate hash: {other_hash} != "
        )),
        "{}",
        s.log()
    );
    // The right CA, the wrong secret.
    let (hash, _) = token.split_once("::").unwrap();
    let (args, _) = join_args(
        "rf-s3",
        "127.0.0.43",
        port1,
        &format!("{hash}::server:wrong"),
        &[],
    );
    let mut s = Standin::spawn(&dir.path().join("secret"), &args, &[]);
    assert_eq!(s.wait_exit().code(), Some(1));
    assert!(
        s.log().contains("/v1-k3s/config: 401 Unauthorized"),
        "{}",
        s.log()
    );
    // A critical value that differs from the cluster's.
    let (args, _) = join_args(
        "rf-s4",
        "127.0.0.44",
        port1,
        &token,
        &["--cluster-cidr", "10.99.0.0/16", "--disable", "servicelb"],
    );
    let mut s = Standin::spawn(&dir.path().join("critical"), &args, &[]);
    assert_eq!(s.wait_exit().code(), Some(1));
    let log = s.log();
    assert!(
        log.contains("level=warning msg=\"critical configuration mismatched: cluster-cidr\""),
        "{log}"
    );
    assert!(
        log.contains("critical configuration mismatched: disable-service-lb"),
        "{log}"
    );
    assert!(
        log.contains("level=fatal msg=\"Error: preparing server: failed to bootstrap cluster data: failed to validate server configuration: critical configuration value mismatch between servers\""),
        "{log}"
    );
    // None of them became a Node.
    let nodes = kubectl_ok(&s1.kubeconfig(), &["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.trim(), "node/rf-s1");
    assert!(s1.term().success());
}

#[test]
fn agents_register_become_ready_and_are_refused_with_a_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    let (s1, port1, token) = first_server(
        &dir.path().join("s1"),
        "ag-s1",
        "1",
        &["--agent-token", "agentsecret"],
    );
    let kc = s1.kubeconfig();
    let agent_token = std::fs::read_to_string(s1.server_file("agent-token")).unwrap();
    assert!(
        agent_token.trim().ends_with("::node:agentsecret"),
        "{agent_token}"
    );
    let url = format!("https://127.0.0.1:{port1}");
    let agent = |name: &str, token: &str| -> Vec<String> {
        [
            "agent",
            "--server",
            &url,
            "--token",
            token,
            "--node-name",
            name,
            "--node-ip",
            "127.0.0.51",
            "--node-label",
            "tier=edge",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut a1 = Standin::spawn(
        &dir.path().join("a1"),
        &agent("ag-a1", agent_token.trim()),
        &[],
    );
    a1.wait_log("k3s agent is up and running");
    kubectl_ok(
        &kc,
        &[
            "wait",
            "--for=condition=Ready",
            "node/ag-a1",
            "--timeout=60s",
        ],
    );
    let n = node(&kc, "ag-a1");
    assert_eq!(n["metadata"]["labels"]["tier"], "edge");
    assert!(n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"].is_null());
    assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.34.2+k3s1");
    // The server token joins agents too.
    let mut a2 = Standin::spawn(&dir.path().join("a2"), &agent("ag-a2", &token), &[]);
    a2.wait_log("k3s agent is up and running");
    // A wrong secret: the agent says why and keeps trying, as k3s does, and no Node appears.
    let (hash, _) = token.split_once("::").unwrap();
    let mut bad = Standin::spawn(
        &dir.path().join("bad"),
        &agent("ag-bad", &format!("{hash}::node:nope")),
        &[],
    );
    let log = bad.wait_log("401 Unauthorized");
    assert!(log.contains("level=error"), "{log}");
    assert!(bad.running());
    assert!(!kubectl(&kc, &["get", "node", "ag-bad"]).status.success());
    assert!(bad.term().success());
    // No server URL: fatal.
    let mut none = Standin::spawn(
        &dir.path().join("none"),
        &["agent".to_string(), "--token".into(), "x".into()],
        &[],
    );
    assert_eq!(none.wait_exit().code(), Some(1));
    assert!(none.log().contains("--server is required"));
    assert!(a1.term().success());
    assert!(a2.term().success());
    assert!(s1.term().success());
}

#[test]
fn a_reinstalled_node_is_refused_until_its_node_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (s1, port1, token) = first_server(&dir.path().join("s1"), "pw-s1", "1", &[]);
    let kc = s1.kubeconfig();
    let args: Vec<String> = [
        "agent",
        "--server",
        &format!("https://127.0.0.1:{port1}"),
        "--token",
        &token,
        "--node-name",
        "pw-a1",
        "--node-ip",
        "127.0.0.61",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let root = dir.path().join("a1");
    let mut a = Standin::spawn(&root, &args, &[]);
    a.wait_log("k3s agent is up and running");
    assert!(a.term().success());
    // Reinstalled: a new /etc/rancher/node/password under the same name.
    std::fs::remove_file(root.join("etc/rancher/node/password")).unwrap();
    let mut a = Standin::spawn(&root, &args, &[]);
    let log = a.wait_log("Node password rejected");
    assert!(log.contains("/etc/rancher/node/password"), "{log}");
    assert!(a.running());
    // Deleting the Node (what the k3s layer's reset does) lets it register again.
    kubectl_ok(&kc, &["delete", "node", "pw-a1"]);
    a.wait_log("k3s agent is up and running");
    kubectl_ok(
        &kc,
        &[
            "wait",
            "--for=condition=Ready",
            "node/pw-a1",
            "--timeout=60s",
        ],
    );
    assert!(a.term().success());
    assert!(s1.term().success());
}

#[test]
fn a_deleted_server_node_leaves_the_etcd_member_list_and_can_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let (s1, port1, token) = first_server(&dir.path().join("s1"), "rj-s1", "1", &[]);
    let kc = s1.kubeconfig();
    let (args, _) = join_args("rj-s2", "127.0.0.72", port1, &token, &[]);
    let root2 = dir.path().join("s2");
    let mut s2 = Standin::spawn(&root2, &args, &[]);
    s2.wait_log("k3s is up and running");
    assert!(s2.term().success());
    // The k3s layer's reset: delete the Node, wipe the server's state, start again.
    kubectl_ok(&kc, &["delete", "node", "rj-s2"]);
    let _ = std::fs::remove_dir_all(&root2);
    eventually("the member to be removed", || {
        s1.log().contains("Removed member rj-s2-").then_some(())
    });
    let mut s2 = Standin::spawn(&root2, &args, &[]);
    s2.wait_log("k3s is up and running");
    assert_eq!(condition(&node(&kc, "rj-s2"), "EtcdIsVoter").0, "True");
    assert!(s2.term().success());
    assert!(s1.term().success());
}
