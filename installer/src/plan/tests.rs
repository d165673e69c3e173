//! Unit tests of the plan: exact orders and edges on small inventories.

use super::*;

fn inventory(yaml: &str) -> Inventory {
    match serde_saphyr::from_str::<Inventory>(yaml) {
        Ok(inv) => inv,
        Err(e) => panic!("test inventory does not parse: {e}\n{yaml}"),
    }
}

fn plan_of<'a>(inv: &'a Inventory, limit: Option<&str>, layers: &[Layer]) -> Plan<'a> {
    let selection = Selection {
        limit: limit.map(|l| Limit::parse(l).expect("valid limit")),
        layers: layers.to_vec(),
    };
    build(inv, &selection).expect("plan builds")
}

fn keys(plan: &Plan<'_>) -> Vec<String> {
    plan.tasks().iter().map(Task::key).collect()
}

fn task<'p, 'a>(plan: &'p Plan<'a>, key: &str) -> &'p Task<'a> {
    plan.tasks()
        .iter()
        .find(|t| t.key() == key)
        .unwrap_or_else(|| panic!("no task {key} in {:?}", keys(plan)))
}

fn deps(plan: &Plan<'_>, key: &str) -> Vec<String> {
    task(plan, key)
        .deps
        .iter()
        .map(|d| plan.task(*d).expect("dep in plan").key())
        .collect()
}

fn text(plan: &Plan<'_>) -> String {
    let mut out = Vec::new();
    render_text(plan, &mut out, false).expect("render");
    String::from_utf8(out).expect("utf-8")
}

/// A site block in YAML: `nodes` are (name, role) pairs, all existing machines.
fn site(name: &str, nodes: &[(&str, &str)]) -> String {
    let mut s = format!("  - name: {name}\n    nodes:\n");
    for (i, (n, role)) in nodes.iter().enumerate() {
        s.push_str(&format!(
            "      - {{ name: {n}, role: {role}, address: 10.{}.0.{} }}\n",
            name.len(),
            i + 1
        ));
    }
    s
}

fn doc(federation: &str, sites: &[String]) -> String {
    format!(
        "apiVersion: edgeforge/v1\nfederation: {{ type: {federation} }}\nsites:\n{}",
        sites.concat()
    )
}

const LAB: &str = "\
apiVersion: edgeforge/v1
federation: { type: karmada, kubeconfig: /tmp/karmada.conf }
hypervisors:
  - { name: kvm1, uri: 'qemu+ssh://root@10.0.0.5/system' }
sites:
  - name: lab
    nodes:
      - { name: vm-s1, role: server, address: 127.0.0.1, machine: { type: libvirt, hypervisor: kvm1 } }
      - { name: vm-a1, role: agent, address: 127.0.0.1, machine: { type: libvirt, hypervisor: kvm1 } }
  - name: core
    nodes:
      - { name: host1, role: server, address: 10.0.0.5, hypervisorHost: true }
";

