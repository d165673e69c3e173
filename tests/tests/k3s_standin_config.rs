//! k3s's config file rules as the stand-in applies them: `config.yaml` then
//! `config.yaml.d/*.yaml` in order, later file wins, `key+:` appends,
//! command-line flags win, `-c`/`K3S_CONFIG_FILE`/`--data-dir`, unknown keys
//! warned about by `server` and fatal for `agent`; and the token and
//! etcd-snapshot subcommands.

mod k3s_standin_common;

use k3s_standin_common::*;

fn write(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn drop_ins_merge_in_order_with_appends_and_cli_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/rancher/k3s");
    write(
        &etc.join("config.yaml"),
        "node-label:\n  - base=1\nnode-name: from-file\nwrite-kubeconfig-mode: \"0600\"\nnot-a-flag: x\n",
    );
    write(
        &etc.join("config.yaml.d/10-more.yaml"),
        "node-label+:\n  - more=2\nwrite-kubeconfig-mode: \"0640\"\n",
    );
    write(
        &etc.join("config.yaml.d/20-last.yml"),
        "node-label+: [last=3]\nnode-name: from-dropin\n",
    );
    write(
        &etc.join("config.yaml.d/30-ignored.txt"),
        "node-name: not-read\n",
    );
    let port = free_port();
    let args: Vec<String> = [
        "server",
        "--https-listen-port",
        &port.to_string(),
        "--bind-address",
        "127.0.0.1",
        "--node-ip",
        "127.0.0.81",
        "--node-name",
        "from-cli",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut s = Standin::spawn(dir.path(), &args, &[]);
    let log = s.wait_log("k3s is up and running");
    assert!(
        log.contains(
            "level=warning msg=\"Unknown flag --not-a-flag found in config.yaml, skipping\""
        ),
        "{log}"
    );
    let n = node(&s.kubeconfig(), "from-cli");
    let labels = &n["metadata"]["labels"];
    assert_eq!(
        (
            labels["base"].as_str(),
            labels["more"].as_str(),
            labels["last"].as_str()
        ),
        (Some("1"), Some("2"), Some("3"))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.kubeconfig())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640, "the later drop-in wins");
    assert!(s.term().success());
}

#[test]
fn config_flag_env_and_data_dir_point_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("elsewhere/k3s.yaml");
    let data = dir.path().join("data");
    let kubeconfig = dir.path().join("out/kube.yaml");
    let port = free_port();
    write(
        &config,
        &format!(
            "https-listen-port: {port}\nbind-address: 127.0.0.1\nnode-ip: 127.0.0.82\nnode-name: via-c\nwrite-kubeconfig: {}\n",
            kubeconfig.display()
        ),
    );
    let mut s = Standin::spawn(
        dir.path(),
        &[
            "server".into(),
            "-c".into(),
            config.to_string_lossy().into(),
            "--data-dir".into(),
            data.to_string_lossy().into(),
        ],
        &[],
    );
    s.wait_log("k3s is up and running");
    assert!(data.join("server/token").exists());
    assert!(kubectl_ok(&kubeconfig, &["get", "nodes"]).contains("via-c"));
    assert!(s.term().success());
    // K3S_CONFIG_FILE names the file when -c does not.
    let mut s = Standin::spawn(
        dir.path(),
        &[
            "server".into(),
            "--data-dir".into(),
            data.to_string_lossy().into(),
        ],
        &[("K3S_CONFIG_FILE", config.to_string_lossy().into_owned())],
    );
    s.wait_log("k3s is up and running");
    assert!(s.term().success());
}

#[test]
fn an_agent_given_a_server_only_key_fails_as_k3s_does() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("etc/rancher/k3s/config.yaml"),
        "server: https://127.0.0.1:1\ntoken: abc\ncluster-init: true\n",
    );
    let mut a = Standin::spawn(dir.path(), &["agent".into()], &[]);
    assert_eq!(a.wait_exit().code(), Some(1));
    assert!(
        a.log()
            .contains("level=fatal msg=\"flag provided but not defined: -cluster-init\""),
        "{}",
        a.log()
    );
}

#[test]
fn token_create_list_and_etcd_snapshot_list() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = Standin::spawn(
        dir.path(),
        &server_args("tok-s1", port, "127.0.0.83", &["--cluster-init"]),
        &[],
    );
    s.wait_log("k3s is up and running");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(edgeforge_tests::k3s_standin::binary())
            .args(args)
            .env("EDGEFORGE_K3S_STANDIN_ROOT", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let created = run(&["token", "create", "--description", "edge join"]);
    let ca = std::fs::read(s.server_file("tls/server-ca.crt")).unwrap();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&ca));
    assert!(created.starts_with(&format!("K10{hash}::")), "{created}");
    let bootstrap = created.trim().rsplit("::").next().unwrap().to_string();
    let (id, _) = bootstrap.split_once('.').unwrap();
    let list = run(&["token", "list"]);
    assert!(
        list.contains(&format!("{id}.****")) && list.contains("edge join"),
        "{list}"
    );
    // An agent joins with the bootstrap token.
    let args: Vec<String> = [
        "agent",
        "--server",
        &format!("https://127.0.0.1:{port}"),
        "--token",
        created.trim(),
        "--node-name",
        "tok-a1",
        "--node-ip",
        "127.0.0.84",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut a = Standin::spawn(&dir.path().join("agent"), &args, &[]);
    a.wait_log("k3s agent is up and running");
    let snapshots = run(&["etcd-snapshot", "list"]);
    assert!(snapshots.starts_with("Name"), "{snapshots}");
    assert!(a.term().success());
    assert!(s.term().success());
}
