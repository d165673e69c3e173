//! Every step kind applied over real SSH by the `edgeforge` binary: the
//! first apply changes, a re-apply (journal) skips, a `--force` re-apply
//! re-checks every step on the host and changes nothing; plus the 20-node,
//! 20-step must-show.
//!
//! Steps that change the machine itself (package, service, sysctl,
//! kernel_module, user, hostname) only run here in `--check` mode: this
//! machine is shared by every test, and the os layer is exercised for real
//! inside VMs by the lab e2e.

use std::fs;

use edgeforge_tests::SshdFleet;
use edgeforge_tests::apply::{FLEET_STEPS, InventoryOpts, NODE_ROOT, Scenario};

/// `R` in the playbooks below: the node's own root directory.
const R: &str = NODE_ROOT;

fn steps_playbook() -> String {
    format!(
        r#"  - name: dir
    file: {{ path: "{R}/etc/app", state: directory, mode: "0750" }}
  - name: touch
    file: {{ path: "{R}/etc/app/touched", state: touch }}
  - name: template
    template: {{ src: app.conf.j2, dest: "{R}/etc/app/app.conf", mode: "0640" }}
  - name: copy
    copy: {{ content: "welcome to {{{{ node.name }}}}\n", dest: "{R}/etc/motd" }}
  - name: symlink
    file: {{ path: "{R}/etc/app/current", state: symlink, src: "{R}/etc/app/app.conf" }}
  - name: absent
    file: {{ path: "{R}/stale", state: absent }}
  - name: lineinfile
    lineinfile: {{ path: "{R}/etc/limits", line: "nofile=4096", regexp: "^nofile=", create: true }}
  - name: command creates
    command: {{ cmd: "echo creates >> {R}/runs; touch {R}/created", creates: "{R}/created" }}
  - name: command unless
    command: {{ cmd: "echo unless >> {R}/runs; touch {R}/flag", unless: "test -f {R}/flag" }}
  - name: command removes
    command: {{ cmd: "echo removes >> {R}/runs; rm {R}/remove-me", removes: "{R}/remove-me" }}
  - name: script
    script: {{ inline: "echo script >> {R}/runs; echo done > {R}/script.out", creates: "{R}/script.out" }}
  - name: wait_for
    wait_for: {{ path: "{R}/created", timeout: 10 }}
"#
    )
}