#[test]
fn single_site_has_exact_order_and_edges() {
    let inv = inventory(&doc(
        "karmada",
        &[site(
            "s",
            &[("s1", "server"), ("s2", "server"), ("a1", "agent")],
        )],
    ));
    let plan = plan_of(&inv, None, &[]);
    assert_eq!(
        keys(&plan),
        [
            "s1/machine",
            "s1/os",
            "s1/k3s",
            "s2/machine",
            "s2/os",
            "s2/k3s",
            "a1/machine",
            "a1/os",
            "a1/k3s",
            "site/s/kubeconfig",
            "site/s/register",
        ]
    );
    assert!(deps(&plan, "s1/machine").is_empty());
    assert_eq!(deps(&plan, "s1/os"), ["s1/machine"]);
    assert_eq!(deps(&plan, "s1/k3s"), ["s1/os"]);
    assert_eq!(deps(&plan, "s2/k3s"), ["s1/k3s", "s2/os"]);
    assert_eq!(deps(&plan, "a1/k3s"), ["s1/k3s", "s2/k3s", "a1/os"]);
    assert_eq!(
        deps(&plan, "site/s/kubeconfig"),
        ["s1/k3s", "s2/k3s", "a1/k3s"]
    );
    assert_eq!(deps(&plan, "site/s/register"), ["site/s/kubeconfig"]);
    assert_eq!(task(&plan, "s1/k3s").action, Action::InitFirstServer);
    assert_eq!(
        task(&plan, "s2/k3s").action,
        Action::JoinServer { first: "s1" }
    );
    assert_eq!(
        task(&plan, "site/s/register").action.to_string(),
        "register cluster s into karmada"
    );
    // Waves: machine/os of all nodes in parallel, then s1, s2, a1, kubeconfig, register.
    assert_eq!(task(&plan, "a1/os").wave, 1);
    assert_eq!(task(&plan, "s1/k3s").wave, 2);
    assert_eq!(task(&plan, "s2/k3s").wave, 3);
    assert_eq!(task(&plan, "a1/k3s").wave, 4);
    assert_eq!(task(&plan, "site/s/register").wave, 6);
    assert_eq!(plan.wave_count(), 7);
}

#[test]
fn first_server_is_the_first_server_in_file_order_even_after_agents() {
    let inv = inventory(&doc(
        "none",
        &[site(
            "s",
            &[("a1", "agent"), ("s1", "server"), ("s2", "server")],
        )],
    ));
    let plan = plan_of(&inv, None, &[]);
    assert_eq!(task(&plan, "s1/k3s").action, Action::InitFirstServer);
    assert_eq!(deps(&plan, "s2/k3s"), ["s1/k3s", "s2/os"]);
    assert_eq!(deps(&plan, "a1/k3s"), ["a1/os", "s1/k3s", "s2/k3s"]);
    let order = keys(&plan);
    let pos = |k: &str| order.iter().position(|x| x == k).expect(k);
    assert!(pos("s1/k3s") < pos("s2/k3s"));
    assert!(pos("s2/k3s") < pos("a1/k3s"));
    // The agent's machine and OS still come first: they wait for nothing.
    assert_eq!(&order[..2], ["a1/machine", "a1/os"]);
}

#[test]
fn federation_none_omits_registration_and_kubefed_names_its_playbook() {
    let inv = inventory(&doc("none", &[site("s", &[("s1", "server")])]));
    let plan = plan_of(&inv, None, &[]);
    assert!(plan.tasks().iter().all(|t| t.layer != Layer::Federation));
    assert_eq!(
        keys(&plan).last().map(String::as_str),
        Some("site/s/kubeconfig")
    );

    let inv = inventory(&doc("kubefed", &[site("s", &[("s1", "server")])]));
    let plan = plan_of(&inv, None, &[]);
    let register = task(&plan, "site/s/register");
    assert_eq!(register.action.playbook(), "federation/kubefed");
    assert_eq!(
        register.action.to_string(),
        "register cluster s into kubefed"
    );
}

#[test]
fn vms_wait_for_their_hypervisor_node_even_when_it_comes_later_in_the_file() {
    let inv = inventory(LAB);
    let plan = plan_of(&inv, None, &[]);
    assert_eq!(deps(&plan, "vm-s1/machine"), ["host1/virt"]);
    assert_eq!(deps(&plan, "vm-a1/machine"), ["host1/virt"]);
    assert_eq!(deps(&plan, "host1/virt"), ["host1/os"]);
    assert_eq!(deps(&plan, "host1/k3s"), ["host1/virt"]);
    assert_eq!(
        keys(&plan)[..4],
        ["host1/machine", "host1/os", "host1/virt", "vm-s1/machine"]
    );
    for t in plan.tasks() {
        assert_eq!(plan.task(t.id).map(|x| x.id), Some(t.id));
        assert!(
            t.deps.iter().all(|d| *d < t.id),
            "{} has a later dep",
            t.key()
        );
    }
}

