//! Contract suite of the kube-emulator stand-in, driven through kube-rs 5:
//! one test per Kubernetes API convention the emulator claims to follow, so a
//! reader can hold each against the API conventions and a real apiserver.

mod kube_emulator_common;

use std::collections::BTreeMap;
use std::time::Duration;

use edgeforge_tests::kube_emulator::{Ca, EmulatorOptions, RequestFilter, StaticToken};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{Discovery, Scope, verbs};
use kube_emulator_common::*;
use serde_json::{Value, json};

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .expect("a ConfigMap")
}

fn widget_crd(scope: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "string"},
                        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                            "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]
        }
    })
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

fn rbac(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("an RBAC object")
}

fn rbac_api(
    client: &kube::Client,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind),
        plural,
    );
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

// ---- TLS and authentication ----

#[tokio::test]
async fn serving_certificate_covers_the_sans_given_and_a_shared_ca_signs_several_emulators() {
    let ca = Ca::generate("shared-ca").unwrap();
    let options = EmulatorOptions {
        ca: Some(ca.clone()),
        sans: vec!["localhost".into()],
        ..Default::default()
    };
    let one = start_with(options.clone()).await;
    let two = start_with(options).await;
    assert_eq!(one.ca().cert_pem(), two.ca().cert_pem());
    // The kubeconfig names https://127.0.0.1:<port>; the certificate covers only "localhost".
    let by_ip = admin(&one).await;
    let err = by_ip
        .apiserver_version()
        .await
        .expect_err("an IP not in the SANs fails verification");
    assert!(
        format!("{err:?}").contains("NotValidForName")
            || format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
    let by_name = one.kubeconfig("emu").replace("127.0.0.1", "localhost");
    let version = client_from(&by_name)
        .await
        .apiserver_version()
        .await
        .expect("localhost is covered");
    assert_eq!(version.git_version, "v1.34.2");
    // A CA from PEM issues certificates the first emulator's clients trust.
    let reread = Ca::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    let three = start_with(EmulatorOptions {
        ca: Some(reread),
        ..Default::default()
    })
    .await;
    let kubeconfig_with_first_ca = three.kubeconfig("emu");
    assert!(
        kubeconfig_with_first_ca.contains(&data_encoding::BASE64.encode(ca.cert_pem().as_bytes()))
    );
    admin(&three)
        .await
        .apiserver_version()
        .await
        .expect("the re-read CA signs a valid serving cert");
}

#[tokio::test]
async fn tls_offers_only_http_1_1_in_alpn() {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let emu = start().await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(emu.ca().cert_pem().as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("the handshake verifies against the CA");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn client_certificates_authenticate_with_cn_as_user_and_each_o_as_a_group() {
    let emu = start().await;
    let admin_client = client_from(
        &emu.kubeconfig_client_cert("emu", "alice", &["system:masters"])
            .unwrap(),
    )
    .await;
    Api::<ConfigMap>::namespaced(admin_client, "default")
        .create(&PostParams::default(), &cm("by-cert", &[]))
        .await
        .unwrap();
    assert!(
        emu.requests()
            .iter()
            .any(|r| r.user.as_deref() == Some("alice") && r.verb == "create")
    );
    // The second O is a group too: bind only it and see the access it grants.
    let bob = client_from(
        &emu.kubeconfig_client_cert("emu", "bob", &["team-a", "team-b"])
            .unwrap(),
    )
    .await;
    let cms = Api::<ConfigMap>::namespaced(bob, "default");
    let denied = status_of(cms.list(&ListParams::default()).await);
    assert_eq!(denied.code, 403);
    let admin = admin(&emu).await;
    rbac_api(&admin, "Role", "roles", Some("default")).create(&PostParams::default(), &rbac(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "read-cm", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}))).await.unwrap();
    rbac_api(&admin, "RoleBinding", "rolebindings", Some("default")).create(&PostParams::default(), &rbac(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "team-b-reads", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
        "subjects": [{"kind": "Group", "name": "team-b", "apiGroup": "rbac.authorization.k8s.io"}]}))).await.unwrap();
    let listed = cms
        .list(&ListParams::default())
        .await
        .expect("team-b may list configmaps");
    assert!(
        listed
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("by-cert"))
    );
    // A certificate from another CA is refused at the TLS layer.
    let stranger = Ca::generate("stranger").unwrap();
    let (cert, key) = stranger
        .issue_client("mallory", &["system:masters"])
        .unwrap();
    let forged = emu
        .kubeconfig_client_cert("emu", "x", &[])
        .unwrap()
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("client-certificate-data:") {
                format!(
                    "    client-certificate-data: {}",
                    data_encoding::BASE64.encode(cert.as_bytes())
                )
            } else if l.trim_start().starts_with("client-key-data:") {
                format!(
                    "    client-key-data: {}",
                    data_encoding::BASE64.encode(key.as_bytes())
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        client_from(&forged)
            .await
            .apiserver_version()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn anonymous_requests_get_401_with_a_status_except_version_and_health() {
    let emu = start().await;
    let anon = anonymous(&emu).await;
    for path in ["/version", "/healthz", "/readyz", "/livez"] {
        let (code, _) = raw(&anon, "GET", path, "", "").await;
        assert_eq!(code, 200, "{path} is public");
    }
    for path in ["/api", "/apis", "/api/v1/namespaces", "/openapi/v3"] {
        let (code, body) = raw(&anon, "GET", path, "", "").await;
        assert_eq!(code, 401, "{path}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], "Unauthorized");
        assert_eq!(body["code"], 401);
    }
}

#[tokio::test]
async fn a_wrong_or_revoked_token_gets_401_and_tokens_can_be_added_at_run_time() {
    let emu = start_with(EmulatorOptions {
        tokens: vec![StaticToken::new("t-static", "carol", &["system:masters"])],
        ..Default::default()
    })
    .await;
    let wrong = with_token(&emu, "not-a-token").await;
    let status = status_of(
        Api::<Namespace>::all(wrong)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
    let carol = with_token(&emu, "t-static").await;
    Api::<Namespace>::all(carol.clone())
        .list(&ListParams::default())
        .await
        .expect("a static token works");
    emu.add_token(StaticToken::new("t-later", "dave", &["system:masters"]));
    Api::<Namespace>::all(with_token(&emu, "t-later").await)
        .get("default")
        .await
        .expect("an added token works");
    emu.revoke_token("t-static");
    assert_eq!(
        status_of(Api::<Namespace>::all(carol).get("default").await).code,
        401
    );
}

// ---- Authorization ----

#[tokio::test]
async fn rbac_grants_exactly_what_roles_allow_and_denials_read_like_the_apiserver() {
    let emu = start().await;
    let admin = admin(&emu).await;
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "apps"}})).unwrap(),
        )
        .await
        .unwrap();
    for name in ["allowed", "other"] {
        Api::<ConfigMap>::namespaced(admin.clone(), "apps")
            .create(&PostParams::default(), &cm(name, &[]))
            .await
            .unwrap();
    }
    let pods = Api::<Pod>::namespaced(admin.clone(), "apps");
    pods.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap()).await.unwrap();
    emu.add_token(StaticToken::new("t-scoped", "scoped", &[]));
    rbac_api(&admin, "Role", "roles", Some("apps")).create(&PostParams::default(), &rbac(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "narrow", "namespace": "apps"},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["allowed"], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["*"]},
            {"apiGroups": ["apps"], "resources": ["*"], "verbs": ["list"]}
        ]}))).await.unwrap();
    rbac_api(&admin, "RoleBinding", "rolebindings", Some("apps")).create(&PostParams::default(), &rbac(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "narrow", "namespace": "apps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "narrow"},
        "subjects": [{"kind": "User", "name": "scoped", "apiGroup": "rbac.authorization.k8s.io"}]}))).await.unwrap();
    let scoped = with_token(&emu, "t-scoped").await;
    let cms = Api::<ConfigMap>::namespaced(scoped.clone(), "apps");
    cms.get("allowed")
        .await
        .expect("resourceNames grants the named object");
    let denied = status_of(cms.get("other").await);
    assert_eq!(denied.code, 403);
    assert_eq!(denied.reason, "Forbidden");
    assert_eq!(
        denied.message,
        "configmaps \"other\" is forbidden: User \"scoped\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"apps\""
    );
    let list_denied = status_of(cms.list(&ListParams::default()).await);
    assert_eq!(
        list_denied.message,
        "configmaps is forbidden: User \"scoped\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"apps\""
    );
    // pods/eviction is granted, pods itself is not.
    let scoped_pods = Api::<Pod>::namespaced(scoped.clone(), "apps");
    assert_eq!(
        status_of(scoped_pods.delete("p", &DeleteParams::default()).await).code,
        403
    );
    scoped_pods
        .evict("p", &Default::default())
        .await
        .expect("the eviction subresource is granted");
    // "*" resources in apps; another group's denial names the group.
    Api::<Deployment>::namespaced(scoped.clone(), "apps")
        .list(&ListParams::default())
        .await
        .expect("apps/* list");
    let cluster = status_of(
        Api::<Namespace>::all(scoped.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        cluster.message,
        "namespaces is forbidden: User \"scoped\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    let crd_denied = status_of(
        Api::<DynamicObject>::all_with(
            scoped.clone(),
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"),
                "clusterroles",
            ),
        )
        .get("cluster-admin")
        .await,
    );
    assert!(
        crd_denied
            .message
            .contains("in API group \"rbac.authorization.k8s.io\" at the cluster scope"),
        "{}",
        crd_denied.message
    );
    // Discovery is open to every authenticated identity (system:discovery), other paths are not.
    let (code, _) = raw(&scoped, "GET", "/apis", "", "").await;
    assert_eq!(code, 200);
    let (code, body) = raw(&scoped, "GET", "/metrics", "", "").await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "forbidden: User \"scoped\" cannot get path \"/metrics\""
    );
}

