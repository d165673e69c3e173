//! Inventory checks, one test per rule: each asserts the exact line:col and
//! what the message says. Plus: the examples load clean, many problems come
//! back in one run, and a secret value never shows in any output.

use std::path::Path;

use edgeforge::inventory::{self, Diagnostic, LoadError, Role, Severity};

/// A valid inventory the tests modify; line numbers below refer to it.
const BASE: &str = "\
apiVersion: edgeforge/v1
hypervisors:
  - name: local
    uri: qemu:///system
jumpHosts:
  - name: bastion
    address: 10.0.0.1
sites:
  - name: site-a
    nodes:
      - name: a-1
        role: server
        address: 10.1.0.1
      - name: a-2
        role: agent
        address: 10.1.0.2
";

/// All diagnostics of `text` (empty when it loads without warnings).
fn diags(text: &str) -> Vec<Diagnostic> {
    match inventory::load_str("t.yaml", text) {
        Ok(loaded) => loaded.warnings,
        Err(LoadError::Invalid(d)) => d,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Asserts exactly one diagnostic, at `line:col`, with `severity`, whose
/// message contains every one of `words`.
#[track_caller]
fn one(text: &str, severity: Severity, line: u32, col: u32, words: &[&str]) -> Diagnostic {
    let d = diags(text);
    assert_eq!(d.len(), 1, "expected one diagnostic, got: {d:#?}");
    let d = d.into_iter().next().expect("one");
    assert_eq!((d.severity, d.line, d.col), (severity, line, col), "{d}");
    for w in words {
        assert!(d.message.contains(w), "`{w}` not in: {d}");
    }
    assert!(!d.hint.is_empty(), "no hint: {d}");
    d
}

fn replace(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_is_valid() {
    let loaded = inventory::load_str("t.yaml", BASE).expect("valid");
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.inventory.sites[0].nodes[1].role, Role::Agent);
    assert_eq!(loaded.inventory.sites[0].nodes[0].name.line, 11);
    assert_eq!(loaded.inventory.sites[0].nodes[0].name.col, 15);
}

#[test]
fn examples_pass_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventory");
    for name in [
        "lab.yaml",
        "appliances.yaml",
        "baremetal.yaml",
        "federation.yaml",
        "kubefed.yaml",
    ] {
        let loaded = inventory::load(&dir.join(name)).unwrap_or_else(|e| match e {
            LoadError::Invalid(d) => panic!(
                "{name}: {}",
                d.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            e => panic!("{name}: {e}"),
        });
        // The only acceptable warning: the Karmada host's kubeconfig is not
        // on this machine.
        for w in &loaded.warnings {
            assert!(
                name != "lab.yaml"
                    && name != "baremetal.yaml"
                    && w.message.contains("federation kubeconfig"),
                "{name}: {w}"
            );
        }
        assert!(loaded.inventory.nodes().count() >= 2, "{name}");
    }
}

#[test]
fn lab_example_is_three_user_mode_vms() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventory/lab.yaml");
    let loaded = inventory::load(&path).expect("lab loads");
    let nodes: Vec<_> = loaded.inventory.nodes().collect();
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        nodes.iter().filter(|n| n.node.role == Role::Server).count(),
        1
    );
    let ports: Vec<u16> = nodes.iter().map(|n| n.ssh_port()).collect();
    assert_eq!(ports, [2201, 2202, 2203]);
    for n in &nodes {
        assert_eq!((n.vm.cpus, n.vm.memory_mib), (Some(2), Some(1024)));
        let key = n.ssh.identity_file.as_ref().expect("identity file");
        // Resolved at load time: `~` expanded.
        assert!(key.value.ends_with(".local/state/edgeforge/lab/id_ed25519"));
        assert!(key.value.is_absolute());
    }
    assert_eq!(
        inventory::LAB_IDENTITY_FILE,
        "~/.local/state/edgeforge/lab/id_ed25519"
    );
}

#[test]
fn wrong_api_version() {
    one(
        &replace("edgeforge/v1", "edgeforge/v2"),
        Severity::Error,
        1,
        13,
        &["`edgeforge/v2`", "edgeforge/v1"],
    );
}