#[test]
fn hypervisor_is_matched_by_name_and_unknown_hypervisors_add_no_edge() {
    let by_name = LAB
        .replace("'qemu+ssh://root@10.0.0.5/system'", "'qemu:///system'")
        .replace("name: kvm1", "name: host1")
        .replace("hypervisor: kvm1", "hypervisor: host1");
    let inv = inventory(&by_name);
    let plan = plan_of(&inv, None, &[]);
    assert_eq!(deps(&plan, "vm-s1/machine"), ["host1/virt"]);

    let elsewhere = LAB.replace("10.0.0.5/system", "10.9.9.9/system");
    let inv = inventory(&elsewhere);
    let plan = plan_of(&inv, None, &[]);
    assert!(deps(&plan, "vm-s1/machine").is_empty());
    assert_eq!(keys(&plan)[0], "vm-s1/machine");
}

#[test]
fn a_vm_hosting_its_own_hypervisor_is_a_cycle() {
    let yaml = "\
apiVersion: edgeforge/v1
hypervisors: [ { name: h1, uri: 'qemu:///system' } ]
sites:
  - name: s
    nodes:
      - { name: h1, role: server, address: 10.0.0.1, hypervisorHost: true, machine: { type: libvirt, hypervisor: h1 } }
";
    let inv = inventory(yaml);
    match build(&inv, &Selection::default()) {
        Err(PlanError::Cycle { tasks }) => assert!(tasks.contains("h1/machine"), "{tasks}"),
        other => panic!("expected a cycle, got {other:?}"),
    }
}

#[test]
fn a_site_without_server_and_duplicate_node_names_are_errors() {
    let inv = inventory(&doc("none", &[site("s", &[("a1", "agent")])]));
    let err = build(&inv, &Selection::default()).expect_err("no server");
    assert!(
        matches!(&err, PlanError::NoServer { site, .. } if site == "s"),
        "{err}"
    );

    let inv = inventory(&doc(
        "none",
        &[
            site("s", &[("n1", "server")]),
            site("t", &[("n1", "server")]),
        ],
    ));
    let err = build(&inv, &Selection::default()).expect_err("duplicate");
    assert!(
        matches!(&err, PlanError::DuplicateNode { name, .. } if name == "n1"),
        "{err}"
    );
}

fn three_sites() -> Inventory {
    inventory(&doc(
        "karmada",
        &[
            site("berlin-1", &[("b1-s", "server"), ("b1-a", "agent")]),
            site("berlin-2", &[("b2-s", "server"), ("b2-a", "agent")]),
            site("paris-1", &[("p1-s", "server")]),
        ],
    ))
}

fn nodes_of<'a>(plan: &Plan<'a>) -> Vec<&'a str> {
    let mut nodes: Vec<&str> = plan
        .tasks()
        .iter()
        .filter_map(|t| t.node.map(|n| n.name.as_str()))
        .collect();
    nodes.dedup();
    nodes
}

#[test]
fn limit_selects_nodes_by_name_and_site_with_exclusions() {
    let inv = three_sites();
    let cases: [(&str, &[&str]); 6] = [
        ("b1-s", &["b1-s"]),
        ("*-a", &["b1-a", "b2-a"]),
        ("site:berlin-*", &["b1-s", "b1-a", "b2-s", "b2-a"]),
        ("site:berlin-*,!b2-a", &["b1-s", "b1-a", "b2-s"]),
        ("!site:berlin-?", &["p1-s"]),
        ("p1-s, b1-?", &["b1-s", "b1-a", "p1-s"]),
    ];
    for (limit, want) in cases {
        let plan = plan_of(&inv, Some(limit), &[]);
        assert_eq!(nodes_of(&plan), want, "--limit {limit}");
    }
}