#[tokio::test]
async fn cluster_roles_bind_service_accounts_and_non_resource_urls() {
    let emu = start().await;
    let admin = admin(&emu).await;
    Api::<ServiceAccount>::namespaced(admin.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "robot-token",
            "annotations": {"kubernetes.io/service-account.name": "robot"}}, "type": "kubernetes.io/service-account-token"})).unwrap())
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(admin.clone(), "default");
    let token = eventually("the token controller fills the secret", || async {
        let s = secrets.get("robot-token").await.ok()?;
        let bytes = s.data?.get("token")?.0.clone();
        Some(String::from_utf8(bytes).unwrap())
    })
    .await;
    rbac_api(&admin, "ClusterRole", "clusterroles", None).create(&PostParams::default(), &rbac(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ns-reader"},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]},
                  {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}))).await.unwrap();
    rbac_api(&admin, "ClusterRoleBinding", "clusterrolebindings", None).create(&PostParams::default(), &rbac(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "robot-reads"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ns-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}]}))).await.unwrap();
    let robot = with_token(&emu, &token).await;
    Api::<Namespace>::all(robot.clone())
        .list(&ListParams::default())
        .await
        .expect("the ClusterRole grants namespaces");
    let (code, _) = raw(&robot, "GET", "/metrics", "", "").await;
    assert_ne!(code, 403, "the nonResourceURL rule grants /metrics");
    let denied = status_of(
        Api::<Namespace>::all(robot)
            .delete("default", &DeleteParams::default())
            .await,
    );
    assert_eq!(
        denied.message,
        "namespaces \"default\" is forbidden: User \"system:serviceaccount:default:robot\" cannot delete resource \"namespaces\" in API group \"\" at the cluster scope"
    );
}

// ---- Discovery ----

#[tokio::test]
async fn version_reports_the_configured_git_version() {
    let emu = start_with(EmulatorOptions {
        git_version: "v1.33.7+k3s1".into(),
        ..Default::default()
    })
    .await;
    let info = admin(&emu).await.apiserver_version().await.unwrap();
    assert_eq!(
        (
            info.major.as_str(),
            info.minor.as_str(),
            info.git_version.as_str()
        ),
        ("1", "33", "v1.33.7+k3s1")
    );
    assert_eq!(info.platform, "linux/amd64");
}