#[test]
fn every_step_kind_changes_once_then_never() {
    let fleet = SshdFleet::start(2).unwrap();
    let sc = Scenario::new(&fleet, &InventoryOpts::default());
    sc.template(
        "app.conf.j2",
        "# managed\nname = {{ node.name }}\nsite = {{ site.name }}\nrole = {{ node.role }}\n",
    );
    let pb = sc.playbook("steps", &steps_playbook());
    for n in fleet.nodes() {
        fs::write(n.root().join("stale"), "old").unwrap();
        fs::write(n.root().join("remove-me"), "x").unwrap();
        fs::write(n.root().join("etc-limits-placeholder"), "").unwrap();
    }

    let first = sc.apply(&pb, "first.jsonl", &[]);
    assert_eq!(first.code, 0, "{}", first.dump());
    for host in ["node0", "node1"] {
        for step in [
            "dir",
            "touch",
            "template",
            "copy",
            "symlink",
            "absent",
            "lineinfile",
            "command creates",
            "command unless",
            "command removes",
            "script",
        ] {
            assert_eq!(
                first.status(host, step),
                "changed",
                "{host} {step}\n{}",
                first.dump()
            );
        }
        assert_eq!(first.status(host, "wait_for"), "ok", "{}", first.dump());
    }
    for (i, n) in fleet.nodes().iter().enumerate() {
        let r = n.root();
        assert_eq!(
            fs::read_to_string(r.join("etc/app/app.conf")).unwrap(),
            format!(
                "# managed\nname = node{i}\nsite = site-0\nrole = {}\n",
                if i == 0 { "server" } else { "agent" }
            )
        );
        assert_eq!(
            fs::read_to_string(r.join("etc/motd")).unwrap(),
            format!("welcome to node{i}\n")
        );
        assert_eq!(
            fs::read_link(r.join("etc/app/current")).unwrap(),
            r.join("etc/app/app.conf")
        );
        assert_eq!(
            fs::read_to_string(r.join("etc/limits")).unwrap(),
            "nofile=4096\n"
        );
        assert!(!r.join("stale").exists() && !r.join("remove-me").exists());
        assert_eq!(
            fs::read_to_string(r.join("runs")).unwrap(),
            "creates\nunless\nremoves\nscript\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("etc/app"), 0o750);
        assert_eq!(mode("etc/app/app.conf"), 0o640);
    }

    // Re-apply: the journal says every step was applied with the same inputs.
    let second = sc.apply(&pb, "second.jsonl", &[]);
    assert_eq!(second.code, 0, "{}", second.dump());
    assert_eq!(second.count("changed"), 0, "{}", second.dump());
    assert_eq!(second.count("skipped"), 24, "{}", second.dump());

    // --force: every step re-checks the host, and finds nothing to do.
    let forced = sc.apply(&pb, "forced.jsonl", &["--force"]);
    assert_eq!(forced.code, 0, "{}", forced.dump());
    assert_eq!(forced.count("changed"), 0, "{}", forced.dump());
    assert_eq!(forced.count("ok"), 24, "{}", forced.dump());
    for n in fleet.nodes() {
        assert_eq!(
            fs::read_to_string(n.root().join("runs")).unwrap(),
            "creates\nunless\nremoves\nscript\n",
            "no guarded command ran again"
        );
    }

    // Drift is repaired by --force on the step that drifted, and only there.
    fs::write(fleet.node(1).root().join("etc/limits"), "nofile=1\n").unwrap();
    let repaired = sc.apply(&pb, "repaired.jsonl", &["--force"]);
    assert_eq!(repaired.code, 0, "{}", repaired.dump());
    assert_eq!(repaired.count("changed"), 1, "{}", repaired.dump());
    assert_eq!(repaired.status("node1", "lineinfile"), "changed");
    assert_eq!(
        fs::read_to_string(fleet.node(1).root().join("etc/limits")).unwrap(),
        "nofile=4096\n"
    );
}

#[test]
fn machine_level_steps_run_in_check_mode_and_change_nothing() {
    let fleet = SshdFleet::start(1).unwrap();
    let sc = Scenario::new(&fleet, &InventoryOpts::default());
    let pb = sc.playbook(
        "machine",
        &format!(
            r#"  - name: hostname
    hostname: {{ name: "{{{{ node.name }}}}" }}
  - name: package
    package: {{ name: [openssh-server] }}
  - name: sysctl
    sysctl: {{ name: net.ipv4.ip_forward, value: "1", file: "{R}/99-edgeforge.conf" }}
  - name: kernel_module
    kernel_module: {{ name: overlay, file: "{R}/modules.conf" }}
  - name: user
    user: {{ name: edgeforge-e2e-nobody }}
"#
        ),
    );
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let run = sc.apply(&pb, "check.jsonl", &["--check"]);
    assert_eq!(run.code, 0, "{}", run.dump());
    // This machine is not called node0 and has no such user: those would change.
    assert_eq!(run.status("node0", "hostname"), "changed", "{}", run.dump());
    assert_eq!(run.status("node0", "user"), "changed", "{}", run.dump());
    assert_eq!(run.status("node0", "package"), "ok", "{}", run.dump());
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname
    );
    assert!(!fleet.node(0).root().join("99-edgeforge.conf").exists());
    assert!(!fleet.node(0).root().join("modules.conf").exists());
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    assert!(!passwd.contains("edgeforge-e2e-nobody"));
}