#[test]
fn limit_keeps_cluster_tasks_of_touched_sites_and_marks_outside_deps_external() {
    let inv = three_sites();
    let plan = plan_of(&inv, Some("b1-a"), &[]);
    assert_eq!(
        keys(&plan),
        [
            "b1-a/machine",
            "b1-a/os",
            "b1-a/k3s",
            "site/berlin-1/kubeconfig",
            "site/berlin-1/register",
        ]
    );
    assert_eq!(task(&plan, "b1-a/k3s").external_deps, ["b1-s/k3s"]);
    assert_eq!(deps(&plan, "b1-a/k3s"), ["b1-a/os"]);
    assert_eq!(
        task(&plan, "site/berlin-1/kubeconfig").external_deps,
        ["b1-s/k3s"]
    );
    assert_eq!(deps(&plan, "site/berlin-1/kubeconfig"), ["b1-a/k3s"]);
    // External deps do not hold anything back: the agent's k3s is wave 2.
    assert_eq!(task(&plan, "b1-a/k3s").wave, 2);
    let shown = text(&plan);
    assert!(
        shown.contains("after b1-a/os, b1-s/k3s (external, assumed done)"),
        "{shown}"
    );
}

#[test]
fn limit_selects_tasks_by_key() {
    let inv = three_sites();
    let plan = plan_of(&inv, Some("task:*/os"), &[]);
    assert!(
        keys(&plan).iter().all(|k| k.ends_with("/os")),
        "{:?}",
        keys(&plan)
    );
    assert_eq!(keys(&plan).len(), 5);
    let plan = plan_of(&inv, Some("site:berlin-1,!task:site/*"), &[]);
    assert_eq!(
        keys(&plan),
        [
            "b1-s/machine",
            "b1-s/os",
            "b1-s/k3s",
            "b1-a/machine",
            "b1-a/os",
            "b1-a/k3s"
        ]
    );
    let plan = plan_of(&inv, Some("task:site/paris-1/*"), &[]);
    assert_eq!(
        keys(&plan),
        ["site/paris-1/kubeconfig", "site/paris-1/register"]
    );
    let plan = plan_of(&inv, Some("b1-a,task:p1-s/os"), &[]);
    assert!(
        keys(&plan).contains(&"p1-s/os".to_string()),
        "{:?}",
        keys(&plan)
    );
    assert!(
        !keys(&plan).contains(&"site/paris-1/kubeconfig".to_string()),
        "{:?}",
        keys(&plan)
    );
}

#[test]
fn limit_matching_nothing_is_an_error() {
    let inv = three_sites();
    for limit in ["nobody", "site:rome-*", "!*", "task:nothing/*"] {
        let selection = Selection {
            limit: Some(Limit::parse(limit).expect("parses")),
            layers: Vec::new(),
        };
        match build(&inv, &selection) {
            Err(PlanError::LimitMatchesNothing { pattern }) => assert_eq!(pattern, limit),
            other => panic!("--limit {limit}: expected an error, got {other:?}"),
        }
    }
}

#[test]
fn layer_selection_keeps_only_those_layers() {
    let inv = three_sites();
    let plan = plan_of(&inv, Some("site:paris-1"), &[Layer::K3s, Layer::Federation]);
    assert_eq!(
        keys(&plan),
        [
            "p1-s/k3s",
            "site/paris-1/kubeconfig",
            "site/paris-1/register"
        ]
    );
    assert_eq!(task(&plan, "p1-s/k3s").external_deps, ["p1-s/os"]);
    assert_eq!(task(&plan, "p1-s/k3s").wave, 0);
    assert_eq!(
        deps(&plan, "site/paris-1/register"),
        ["site/paris-1/kubeconfig"]
    );
}