#[tokio::test]
async fn discovery_lists_built_in_resources_and_crd_resources_while_the_crd_exists() {
    let emu = start().await;
    let client = admin(&emu).await;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("kube-rs discovery works");
    let (deploy, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .expect("deployments are discovered");
    assert_eq!(deploy.plural, "deployments");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps.supports_operation(verbs::PATCH) && caps.supports_operation(verbs::WATCH));
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "status")
    );
    let (ns, ns_caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"))
        .unwrap();
    assert_eq!(
        (ns.plural.as_str(), ns_caps.scope.clone()),
        ("namespaces", Scope::Cluster)
    );
    let (code, core) = raw(&client, "GET", "/api/v1", "", "").await;
    assert_eq!(code, 200);
    let find = |name: &str| {
        core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
    };
    assert_eq!(find("pods").unwrap()["shortNames"], json!(["po"]));
    assert_eq!(find("configmaps").unwrap()["shortNames"], json!(["cm"]));
    assert_eq!(find("pods/eviction").unwrap()["kind"], "Eviction");
    assert_eq!(find("pods/eviction").unwrap()["group"], "policy");
    assert_eq!(
        find("namespaces/status").unwrap()["verbs"],
        json!(["get", "patch", "update"])
    );
    assert!(
        find("secrets").unwrap().get("shortNames").is_none(),
        "secrets have no short name on a real server"
    );
    // A CRD's resource appears once the CRD is created, and goes with it.
    let crds = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(widget_crd("Namespaced")).unwrap(),
    )
    .await
    .unwrap();
    let (code, group) = raw(&client, "GET", "/apis/example.com/v1", "", "").await;
    assert_eq!(code, 200);
    assert_eq!(group["resources"][0]["name"], "widgets");
    assert_eq!(group["resources"][0]["shortNames"], json!(["wd"]));
    assert_eq!(group["resources"][1]["name"], "widgets/status");
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("example.com"));
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let (code, _) = raw(&client, "GET", "/apis/example.com/v1", "", "").await;
    assert_eq!(code, 404);
    let discovery = Discovery::new(client).run().await.unwrap();
    assert!(!discovery.has_group("example.com"));
}

// ---- Object metadata ----

#[tokio::test]
async fn objects_get_uid_timestamp_generation_and_one_global_increasing_resource_version() {
    let emu = start().await;
    let client = admin(&emu).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", &[("k", "1")]))
        .await
        .unwrap();
    let deploys = Api::<Deployment>::namespaced(client.clone(), "default");
    let d = deploys.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})).unwrap()).await.unwrap();
    let rv =
        |m: &kube::api::ObjectMeta| m.resource_version.clone().unwrap().parse::<u64>().unwrap();
    assert!(
        rv(&d.metadata) > rv(&a.metadata),
        "resourceVersion is global across types"
    );
    assert!(a.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(a.metadata.creation_timestamp.is_some());
    assert_eq!(d.metadata.generation, Some(1));
    // A label change is metadata: generation stays; a spec change bumps it.
    let labelled = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    assert!(rv(&labelled.metadata) > rv(&d.metadata));
    let scaled = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
    // Status writes do not bump generation either.
    let status = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(2));
    assert_eq!(status.metadata.uid, d.metadata.uid);
    // A no-op write keeps the resourceVersion.
    let same = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        status.metadata.resource_version
    );
}

// ---- LIST ----

#[tokio::test]
async fn list_filters_by_label_and_field_selectors_and_reports_the_list_resource_version() {
    let emu = start().await;
    let client = admin(&emu).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "db"})),
        ("c", json!({"tier": "back"})),
    ] {
        let mut object = cm(name, &[]);
        object.metadata.labels = serde_json::from_value(labels).unwrap();
        cms.create(&PostParams::default(), &object).await.unwrap();
    }
    let names = |selector: &str| {
        let cms = cms.clone();
        let selector = selector.to_string();
        async move {
            let mut names: Vec<String> = cms
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
                .filter_map(|c| c.metadata.name)
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(names("app=web").await, ["a"]);
    assert_eq!(names("app!=web").await, ["b", "c"]);
    assert_eq!(names("app in (web,db)").await, ["a", "b"]);
    assert_eq!(names("app notin (web)").await, ["b", "c"]);
    assert_eq!(names("tier").await, ["a", "c"]);
    assert_eq!(names("!app").await, ["c"]);
    assert_eq!(names("app,tier=front").await, ["a"]);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let all = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default().fields("metadata.namespace!=default"))
        .await
        .unwrap();
    assert!(
        all.items
            .iter()
            .all(|c| c.metadata.namespace.as_deref() != Some("default"))
    );
    assert!(!all.items.is_empty());
    let rv: u64 = all.metadata.resource_version.unwrap().parse().unwrap();
    assert_eq!(rv, emu.store().resource_version());
    // Per-type field selectors: spec.nodeName for pods, type for secrets; others are refused.
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    for (name, node) in [("p1", "n1"), ("p2", "n2")] {
        pods.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})).unwrap()).await.unwrap();
    }
    let on_n2 = pods
        .list(&ListParams::default().fields("spec.nodeName=n2"))
        .await
        .unwrap();
    assert_eq!(
        on_n2
            .items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        ["p2"]
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    secrets.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}})).unwrap()).await.unwrap();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "plain"}})).unwrap(),
        )
        .await
        .unwrap();
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    assert_eq!(tls.items.len(), 1);
    let refused = status_of(
        cms.list(&ListParams::default().fields("spec.nodeName=n1"))
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (400, "BadRequest"));
    // Pagination: limit and continue walk the list.
    let page = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rest = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        page.items.len() + rest.items.len(),
        4,
        "a, b, c and kube-root-ca.crt"
    );
}

// ---- CREATE, PUT ----