#[test]
fn malformed_yaml_has_position() {
    let d = diags(&replace(
        "    address: 10.0.0.1\n",
        "    address: [10.0.0.1\n",
    ));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].message.contains("not valid YAML"), "{}", d[0]);
    assert!(d[0].line >= 7, "{}", d[0]);
}

#[test]
fn unknown_field_with_suggestion() {
    let d = one(
        &replace(
            "        role: agent\n",
            "        role: agent\n        adress: x\n",
        ),
        Severity::Error,
        16,
        9,
        &["Unknown field `adress`"],
    );
    assert_eq!(d.hint, "Did you mean `address`?");
}

#[test]
fn wrong_type() {
    one(
        &replace(
            "        address: 10.1.0.2\n",
            "        address: 10.1.0.2\n        ssh: {port: twenty-two}\n",
        ),
        Severity::Error,
        17,
        21,
        &["`port` must be a whole number", "a string"],
    );
}

#[test]
fn port_out_of_range() {
    one(
        &replace(
            "        address: 10.1.0.2\n",
            "        address: 10.1.0.2\n        ssh: {port: 70000}\n",
        ),
        Severity::Error,
        17,
        21,
        &["70000", "from 1 to 65535"],
    );
}

#[test]
fn vm_sizes_have_lower_bounds() {
    let text = replace(
        "sites:\n",
        "defaults:\n  vm: {cpus: 0, memoryMib: 128, diskGib: 10}\nsites:\n",
    );
    let d = diags(&text);
    let got: Vec<String> = d
        .iter()
        .map(|d| format!("{}:{} {}", d.line, d.col, d.message))
        .collect();
    assert_eq!(
        got,
        [
            "9:14 `cpus` is 0, out of range: it must be at least 1.",
            "9:28 `memoryMib` is 128, out of range: it must be at least 256.",
        ]
    );
}

#[test]
fn missing_required_field() {
    one(
        &replace("        role: agent\n", ""),
        Severity::Error,
        14,
        9,
        &["missing the required field `role`"],
    );
}

#[test]
fn bad_enum_value() {
    let d = one(
        &replace("role: agent", "role: agnet"),
        Severity::Error,
        15,
        15,
        &["`agnet`", "`server`, `agent`"],
    );
    assert_eq!(d.hint, "Did you mean `agent`?");
}

#[test]
fn duplicate_site_names() {
    let text = format!(
        "{BASE}  - name: site-a\n    nodes:\n      - {{name: b-1, role: server, address: 10.2.0.1}}\n"
    );
    one(
        &text,
        Severity::Error,
        17,
        11,
        &["Duplicate site name `site-a`", "line 9"],
    );
}

#[test]
fn duplicate_node_names_across_sites() {
    let text = format!(
        "{BASE}  - name: site-b\n    nodes:\n      - {{name: a-1, role: server, address: 10.2.0.1}}\n"
    );
    one(
        &text,
        Severity::Error,
        19,
        16,
        &["Duplicate node name `a-1`", "line 11"],
    );
}

#[test]
fn duplicate_address_and_effective_port() {
    // a-2 gets a-1's address; the site default port applies to both.
    let text = replace("address: 10.1.0.2", "address: 10.1.0.1").replace(
        "    nodes:\n",
        "    defaults: {ssh: {port: 2222}}\n    nodes:\n",
    );
    one(
        &text,
        Severity::Error,
        17,
        18,
        &["`a-1` (line 14) and `a-2`", "10.1.0.1 port 2222"],
    );
    // Different effective ports: fine.
    let text = replace(
        "address: 10.1.0.2",
        "address: 10.1.0.1\n        ssh: {port: 2222}",
    );
    assert!(diags(&text).is_empty(), "{:#?}", diags(&text));
}

#[test]
fn same_address_behind_different_jump_hosts_is_fine() {
    let text = replace(
        "address: 10.1.0.2",
        "address: 10.1.0.1\n        ssh: {jump: [bastion]}",
    );
    assert!(diags(&text).is_empty(), "{:#?}", diags(&text));
}

#[test]
fn cluster_without_server() {
    one(
        &replace("role: server", "role: agent"),
        Severity::Error,
        9,
        11,
        &["Site `site-a` has no server"],
    );
}

