//! Joins of a 3-site inventory into a federation host, through the
//! `edgeforge` binary against kube-emulator stand-ins over HTTPS (one host,
//! one per member; the karmada-agent and the host's cluster-status
//! controller are stand-ins too): the exact objects Karmada push
//! (`karmadactl join`), Karmada pull (`karmadactl register` + the agent)
//! and KubeFed (`kubefedctl join`) create on each side, field by field; a
//! re-join that writes nothing; the id conflict; what the agent's credential
//! may and may not do; unjoin leaving nothing behind.

mod federation_common;

use edgeforge_tests::cluster_status_standin::ClusterStatusStandin;
use edgeforge_tests::federation_host::Federation;
use edgeforge_tests::karmada_agent_standin::KarmadaAgentStandin;
use federation_common::*;
use serde_json::{Value, json};

const KARMADA_LABEL: &str = "karmada.io/system";

/// The rules `karmadactl join` gives `karmada-controller-manager:karmada-<cluster>`
/// (and kubefedctl its role): everything, and GET on every non-resource URL.
fn all_access() -> Value {
    json!([
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"nonResourceURLs": ["*"], "verbs": ["get"]},
    ])
}

/// `karmada.io/system`, and the name label every apiserver adds to a namespace.
fn namespace_labels(ns: &str) -> Value {
    json!({KARMADA_LABEL: "true", "kubernetes.io/metadata.name": ns})
}

fn cluster_labels(i: usize) -> Value {
    json!({
        "edgeforge.io/region": format!("region-{}", i % 2),
        "edgeforge.io/site": format!("site-{i}"),
        "edgeforge.io/zone": format!("zone-{i}"),
        "tier": "edge",
    })
}

/// The push-mode member objects of cluster `c`, as `karmadactl join` makes them.
fn assert_push_member(member: &edgeforge_tests::kube_emulator::Emulator, c: &str) {
    let ns = get(member, "v1", "Namespace", None, "karmada-cluster");
    assert_eq!(
        ns["metadata"]["labels"],
        namespace_labels("karmada-cluster")
    );
    for sa in ["karmada-impersonator".to_string(), format!("karmada-{c}")] {
        let account = user_fields(get(
            member,
            "v1",
            "ServiceAccount",
            Some("karmada-cluster"),
            &sa,
        ));
        assert_eq!(
            account,
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": "karmada-cluster", "labels": {KARMADA_LABEL: "true"}}}),
        );
        let secret = get(member, "v1", "Secret", Some("karmada-cluster"), &sa);
        assert_eq!(secret["type"], "kubernetes.io/service-account-token");
        assert_eq!(
            secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
            sa
        );
        assert!(
            !secret_data(&secret, "token").is_empty(),
            "the token controller filled {sa}"
        );
    }
    let role = format!("karmada-controller-manager:karmada-{c}");
    assert_eq!(
        user_fields(get(
            member,
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            None,
            &role
        )),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": role, "labels": {KARMADA_LABEL: "true"}}, "rules": all_access()}),
    );
    assert_eq!(
        user_fields(get(
            member,
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            None,
            &role
        )),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role, "labels": {KARMADA_LABEL: "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": format!("karmada-{c}"), "namespace": "karmada-cluster"}]}),
    );
}

