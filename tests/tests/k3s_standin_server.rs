//! The k3s stand-in as one server: what `k3s server` writes (token, CA,
//! kubeconfig), what real kubectl 1.37 sees through the k3s.yaml it wrote,
//! the Node k3s registers, systemd notification, SIGTERM, persistence and
//! restarts with another release or another config.

mod k3s_standin_common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;

use edgeforge_tests::k3s_standin;
use k3s_standin_common::*;
use sha2::{Digest, Sha256};

#[test]
fn server_writes_token_ca_and_kubeconfig_like_k3s() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = Standin::spawn(
        dir.path(),
        &server_args(
            "srv-a",
            port,
            "127.0.0.1",
            &["--write-kubeconfig-mode", "0644"],
        ),
        &[],
    );
    s.wait_log("k3s is up and running");
    let ca = std::fs::read(s.server_file("tls/server-ca.crt")).unwrap();
    assert!(s.server_file("tls/server-ca.key").exists());
    let token = std::fs::read_to_string(s.server_file("token")).unwrap();
    let want_prefix = format!("K10{}::server:", hex::encode(Sha256::digest(&ca)));
    assert!(token.starts_with(&want_prefix), "{token}");
    assert!(token.trim().len() > want_prefix.len());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.server_file("token")), 0o600);
    for link in ["node-token", "agent-token"] {
        let target = std::fs::read_link(s.server_file(link)).unwrap();
        assert_eq!(target, s.server_file("token"), "{link}");
    }
    assert_eq!(mode(&s.kubeconfig()), 0o644);
    let kubeconfig = std::fs::read_to_string(s.kubeconfig()).unwrap();
    assert!(
        kubeconfig.contains(&format!("server: https://127.0.0.1:{port}")),
        "{kubeconfig}"
    );
    for needle in [
        "name: default",
        "cluster: default",
        "user: default",
        "current-context: default",
        "client-certificate-data:",
        "client-key-data:",
    ] {
        assert!(kubeconfig.contains(needle), "{needle} in {kubeconfig}");
    }
    // /cacerts is the CA PEM, unauthenticated, and /ping answers pong.
    let out = std::process::Command::new("curl")
        .args(["-sk", &format!("https://127.0.0.1:{port}/cacerts")])
        .output();
    if let Ok(out) = out {
        assert_eq!(out.stdout, ca);
    }
    let log = s.log();
    assert!(log.contains("level=info msg=\"Wrote kubeconfig"), "{log}");
    assert!(s.term().success());
}

#[test]
fn default_kubeconfig_mode_is_0600_and_the_serving_certificate_covers_tls_san() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = Standin::spawn(
        dir.path(),
        &server_args(
            "srv-b",
            port,
            "127.0.0.7",
            &["--tls-san", "api.edge.test", "--tls-san=10.9.8.7"],
        ),
        &[],
    );
    s.wait_log("k3s is up and running");
    let mode = std::fs::metadata(s.kubeconfig())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(&pem.as_bytes()[start..end])?;
            c.wait_with_output()
        })
        .unwrap();
    let sans = String::from_utf8_lossy(&text.stdout).into_owned();
    for want in [
        "DNS:api.edge.test",
        "IP Address:10.9.8.7",
        "IP Address:127.0.0.7",
        "DNS:srv-b",
        "IP Address:127.0.0.1",
        "DNS:localhost",
        "DNS:kubernetes",
        "IP Address:10.43.0.1",
    ] {
        assert!(sans.contains(want), "{want} not in {sans}");
    }
    assert!(s.term().success());
}

#[test]
fn kubectl_1_37_sees_a_k3s_cluster_through_the_k3s_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = Standin::spawn(
        dir.path(),
        &server_args("srv-k", port, "127.0.0.9", &["--cluster-init"]),
        &[],
    );
    s.wait_log("k3s is up and running");
    let kc = s.kubeconfig();
    let version = kubectl_ok(&kc, &["version"]);
    assert!(
        version.contains("Server Version: v1.34.2+k3s1"),
        "{version}"
    );
    kubectl_ok(
        &kc,
        &[
            "wait",
            "--for=condition=Ready",
            "node/srv-k",
            "--timeout=60s",
        ],
    );
    let wide = kubectl_ok(&kc, &["get", "nodes", "-o", "wide"]);
    let row = wide.lines().find(|l| l.starts_with("srv-k")).expect(&wide);
    for want in [
        "Ready",
        "control-plane,etcd,master",
        "v1.34.2+k3s1",
        "127.0.0.9",
        "containerd://",
    ] {
        assert!(row.contains(want), "{want} in {wide}");
    }
    let resources = kubectl_ok(&kc, &["api-resources"]);
    assert!(
        resources.contains("nodes") && resources.contains("configmaps"),
        "{resources}"
    );
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: edge\n  namespace: default\ndata:\n  site: lab\n").unwrap();
    kubectl_ok(
        &kc,
        &["apply", "--server-side", "-f", manifest.to_str().unwrap()],
    );
    let yaml = kubectl_ok(&kc, &["get", "configmap", "edge", "-o", "yaml"]);
    assert!(yaml.contains("site: lab"), "{yaml}");
    kubectl_ok(&kc, &["delete", "configmap", "edge"]);
    assert!(!kubectl(&kc, &["get", "configmap", "edge"]).status.success());
    // The bundled kubectl (multicall and `k3s kubectl`) reads the same k3s.yaml.
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(k3s_standin::binary(), bin_dir.join("kubectl")).unwrap();
    let out = std::process::Command::new(bin_dir.join("kubectl"))
        .args(["get", "nodes", "-o", "wide"])
        .env("EDGEFORGE_K3S_STANDIN_ROOT", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("srv-k")
            && text.contains("control-plane,etcd,master")
            && text.contains("INTERNAL-IP"),
        "{text}"
    );
    let out = std::process::Command::new(k3s_standin::binary())
        .args(["kubectl", "cordon", "srv-k"])
        .env("EDGEFORGE_K3S_STANDIN_ROOT", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "node/srv-k cordoned\n"
    );
    assert!(kubectl_ok(&kc, &["get", "nodes"]).contains("Ready,SchedulingDisabled"));
    let raw = std::process::Command::new(k3s_standin::binary())
        .args(["kubectl", "config", "view", "--raw"])
        .env("EDGEFORGE_K3S_STANDIN_ROOT", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&raw.stdout),
        std::fs::read_to_string(&kc).unwrap()
    );
    assert!(s.term().success());
}