#[test]
fn even_number_of_servers_warns() {
    let d = one(
        &replace("role: agent", "role: server"),
        Severity::Warning,
        9,
        11,
        &["2 servers", "quorum"],
    );
    assert!(d.hint.contains("odd"));
    // A warning does not make the inventory invalid.
    assert!(inventory::load_str("t.yaml", &replace("role: agent", "role: server")).is_ok());
}

#[test]
fn unknown_hypervisor_reference() {
    let text = replace(
        "        address: 10.1.0.2\n",
        "        address: 127.0.0.1\n        machine: {type: libvirt, hypervisor: locl, sshForwardPort: 2201}\n",
    );
    let d = one(
        &text,
        Severity::Error,
        17,
        46,
        &["hypervisor `locl`", "not in `hypervisors`"],
    );
    assert_eq!(d.hint, "Did you mean `local`?");
}

#[test]
fn user_mode_vm_without_forward_port() {
    let text = replace(
        "        address: 10.1.0.2\n",
        "        address: 127.0.0.1\n        machine:\n          type: libvirt\n          hypervisor: local\n",
    );
    one(
        &text,
        Severity::Error,
        18,
        11,
        &["user-mode", "no `sshForwardPort`"],
    );
}

#[test]
fn local_user_mode_vm_must_be_addressed_on_loopback() {
    let text = replace(
        "        address: 10.1.0.2\n",
        "        address: 10.1.0.2\n        machine: {type: libvirt, hypervisor: local, sshForwardPort: 2202}\n",
    );
    let d = one(
        &text,
        Severity::Warning,
        16,
        18,
        &["`10.1.0.2`", "forwarded on loopback"],
    );
    assert_eq!(d.hint, "Set `address: 127.0.0.1`.");
}

#[test]
fn duplicate_forward_port_on_one_hypervisor() {
    let vm = |port: u16| {
        format!("        machine: {{type: libvirt, hypervisor: local, sshForwardPort: {port}}}\n")
    };
    let text = replace(
        "        address: 10.1.0.1\n",
        &format!("        address: 127.0.0.1\n{}", vm(2201)),
    )
    .replace(
        "        address: 10.1.0.2\n",
        &format!("        address: 127.0.0.2\n{}", vm(2201)),
    );
    one(
        &text,
        Severity::Error,
        18,
        69,
        &["`sshForwardPort` 2201", "line 14"],
    );
}

#[test]
fn unknown_jump_host_reference() {
    let d = one(
        &replace(
            "address: 10.1.0.2",
            "address: 10.1.0.2\n        ssh: {jump: [bastoin]}",
        ),
        Severity::Error,
        17,
        22,
        &["Jump host `bastoin` is not defined"],
    );
    assert_eq!(d.hint, "Did you mean `bastion`?");
}

#[test]
fn jump_host_cycle() {
    let text = replace(
        "    address: 10.0.0.1\n",
        "    address: 10.0.0.1\n    ssh: {jump: [inner]}\n  - name: inner\n    address: 10.0.0.2\n    ssh: {jump: [bastion]}\n",
    );
    one(
        &text,
        Severity::Error,
        11,
        18,
        &["cycle", "bastion → inner → bastion"],
    );
}

#[test]
fn invalid_address() {
    one(
        &replace("address: 10.1.0.2", "address: 10.1.0.999"),
        Severity::Error,
        16,
        18,
        &["`10.1.0.999`", "neither an IP address nor a DNS name"],
    );
}

#[test]
fn invalid_and_overlapping_cidrs() {
    let text = replace(
        "sites:\n",
        "defaults:\n  k3s:\n    clusterCidr: 10.42.0.0/33\nsites:\n",
    );
    one(&text, Severity::Error, 10, 18, &["`10.42.0.0/33`", "CIDR"]);
    let text = replace(
        "sites:\n",
        "defaults:\n  k3s:\n    clusterCidr: 10.42.0.5/16\nsites:\n",
    );
    let d = one(&text, Severity::Error, 10, 18, &["host bits"]);
    assert!(d.hint.contains("10.42.0.0/16"));
    let text = replace(
        "sites:\n",
        "defaults:\n  k3s:\n    clusterCidr: 10.42.0.0/16\n    serviceCidr: 10.42.128.0/17\nsites:\n",
    );
    one(&text, Severity::Error, 11, 18, &["overlaps"]);
}