/// The host's Secrets of cluster `c`, with the member's tokens and CA, owned by its Cluster.
fn assert_host_secrets(fed: &Federation, i: usize, c: &str) {
    let member = &fed.members[i];
    let cluster = get(&fed.host, "cluster.karmada.io/v1alpha1", "Cluster", None, c);
    let owner = json!([{"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster", "name": c,
        "uid": cluster["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
    let member_token = |sa: &str| {
        secret_data(
            &get(member, "v1", "Secret", Some("karmada-cluster"), sa),
            "token",
        )
    };
    let credentials = get(&fed.host, "v1", "Secret", Some("karmada-cluster"), c);
    assert_eq!(
        credentials["metadata"]["labels"],
        json!({KARMADA_LABEL: "true"})
    );
    assert_eq!(credentials["metadata"]["ownerReferences"], owner);
    let keys: Vec<&String> = credentials["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["caBundle", "token"]);
    assert_eq!(
        secret_data(&credentials, "token"),
        member_token(&format!("karmada-{c}"))
    );
    assert_eq!(
        secret_data(&credentials, "caBundle").trim(),
        member.ca().cert_pem().trim()
    );
    let impersonator = get(
        &fed.host,
        "v1",
        "Secret",
        Some("karmada-cluster"),
        &format!("{c}-impersonator"),
    );
    assert_eq!(
        impersonator["metadata"]["labels"],
        json!({KARMADA_LABEL: "true"})
    );
    assert_eq!(impersonator["metadata"]["ownerReferences"], owner);
    let keys: Vec<&String> = impersonator["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["token"]);
    assert_eq!(
        secret_data(&impersonator, "token"),
        member_token("karmada-impersonator")
    );
}

fn member_id(member: &edgeforge_tests::kube_emulator::Emulator) -> Value {
    get(member, "v1", "Namespace", None, "kube-system")["metadata"]["uid"].clone()
}

/// Objects as (resource, namespace, name).
type Objects = Vec<(String, String, String)>;

/// The push-mode objects on both sides.
fn push_objects(c: &str) -> (Objects, Objects) {
    let mut member = namespace_defaults("karmada-cluster");
    for (r, ns, n) in [
        (
            "serviceaccounts",
            "karmada-cluster",
            "karmada-impersonator".to_string(),
        ),
        ("serviceaccounts", "karmada-cluster", format!("karmada-{c}")),
        (
            "secrets",
            "karmada-cluster",
            "karmada-impersonator".to_string(),
        ),
        ("secrets", "karmada-cluster", format!("karmada-{c}")),
        (
            "clusterroles.rbac.authorization.k8s.io",
            "",
            format!("karmada-controller-manager:karmada-{c}"),
        ),
        (
            "clusterrolebindings.rbac.authorization.k8s.io",
            "",
            format!("karmada-controller-manager:karmada-{c}"),
        ),
    ] {
        member.push((r.into(), ns.into(), n));
    }
    let host = vec![
        (
            "secrets".to_string(),
            "karmada-cluster".to_string(),
            c.to_string(),
        ),
        (
            "secrets".into(),
            "karmada-cluster".into(),
            format!("{c}-impersonator"),
        ),
        (
            "clusters.cluster.karmada.io".into(),
            String::new(),
            c.to_string(),
        ),
    ];
    (member, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn karmada_push_and_pull_create_exactly_what_the_upstream_tools_do_and_a_rejoin_writes_nothing()
 {
    let fed = Federation::start(3).await.unwrap();
    let _agents = KarmadaAgentStandin::start(&fed.members);
    let _status = ClusterStatusStandin::start(fed.host.kubeconfig("host"));
    let inventory = fed
        .write(
            "inv.yaml",
            &fed.inventory("karmada", &["push", "pull", "push"]),
        )
        .unwrap();
    let state = fed.dir.path().join("state");
    let host_before = snapshot(&fed.host);
    let members_before: Vec<_> = fed.members.iter().map(snapshot).collect();

    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 0, "{}", run.text());

    // The host: the shared namespace, per push site its Secrets and Cluster,
    // per pull site the agent's RBAC, credential and execution namespace,
    // and what the agent created.
    let mut host_expected = namespace_defaults("karmada-cluster");
    for i in [0, 2] {
        host_expected.extend(push_objects(&format!("site-{i}")).1);
    }
    host_expected.extend(namespace_defaults("karmada-es-site-1"));
    for (r, ns, n) in [
        (
            "clusterroles.rbac.authorization.k8s.io",
            "",
            "system:karmada:site-1:agent",
        ),
        (
            "clusterrolebindings.rbac.authorization.k8s.io",
            "",
            "system:karmada:site-1:agent",
        ),
        (
            "roles.rbac.authorization.k8s.io",
            "karmada-cluster",
            "system:karmada:site-1:agent-secret",
        ),
        (
            "rolebindings.rbac.authorization.k8s.io",
            "karmada-cluster",
            "system:karmada:site-1:agent-secret",
        ),
        (
            "roles.rbac.authorization.k8s.io",
            "karmada-es-site-1",
            "system:karmada:site-1:agent-work",
        ),
        (
            "rolebindings.rbac.authorization.k8s.io",
            "karmada-es-site-1",
            "system:karmada:site-1:agent-work",
        ),
        ("serviceaccounts", "karmada-cluster", "karmada-agent-site-1"),
        ("secrets", "karmada-cluster", "karmada-agent-site-1"),
        // The agent's own registration.
        ("secrets", "karmada-cluster", "site-1"),
        ("secrets", "karmada-cluster", "site-1-impersonator"),
        ("clusters.cluster.karmada.io", "", "site-1"),
    ] {
        host_expected.push((r.into(), ns.into(), n.into()));
    }
    assert_eq!(
        added(&host_before, &snapshot(&fed.host)),
        host_expected.into_iter().collect(),
        "objects created on the host"
    );

    // Push members: exactly karmadactl join's objects.
    for i in [0, 2] {
        let c = format!("site-{i}");
        assert_eq!(
            added(&members_before[i], &snapshot(&fed.members[i])),
            push_objects(&c).0.into_iter().collect(),
            "objects created on member {i}"
        );
        assert_push_member(&fed.members[i], &c);
        assert_host_secrets(&fed, i, &c);
        let cluster = user_fields(get(
            &fed.host,
            "cluster.karmada.io/v1alpha1",
            "Cluster",
            None,
            &c,
        ));
        assert_eq!(
            cluster,
            json!({"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": c, "labels": cluster_labels(i)},
            "spec": {
                "syncMode": "Push",
                "apiEndpoint": fed.members[i].url(),
                "id": member_id(&fed.members[i]),
                "secretRef": {"namespace": "karmada-cluster", "name": c},
                "impersonatorSecretRef": {"namespace": "karmada-cluster", "name": format!("{c}-impersonator")},
                "region": format!("region-{}", i % 2),
                "zones": [format!("zone-{i}")],
            }}),
        );
    }

    // The pull member: karmadactl register's objects, then what the agent made.
    let mut pull_member = namespace_defaults("karmada-system");
    for (r, ns, n) in [
        ("secrets", "karmada-system", "karmada-kubeconfig"),
        (
            "clusterroles.rbac.authorization.k8s.io",
            "",
            "karmada-agent",
        ),
        (
            "clusterrolebindings.rbac.authorization.k8s.io",
            "",
            "karmada-agent",
        ),
        ("serviceaccounts", "karmada-system", "karmada-agent-sa"),
        ("deployments.apps", "karmada-system", "karmada-agent"),
    ] {
        pull_member.push((r.into(), ns.into(), n.into()));
    }
    pull_member.extend(push_objects("site-1").0);
    assert_eq!(
        added(&members_before[1], &snapshot(&fed.members[1])),
        pull_member.into_iter().collect(),
        "objects created on the pull member"
    );
    let m = &fed.members[1];
    assert_eq!(
        get(m, "v1", "Namespace", None, "karmada-system")["metadata"]["labels"],
        namespace_labels("karmada-system")
    );
    for (kind, ns, name) in [
        ("ServiceAccount", Some("karmada-system"), "karmada-agent-sa"),
        ("Secret", Some("karmada-system"), "karmada-kubeconfig"),
    ] {
        assert_eq!(
            get(m, "v1", kind, ns, name)["metadata"]["labels"],
            json!({KARMADA_LABEL: "true"}),
            "{kind} {name}"
        );
    }
    assert_eq!(
        user_fields(get(
            m,
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            None,
            "karmada-agent"
        )),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "karmada-agent", "labels": {KARMADA_LABEL: "true"}}, "rules": all_access()}),
    );
    assert_eq!(
        user_fields(get(
            m,
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            None,
            "karmada-agent"
        )),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "karmada-agent", "labels": {KARMADA_LABEL: "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "karmada-agent"},
            "subjects": [{"kind": "ServiceAccount", "name": "karmada-agent-sa", "namespace": "karmada-system"}]}),
    );
    let mut deployment = user_fields(get(
        m,
        "apps/v1",
        "Deployment",
        Some("karmada-system"),
        "karmada-agent",
    ));
    // Defaulted by the API server, not set by the join.
    deployment["spec"]
        .as_object_mut()
        .unwrap()
        .remove("strategy");
    let app = json!({"app": "karmada-agent"});
    assert_eq!(
        deployment,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "karmada-agent", "namespace": "karmada-system", "labels": app},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": app},
            "template": {
                "metadata": {"name": "karmada-agent", "namespace": "karmada-system", "labels": app},
                "spec": {
                    "serviceAccountName": "karmada-agent-sa",
                    "containers": [{
                        "name": "karmada-agent",
                        "image": "docker.io/karmada/karmada-agent:v1.18.2",
                        "command": [
                            "/bin/karmada-agent",
                            "--karmada-kubeconfig=/etc/kubeconfig/karmada-kubeconfig",
                            "--cluster-name=site-1",
                            format!("--cluster-api-endpoint={}", m.url()),
                            "--cluster-provider=",
                            "--cluster-region=region-1",
                            "--cluster-zones=zone-1",
                            "--controllers=*",
                            "--proxy-server-address=",
                            "--leader-elect-resource-namespace=karmada-system",
                            "--cluster-namespace=karmada-cluster",
                            "--cluster-status-update-frequency=10s",
                            "--metrics-bind-address=:8080",
                            "--health-probe-bind-address=0.0.0.0:10357",
                            "--v=2",
                        ],
                        "ports": [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}],
                        "volumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/kubeconfig"}],
                    }],
                    "volumes": [{"name": "kubeconfig", "secret": {"secretName": "karmada-kubeconfig"}}],
                    "tolerations": [{"key": "node-role.kubernetes.io/master", "operator": "Exists"}],
                },
            },
        }}),
    );
    // The agent's kubeconfig: the host's URL and CA, the host credential's token.
    let kc = secret_data(
        &get(
            m,
            "v1",
            "Secret",
            Some("karmada-system"),
            "karmada-kubeconfig",
        ),
        "karmada-kubeconfig",
    );
    let kc: Value = serde_saphyr::from_str(&kc).unwrap();
    assert_eq!(kc["current-context"], "site-1@karmada-apiserver");
    assert_eq!(kc["clusters"][0]["name"], "karmada-apiserver");
    assert_eq!(kc["clusters"][0]["cluster"]["server"], fed.host.url());
    let ca = kc["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    assert_eq!(
        String::from_utf8(data_encoding::BASE64.decode(ca.as_bytes()).unwrap())
            .unwrap()
            .trim(),
        fed.host.ca().cert_pem().trim()
    );
    let host_token = get(
        &fed.host,
        "v1",
        "Secret",
        Some("karmada-cluster"),
        "karmada-agent-site-1",
    );
    assert_eq!(
        kc["users"][0]["user"]["token"],
        secret_data(&host_token, "token")
    );
    assert_eq!(
        user_fields(get(
            &fed.host,
            "v1",
            "ServiceAccount",
            Some("karmada-cluster"),
            "karmada-agent-site-1"
        )),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "karmada-agent-site-1", "namespace": "karmada-cluster", "labels": {KARMADA_LABEL: "true"}}}),
    );
    // The agent's RBAC on the host, as karmadactl register makes it, bound to that credential.
    let subject = json!([{"kind": "ServiceAccount", "name": "karmada-agent-site-1", "namespace": "karmada-cluster"}]);
    assert_eq!(
        user_fields(get(
            &fed.host,
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            None,
            "system:karmada:site-1:agent"
        )),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "system:karmada:site-1:agent"},
        "rules": [
            {"apiGroups": ["cluster.karmada.io"], "resources": ["clusters"], "resourceNames": ["site-1"], "verbs": ["get", "delete"]},
            {"apiGroups": ["cluster.karmada.io"], "resources": ["clusters"], "verbs": ["create", "list", "watch"]},
            {"apiGroups": ["cluster.karmada.io"], "resources": ["clusters/status"], "resourceNames": ["site-1"], "verbs": ["update"]},
            {"apiGroups": ["config.karmada.io"], "resources": ["resourceinterpreterwebhookconfigurations", "resourceinterpretercustomizations"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["get", "create"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["patch", "create", "update"]},
        ]}),
    );
    assert_eq!(
        user_fields(get(
            &fed.host,
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            None,
            "system:karmada:site-1:agent"
        )),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:karmada:site-1:agent"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:karmada:site-1:agent"},
            "subjects": subject}),
    );
    assert_eq!(
        user_fields(get(
            &fed.host,
            "rbac.authorization.k8s.io/v1",
            "Role",
            Some("karmada-cluster"),
            "system:karmada:site-1:agent-secret"
        )),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "system:karmada:site-1:agent-secret", "namespace": "karmada-cluster"},
        "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["site-1", "site-1-impersonator"], "verbs": ["get", "patch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        ]}),
    );
    assert_eq!(
        user_fields(get(
            &fed.host,
            "rbac.authorization.k8s.io/v1",
            "Role",
            Some("karmada-es-site-1"),
            "system:karmada:site-1:agent-work"
        )),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "system:karmada:site-1:agent-work", "namespace": "karmada-es-site-1"},
        "rules": [
            {"apiGroups": ["work.karmada.io"], "resources": ["works"], "verbs": ["get", "create", "list", "watch", "update", "delete"]},
            {"apiGroups": ["work.karmada.io"], "resources": ["works/status"], "verbs": ["patch", "update"]},
        ]}),
    );
    for (ns, name) in [
        ("karmada-cluster", "agent-secret"),
        ("karmada-es-site-1", "agent-work"),
    ] {
        let n = format!("system:karmada:site-1:{name}");
        assert_eq!(
            user_fields(get(
                &fed.host,
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                Some(ns),
                &n
            )),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": n, "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": n},
                "subjects": subject}),
        );
    }
    assert_eq!(
        get(&fed.host, "v1", "Namespace", None, "karmada-es-site-1")["metadata"]["labels"],
        namespace_labels("karmada-es-site-1")
    );
    // The agent registered the pull Cluster itself; edgeforge labelled it.
    let pull = get(
        &fed.host,
        "cluster.karmada.io/v1alpha1",
        "Cluster",
        None,
        "site-1",
    );
    assert_eq!(pull["spec"]["syncMode"], "Pull");
    assert_eq!(pull["spec"]["id"], member_id(m));
    assert_eq!(pull["spec"]["apiEndpoint"], m.url());
    assert_eq!(pull["metadata"]["labels"], cluster_labels(1));
    assert_eq!(pull["status"]["conditions"][0]["status"], "True");
    assert_host_secrets(&fed, 1, "site-1");

    // The status command shows each as the host sees it.
    let inv = inventory.display().to_string();
    let status = edgeforge(
        &state,
        &["federation", "status", "-i", &inv, "--format", "json"],
    )
    .await;
    assert_eq!(status.code, 0, "{}", status.text());
    let rows: Value = serde_json::from_str(&status.stdout).unwrap();
    for i in 0..3 {
        let row = &rows[i];
        assert_eq!(row["site"], format!("site-{i}"));
        assert_eq!(row["registered"], true);
        assert_eq!(row["mode"], if i == 1 { "pull" } else { "push" });
        assert_eq!(row["id"], member_id(&fed.members[i]));
        assert_eq!(row["labels"], cluster_labels(i));
    }
    // Ready comes from the stand-ins (the agent's for pull, the host
    // controller's for push), which poll: wait for them, then look again.
    for _ in 0..200 {
        let all_ready = (0..3).all(|i| {
            get(
                &fed.host,
                "cluster.karmada.io/v1alpha1",
                "Cluster",
                None,
                &format!("site-{i}"),
            )["status"]["conditions"][0]["status"]
                == "True"
        });
        if all_ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let table = edgeforge(&state, &["federation", "status", "-i", &inv]).await;
    assert_eq!(table.code, 0, "{}", table.text());
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("SITE"), "{}", table.stdout);
    for i in 0..3 {
        assert!(
            lines[i + 1].contains(&format!("site-{i}"))
                && lines[i + 1].contains("yes")
                && lines[i + 1].contains("True"),
            "{}",
            table.stdout
        );
    }

    // A second join writes nothing, on either side.
    fed.host.clear_requests();
    for m in &fed.members {
        m.clear_requests();
    }
    let again = join(&state, &inventory, &[]).await;
    assert_eq!(again.code, 0, "{}", again.text());
    // The stand-ins write status on their own; only edgeforge's requests count.
    let by_edgeforge = |emu: &edgeforge_tests::kube_emulator::Emulator| -> Vec<String> {
        emu.requests()
            .into_iter()
            .filter(|r| {
                r.write
                    && r.user.as_deref() == Some("kube-emulator-admin")
                    && !r.path.ends_with("/status")
            })
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    };
    assert_eq!(
        by_edgeforge(&fed.host),
        Vec::<String>::new(),
        "writes to the host on a re-join"
    );
    for (i, m) in fed.members.iter().enumerate() {
        assert_eq!(
            by_edgeforge(m),
            Vec::<String>::new(),
            "writes to member {i} on a re-join"
        );
    }
    assert!(
        !fed.host.requests().is_empty(),
        "the re-join read the host (it checks everything)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubefed_creates_exactly_what_kubefedctl_join_does_and_a_rejoin_writes_nothing() {
    let fed = Federation::start(3).await.unwrap();
    let _status = ClusterStatusStandin::start(fed.host.kubeconfig("host"));
    let inventory = fed
        .write("inv.yaml", &fed.inventory("kubefed", &[]))
        .unwrap();
    let state = fed.dir.path().join("state");
    let host_before = snapshot(&fed.host);
    let members_before: Vec<_> = fed.members.iter().map(snapshot).collect();

    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 0, "{}", run.text());

    let ns = "kube-federation-system";
    let mut host_expected = Vec::new();
    for (i, m) in fed.members.iter().enumerate() {
        let c = format!("site-{i}");
        let sa = format!("{c}-host");
        let role = format!("kubefed-controller-manager:{sa}");
        let mut member_expected = namespace_defaults(ns);
        for (r, n, name) in [
            ("serviceaccounts", ns, sa.clone()),
            ("secrets", ns, format!("{sa}-token")),
            ("clusterroles.rbac.authorization.k8s.io", "", role.clone()),
            (
                "clusterrolebindings.rbac.authorization.k8s.io",
                "",
                role.clone(),
            ),
        ] {
            member_expected.push((r.into(), n.into(), name));
        }
        assert_eq!(
            added(&members_before[i], &snapshot(m)),
            member_expected.into_iter().collect(),
            "objects created on member {i}"
        );
        // As kubefedctl join (cluster scope): no labels, the SA bound to all access.
        assert_eq!(
            user_fields(get(m, "v1", "ServiceAccount", Some(ns), &sa)),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}),
        );
        assert_eq!(
            user_fields(get(
                m,
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                None,
                &role
            )),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": role}, "rules": all_access()}),
        );
        assert_eq!(
            user_fields(get(
                m,
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                None,
                &role
            )),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]}),
        );
        let token_secret = get(m, "v1", "Secret", Some(ns), &format!("{sa}-token"));
        assert_eq!(token_secret["type"], "kubernetes.io/service-account-token");
        assert_eq!(
            token_secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
            sa
        );

        // The host: a Secret named by the server from `<cluster>-`, the KubeFedCluster.
        let kfc = get(
            &fed.host,
            "core.kubefed.io/v1beta1",
            "KubeFedCluster",
            Some(ns),
            &c,
        );
        let secret_name = kfc["spec"]["secretRef"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            secret_name.starts_with(&format!("{c}-")) && secret_name.len() > c.len() + 1,
            "{secret_name}"
        );
        let secret = get(&fed.host, "v1", "Secret", Some(ns), &secret_name);
        assert_eq!(secret["metadata"]["generateName"], format!("{c}-"));
        assert_eq!(
            secret["metadata"]["labels"],
            json!({"edgeforge.io/kubefed-cluster": c})
        );
        let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["token"]);
        assert_eq!(
            secret_data(&secret, "token"),
            secret_data(&token_secret, "token")
        );
        assert_eq!(
            user_fields(kfc),
            json!({"apiVersion": "core.kubefed.io/v1beta1", "kind": "KubeFedCluster",
            "metadata": {"name": c, "namespace": ns,
                "annotations": {"edgeforge.io/cluster-id": member_id(m)},
                "labels": cluster_labels(i)},
            "spec": {
                "apiEndpoint": m.url(),
                "caBundle": data_encoding::BASE64.encode(m.ca().cert_pem().as_bytes()),
                "secretRef": {"name": secret_name},
            }}),
        );
        host_expected.push(("secrets".to_string(), ns.to_string(), secret_name));
        host_expected.push(("kubefedclusters.core.kubefed.io".into(), ns.into(), c));
    }
    assert_eq!(
        added(&host_before, &snapshot(&fed.host)),
        host_expected.into_iter().collect(),
        "objects created on the host"
    );

    // The health-check stand-in reaches each member with the stored credential.
    for _ in 0..200 {
        let ready = (0..3).all(|i| {
            get(
                &fed.host,
                "core.kubefed.io/v1beta1",
                "KubeFedCluster",
                Some(ns),
                &format!("site-{i}"),
            )["status"]["conditions"][0]["status"]
                == "True"
        });
        if ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let inv = inventory.display().to_string();
    let status = edgeforge(
        &state,
        &["federation", "status", "-i", &inv, "--format", "json"],
    )
    .await;
    let rows: Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|_| panic!("{}", status.text()));
    for i in 0..3 {
        assert_eq!(rows[i]["mode"], "kubefed");
        assert_eq!(rows[i]["registered"], true);
        assert_eq!(rows[i]["ready"], "True", "{}", status.stdout);
        assert_eq!(rows[i]["id"], member_id(&fed.members[i]));
    }

    fed.host.clear_requests();
    for m in &fed.members {
        m.clear_requests();
    }
    let again = join(&state, &inventory, &[]).await;
    assert_eq!(again.code, 0, "{}", again.text());
    let by_edgeforge = |emu: &edgeforge_tests::kube_emulator::Emulator| -> Vec<String> {
        emu.requests()
            .into_iter()
            .filter(|r| r.write && !r.path.ends_with("/status"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    };
    assert_eq!(
        by_edgeforge(&fed.host),
        Vec::<String>::new(),
        "writes to the host on a re-join"
    );
    for (i, m) in fed.members.iter().enumerate() {
        assert_eq!(
            by_edgeforge(m),
            Vec::<String>::new(),
            "writes to member {i} on a re-join"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_registered_for_another_cluster_is_refused_naming_both_ids_unless_reregister() {
    let fed = Federation::start(1).await.unwrap();
    let inventory = fed
        .write("inv.yaml", &fed.inventory("karmada", &["push"]))
        .unwrap();
    let state = fed.dir.path().join("state");
    fed.host
        .store()
        .create(json!({"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "site-0"},
            "spec": {"syncMode": "Push", "id": "0d5b1a4e-old-cluster", "apiEndpoint": "https://10.9.9.9:6443"}}))
        .unwrap();
    let member_before = snapshot(&fed.members[0]);
    fed.members[0].clear_requests();

    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 1, "{}", run.text());
    let id = member_id(&fed.members[0]);
    let out = run.text();
    assert!(
        out.contains("0d5b1a4e-old-cluster")
            && out.contains(id.as_str().unwrap())
            && out.contains("--reregister"),
        "the error names both ids and the way out: {out}"
    );
    assert_eq!(
        writes(&fed.members[0]),
        Vec::<String>::new(),
        "nothing was written on the member"
    );
    assert_eq!(snapshot(&fed.members[0]), member_before);
    let host_cluster = get(
        &fed.host,
        "cluster.karmada.io/v1alpha1",
        "Cluster",
        None,
        "site-0",
    );
    assert_eq!(
        host_cluster["spec"]["id"], "0d5b1a4e-old-cluster",
        "the host kept its registration"
    );

    let run = join(&state, &inventory, &["--reregister"]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    let cluster = get(
        &fed.host,
        "cluster.karmada.io/v1alpha1",
        "Cluster",
        None,
        "site-0",
    );
    assert_eq!(cluster["spec"]["id"], id);
    assert_eq!(cluster["spec"]["apiEndpoint"], fed.members[0].url());
    assert!(
        run.text().contains("replaced"),
        "the replacement is reported: {}",
        run.text()
    );

    // The same cluster under a second name is refused too, as karmadactl does.
    let renamed = fed.inventory("karmada", &["push"]).replace(
        "    cluster: {kubeconfig:",
        "    cluster: {name: second-name, kubeconfig:",
    );
    let renamed = fed.write("renamed.yaml", &renamed).unwrap();
    let run = join(&state, &renamed, &[]).await;
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.text()
            .contains("already registered on the federation host as `site-0`"),
        "{}",
        run.text()
    );
    assert!(
        fed.host
            .store()
            .get(
                "cluster.karmada.io/v1alpha1",
                "Cluster",
                None,
                "second-name"
            )
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_credential_can_do_exactly_what_the_agents_rbac_allows() {
    let fed = Federation::start(2).await.unwrap();
    let agents = KarmadaAgentStandin::start(&fed.members);
    let inventory = fed
        .write("inv.yaml", &fed.inventory("karmada", &["pull", "pull"]))
        .unwrap();
    let state = fed.dir.path().join("state");
    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(
        agents.errors(),
        Vec::<String>::new(),
        "the agent's registration needed nothing its RBAC lacks"
    );
    assert_eq!(agents.registrations().len(), 2);

    let kc = secret_data(
        &get(
            &fed.members[0],
            "v1",
            "Secret",
            Some("karmada-system"),
            "karmada-kubeconfig",
        ),
        "karmada-kubeconfig",
    );
    let agent = edgeforge_tests::federation_host::client(&kc).await.unwrap();
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
    let gvk = |g: &str, v: &str, k: &str, p: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
    };
    let clusters: Api<DynamicObject> = Api::all_with(
        agent.clone(),
        &gvk("cluster.karmada.io", "v1alpha1", "Cluster", "clusters"),
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(agent.clone(), "karmada-cluster");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(agent.clone());
    let works = |ns: &str| -> Api<DynamicObject> {
        Api::namespaced_with(
            agent.clone(),
            ns,
            &gvk("work.karmada.io", "v1alpha1", "Work", "works"),
        )
    };
    let work = |name: &str| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "work.karmada.io/v1alpha1", "kind": "Work",
            "metadata": {"name": name}, "spec": {"workload": {"manifests": []}}}),
        )
        .unwrap()
    };
    fn code<T>(r: Result<T, kube::Error>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("not an API answer: {e}"),
        }
    }

    // What the agent needs: its own Cluster and status, its Secrets, its Works.
    assert_eq!(code(clusters.get("site-0").await), 200);
    assert_eq!(code(clusters.list(&ListParams::default()).await), 200);
    let mut own = clusters.get("site-0").await.unwrap();
    own.data["status"] = json!({"conditions": []});
    assert_eq!(
        code(
            clusters
                .replace_status("site-0", &PostParams::default(), &own)
                .await
        ),
        200
    );
    assert_eq!(code(secrets.get("site-0").await), 200);
    assert_eq!(code(secrets.get("site-0-impersonator").await), 200);
    assert_eq!(code(namespaces.get("karmada-cluster").await), 200);
    assert_eq!(
        code(
            works("karmada-es-site-0")
                .create(&PostParams::default(), &work("w1"))
                .await
        ),
        200
    );
    assert_eq!(
        code(
            works("karmada-es-site-0")
                .list(&ListParams::default())
                .await
        ),
        200
    );

    // What it must not do: the other site's Cluster, Secrets and Works,
    // its own credential's Secret, anything else on the host.
    assert_eq!(code(clusters.get("site-1").await), 403);
    assert_eq!(
        code(clusters.delete("site-1", &Default::default()).await),
        403
    );
    let mut other = get(
        &fed.host,
        "cluster.karmada.io/v1alpha1",
        "Cluster",
        None,
        "site-1",
    );
    other["status"] = json!({"conditions": []});
    let other: DynamicObject = serde_json::from_value(other).unwrap();
    assert_eq!(
        code(
            clusters
                .replace_status("site-1", &PostParams::default(), &other)
                .await
        ),
        403
    );
    assert_eq!(code(secrets.get("site-1").await), 403);
    assert_eq!(code(secrets.get("karmada-agent-site-0").await), 403);
    assert_eq!(code(secrets.list(&ListParams::default()).await), 403);
    assert_eq!(
        code(
            works("karmada-es-site-1")
                .create(&PostParams::default(), &work("w2"))
                .await
        ),
        403
    );
    assert_eq!(code(namespaces.list(&ListParams::default()).await), 403);
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(agent.clone());
    assert_eq!(code(roles.list(&ListParams::default()).await), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unjoin_leaves_nothing_the_joins_created_on_either_side() {
    let fed = Federation::start(3).await.unwrap();
    let _agents = KarmadaAgentStandin::start(&fed.members);
    let inventory = fed
        .write(
            "inv.yaml",
            &fed.inventory("karmada", &["push", "pull", "push"]),
        )
        .unwrap();
    let state = fed.dir.path().join("state");
    let host_before = snapshot(&fed.host);
    let members_before: Vec<_> = fed.members.iter().map(snapshot).collect();
    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    // Karmada would have propagated something to the pull site by now.
    fed.host
        .store()
        .create(
            json!({"apiVersion": "work.karmada.io/v1alpha1", "kind": "Work",
            "metadata": {"name": "nginx-6d4f", "namespace": "karmada-es-site-1"}, "spec": {}}),
        )
        .unwrap();

    fed.host.clear_requests();
    let inv = inventory.display().to_string();
    let unjoin = edgeforge(
        &state,
        &[
            "federation",
            "unjoin",
            "-i",
            &inv,
            "--site",
            "site-0,site-1,site-2",
        ],
    )
    .await;
    assert_eq!(unjoin.code, 0, "{}", unjoin.text());
    for (i, m) in fed.members.iter().enumerate() {
        assert_eq!(
            snapshot(m),
            members_before[i],
            "member {i} is as before the join"
        );
    }
    // The host keeps only the namespace every Karmada host has (its cluster leases live there).
    let expected_host: std::collections::BTreeSet<_> = host_before
        .iter()
        .cloned()
        .chain(namespace_defaults("karmada-cluster"))
        .collect();
    assert_eq!(
        snapshot(&fed.host),
        expected_host,
        "the host holds nothing of the three clusters"
    );
    // karmadactl unregister's order on the host: the Works, then the Cluster, then the agent's RBAC.
    let deletes: Vec<String> = fed
        .host
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("site-1"))
        .map(|r| r.path)
        .collect();
    let pos = |needle: &str| {
        deletes
            .iter()
            .position(|p| p.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {deletes:?}"))
    };
    assert!(pos("/works/") < pos("/clusters/site-1"), "{deletes:?}");
    assert!(
        pos("/clusters/site-1") < pos("/clusterroles/"),
        "{deletes:?}"
    );

    // Again: nothing to do, nothing written.
    fed.host.clear_requests();
    let again = edgeforge(
        &state,
        &[
            "federation",
            "unjoin",
            "-i",
            &inv,
            "--site",
            "site-0,site-1,site-2",
        ],
    )
    .await;
    assert_eq!(again.code, 0, "{}", again.text());
    assert_eq!(writes(&fed.host), Vec::<String>::new());

    // An unknown site is bad input.
    let bad = edgeforge(
        &state,
        &["federation", "unjoin", "-i", &inv, "--site", "nowhere"],
    )
    .await;
    assert_eq!(bad.code, 2, "{}", bad.text());
    assert!(bad.stderr.contains("nowhere"), "{}", bad.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubefed_unjoin_leaves_nothing_behind() {
    let fed = Federation::start(2).await.unwrap();
    let inventory = fed
        .write("inv.yaml", &fed.inventory("kubefed", &[]))
        .unwrap();
    let state = fed.dir.path().join("state");
    let host_before = snapshot(&fed.host);
    let members_before: Vec<_> = fed.members.iter().map(snapshot).collect();
    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    let inv = inventory.display().to_string();
    let unjoin = edgeforge(
        &state,
        &[
            "federation",
            "unjoin",
            "-i",
            &inv,
            "--site",
            "site-0",
            "--site",
            "site-1",
        ],
    )
    .await;
    assert_eq!(unjoin.code, 0, "{}", unjoin.text());
    assert_eq!(snapshot(&fed.host), host_before);
    for (i, m) in fed.members.iter().enumerate() {
        assert_eq!(snapshot(m), members_before[i], "member {i}");
    }
}