#[tokio::test]
async fn create_answers_201_refuses_duplicates_with_already_exists_and_fills_generate_name() {
    let emu = start().await;
    let client = admin(&emu).await;
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(body["metadata"]["namespace"], "default");
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let dup = status_of(cms.create(&PostParams::default(), &cm("x", &[])).await);
    assert_eq!(
        (dup.code, dup.reason.as_str(), dup.message.as_str()),
        (409, "AlreadyExists", "configmaps \"x\" already exists")
    );
    let details = dup.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("x", "configmaps")
    );
    let mut generated = cm("", &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("job-".into());
    let made = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
    let no_name = status_of(cms.create(&PostParams::default(), &cm("", &[])).await);
    assert_eq!((no_name.code, no_name.reason.as_str()), (422, "Invalid"));
    // A missing namespace is NotFound, as on a real server.
    let ghost = status_of(
        Api::<ConfigMap>::namespaced(client, "ghost")
            .create(&PostParams::default(), &cm("y", &[]))
            .await,
    );
    assert_eq!(
        (ghost.code, ghost.message.as_str()),
        (404, "namespaces \"ghost\" not found")
    );
}

#[tokio::test]
async fn put_with_a_stale_resource_version_conflicts_and_put_of_an_absent_object_is_not_found() {
    let emu = start().await;
    let cms = Api::<ConfigMap>::namespaced(admin(&emu).await, "default");
    let first = cms
        .create(&PostParams::default(), &cm("c", &[("v", "1")]))
        .await
        .unwrap();
    let mut update = first.clone();
    update.data = Some(BTreeMap::from([("v".to_string(), "2".to_string())]));
    let second = cms
        .replace("c", &PostParams::default(), &update)
        .await
        .unwrap();
    assert_eq!(second.data.unwrap()["v"], "2");
    let stale = status_of(cms.replace("c", &PostParams::default(), &first).await);
    assert_eq!(stale.code, 409);
    assert_eq!(stale.reason, "Conflict");
    assert_eq!(
        stale.message,
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let mut absent = cm("nope", &[]);
    absent.metadata.resource_version = None;
    assert_eq!(
        status_of(cms.replace("nope", &PostParams::default(), &absent).await).code,
        404
    );
}

// ---- DELETE ----

#[tokio::test]
async fn delete_with_finalizers_marks_the_object_until_the_last_finalizer_goes() {
    let emu = start().await;
    let cms = Api::<ConfigMap>::namespaced(admin(&emu).await, "default");
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    let answer = cms
        .delete("held", &DeleteParams::foreground())
        .await
        .unwrap();
    let marked = answer.left().expect("the marked object comes back");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let still = cms.get("held").await.expect("finalizers keep it");
    assert!(still.metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}]))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(status_of(cms.get("held").await).code, 404);
    // propagationPolicy is accepted when it is one of the three, refused otherwise.
    cms.create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap();
    let client = admin(&emu).await;
    let (code, body) = raw(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/x",
        "application/json",
        r#"{"propagationPolicy":"Sideways"}"#,
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    cms.delete("x", &DeleteParams::background()).await.unwrap();
    assert_eq!(status_of(cms.get("x").await).code, 404);
}

#[tokio::test]
async fn deleting_a_namespace_marks_it_terminating_and_removes_everything_in_it() {
    let emu = start().await;
    let client = admin(&emu).await;
    let namespaces = Api::<Namespace>::all(client.clone());
    let ns = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "doomed");
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.create(&PostParams::default(), &cm("plain", &[]))
        .await
        .unwrap();
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = namespaces.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let refused = status_of(cms.create(&PostParams::default(), &cm("late", &[])).await);
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    eventually("plain content is removed", || async {
        cms.get_opt("plain").await.unwrap().is_none().then_some(())
    })
    .await;
    // The object with a finalizer holds the namespace until it is released.
    assert!(namespaces.get_opt("doomed").await.unwrap().is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the namespace goes", || async {
        namespaces
            .get_opt("doomed")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

// ---- PATCH ----

#[tokio::test]
async fn json_merge_and_strategic_merge_patches_apply_with_their_semantics() {
    let emu = start().await;
    let client = admin(&emu).await;
    let deploys = Api::<Deployment>::namespaced(client.clone(), "default");
    deploys.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}, {"name": "side", "image": "busybox"}]}}}})).unwrap()).await.unwrap();
    // Strategic merge: containers merge by name, env by name.
    let smp = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}]}}}})),
        )
        .await
        .unwrap();
    let containers = smp.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers.len(), 2, "side survives a strategic merge");
    assert_eq!(containers[0].image.as_deref(), Some("nginx:2"));
    assert_eq!(containers[0].env.as_ref().unwrap().len(), 2);
    // Merge patch: lists are replaced, null deletes.
    let merged = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": null}},
        "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.metadata.labels.unwrap().keys().collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(
        merged.spec.unwrap().template.spec.unwrap().containers.len(),
        1
    );
    // JSON patch: ops in order; a failed test op is refused and changes nothing.
    let jp: json_patch::Patch = serde_json::from_value(json!([{"op": "add", "path": "/metadata/labels/c", "value": "3"}, {"op": "replace", "path": "/spec/replicas", "value": 5}])).unwrap();
    let patched = deploys
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().replicas, Some(5));
    let failing: json_patch::Patch = serde_json::from_value(json!([{"op": "test", "path": "/spec/replicas", "value": 1}, {"op": "replace", "path": "/spec/replicas", "value": 9}])).unwrap();
    let refused = status_of(
        deploys
            .patch("web", &PatchParams::default(), &Patch::Json::<()>(failing))
            .await,
    );
    assert_eq!(refused.code, 422);
    assert_eq!(
        deploys.get("web").await.unwrap().spec.unwrap().replicas,
        Some(5)
    );
    // Strategic merge is not offered for custom resources, as on a real server.
    let crds = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(widget_crd("Namespaced")).unwrap(),
    )
    .await
    .unwrap();
    let widgets = Api::<DynamicObject>::namespaced_with(client, "default", &widget_resource());
    widgets.create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": "s"}})).unwrap()).await.unwrap();
    let smp_cr = status_of(
        widgets
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": "m"}})),
            )
            .await,
    );
    assert_eq!(smp_cr.code, 415);
}