#[test]
fn output_is_deterministic_and_a_site_subplan_ignores_unrelated_sites() {
    let a = site("alpha", &[("al-s", "server"), ("al-a", "agent")]);
    let b = site(
        "beta",
        &[("be-s", "server"), ("be-s2", "server"), ("be-a", "agent")],
    );
    let c = site("gamma", &[("ga-s", "server")]);
    let one = inventory(&doc("karmada", &[a.clone(), b.clone(), c.clone()]));
    let two = inventory(&doc("karmada", &[c, b, a]));
    let p1 = plan_of(&one, None, &[]);
    assert_eq!(text(&p1), text(&plan_of(&one, None, &[])));
    let mut j1 = Vec::new();
    let mut j2 = Vec::new();
    render_json(&p1, &mut j1).expect("json");
    render_json(&plan_of(&one, None, &[]), &mut j2).expect("json");
    assert_eq!(j1, j2);

    let p2 = plan_of(&two, None, &[]);
    let site_keys = |p: &Plan<'_>, s: &str| -> Vec<(String, Vec<String>, u32)> {
        p.tasks()
            .iter()
            .filter(|t| t.site.name.as_str() == s)
            .map(|t| (t.key(), deps(p, &t.key()), t.wave))
            .collect()
    };
    let block = |p: &Plan<'_>, s: &str| -> String {
        let all = text(p);
        let start = all.find(&format!("\nsite {s}\n")).expect("site block");
        let rest = &all[start + 1..];
        let end = rest[1..].find("\nsite ").map_or(rest.len(), |e| e + 1);
        rest[..end].trim_end().to_string()
    };
    for s in ["alpha", "beta", "gamma"] {
        assert_eq!(site_keys(&p1, s), site_keys(&p2, s), "site {s}");
        assert_eq!(block(&p1, s), block(&p2, s), "site {s}");
    }
    assert!(block(&p1, "beta").contains("join as agent via be-s"));
}

#[test]
fn waves_and_scheduler_respect_every_dependency() {
    let inv = inventory(LAB);
    let plan = plan_of(&inv, None, &[]);
    let waves = plan.waves();
    assert_eq!(waves.len() as u32, plan.wave_count());
    assert_eq!(
        waves.iter().map(Vec::len).sum::<usize>(),
        plan.tasks().len()
    );
    for (w, ids) in waves.iter().enumerate() {
        for id in ids {
            let t = plan.task(*id).expect("task");
            assert_eq!(t.wave as usize, w);
            for d in &t.deps {
                assert!(plan.task(*d).expect("dep").wave < t.wave);
            }
        }
    }
    // Drive the scheduler to the end, checking each task only runs after its deps.
    let mut sched = plan.scheduler();
    let mut done = vec![false; plan.tasks().len()];
    let mut ready = sched.initial();
    assert_eq!(
        ready
            .iter()
            .map(|id| plan.tasks()[id.index()].key())
            .collect::<Vec<_>>(),
        ["host1/machine"]
    );
    let mut ran = 0;
    while let Some(id) = ready.pop() {
        let t = plan.task(id).expect("task");
        assert!(
            t.deps.iter().all(|d| done[d.index()]),
            "{} ran early",
            t.key()
        );
        done[id.index()] = true;
        ran += 1;
        ready.extend(sched.complete(id));
    }
    assert_eq!(ran, plan.tasks().len());
}

#[test]
fn attach_builds_a_side_table_indexed_by_task_id() {
    let inv = inventory(LAB);
    let plan = plan_of(&inv, None, &[]);
    let table: Vec<&str> = plan
        .attach(|t| Ok::<_, ()>(t.action.playbook()))
        .expect("no error");
    assert_eq!(table.len(), plan.tasks().len());
    let id = task(&plan, "host1/virt").id;
    assert_eq!(table[id.index()], "virt");
    let id = task(&plan, "vm-a1/k3s").id;
    assert_eq!(table[id.index()], "k3s/agent-join");
}