#[test]
fn invalid_urls() {
    let text = replace(
        "sites:\n",
        "defaults:\n  k3s:\n    registryMirrors:\n      docker.io: [\"registry.local:5000\"]\nsites:\n",
    );
    one(
        &text,
        Severity::Error,
        11,
        19,
        &["mirror endpoint", "not an http(s) URL"],
    );
    let text = replace(
        "        address: 10.1.0.2\n",
        "        address: 10.1.0.2\n        machine:\n          type: redfish\n          endpoint: 10.0.0.10\n          username: admin\n          password: {env: BMC_PASSWORD}\n",
    );
    one(
        &text,
        Severity::Error,
        19,
        21,
        &["Redfish `endpoint`", "not an http(s) URL"],
    );
}

#[test]
fn names_must_be_dns_labels() {
    one(
        &replace("name: a-2", "name: A_2"),
        Severity::Error,
        14,
        15,
        &["Node name `A_2`", "DNS label"],
    );
}

#[test]
fn missing_identity_file_relative_to_inventory_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = replace(
        "sites:\n",
        "defaults:\n  ssh:\n    identityFile: keys/id_ed25519\nsites:\n",
    );
    let path = dir.path().join("inv.yaml");
    std::fs::write(&path, &text).expect("write");
    match inventory::load(&path) {
        Err(LoadError::Invalid(d)) => {
            assert_eq!(d.len(), 1, "{d:#?}");
            assert_eq!((d[0].line, d[0].col), (10, 19));
            assert!(d[0].message.contains("`keys/id_ed25519`"), "{}", d[0]);
            assert!(
                d[0].message
                    .contains(&dir.path().join("keys/id_ed25519").display().to_string()),
                "{}",
                d[0]
            );
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    std::fs::create_dir(dir.path().join("keys")).expect("mkdir");
    std::fs::write(dir.path().join("keys/id_ed25519"), "key").expect("write key");
    let loaded = inventory::load(&path).expect("valid once the key exists");
    let key = loaded.inventory.defaults.ssh.identity_file.expect("key");
    assert_eq!(key.value, dir.path().join("keys/id_ed25519"));
}

#[test]
fn inline_secret_is_rejected_without_echo() {
    let text = replace(
        "sites:\n",
        "defaults:\n  ssh:\n    sudo:\n      password: hunter2\nsites:\n",
    );
    let d = one(&text, Severity::Error, 11, 17, &["secret written inline"]);
    assert!(d.hint.contains("{env: VAR_NAME}"));
    assert!(!d.to_string().contains("hunter2"));
}

#[test]
fn fingerprint_format() {
    let text = replace(
        "    address: 10.0.0.1\n",
        "    address: 10.0.0.1\n    ssh:\n      hostKey: {fingerprint: \"MD5:12:34\"}\n",
    );
    one(
        &text,
        Severity::Error,
        9,
        30,
        &["not an OpenSSH SHA256 fingerprint"],
    );
    let good = replace(
        "    address: 10.0.0.1\n",
        "    address: 10.0.0.1\n    ssh:\n      hostKey: {fingerprint: \"SHA256:CZJu5gIF7RTgHyzDzWKZ/CytyTqqR7lZdAL+kcWBQ8k\"}\n",
    );
    assert!(diags(&good).is_empty(), "{:#?}", diags(&good));
}

#[test]
fn federation_needs_kubeconfig() {
    let text = replace("sites:\n", "federation:\n  type: karmada\nsites:\n");
    one(
        &text,
        Severity::Error,
        9,
        3,
        &["`karmada` federation has no `kubeconfig`"],
    );
}

#[test]
fn duplicate_yaml_keys() {
    one(
        &replace(
            "        role: agent\n",
            "        role: agent\n        role: server\n",
        ),
        Severity::Error,
        16,
        9,
        &["`role` appears twice", "line 15"],
    );
}

#[test]
fn secret_reference_forms() {
    let text = replace(
        "sites:\n",
        "defaults:\n  k3s:\n    token: {env: K3S_TOKEN, file: /x}\nsites:\n",
    );
    one(
        &text,
        Severity::Error,
        10,
        12,
        &["exactly one of env, file"],
    );
    let text = replace(
        "sites:\n",
        "defaults:\n  k3s:\n    token: {evn: K3S_TOKEN}\nsites:\n",
    );
    let d = one(&text, Severity::Error, 10, 13, &["Unknown field `evn`"]);
    assert_eq!(d.hint, "Did you mean `env`?");
}

#[test]
fn many_problems_are_reported_in_one_run() {
    let text = "\
apiVersion: edgeforge/v9
defaults:
  ssh:
    prot: 22
    sudo: {password: s3cr3t-value}
    hostKey: {policy: trust-all}
jumpHosts:
  - {name: j1, address: 10.0.0.1, ssh: {jump: [j2]}}
  - {name: j2, address: 10.0.0.2, ssh: {jump: [j1]}}
sites:
  - name: Site-One
    nodes:
      - {name: n1, role: agent, address: 10.1.0.1}
  - name: s2
    defaults: {k3s: {clusterCidr: nonsense}}
    nodes:
      - {name: n1, role: server, address: 10.1.0.1, ssh: {jump: [j3]}}
      - {name: n2, role: server, address: 10.1.0.3, machine: {type: libvirt, hypervisor: hv1}}
      - {name: n3, role: servr, address: 10.1.0.4}
";
    let d = diags(text);
    let errors: Vec<String> = d
        .iter()
        .map(|d| format!("{}:{} {}", d.line, d.col, d.message))
        .collect();
    let expect = [
        "1:13 `apiVersion` is `edgeforge/v9`",
        "4:5 Unknown field `prot`",
        "5:22 `password` is a secret written inline",
        "6:23 `policy` is `trust-all`",
        "9:48 The jump hosts form a cycle",
        "11:11 Site name `Site-One` is not a DNS label",
        "11:11 Site `Site-One` has no server",
        "15:35 `clusterCidr` `nonsense` is not a network",
        "17:16 Duplicate node name `n1`",
        "17:66 Jump host `j3` is not defined",
        "18:90 Node `n2` names hypervisor `hv1`",
        "19:26 `role` is `servr`",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e)),
            "missing `{e}` in {errors:#?}"
        );
    }
    assert_eq!(
        d.iter().filter(|d| d.severity == Severity::Error).count(),
        12,
        "{errors:#?}"
    );
    // s2 has two servers: the quorum warning comes with the errors.
    assert!(
        d.iter()
            .any(|d| d.severity == Severity::Warning && d.message.contains("2 servers"))
    );
    let sorted: Vec<(u32, u32)> = d.iter().map(|d| (d.line, d.col)).collect();
    assert!(
        sorted.windows(2).all(|w| w[0] <= w[1]),
        "not in file order: {sorted:?}"
    );
}