#[tokio::test]
async fn server_side_apply_creates_tracks_managers_conflicts_forces_and_prunes() {
    let emu = start().await;
    let cms = Api::<ConfigMap>::namespaced(admin(&emu).await, "default");
    let config = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": data});
    let created = cms
        .patch(
            "ssa",
            &PatchParams::apply("alpha"),
            &Patch::Apply(config(json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap();
    let managed = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("alpha"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));
    assert_eq!(
        managed[0].fields_v1.as_ref().unwrap().0,
        json!({"f:data": {"f:a": {}, "f:b": {}}})
    );
    // Another manager setting an owned field to another value conflicts.
    let conflict = status_of(
        cms.patch(
            "ssa",
            &PatchParams::apply("beta"),
            &Patch::Apply(config(json!({"a": "changed"}))),
        )
        .await,
    );
    assert_eq!(conflict.code, 409);
    assert_eq!(conflict.reason, "Conflict");
    assert_eq!(
        conflict.message,
        "Apply failed with 1 conflict: conflict with \"alpha\": .data.a"
    );
    let causes = conflict.details.unwrap().causes;
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".data.a");
    // The same value is shared ownership, not a conflict.
    cms.patch(
        "ssa",
        &PatchParams::apply("beta"),
        &Patch::Apply(config(json!({"b": "2"}))),
    )
    .await
    .expect("co-ownership");
    // force takes the field over.
    let forced = cms
        .patch(
            "ssa",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(config(json!({"a": "changed", "b": "2"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["a"], "changed");
    let fields_of = |obj: &ConfigMap, manager: &str| {
        obj.metadata
            .managed_fields
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.manager.as_deref() == Some(manager))
            .map(|m| m.fields_v1.as_ref().unwrap().0.clone())
    };
    assert_eq!(
        fields_of(&forced, "alpha"),
        Some(json!({"f:data": {"f:b": {}}}))
    );
    assert_eq!(
        fields_of(&forced, "beta"),
        Some(json!({"f:data": {"f:a": {}, "f:b": {}}}))
    );
    // beta stops applying b: alpha still owns it, so it stays; alpha then stops too, and it goes.
    let kept = cms
        .patch(
            "ssa",
            &PatchParams::apply("beta"),
            &Patch::Apply(config(json!({"a": "changed"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        kept.data.as_ref().unwrap().get("b").map(String::as_str),
        Some("2")
    );
    let pruned = cms
        .patch(
            "ssa",
            &PatchParams::apply("alpha"),
            &Patch::Apply(config(json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(pruned.data.unwrap().keys().collect::<Vec<_>>(), ["a"]);
    // A manager's Update (a plain patch) takes ownership too, and conflicts with appliers.
    cms.patch(
        "ssa",
        &PatchParams {
            field_manager: Some("editor".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"a": "edited"}})),
    )
    .await
    .unwrap();
    let update_conflict = status_of(
        cms.patch(
            "ssa",
            &PatchParams::apply("beta"),
            &Patch::Apply(config(json!({"a": "changed"}))),
        )
        .await,
    );
    assert!(
        update_conflict
            .message
            .starts_with("Apply failed with 1 conflict: conflict with \"editor\" using v1 at "),
        "{}",
        update_conflict.message
    );
    // fieldManager is required.
    let client = admin(&emu).await;
    let (code, _) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/ssa",
        "application/apply-patch+yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n",
    )
    .await;
    assert_eq!(code, 400);
    // An apply that changes nothing writes nothing.
    let before = cms.get("ssa").await.unwrap().metadata.resource_version;
    let again = cms
        .patch(
            "ssa",
            &PatchParams::apply("alpha"),
            &Patch::Apply(config(json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, before);
}

#[tokio::test]
async fn server_side_apply_merges_associative_lists_by_key() {
    let emu = start().await;
    let client = admin(&emu).await;
    let deploys = Api::<Deployment>::namespaced(client.clone(), "default");
    let deployment = |containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}}}})
    };
    deploys
        .patch(
            "d",
            &PatchParams::apply("one"),
            &Patch::Apply(deployment(json!([{"name": "a", "image": "a:1"}]))),
        )
        .await
        .unwrap();
    let two = deploys
        .patch(
            "d",
            &PatchParams::apply("two"),
            &Patch::Apply(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:1"}]}}}}),
            ),
        )
        .await
        .unwrap();
    let names: Vec<String> = two
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["a", "b"], "containers is a map keyed by name");
    // A CRD list marked x-kubernetes-list-type=map merges by its keys too.
    let crds = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(widget_crd("Namespaced")).unwrap(),
    )
    .await
    .unwrap();
    let widgets = Api::<DynamicObject>::namespaced_with(client, "default", &widget_resource());
    let widget = |ports: Value| {
        serde_json::from_value::<DynamicObject>(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"ports": ports}})).unwrap()
    };
    widgets
        .patch(
            "w",
            &PatchParams::apply("one"),
            &Patch::Apply(widget(json!([{"name": "http", "port": 80}]))),
        )
        .await
        .unwrap();
    let merged = widgets
        .patch(
            "w",
            &PatchParams::apply("two"),
            &Patch::Apply(widget(json!([{"name": "https", "port": 443}]))),
        )
        .await
        .unwrap();
    assert_eq!(merged.data["spec"]["ports"].as_array().unwrap().len(), 2);
}

// ---- WATCH ----