#[test]
fn nodes_carry_k3s_labels_annotations_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etc/rancher/k3s/config.yaml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        "cluster-init: true\ntoken: s3cret-value\nnode-label:\n  - site=lab\nnode-taint:\n  - dedicated=edge:NoSchedule\nnode-external-ip: 192.0.2.10\n",
    )
    .unwrap();
    let port = free_port();
    let mut s = Standin::spawn(
        dir.path(),
        &server_args("srv-l", port, "127.0.0.11", &[]),
        &[],
    );
    s.wait_log("k3s is up and running");
    let n = node(&s.kubeconfig(), "srv-l");
    let labels = &n["metadata"]["labels"];
    for (k, v) in [
        ("node-role.kubernetes.io/control-plane", "true"),
        ("node-role.kubernetes.io/master", "true"),
        ("node-role.kubernetes.io/etcd", "true"),
        ("node.kubernetes.io/instance-type", "k3s"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/hostname", "srv-l"),
        ("site", "lab"),
    ] {
        assert_eq!(labels[k], v, "{k} in {labels}");
    }
    assert_eq!(n["spec"]["taints"][0]["key"], "dedicated");
    assert_eq!(n["spec"]["taints"][0]["effect"], "NoSchedule");
    let annotations = &n["metadata"]["annotations"];
    let args = annotations["k3s.io/node-args"].as_str().unwrap();
    assert!(
        args.contains("\"--cluster-init\"") && args.contains("\"--node-label\""),
        "{args}"
    );
    assert!(
        args.contains("********") && !args.contains("s3cret-value"),
        "secrets masked: {args}"
    );
    assert!(
        annotations["k3s.io/node-config-hash"]
            .as_str()
            .unwrap()
            .len()
            > 40
    );
    assert!(
        annotations["etcd.k3s.cattle.io/node-name"]
            .as_str()
            .unwrap()
            .starts_with("srv-l-")
    );
    assert_eq!(annotations["etcd.k3s.cattle.io/node-address"], "127.0.0.11");
    let addresses = n["status"]["addresses"].to_string();
    assert!(
        addresses.contains("\"InternalIP\"") && addresses.contains("127.0.0.11"),
        "{addresses}"
    );
    assert!(
        addresses.contains("\"ExternalIP\"") && addresses.contains("192.0.2.10"),
        "{addresses}"
    );
    assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.34.2+k3s1");
    eventually("EtcdIsVoter=True", || {
        let n = node(&s.kubeconfig(), "srv-l");
        (condition(&n, "EtcdIsVoter") == ("True".into(), "MemberNotLearner".into())).then_some(())
    });
    assert!(s.term().success());
}

#[test]
fn ready_1_on_the_notify_socket_once_it_serves_and_sigterm_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let port = free_port();
    let mut s = Standin::spawn(
        dir.path(),
        &server_args("srv-n", port, "127.0.0.12", &[]),
        &[("NOTIFY_SOCKET", socket_path.to_string_lossy().into_owned())],
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(&buf[..n], b"READY=1\n");
    // By then the API answers with the kubeconfig it wrote.
    kubectl_ok(&s.kubeconfig(), &["get", "nodes"]);
    assert!(s.running());
    let status = s.term();
    assert!(status.success(), "{status}");
}