#[test]
fn dot_output_is_a_digraph_with_one_cluster_per_site() {
    let inv = inventory(LAB);
    let plan = plan_of(&inv, Some("site:lab"), &[]);
    let mut out = Vec::new();
    render_dot(&plan, &mut out).expect("dot");
    let dot = String::from_utf8(out).expect("utf-8");
    assert!(dot.starts_with("digraph edgeforge_plan {\n"), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
    assert_eq!(dot.matches("subgraph cluster_site_").count(), 1);
    assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    assert!(dot.contains("\"external:host1/virt\" -> \"vm-s1/machine\" [style=dashed];"));
    assert!(dot.contains("\"vm-s1/k3s\" -> \"vm-a1/k3s\";"));
    let edges: usize = plan
        .tasks()
        .iter()
        .map(|t| t.deps.len() + t.external_deps.len())
        .sum();
    assert_eq!(dot.matches(" -> ").count(), edges);
    if let Some(svg) = run_dot(&dot) {
        assert!(svg.contains("<svg"), "dot did not render: {svg}");
    }
}

/// Renders with Graphviz when it is installed; `None` when it is not.
fn run_dot(dot: &str) -> Option<String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dot.as_bytes())
        .expect("write to dot");
    let out = child.wait_with_output().expect("dot runs");
    assert!(
        out.status.success(),
        "dot rejected the graph: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn json_output_follows_the_documented_schema() {
    let inv = inventory(LAB);
    let plan = plan_of(&inv, Some("vm-*"), &[]);
    let mut out = Vec::new();
    render_json(&plan, &mut out).expect("json");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(v["schema"], JSON_SCHEMA_VERSION);
    assert_eq!(v["selection"]["limit"], "vm-*");
    assert_eq!(v["summary"]["nodes"], 2);
    assert_eq!(v["summary"]["sites"], 1);
    let tasks = v["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), plan.tasks().len());
    assert_eq!(v["summary"]["tasks"], tasks.len());
    let first = &tasks[0];
    assert_eq!(first["id"], 0);
    assert_eq!(first["key"], "vm-s1/machine");
    assert_eq!(first["node"], "vm-s1");
    assert_eq!(first["layer"], "machine");
    assert_eq!(first["action"], "define-vm");
    assert_eq!(first["playbook"], "machine/libvirt");
    assert_eq!(first["external_deps"], serde_json::json!(["host1/virt"]));
    let last = tasks.last().expect("a task");
    assert_eq!(last["key"], "site/lab/register");
    assert_eq!(last["node"], serde_json::Value::Null);
    assert_eq!(last["deps"], serde_json::json!(["site/lab/kubeconfig"]));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// (is server, machine: 0 existing / 1 VM / 2 Redfish, hypervisor host)
    type NodeSpec = (bool, u8, bool);

    fn yaml(sites: &[Vec<NodeSpec>], vm_host_pick: &[usize]) -> String {
        let hosts: Vec<String> = sites
            .iter()
            .enumerate()
            .flat_map(|(s, nodes)| {
                nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.2)
                    .map(move |(i, _)| format!("n{s}-{i}"))
            })
            .collect();
        let mut y = String::from("apiVersion: edgeforge/v1\nfederation: { type: karmada }\n");
        y.push_str(
            "hypervisors:\n  - { name: outside, uri: 'qemu+ssh://root@192.0.2.1/system' }\n",
        );
        for h in &hosts {
            y.push_str(&format!("  - {{ name: {h}, uri: 'qemu:///system' }}\n"));
        }
        y.push_str("sites:\n");
        let mut pick = vm_host_pick.iter().cycle();
        for (s, nodes) in sites.iter().enumerate() {
            y.push_str(&format!("  - name: site{s}\n    nodes:\n"));
            for (i, (server, machine, host)) in nodes.iter().enumerate() {
                let role = if *server { "server" } else { "agent" };
                let machine = match (machine, host) {
                    (_, true) | (0, _) => String::new(),
                    (1, _) => {
                        let k = pick.next().copied().unwrap_or(0) % (hosts.len() + 1);
                        let hv = hosts.get(k).map_or("outside", String::as_str);
                        format!(", machine: {{ type: libvirt, hypervisor: {hv} }}")
                    }
                    _ => ", machine: { type: redfish, endpoint: 'https://192.0.2.9', username: u, password: { env: P } }".to_string(),
                };
                y.push_str(&format!(
                    "      - {{ name: n{s}-{i}, role: {role}, address: 10.0.{s}.{i}, hypervisorHost: {host}{machine} }}\n"
                ));
            }
        }
        y
    }

    fn fleet() -> impl Strategy<Value = (Vec<Vec<NodeSpec>>, Vec<usize>)> {
        let node = (any::<bool>(), 0u8..3, prop::bool::weighted(0.2));
        let site = prop::collection::vec(node, 1..5).prop_map(|mut nodes| {
            // Every site needs a server; put it anywhere but keep the rest as drawn.
            if !nodes.iter().any(|n| n.0) {
                let last = nodes.len() - 1;
                nodes[last].0 = true;
            }
            nodes
        });
        (
            prop::collection::vec(site, 1..6),
            prop::collection::vec(0usize..50, 1..8),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_plan_orders_clusters_correctly((sites, picks) in fleet(), limit_mask in any::<u64>()) {
            let inv = inventory(&yaml(&sites, &picks));
            let plan = plan_of(&inv, None, &[]);
            prop_assert_eq!(keys(&plan), keys(&plan_of(&inv, None, &[])));
            let pos: HashMap<String, TaskId> = plan.tasks().iter().map(|t| (t.key(), t.id)).collect();
            for t in plan.tasks() {
                prop_assert!(t.deps.iter().all(|d| *d < t.id), "{} has a later dep", t.key());
            }
            for (s, nodes) in sites.iter().enumerate() {
                let first = nodes.iter().position(|n| n.0).expect("a server");
                let k3s = |i: usize| pos[&format!("n{s}-{i}/k3s")];
                let kubeconfig = pos[&format!("site/site{s}/kubeconfig")];
                let register = pos[&format!("site/site{s}/register")];
                prop_assert!(kubeconfig < register, "site{} kubeconfig before register", s);
                for (i, n) in nodes.iter().enumerate() {
                    let (machine, os) = (pos[&format!("n{s}-{i}/machine")], pos[&format!("n{s}-{i}/os")]);
                    prop_assert!(machine < os, "n{}-{} machine before os", s, i);
                    prop_assert!(k3s(i) < kubeconfig, "n{}-{} k3s before kubeconfig", s, i);
                    if i != first {
                        prop_assert!(k3s(first) < k3s(i), "first server before n{}-{}", s, i);
                    }
                    if !n.0 {
                        for (j, m) in nodes.iter().enumerate() {
                            if m.0 {
                                prop_assert!(k3s(j) < k3s(i), "server n{}-{} before agent n{}-{}", s, j, s, i);
                            }
                        }
                    }
                    if let Machine::Libvirt { hypervisor, .. } = &inv.sites[s].nodes[i].machine
                        && hypervisor != "outside"
                    {
                        let virt = pos[&format!("{hypervisor}/virt")];
                        prop_assert!(virt < machine, "{} virt before VM n{}-{}", hypervisor, s, i);
                    }
                }
            }

            // A limit naming some nodes keeps exactly those, and every dependency
            // of a kept task is either kept or listed as external.
            let names: Vec<String> = inv.nodes().map(|n| n.node.name.value.clone()).collect();
            let chosen: Vec<&String> = names.iter().enumerate().filter(|(i, _)| limit_mask & (1 << (i % 64)) != 0).map(|(_, n)| n).collect();
            prop_assume!(!chosen.is_empty());
            let pattern = chosen.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(",");
            let limited = plan_of(&inv, Some(&pattern), &[]);
            let kept: BTreeSet<&str> = limited.tasks().iter().filter_map(|t| t.node.map(|n| n.name.as_str())).collect();
            prop_assert_eq!(kept, chosen.iter().map(|n| n.as_str()).collect::<BTreeSet<_>>());
            for t in limited.tasks() {
                let full = plan.task(pos[&t.key()]).expect("in the full plan");
                let mut want: Vec<String> = full.deps.iter().map(|d| plan.tasks()[d.index()].key()).collect();
                let mut got: Vec<String> = t.deps.iter().map(|d| limited.tasks()[d.index()].key()).collect();
                got.extend(t.external_deps.iter().cloned());
                want.sort();
                got.sort();
                prop_assert_eq!(want, got, "deps of {}", t.key());
            }
        }
    }
}