#[tokio::test]
async fn watch_streams_added_modified_deleted_from_a_resource_version() {
    let emu = start().await;
    let cms = Api::<ConfigMap>::namespaced(admin(&emu).await, "default");
    let start = cms
        .create(&PostParams::default(), &cm("before", &[]))
        .await
        .unwrap();
    let from = start.metadata.resource_version.unwrap();
    let stream = cms
        .watch(&WatchParams::default().timeout(30), &from)
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    cms.create(&PostParams::default(), &cm("w", &[("v", "1")]))
        .await
        .unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match stream
            .try_next()
            .await
            .unwrap()
            .expect("the stream stays open")
        {
            WatchEvent::Added(c) => seen.push(("ADDED", c.metadata.name.unwrap())),
            WatchEvent::Modified(c) => seen.push(("MODIFIED", c.data.unwrap()["v"].clone())),
            WatchEvent::Deleted(c) => seen.push(("DELETED", c.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "w".to_string()),
            ("MODIFIED", "2".to_string()),
            ("DELETED", "w".to_string())
        ]
    );
}

#[tokio::test]
async fn watch_ends_at_timeout_seconds_and_selects_by_label() {
    let emu = start().await;
    let cms = Api::<ConfigMap>::namespaced(admin(&emu).await, "default");
    let rv = emu.store().resource_version().to_string();
    let stream = cms
        .watch(&WatchParams::default().labels("pick=me").timeout(1), &rv)
        .await
        .unwrap();
    let mut picked = cm("picked", &[]);
    picked.metadata.labels = Some(BTreeMap::from([("pick".into(), "me".into())]));
    cms.create(&PostParams::default(), &cm("ignored", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &picked).await.unwrap();
    // The stream ends by itself after timeoutSeconds; collect() returns only then.
    let events: Vec<_> = stream.collect().await;
    let names: Vec<String> = events
        .into_iter()
        .map(|e| match e.unwrap() {
            WatchEvent::Added(c) => c.metadata.name.unwrap(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(names, ["picked"]);
}

#[tokio::test]
async fn watch_from_a_resource_version_older_than_the_history_is_410_expired() {
    let emu = start_with(EmulatorOptions {
        watch_history: 3,
        ..Default::default()
    })
    .await;
    let cms = Api::<ConfigMap>::namespaced(admin(&emu).await, "default");
    let old = cms
        .create(&PostParams::default(), &cm("old", &[]))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("n{i}"), &[]))
            .await
            .unwrap();
    }
    let stream = cms
        .watch(&WatchParams::default().timeout(5), &old)
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version: "),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 410 Expired error event, got {other:?}"),
    }
}

// ---- Subresources ----

#[tokio::test]
async fn status_subresource_owns_status_and_the_main_resource_owns_the_rest() {
    let emu = start().await;
    let deploys = Api::<Deployment>::namespaced(admin(&emu).await, "default");
    deploys.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}},
        "status": {"replicas": 42}})).unwrap()).await.unwrap();
    assert!(
        deploys.get("d").await.unwrap().status.is_none(),
        "status is ignored on create"
    );
    deploys
        .patch_status(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}, "status": {"readyReplicas": 1}})),
        )
        .await
        .unwrap();
    let after_status = deploys.get_status("d").await.unwrap();
    assert_eq!(
        after_status.status.as_ref().unwrap().ready_replicas,
        Some(1)
    );
    assert_eq!(
        after_status.spec.as_ref().unwrap().replicas,
        Some(1),
        "a status write ignores spec"
    );
    deploys
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 9}})),
        )
        .await
        .unwrap();
    let after_main = deploys.get("d").await.unwrap();
    assert_eq!(after_main.spec.unwrap().replicas, Some(2));
    assert_eq!(
        after_main.status.unwrap().ready_replicas,
        Some(1),
        "a main write ignores status"
    );
    // ConfigMaps have no status subresource.
    let (code, body) = raw(
        &admin(&emu).await,
        "GET",
        "/api/v1/namespaces/default/configmaps/kube-root-ca.crt/status",
        "",
        "",
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
}

#[tokio::test]
async fn an_eviction_deletes_the_pod() {
    let emu = start().await;
    let pods = Api::<Pod>::namespaced(admin(&emu).await, "default");
    pods.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "evictee"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap()).await.unwrap();
    let status = pods.evict("evictee", &Default::default()).await.unwrap();
    assert_eq!(status.code, 201);
    assert_eq!(status_of(pods.get("evictee").await).code, 404);
}

// ---- Status reasons ----

#[tokio::test]
async fn failures_carry_the_standard_reasons() {
    let emu = start().await;
    let client = admin(&emu).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let missing = status_of(cms.get("missing").await);
    assert_eq!(
        (
            missing.code,
            missing.reason.as_str(),
            missing.message.as_str()
        ),
        (404, "NotFound", "configmaps \"missing\" not found")
    );
    let bad_name = status_of(
        cms.create(&PostParams::default(), &cm("Bad_Name", &[]))
            .await,
    );
    assert_eq!((bad_name.code, bad_name.reason.as_str()), (422, "Invalid"));
    assert!(bad_name.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", bad_name.message);
    assert_eq!(bad_name.details.unwrap().causes[0].field, "metadata.name");
    let deploys = Api::<Deployment>::namespaced(client.clone(), "apps-ns-missing");
    assert_eq!(status_of(deploys.get("x").await).reason, "NotFound");
    // Namespace of the body differs from the path's.
    let (code, body) = raw(&client, "POST", "/api/v1/namespaces/default/configmaps", "application/json", r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"n","namespace":"kube-system"}}"#).await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    assert_eq!(
        body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"n"}}"#,
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    // Immutable fields.
    let mut frozen = cm("frozen", &[("a", "1")]);
    frozen.immutable = Some(true);
    cms.create(&PostParams::default(), &frozen).await.unwrap();
    let immutable = status_of(
        cms.patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "2"}})),
        )
        .await,
    );
    assert_eq!(
        (immutable.code, immutable.reason.as_str()),
        (422, "Invalid")
    );
    let (code, body) = raw(
        &client,
        "PUT",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        "{}",
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    emu.faults().fail_next(1, 500, RequestFilter::any());
    let internal = status_of(cms.get("frozen").await);
    assert_eq!(
        (internal.code, internal.reason.as_str()),
        (500, "InternalError")
    );
    emu.faults().fail_next(1, 503, RequestFilter::any());
    let unavailable = status_of(cms.get("frozen").await);
    assert_eq!(
        (unavailable.code, unavailable.reason.as_str()),
        (503, "ServiceUnavailable")
    );
}