#[test]
fn objects_survive_a_restart_and_a_newer_release_changes_kubelet_version() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = server_args("srv-p", port, "127.0.0.13", &["--cluster-init"]);
    let mut s = Standin::spawn(dir.path(), &args, &[]);
    s.wait_log("k3s is up and running");
    let kc = s.kubeconfig();
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\ndata:\n  a: b\n",
    )
    .unwrap();
    kubectl_ok(&kc, &["apply", "-f", manifest.to_str().unwrap()]);
    let token_before = std::fs::read_to_string(s.server_file("token")).unwrap();
    let hash_before =
        node(&kc, "srv-p")["metadata"]["annotations"]["k3s.io/node-config-hash"].clone();
    assert!(s.term().success());

    let newer = k3s_standin::release(&dir.path().join("v1.35.1"), "v1.35.1+k3s1");
    let out = std::process::Command::new(&newer)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!(
        "k3s version v1.35.1+k3s1 ({})",
        k3s_standin::commit_of("v1.35.1+k3s1")
    )));
    let mut args2 = args.clone();
    args2.extend(["--node-label".to_string(), "added=later".to_string()]);
    let mut s = Standin::spawn_with(&newer, dir.path(), &args2, &[]);
    s.wait_log("k3s is up and running");
    assert!(kubectl_ok(&kc, &["get", "configmap", "kept", "-o", "yaml"]).contains("a: b"));
    assert_eq!(
        std::fs::read_to_string(s.server_file("token")).unwrap(),
        token_before
    );
    let n = eventually("the new kubeletVersion", || {
        let n = node(&kc, "srv-p");
        (n["status"]["nodeInfo"]["kubeletVersion"] == "v1.35.1+k3s1").then_some(n)
    });
    assert_ne!(
        n["metadata"]["annotations"]["k3s.io/node-config-hash"],
        hash_before
    );
    // As in k3s, node labels apply only when a Node is first registered.
    assert!(n["metadata"]["labels"]["added"].is_null());
    assert!(s.term().success());
}

#[test]
fn releases_have_distinct_hashes_and_artifacts_fill_a_cache_edgeforge_reads() {
    let dir = tempfile::tempdir().unwrap();
    let a = k3s_standin::release(&dir.path().join("a"), "v1.34.2+k3s1");
    let b = k3s_standin::release(&dir.path().join("b"), "v1.35.0+k3s1");
    let sha = |p: &std::path::Path| hex::encode(Sha256::digest(std::fs::read(p).unwrap()));
    assert_ne!(sha(&a), sha(&b));
    let artifacts =
        k3s_standin::Artifacts::prepare(&dir.path().join("art"), &["v1.34.2+k3s1", "v1.35.0+k3s1"]);
    let manifest = edgeforge::artifacts::Manifest::load(&artifacts.manifest).unwrap();
    let cache = edgeforge::artifacts::ArtifactCache::open(&artifacts.cache).unwrap();
    for version in ["v1.34.2+k3s1", "v1.35.0+k3s1"] {
        for name in ["k3s", "k3s-airgap-images"] {
            let wanted = edgeforge::artifacts::ArtifactRef::new(
                name,
                version,
                edgeforge::artifacts::Arch::Amd64,
            );
            let resolved = manifest.resolve(&wanted).unwrap();
            let cached = cache
                .lookup(&resolved)
                .unwrap()
                .expect("cached under its pin");
            assert_eq!(cached.sha256, resolved.sha256);
        }
    }
    let k3s = cache
        .get(&edgeforge::artifacts::ArtifactRef::new(
            "k3s",
            "v1.35.0+k3s1",
            edgeforge::artifacts::Arch::Amd64,
        ))
        .unwrap()
        .unwrap();
    let copy = dir.path().join("k3s-from-cache");
    std::fs::copy(&k3s.path, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&copy)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("v1.35.0+k3s1"));
}

#[test]
fn the_airgap_tarball_is_imported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("var/lib/rancher/k3s/agent/images");
    std::fs::create_dir_all(&images).unwrap();
    k3s_standin::write_airgap_tarball(
        &images.join("k3s-airgap-images-amd64.tar.zst"),
        "v1.34.2+k3s1",
    );
    let port = free_port();
    let mut s = Standin::spawn(
        dir.path(),
        &server_args("srv-i", port, "127.0.0.14", &[]),
        &[],
    );
    let log = s.wait_log("k3s is up and running");
    assert!(log.contains("Imported images from"), "{log}");
    let out = std::process::Command::new(k3s_standin::binary())
        .args(["crictl", "images"])
        .env("EDGEFORGE_K3S_STANDIN_ROOT", dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker.io/rancher/mirrored-pause"));
    assert!(s.term().success());
}

#[test]
fn version_help_and_multicall_name_a_stand_in() {
    let bin = k3s_standin::binary();
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("k3s version v") && first.contains("+k3s") && first.ends_with(')'),
        "{text}"
    );
    assert!(
        lines.next().unwrap().starts_with("go version go1."),
        "{text}"
    );
    let help = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("STAND-IN"));
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&bin, dir.path().join("k3s")).unwrap();
    std::os::unix::fs::symlink(&bin, dir.path().join("ctr")).unwrap();
    let out = std::process::Command::new(dir.path().join("k3s"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);
    let out = std::process::Command::new(dir.path().join("ctr"))
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("v2.1.5-k3s1"));
}