#[test]
fn secret_values_never_appear_in_any_message() {
    let secret = "Sup3r-S3cret-Valu3";
    let places = [
        format!("defaults:\n  ssh:\n    sudo: {{password: {secret}}}\n"),
        format!("defaults:\n  ssh:\n    identityPassphrase: {secret}\n"),
        format!("defaults:\n  k3s:\n    token: {secret}\n"),
        format!("defaults:\n  k3s:\n    token: [{secret}]\n"),
        format!("defaults:\n  k3s:\n    token: {{value: {secret}}}\n"),
        format!("defaults:\n  ssh:\n    sudo: {{password: {{env: {secret}, file: {secret}}}}}\n"),
    ];
    for place in places {
        let text = replace("sites:\n", &format!("{place}sites:\n"));
        let d = diags(&text);
        assert!(!d.is_empty(), "no diagnostic for {place}");
        for diag in &d {
            assert!(!diag.to_string().contains(secret), "secret echoed: {diag}");
        }
    }
    let redfish = replace(
        "        address: 10.1.0.2\n",
        &format!(
            "        address: 10.1.0.2\n        machine: {{type: redfish, endpoint: \"https://bmc\", username: root, password: {secret}}}\n"
        ),
    );
    let d = diags(&redfish);
    assert!(
        d.iter()
            .any(|d| d.message.contains("secret written inline")),
        "{d:#?}"
    );
    assert!(d.iter().all(|d| !d.to_string().contains(secret)));
}