/// The must-show: 20 nodes, 20 steps, applied then re-applied; the second
/// run (journal) and a third (`--force`, every step re-checked on the host)
/// change nothing.
#[test]
fn twenty_nodes_twenty_steps_reapplied_change_nothing() {
    let fleet = SshdFleet::start(20).unwrap();
    let sc = Scenario::new(
        &fleet,
        &InventoryOpts {
            per_site: 4,
            ..Default::default()
        },
    );
    let pb = sc.fleet_playbook();
    let total = 20 * FLEET_STEPS;

    let first = sc.apply(&pb, "first.jsonl", &[]);
    assert_eq!(first.code, 0, "{}", first.dump());
    assert_eq!(first.count("changed"), total, "{}", first.dump());
    assert_eq!(first.finished()["ok_tasks"], 20);

    let second = sc.apply(&pb, "second.jsonl", &[]);
    assert_eq!(second.code, 0, "{}", second.dump());
    assert_eq!(second.count("changed"), 0, "{}", second.dump());
    assert_eq!(second.count("skipped"), total, "{}", second.dump());

    let forced = sc.apply(&pb, "forced.jsonl", &["--force"]);
    assert_eq!(forced.code, 0, "{}", forced.dump());
    assert_eq!(forced.count("changed"), 0, "{}", forced.dump());
    assert_eq!(forced.count("ok"), total, "{}", forced.dump());

    for (i, n) in fleet.nodes().iter().enumerate() {
        let r = n.root();
        assert_eq!(
            fs::read(r.join("var/edge/blob1.bin")).unwrap(),
            fs::read(sc.path("blob1.bin")).unwrap()
        );
        let t = fs::read_to_string(r.join("etc/edge/t7.conf")).unwrap();
        assert!(t.starts_with(&format!("# template 7 of node{i}\n")), "{t}");
        assert_eq!(
            fs::read_to_string(r.join("etc/edge/settings")).unwrap(),
            "key0=value0\nkey1=value1\nkey2=value2\nkey3=value3\n"
        );
        assert_eq!(
            fs::read_to_string(r.join("var/edge/ran")).unwrap(),
            "0\n1\n2\n3\n"
        );
    }
}

/// Handlers run once when a notifying step changed, `register` feeds a
/// later `when`, and `--tags` picks steps — over SSH, across re-applies.
#[test]
fn handlers_register_when_and_tags_over_ssh() {
    let fleet = SshdFleet::start(1).unwrap();
    let sc = Scenario::new(&fleet, &InventoryOpts::default());
    sc.template("svc.j2", "version = 1\n");
    let pb = sc.playbook(
        "flow",
        &format!(
            r#"  - name: config
    template: {{ src: svc.j2, dest: "{R}/svc.conf" }}
    notify: [restart]
  - name: also notifies
    copy: {{ content: "x\n", dest: "{R}/other" }}
    notify: [restart]
  - name: probe
    command: {{ cmd: "echo blue" }}
    register: colour
  - name: only when blue
    copy: {{ content: "{{{{ vars.colour.stdout | trim }}}}\n", dest: "{R}/colour" }}
    when: vars.colour.stdout is starting_with("blue")
  - name: never
    copy: {{ content: "no\n", dest: "{R}/never" }}
    when: vars.colour.stdout is starting_with("red")
  - name: tagged
    command: {{ cmd: "echo tagged >> {R}/tagged" }}
    tags: [extra]
handlers:
  - name: restart
    command: {{ cmd: "echo restarted >> {R}/restarts" }}
"#
        ),
    );
    let root = fleet.node(0).root();
    let first = sc.apply(&pb, "first.jsonl", &["--skip-tags", "extra"]);
    assert_eq!(first.code, 0, "{}", first.dump());
    assert_eq!(
        fs::read_to_string(root.join("restarts")).unwrap(),
        "restarted\n"
    );
    assert_eq!(fs::read_to_string(root.join("colour")).unwrap(), "blue\n");
    assert!(!root.join("never").exists() && !root.join("tagged").exists());
    assert_eq!(first.status("node0", "never"), "skipped");

    // Nothing changed: the handler is not run again, even with --force.
    let forced = sc.apply(&pb, "forced.jsonl", &["--force", "--skip-tags", "extra"]);
    assert_eq!(forced.code, 0, "{}", forced.dump());
    assert_eq!(
        fs::read_to_string(root.join("restarts")).unwrap(),
        "restarted\n"
    );

    // A new template: the step's inputs changed, so the journal does not skip it.
    sc.template("svc.j2", "version = 2\n");
    let third = sc.apply(&pb, "third.jsonl", &["--tags", "extra"]);
    assert_eq!(third.code, 0, "{}", third.dump());
    assert_eq!(
        third.status("node0", "config"),
        "skipped",
        "--tags leaves it out"
    );
    assert_eq!(fs::read_to_string(root.join("tagged")).unwrap(), "tagged\n");
    let fourth = sc.apply(&pb, "fourth.jsonl", &["--skip-tags", "extra"]);
    assert_eq!(fourth.code, 0, "{}", fourth.dump());
    assert_eq!(
        fourth.status("node0", "config"),
        "changed",
        "{}",
        fourth.dump()
    );
    assert_eq!(
        fs::read_to_string(root.join("svc.conf")).unwrap(),
        "version = 2\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("restarts")).unwrap(),
        "restarted\nrestarted\n"
    );
}