// ---- Controllers ----

#[tokio::test]
async fn the_token_controller_fills_service_account_token_secrets_and_the_token_authenticates() {
    let emu = start().await;
    let admin = admin(&emu).await;
    let sas = Api::<ServiceAccount>::namespaced(admin.clone(), "kube-system");
    let sa = sas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "joiner"}})).unwrap(),
        )
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(admin.clone(), "kube-system");
    secrets.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "joiner-token",
        "annotations": {"kubernetes.io/service-account.name": "joiner"}}, "type": "kubernetes.io/service-account-token"})).unwrap()).await.unwrap();
    let filled = eventually("the token secret is filled", || async {
        let s = secrets.get("joiner-token").await.ok()?;
        s.data.as_ref()?.get("token")?;
        Some(s)
    })
    .await;
    let data = filled.data.unwrap();
    assert_eq!(
        String::from_utf8(data["namespace"].0.clone()).unwrap(),
        "kube-system"
    );
    assert_eq!(
        String::from_utf8(data["ca.crt"].0.clone()).unwrap(),
        emu.ca().cert_pem()
    );
    assert_eq!(
        filled.metadata.annotations.unwrap()["kubernetes.io/service-account.uid"],
        sa.metadata.uid.unwrap()
    );
    let token = String::from_utf8(data["token"].0.clone()).unwrap();
    let joiner = with_token(&emu, &token).await;
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "list", "resource": "secrets", "namespace": "kube-system"}}});
    let (code, answer) = raw(
        &joiner,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "application/json",
        &review.to_string(),
    )
    .await;
    assert_eq!(
        (code, answer["status"]["allowed"].as_bool()),
        (201, Some(false))
    );
    let denied = status_of(
        Api::<Secret>::namespaced(joiner.clone(), "kube-system")
            .list(&ListParams::default())
            .await,
    );
    assert!(
        denied
            .message
            .contains("User \"system:serviceaccount:kube-system:joiner\""),
        "{}",
        denied.message
    );
    // Its groups are the service-account groups: bind system:serviceaccounts:kube-system.
    rbac_api(&admin, "ClusterRoleBinding", "clusterrolebindings", None).create(&PostParams::default(), &rbac(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "ks-sas-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "system:serviceaccounts:kube-system", "apiGroup": "rbac.authorization.k8s.io"}]}))).await.unwrap();
    Api::<Secret>::namespaced(joiner.clone(), "kube-system")
        .list(&ListParams::default())
        .await
        .expect("the group binding applies");
    secrets
        .delete("joiner-token", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        status_of(
            Api::<Secret>::namespaced(joiner, "kube-system")
                .list(&ListParams::default())
                .await
        )
        .code,
        401
    );
}

#[tokio::test]
async fn crds_are_established_namespaces_have_phases_and_the_system_namespaces_exist() {
    let emu = start_with(EmulatorOptions {
        crds: vec![widget_crd("Cluster")],
        ..Default::default()
    })
    .await;
    let client = admin(&emu).await;
    let crds = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd = eventually("the CRD is established", || async {
        let crd = crds.get("widgets.example.com").await.ok()?;
        let conditions = crd.data["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
            .then_some(crd)
    })
    .await;
    assert!(
        crd.data["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "NamesAccepted" && c["status"] == "True")
    );
    // A cluster-scoped custom resource with a status subresource.
    let widgets = Api::<DynamicObject>::all_with(client.clone(), &widget_resource());
    widgets.create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "global"}, "spec": {"size": "xl"}})).unwrap()).await.unwrap();
    let with_status = widgets
        .patch_status(
            "global",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.data["status"]["ready"], true);
    assert_eq!(with_status.metadata.generation, Some(1));
    let namespaces = Api::<Namespace>::all(client);
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let ns = namespaces.get(name).await.unwrap();
        assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
        assert_eq!(
            ns.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
            name
        );
    }
}

#[tokio::test]
async fn state_persists_across_restarts_with_stable_namespace_uids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let options = EmulatorOptions {
        state_path: Some(path.clone()),
        ..Default::default()
    };
    let first = start_with(options.clone()).await;
    let client = admin(&first).await;
    let kube_system_uid = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .unwrap()
        .metadata
        .uid;
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &cm("kept", &[("k", "v")]))
        .await
        .unwrap();
    let rv_before = first.store().resource_version();
    first.shutdown().await;
    let second = start_with(options).await;
    let client = admin(&second).await;
    assert_eq!(
        Api::<Namespace>::all(client.clone())
            .get("kube-system")
            .await
            .unwrap()
            .metadata
            .uid,
        kube_system_uid
    );
    assert_eq!(
        Api::<ConfigMap>::namespaced(client.clone(), "default")
            .get("kept")
            .await
            .unwrap()
            .data
            .unwrap()["k"],
        "v"
    );
    let next = Api::<ConfigMap>::namespaced(client, "default")
        .create(&PostParams::default(), &cm("after", &[]))
        .await
        .unwrap();
    assert!(
        next.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv_before,
        "resourceVersion keeps increasing"
    );
}

// ---- Faults, log, dump, store ----