#[test]
fn non_utf8_file_is_invalid_at_the_bad_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.yaml");
    std::fs::write(&path, b"apiVersion: edgeforge/v1\nname: caf\xe9\n").expect("write");
    match inventory::load(&path) {
        Err(LoadError::Invalid(d)) => {
            assert_eq!(d.len(), 1);
            assert_eq!((d[0].line, d[0].col), (2, 10), "{}", d[0]);
            assert!(d[0].message.contains("not UTF-8"), "{}", d[0]);
        }
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn anchors_and_merge_keys_work_end_to_end() {
    let text = replace(
        "sites:\n",
        "defaults:\n  ssh: &common {user: ops, port: 2222}\nsites:\n",
    )
    .replace(
        "        address: 10.1.0.2\n",
        "        address: 10.1.0.2\n        ssh:\n          <<: *common\n          port: 22\n",
    );
    let loaded = inventory::load_str("t.yaml", &text).expect("valid");
    let views: Vec<_> = loaded.inventory.nodes().collect();
    assert_eq!(views[0].ssh_port(), 2222);
    assert_eq!(views[1].ssh_port(), 22);
    assert_eq!(views[1].ssh.user.as_ref().map(|u| u.as_str()), Some("ops"));
}

#[test]
fn jump_chain_expands_nested_jump_hosts() {
    let text = replace(
        "    address: 10.0.0.1\n",
        "    address: 10.0.0.1\n  - name: site-gw\n    address: 10.0.0.2\n    ssh: {jump: [bastion]}\n",
    )
    .replace("        address: 10.1.0.2\n", "        address: 10.1.0.2\n        ssh: {jump: [site-gw]}\n");
    let loaded = inventory::load_str("t.yaml", &text).expect("valid");
    let inv = &loaded.inventory;
    let agent = inv.nodes().nth(1).expect("agent");
    let chain: Vec<&str> = inv
        .jump_chain(agent.ssh.jump.as_deref().unwrap_or(&[]))
        .iter()
        .map(|j| j.name.as_str())
        .collect();
    assert_eq!(chain, ["bastion", "site-gw"]);
}

#[test]
fn reference_documents_every_field_of_the_schema() {
    fn collect(schema: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match schema {
            serde_json::Value::Object(map) => {
                if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
                    out.extend(props.keys().cloned());
                }
                for v in map.values() {
                    collect(v, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut fields = std::collections::BTreeSet::new();
    collect(&inventory::json_schema(), &mut fields);
    assert!(fields.len() > 40, "{fields:?}");
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/inventory.md"))
            .expect("docs/inventory.md");
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !docs.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "fields not in docs/inventory.md: {missing:?}"
    );
}

// ------------------------------------------------------------------- k3s

/// A site with three servers for the k3s rules; lines below refer to it.
const HA: &str = "\
apiVersion: edgeforge/v1
defaults:
  k3s:
    clusterCidr: 10.42.0.0/16
sites:
  - name: ha
    nodes:
      - name: s1
        role: server
        address: 10.1.0.1
      - name: s2
        role: server
        address: 10.1.0.2
      - name: s3
        role: server
        address: 10.1.0.3
        k3s:
          clusterCidr: 10.52.0.0/16
";

#[test]
fn servers_must_agree_on_critical_k3s_values() {
    let d = one(
        HA,
        Severity::Error,
        18,
        24,
        &[
            "`clusterCidr` (cluster-cidr) of server `s3`",
            "`10.52.0.0/16`",
            "`s1`",
        ],
    );
    assert!(d.hint.contains("defaults.k3s.clusterCidr"), "{d}");
    // Agents may differ; so may non-critical settings.
    let agents = HA.replace(
        "        role: server\n        address: 10.1.0.3",
        "        role: agent\n        address: 10.1.0.3",
    );
    assert!(
        diags(&agents)
            .iter()
            .all(|d| d.severity == Severity::Warning),
        "{:?}",
        diags(&agents)
    );
    // `disable` compares as a set, and a value set on one server only differs from k3s's default.
    let set = HA
        .replace(
            "    clusterCidr: 10.42.0.0/16\n",
            "    disable: [traefik, servicelb]\n",
        )
        .replace(
            "          clusterCidr: 10.52.0.0/16\n",
            "          disable: [servicelb, traefik]\n",
        );
    assert!(diags(&set).is_empty(), "{:?}", diags(&set));
    let one_only = HA
        .replace("    clusterCidr: 10.42.0.0/16\n", "    {}\n")
        .replace(
            "          clusterCidr: 10.52.0.0/16\n",
            "          embeddedRegistry: true\n",
        );
    let d = one(
        &one_only,
        Severity::Error,
        18,
        29,
        &["embeddedRegistry", "(k3s's default)"],
    );
    assert!(d.message.contains("`true`"), "{d}");
}

#[test]
fn k3s_values_are_what_k3s_takes() {
    let with = |k3s: &str| {
        replace(
            "        address: 10.1.0.1\n",
            &format!("        address: 10.1.0.1\n        k3s:\n{k3s}"),
        )
    };
    one(
        &with("          nodeIp: 10.1.0.300\n"),
        Severity::Error,
        15,
        19,
        &["`nodeIp`", "not an IP"],
    );
    let d = one(
        &with("          flannelBackend: vxlam\n"),
        Severity::Error,
        15,
        27,
        &["`vxlam`"],
    );
    assert!(d.hint.contains("Did you mean `vxlan`"), "{d}");
    one(
        &with("          disable: [traefik, helm]\n"),
        Severity::Error,
        15,
        30,
        &["`helm`"],
    );
    one(
        &with("          nodeTaints: [\"edge\"]\n"),
        Severity::Error,
        15,
        24,
        &["`edge`", "key[=value]:Effect"],
    );
    assert!(
        diags(&with(
            "          nodeTaints: [\"dedicated=edge:NoSchedule\", \"gpu:NoExecute\"]\n"
        ))
        .is_empty()
    );
    one(
        &with("          writeKubeconfigMode: \"0644x\"\n"),
        Severity::Error,
        15,
        32,
        &["octal"],
    );
    one(
        &with("          serviceCidr: 10.43.0.0/16\n          clusterDns: 10.44.0.10\n"),
        Severity::Error,
        16,
        23,
        &["outside `serviceCidr`"],
    );
    let d = one(
        &with("          extraConfig:\n            cluster-init: true\n"),
        Severity::Error,
        16,
        13,
        &["`cluster-init`", "writes into config.yaml itself"],
    );
    assert!(d.hint.contains("derives it"), "{d}");
    let d = one(
        &with("          extraConfig:\n            disable: [traefik]\n"),
        Severity::Error,
        16,
        13,
        &["`disable`"],
    );
    assert!(d.hint.contains("`disable`"), "{d}");
    one(
        &with(
            "          registryConfigs:\n            registry.example.com:\n              password: {env: REG_PW}\n",
        ),
        Severity::Error,
        16,
        13,
        &["`password` but no `username`"],
    );
    one(
        &with(
            "          registryConfigs:\n            \"https://registry.example.com\": {username: u}\n",
        ),
        Severity::Error,
        16,
        13,
        &["not a registry host"],
    );
}

#[test]
fn the_kubeconfig_address_must_be_covered_by_tls_san() {
    // The first server is reached at its address, which k3s puts in its
    // certificate unless node-ip says it uses another one.
    let other_ip = replace(
        "        address: 10.1.0.1\n",
        "        address: 10.1.0.1\n        k3s:\n          nodeIp: 192.168.7.1\n",
    );
    let d = one(
        &other_ip,
        Severity::Error,
        13,
        18,
        &["`10.1.0.1`", "`a-1`", "does not cover"],
    );
    assert!(d.hint.contains("tlsSan"), "{d}");
    let covered = replace(
        "        address: 10.1.0.1\n",
        "        address: 10.1.0.1\n        k3s:\n          nodeIp: 192.168.7.1\n          tlsSan: [10.1.0.1]\n",
    );
    assert!(diags(&covered).is_empty(), "{:?}", diags(&covered));
    // An explicit API address must be in every server's certificate.
    let api = replace(
        "    nodes:\n",
        "    cluster: {apiServer: \"https://api.site-a.example.com:6443\"}\n    nodes:\n",
    );
    one(&api, Severity::Error, 10, 26, &["`api.site-a.example.com`"]);
    let api_ok = api.replace(
        "sites:\n",
        "defaults:\n  k3s: {tlsSan: [api.site-a.example.com]}\nsites:\n",
    );
    assert!(diags(&api_ok).is_empty(), "{:?}", diags(&api_ok));
    one(
        &replace(
            "    nodes:\n",
            "    cluster: {apiServer: \"http://api:6443\"}\n    nodes:\n",
        ),
        Severity::Error,
        10,
        26,
        &["not an https URL"],
    );
}

#[test]
fn vm_cluster_addresses_lie_in_their_network_and_are_unique() {
    let lab = |a1: &str, a2: &str, network: &str| {
        format!(
            "apiVersion: edgeforge/v1\nhypervisors:\n  - name: local\n    uri: qemu:///system\n{network}\
             sites:\n  - name: s\n    nodes:\n\
             \x20     - {{name: n1, role: server, address: 127.0.0.1, machine: {{type: libvirt, hypervisor: local, sshForwardPort: 2201, apiForwardPort: 2206, clusterAddress: {a1}}}}}\n\
             \x20     - {{name: n2, role: agent, address: 127.0.0.1, machine: {{type: libvirt, hypervisor: local, sshForwardPort: 2202, clusterAddress: {a2}}}}}\n"
        )
    };
    let net = "    clusterNetwork: {name: ef-lab, cidr: 10.77.0.0/24}\n";
    assert!(diags(&lab("10.77.0.11", "10.77.0.12", net)).is_empty());
    one(
        &lab("10.77.0.11", "10.78.0.12", net),
        Severity::Error,
        10,
        135,
        &["10.78.0.12", "10.77.0.0/24"],
    );
    one(
        &lab("10.77.0.11", "10.77.0.11", net),
        Severity::Error,
        10,
        135,
        &["already used", "line 9"],
    );
    one(
        &lab("10.77.0.11", "10.77.0.255", net),
        Severity::Error,
        10,
        135,
        &["not a host address"],
    );
    let d = diags(&lab("10.77.0.11", "10.77.0.12", ""));
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!((d[0].line, d[0].col), (8, 158), "{}", d[0]);
    assert!(d[0].message.contains("no `clusterNetwork`"), "{}", d[0]);
    let clash = lab("10.77.0.11", "10.77.0.12", net)
        .replace("apiForwardPort: 2206", "apiForwardPort: 2201");
    one(
        &clash,
        Severity::Error,
        9,
        136,
        &["`apiForwardPort` 2201", "already forwarded"],
    );
    let loaded = inventory::load_str("t.yaml", &lab("10.77.0.11", "10.77.0.12", net))
        .unwrap()
        .inventory;
    assert_eq!(
        inventory::Inventory::api_server(&loaded.sites[0]).as_deref(),
        Some("https://127.0.0.1:2206")
    );
    let n2 = loaded.nodes().nth(1).unwrap();
    assert_eq!(
        (n2.k3s_node_ip(), n2.k3s_flannel_iface()),
        (Some("10.77.0.12"), Some(inventory::CLUSTER_NIC))
    );
}

#[test]
fn k3s_version_must_be_pinned_by_the_manifest() {
    let text = replace(
        "hypervisors:\n",
        "versions: {k3s: v1.99.0+k3s1}\nhypervisors:\n",
    );
    let inv = inventory::load_str("t.yaml", &text).unwrap().inventory;
    let pinned = vec!["v1.34.2+k3s1".to_string()];
    let d = inventory::check_k3s_version(&inv, "t.yaml", &pinned).expect("refused");
    assert_eq!((d.severity, d.line, d.col), (Severity::Error, 2, 17), "{d}");
    assert!(
        d.message.contains("`v1.99.0+k3s1`") && d.message.contains("v1.34.2+k3s1"),
        "{d}"
    );
    assert!(
        d.hint.contains("edgeforge images pin k3s v1.99.0+k3s1"),
        "{d}"
    );
    let ok = inventory::load_str("t.yaml", &text.replace("v1.99.0", "v1.34.2"))
        .unwrap()
        .inventory;
    assert!(inventory::check_k3s_version(&ok, "t.yaml", &pinned).is_none());
}
