//! The files and commands of the k3s layer, rendered from the real
//! playbooks and templates with the context `apply` gives them: checked key
//! by key against what k3s documents (config.yaml flags per role,
//! registries.yaml, the unit's directives as install.sh writes them, an
//! environment file with proxies only), their modes and owners, and hostile
//! values (quotes, newlines, `$(...)`, backticks, `{{ }}`) fed through every
//! template and every command that takes a value: intact where they land,
//! and inert (nothing they name is ever run).

use std::collections::BTreeMap;
use std::path::Path;

use edgeforge::data::DataDir;
use edgeforge::playbook::Playbook;
use edgeforge::render::Renderer;
use serde_json::{Value, json};

const INVENTORY: &str = "\
apiVersion: edgeforge/v1
versions: {k3s: v1.34.2+k3s1}
defaults:
  k3s:
    clusterCidr: 10.42.0.0/16
    serviceCidr: 10.43.0.0/16
    clusterDns: 10.43.0.10
    disable: [traefik]
    tlsSan: [lab-api.example.com]
    registryMirrors:
      docker.io: [\"https://mirror.example.com:5000\"]
      \"*\": [\"https://mirror.example.com:5000\"]
    registryRewrites:
      docker.io: {\"^rancher/(.*)\": \"mirror/rancher/$1\"}
    registryConfigs:
      mirror.example.com:5000:
        username: puller
        password: {env: EF_TEST_REGISTRY_PASSWORD}
        insecureSkipVerify: false
    proxy: {httpProxy: \"http://proxy:3128\", noProxy: \"10.0.0.0/8\"}
    extraConfig: {kubelet-arg: [\"max-pods=50\"]}
hypervisors:
  - name: local
    uri: qemu:///system
    clusterNetwork: {name: ef-test, cidr: 10.77.0.0/24}
sites:
  - name: lab
    nodes:
      - {name: s1, role: server, address: 127.0.0.1, labels: {rack: r1}, machine: {type: libvirt, hypervisor: local, sshForwardPort: 2211, apiForwardPort: 2216, clusterAddress: 10.77.0.11}}
      - {name: s2, role: server, address: 127.0.0.1, machine: {type: libvirt, hypervisor: local, sshForwardPort: 2212, clusterAddress: 10.77.0.12}}
      - {name: s3, role: server, address: 127.0.0.1, machine: {type: libvirt, hypervisor: local, sshForwardPort: 2213, clusterAddress: 10.77.0.13}}
      - {name: a1, role: agent, address: 127.0.0.1, k3s: {nodeTaints: [\"edge=true:NoSchedule\"]}, machine: {type: libvirt, hypervisor: local, sshForwardPort: 2214, clusterAddress: 10.77.0.14}}
";

/// The context a task of `node` renders with, as the executor completes it
/// (outputs of the first server, the registry secret, nothing installed yet).
fn context(node: &str) -> Value {
    let inv = edgeforge::inventory::load_str("t.yaml", INVENTORY)
        .unwrap()
        .inventory;
    let view = inv.nodes().find(|v| v.node.name.as_str() == node).unwrap();
    let mut ctx = edgeforge::context::node(&inv, &view);
    ctx["facts"] = json!({"arch": "x86_64"});
    ctx["vars"] = json!({"installed": {"stdout": "", "changed": false}});
    ctx["secrets"] = json!({"registry/mirror.example.com:5000/password": "s3cret"});
    ctx["outputs"] = json!({"s1/k3s": {"token": "tok", "agent_token": "agt", "ca_hash": "ab12"}});
    ctx
}

fn renderer() -> Renderer {
    Renderer::new(&DataDir::Embedded).unwrap()
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn node_playbook() -> Playbook {
    let text = DataDir::Embedded
        .read_text("playbooks/k3s/node.yaml")
        .unwrap();
    Playbook::parse("playbooks/k3s/node.yaml", &text).unwrap()
}

/// Every step of `pb` whose `when` holds for `ctx`: (name, kind, rendered parameters).
fn rendered_steps(pb: &Playbook, ctx: &Value) -> Vec<(String, String, Value)> {
    let r = renderer();
    pb.steps
        .iter()
        .chain(&pb.handlers)
        .filter(|s| {
            s.when
                .as_ref()
                .is_none_or(|w| r.eval_when(&s.name, w, ctx).unwrap())
        })
        .map(|s| {
            let params = r
                .render_value(&s.name, &s.kind.params(), ctx)
                .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            (s.name.clone(), s.kind.key().to_string(), params)
        })
        .collect()
}

#[test]
fn config_yaml_has_the_flags_k3s_documents_for_each_role() {
    let r = renderer();
    let first = yaml(&r.render("k3s/config.yaml.j2", &context("s1")).unwrap());
    assert_eq!(first["node-name"], "s1");
    assert_eq!(first["token-file"], "/etc/rancher/k3s/token");
    assert_eq!(first["agent-token-file"], "/etc/rancher/k3s/agent-token");
    assert_eq!(
        first["cluster-init"], true,
        "several servers: embedded etcd"
    );
    assert!(first.get("server").is_none() && first.get("token").is_none());
    assert_eq!(first["node-ip"], "10.77.0.11");
    assert_eq!(first["flannel-iface"], edgeforge::inventory::CLUSTER_NIC);
    assert_eq!(first["write-kubeconfig-mode"], "0600");
    assert_eq!(first["tls-san"], json!(["lab-api.example.com"]));
    assert_eq!(first["cluster-cidr"], "10.42.0.0/16");
    assert_eq!(first["service-cidr"], "10.43.0.0/16");
    assert_eq!(first["cluster-dns"], "10.43.0.10");
    assert_eq!(first["disable"], json!(["traefik"]));
    let labels: Vec<&str> = first["node-label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        labels.contains(&"rack=r1") && labels.contains(&"edgeforge.io/site=lab"),
        "{labels:?}"
    );

    let joining = yaml(&r.render("k3s/config.yaml.j2", &context("s2")).unwrap());
    assert_eq!(joining["server"], "https://10.77.0.11:6443");
    assert!(joining.get("cluster-init").is_none());
    assert_eq!(joining["agent-token-file"], "/etc/rancher/k3s/agent-token");
    assert_eq!(joining["cluster-cidr"], first["cluster-cidr"]);

    let agent = yaml(&r.render("k3s/config.yaml.j2", &context("a1")).unwrap());
    assert_eq!(agent["server"], "https://10.77.0.11:6443");
    assert_eq!(agent["token-file"], "/etc/rancher/k3s/token");
    assert_eq!(agent["node-taint"], json!(["edge=true:NoSchedule"]));
    for server_only in [
        "agent-token-file",
        "cluster-init",
        "tls-san",
        "cluster-cidr",
        "service-cidr",
        "cluster-dns",
        "disable",
        "write-kubeconfig-mode",
    ] {
        assert!(agent.get(server_only).is_none(), "agent has {server_only}");
    }
    // extraConfig is a drop-in, not mixed into config.yaml.
    let extra = yaml(
        &r.render("k3s/extra-config.yaml.j2", &context("a1"))
            .unwrap(),
    );
    assert_eq!(extra["kubelet-arg"], json!(["max-pods=50"]));
    assert!(agent.get("kubelet-arg").is_none());
}

#[test]
fn registries_yaml_has_mirrors_rewrites_auth_and_tls() {
    let reg = yaml(
        &renderer()
            .render("k3s/registries.yaml.j2", &context("a1"))
            .unwrap(),
    );
    assert_eq!(
        reg["mirrors"]["docker.io"]["endpoint"],
        json!(["https://mirror.example.com:5000"])
    );
    assert_eq!(
        reg["mirrors"]["*"]["endpoint"],
        json!(["https://mirror.example.com:5000"])
    );
    assert_eq!(
        reg["mirrors"]["docker.io"]["rewrite"]["^rancher/(.*)"],
        "mirror/rancher/$1"
    );
    let cfg = &reg["configs"]["mirror.example.com:5000"];
    assert_eq!(cfg["auth"]["username"], "puller");
    assert_eq!(cfg["auth"]["password"], "s3cret");
    assert_eq!(cfg["tls"]["insecure_skip_verify"], false);
    // The wildcard is quoted in the file: an unquoted `*` is a YAML alias.
    let text = renderer()
        .render("k3s/registries.yaml.j2", &context("a1"))
        .unwrap();
    assert!(text.contains("\"*\""), "{text}");
}

#[test]
fn units_are_install_sh_s_and_the_environment_file_holds_proxies_only() {
    let r = renderer();
    let directives = |text: &str| -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains('='))
        {
            let (k, v) = line.split_once('=').unwrap();
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        m
    };
    for (node, unit, exec) in [("s1", "k3s", "server"), ("a1", "k3s-agent", "agent")] {
        let text = r.render("k3s/k3s.service.j2", &context(node)).unwrap();
        let d = directives(&text);
        let one = |k: &str| d.get(k).map(|v| v.join(" | ")).unwrap_or_default();
        assert_eq!(one("Type"), "notify", "{node}");
        assert_eq!(one("KillMode"), "process");
        assert_eq!(one("Delegate"), "yes");
        assert_eq!(one("LimitNOFILE"), "1048576");
        for k in ["LimitNPROC", "LimitCORE", "TasksMax"] {
            assert_eq!(one(k), "infinity", "{k}");
        }
        assert_eq!(one("TimeoutStartSec"), "0");
        assert_eq!(one("Restart"), "always");
        assert_eq!(one("RestartSec"), "5s");
        assert_eq!(
            d["ExecStartPre"],
            ["-/sbin/modprobe br_netfilter", "-/sbin/modprobe overlay"]
        );
        assert_eq!(
            d["EnvironmentFile"].last().unwrap(),
            &format!("-/etc/systemd/system/{unit}.service.env")
        );
        assert_eq!(one("ExecStart"), format!("/usr/local/bin/k3s {exec}"));
        assert_eq!(one("WantedBy"), "multi-user.target");
        assert_eq!(one("After"), "network-online.target");
    }
    let env = r.render("k3s/k3s.service.env.j2", &context("s1")).unwrap();
    let vars: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('=').next().unwrap())
        .collect();
    assert_eq!(
        vars,
        [
            "HTTP_PROXY",
            "CONTAINERD_HTTP_PROXY",
            "NO_PROXY",
            "CONTAINERD_NO_PROXY"
        ]
    );
    assert!(!env.contains("TOKEN"), "{env}");
}

#[test]
fn every_file_has_its_mode_and_owner_and_no_secret_goes_to_argv_or_env() {
    let pb = node_playbook();
    let mut seen = BTreeMap::new();
    for (name, kind, params) in rendered_steps(&pb, &context("s2")) {
        if let Some(dest) = params["dest"].as_str() {
            seen.insert(
                dest.to_string(),
                (
                    params["mode"].as_str().unwrap_or("?").to_string(),
                    params["owner"].as_str().unwrap_or("").to_string(),
                    kind.clone(),
                ),
            );
        }
        // Secrets travel as file content, never inside a command line.
        if let Some(cmd) = params["cmd"].as_str() {
            assert!(
                !cmd.contains("tok") || cmd.contains("token"),
                "{name}: {cmd}"
            );
            assert!(!cmd.contains("agt"), "{name}: {cmd}");
        }
    }
    let want = [
        ("/etc/rancher/k3s/token", "0600"),
        ("/etc/rancher/k3s/agent-token", "0600"),
        ("/etc/rancher/k3s/config.yaml", "0600"),
        (
            "/etc/rancher/k3s/config.yaml.d/50-edgeforge-extra.yaml",
            "0600",
        ),
        ("/etc/rancher/k3s/registries.yaml", "0600"),
        ("/etc/systemd/system/k3s.service.env", "0600"),
        ("/etc/systemd/system/k3s.service", "0644"),
        ("/usr/local/bin/k3s", "0755"),
        ("/usr/local/bin/k3s-killall.sh", "0755"),
        ("/usr/local/bin/k3s-uninstall.sh", "0755"),
        (
            "/var/lib/rancher/k3s/agent/images/edgeforge-airgap-v1.34.2+k3s1.tar.zst",
            "0644",
        ),
    ];
    for (dest, mode) in want {
        let (m, owner, _) = seen
            .get(dest)
            .unwrap_or_else(|| panic!("{dest} not placed: {seen:?}"));
        assert_eq!((m.as_str(), owner.as_str()), (mode, "0:0"), "{dest}");
    }
    assert_eq!(seen["/usr/local/bin/k3s"].2, "artifact");
    // The joining server's token file holds the full token: CA hash and secret.
    let token = rendered_steps(&pb, &context("s2"))
        .into_iter()
        .find(|(n, _, _)| n == "token file")
        .unwrap()
        .2;
    assert_eq!(token["content"], "K10ab12::server:tok\n");
    let agent = rendered_steps(&pb, &context("a1"))
        .into_iter()
        .find(|(n, _, _)| n == "token file")
        .unwrap()
        .2;
    assert_eq!(agent["content"], "K10ab12::node:agt\n");
    let first = rendered_steps(&pb, &context("s1"))
        .into_iter()
        .find(|(n, _, _)| n == "token file")
        .unwrap()
        .2;
    assert_eq!(first["content"], "tok\n");
}

#[test]
fn hostile_values_stay_intact_and_inert_in_every_template_and_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let m = marker.display().to_string();
    let hostile = format!(
        "a'b\"c $(touch {m}) `touch {m}` ; touch {m} {{{{ node.name }}}} {{% raw %}}\nline2: [x] # no comment\\"
    );
    let h = json!(hostile);
    let mut ctx = context("s2");
    {
        let k3s = &mut ctx["node"]["k3s"];
        k3s["node_labels"] = json!([format!("x={hostile}")]);
        k3s["node_taints"] = json!([hostile]);
        k3s["tls_san"] = json!([hostile]);
        k3s["node_ip"] = h.clone();
        k3s["node_external_ip"] = h.clone();
        k3s["flannel_iface"] = h.clone();
        k3s["flannel_backend"] = h.clone();
        k3s["cluster_dns"] = h.clone();
        k3s["disable"] = json!([hostile]);
        k3s["extra_config"] = json!({ hostile.clone(): [hostile] });
        k3s["proxy"] = json!({"http": hostile, "https": hostile, "no": hostile});
        k3s["registries"]["mirrors"] = json!({ hostile.clone(): {"endpoint": [hostile], "rewrite": {hostile.clone(): hostile}} });
        k3s["registries"]["configs"] = json!({ hostile.clone(): {"username": hostile, "password": true, "token": true, "ca_file": hostile, "insecure_skip_verify": true} });
    }
    ctx["node"]["name"] = h.clone();
    ctx["cluster"]["server_url"] = h.clone();
    ctx["versions"]["k3s"] = h.clone();
    ctx["outputs"]["s1/k3s"] =
        json!({"token": hostile, "agent_token": hostile, "ca_hash": hostile});
    ctx["secrets"] = json!({
        format!("registry/{hostile}/password"): hostile,
        format!("registry/{hostile}/token"): hostile,
    });
    let r = renderer();

    let config = yaml(&r.render("k3s/config.yaml.j2", &ctx).unwrap());
    assert_eq!(config["node-name"], h);
    assert_eq!(config["server"], h);
    for key in [
        "node-ip",
        "node-external-ip",
        "flannel-iface",
        "flannel-backend",
        "cluster-dns",
    ] {
        assert_eq!(config[key], h, "{key}");
    }
    assert_eq!(config["node-label"], json!([format!("x={hostile}")]));
    assert_eq!(config["node-taint"], json!([hostile]));
    assert_eq!(config["tls-san"], json!([hostile]));
    assert_eq!(config["disable"], json!([hostile]));
    let extra = yaml(&r.render("k3s/extra-config.yaml.j2", &ctx).unwrap());
    assert_eq!(extra[hostile.as_str()], json!([hostile]));
    let reg = yaml(&r.render("k3s/registries.yaml.j2", &ctx).unwrap());
    assert_eq!(
        reg["mirrors"][hostile.as_str()]["endpoint"],
        json!([hostile])
    );
    assert_eq!(
        reg["mirrors"][hostile.as_str()]["rewrite"][hostile.as_str()],
        h
    );
    let cfg = &reg["configs"][hostile.as_str()];
    for (a, b) in [
        ("auth", "username"),
        ("auth", "password"),
        ("auth", "token"),
        ("tls", "ca_file"),
    ] {
        assert_eq!(cfg[a][b], h, "{a}.{b}");
    }
    // The environment file as systemd (and sh) reads it.
    let env = r.render("k3s/k3s.service.env.j2", &ctx).unwrap();
    let env_file = dir.path().join("k3s.env");
    std::fs::write(&env_file, &env).unwrap();
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "CONTAINERD_HTTP_PROXY",
    ] {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(". {} && printf %s \"${var}\"", env_file.display()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), hostile, "{var}");
    }
    let unit = r.render("k3s/k3s.service.j2", &ctx).unwrap();
    assert!(!unit.contains("touch"), "{unit}");

    // Every step: rendered parameters keep the value; commands that take
    // one run in a shell here, and nothing they contain runs.
    let pb = node_playbook();
    let mut ran = 0;
    for (name, kind, params) in rendered_steps(&pb, &ctx) {
        if kind == "copy" && name.contains("token") {
            assert!(
                params["content"].as_str().unwrap().contains(&hostile),
                "{name}"
            );
        }
        for field in ["cmd", "unless"] {
            let Some(cmd) = params[field].as_str() else {
                continue;
            };
            let source = pb.steps.iter().find(|s| s.name == name).unwrap();
            let raw = source.kind.params();
            if !raw[field].as_str().is_some_and(|t| t.contains("{{")) {
                continue; // no value reaches it
            }
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .output()
                .unwrap();
            ran += 1;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if name.contains("/cacerts") {
                // It names the address it could not reach, exactly as given.
                assert!(!out.status.success(), "{name}");
                assert!(stderr.contains(&hostile), "{name}: {stderr}");
            }
        }
    }
    assert!(ran >= 3, "the commands that take values ran: {ran}");
    assert!(!marker.exists(), "a hostile value was executed");
    assert!(!Path::new(&format!("{m}'")).exists());
}