#[tokio::test]
async fn faults_fail_delay_drop_and_expire_matching_requests() {
    let emu = start_with(EmulatorOptions {
        tokens: vec![StaticToken::new("t-exp", "eve", &["system:masters"])],
        ..Default::default()
    })
    .await;
    let client = admin(&emu).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let faults = emu.faults();
    faults.fail_next(
        2,
        503,
        RequestFilter::new("GET", "/api/v1/namespaces/default/configmaps/"),
    );
    assert_eq!(status_of(cms.get("kube-root-ca.crt").await).code, 503);
    Api::<Namespace>::all(client.clone())
        .get("default")
        .await
        .expect("a request outside the filter passes");
    assert_eq!(status_of(cms.get("kube-root-ca.crt").await).code, 503);
    cms.get("kube-root-ca.crt")
        .await
        .expect("only two were armed");
    faults.drop_next(1, RequestFilter::any());
    let dropped = cms.get("kube-root-ca.crt").await;
    assert!(
        matches!(dropped, Err(ref e) if !matches!(e, kube::Error::Api(_))),
        "a dropped connection is a transport error: {dropped:?}"
    );
    cms.get("kube-root-ca.crt")
        .await
        .expect("the next one is served");
    faults.delay(
        Duration::from_millis(300),
        RequestFilter::new("GET", "/version"),
    );
    let started = std::time::Instant::now();
    client.apiserver_version().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the delay is at least what was asked"
    );
    faults.clear();
    let eve = with_token(&emu, "t-exp").await;
    Api::<Namespace>::all(eve.clone())
        .get("default")
        .await
        .unwrap();
    faults.expire_token("t-exp");
    assert_eq!(
        status_of(Api::<Namespace>::all(eve).get("default").await).code,
        401
    );
    // The same hooks out of process, through the admin endpoint.
    let (code, _) = raw(
        &client,
        "POST",
        "/_emulator/faults",
        "application/json",
        r#"{"fail": {"count": 1, "code": 500, "pathPrefix": "/api/v1/namespaces/default"}}"#,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(status_of(cms.get("kube-root-ca.crt").await).code, 500);
    let (code, _) = raw(
        &with_token(&emu, "nobody").await,
        "POST",
        "/_emulator/faults",
        "application/json",
        "{}",
    )
    .await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn the_request_log_records_identity_status_and_writes_in_order() {
    let emu = start().await;
    let cms = Api::<ConfigMap>::namespaced(admin(&emu).await, "default");
    emu.clear_requests();
    cms.create(&PostParams::default(), &cm("logged", &[]))
        .await
        .unwrap();
    cms.get("logged").await.unwrap();
    let _ = cms.get("absent").await;
    cms.patch("logged", &PatchParams::apply("m"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "logged"}, "data": {"a": "b"}}))).await.unwrap();
    let log = emu.requests();
    let summary: Vec<(&str, &str, u16, bool)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.verb.as_str(), r.status, r.write))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST", "create", 201, true),
            ("GET", "get", 200, false),
            ("GET", "get", 404, false),
            ("PATCH", "patch", 200, true)
        ]
    );
    assert!(
        log.iter()
            .all(|r| r.user.as_deref() == Some("kube-emulator-admin"))
    );
    assert_eq!(log[3].path, "/api/v1/namespaces/default/configmaps/logged");
    assert!(log[3].query.contains("fieldManager=m"));
    let client = admin(&emu).await;
    let (code, over_http) = raw(&client, "GET", "/_emulator/requests", "", "").await;
    assert_eq!(code, 200);
    assert_eq!(
        over_http.as_array().unwrap().len(),
        4,
        "admin calls stay out of the log"
    );
    assert_eq!(over_http[0]["verb"], "create");
}

#[tokio::test]
async fn the_state_dump_groups_objects_by_resource_and_the_store_writes_like_http() {
    let emu = start().await;
    let store = emu.store();
    let rv = store.resource_version();
    let created = store.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "direct", "namespace": "default"}, "data": {"k": "v"}})).unwrap();
    assert!(
        created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv
    );
    let applied = store.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "direct", "namespace": "default"}, "data": {"k": "w"}}), "lib", true).unwrap();
    assert_eq!(applied["data"]["k"], "w");
    let cms = Api::<ConfigMap>::namespaced(admin(&emu).await, "default");
    assert_eq!(cms.get("direct").await.unwrap().data.unwrap()["k"], "w");
    let dump: Value = serde_saphyr::from_str(&emu.dump_yaml()).unwrap();
    assert!(
        dump["configmaps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["metadata"]["name"] == "direct" && c["data"]["k"] == "w")
    );
    assert!(dump["namespaces"].as_array().unwrap().len() >= 4);
    assert!(
        dump["clusterroles.rbac.authorization.k8s.io"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["metadata"]["name"] == "cluster-admin")
    );
    let client = admin(&emu).await;
    let request = hyper::Request::get("/_emulator/state")
        .body(Vec::new())
        .unwrap();
    let text = client.request_text(request).await.unwrap();
    let over_http: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(over_http["configmaps"], dump["configmaps"]);
    store
        .delete("v1", "configmaps", Some("default"), "direct")
        .unwrap();
    assert!(
        store
            .get("v1", "ConfigMap", Some("default"), "direct")
            .is_none()
    );
}

// ---- Extension routes ----

struct PingExtension;

impl edgeforge_tests::kube_emulator::Extension for PingExtension {
    fn handle<'a>(
        &'a self,
        request: &'a edgeforge_tests::kube_emulator::ExtensionRequest,
        store: &'a edgeforge_tests::kube_emulator::Store,
    ) -> futures_util::future::BoxFuture<
        'a,
        Option<edgeforge_tests::kube_emulator::ExtensionResponse>,
    > {
        Box::pin(async move {
            (request.path == "/ping").then(|| edgeforge_tests::kube_emulator::ExtensionResponse {
                status: 200,
                content_type: "text/plain".into(),
                body: format!("pong rv={}", store.resource_version()).into_bytes(),
            })
        })
    }
}

#[tokio::test]
async fn an_extension_serves_its_routes_before_authentication_and_falls_through_otherwise() {
    let emu = start_with(EmulatorOptions {
        extension: Some(std::sync::Arc::new(PingExtension)),
        ..Default::default()
    })
    .await;
    let anon = anonymous(&emu).await;
    let request = hyper::Request::get("/ping").body(Vec::new()).unwrap();
    let text = anon
        .request_text(request)
        .await
        .expect("the extension answers anonymous clients");
    assert_eq!(text, format!("pong rv={}", emu.store().resource_version()));
    let (code, _) = raw(&anon, "GET", "/api", "", "").await;
    assert_eq!(code, 401, "other paths fall through to the emulator");
}
