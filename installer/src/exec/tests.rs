//! The executor over local shells: journal skip and resume, handlers, tags,
//! failures, max-fail, waves, interruption and secret redaction.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::testutil::ShellTransport;

/// Records every event.
#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn emit(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Collect {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Rig {
    dir: tempfile::TempDir,
    renderer: Arc<Renderer>,
    data: Arc<DataDir>,
    sink: Arc<Collect>,
    /// Host → fail every request after this many.
    fail_after: Arc<Mutex<HashMap<String, usize>>>,
    /// Every transport the executor opened, in order.
    opened: Arc<Mutex<Vec<Arc<ShellTransport>>>>,
}

const PLAYBOOK: &str = r#"
name: demo
vars:
  greeting: hello
steps:
  - name: dir
    file: { path: "{{ root }}/etc", state: directory }
  - name: config
    template: { src: app.conf.j2, dest: "{{ root }}/etc/app.conf" }
    notify: restart app
  - name: marker
    command: { cmd: "echo x >> {{ root }}/marker-runs", creates: "{{ root }}/never" }
    tags: [marker]
  - name: debian only
    command: { cmd: "touch {{ root }}/debian" }
    when: facts.os_family == "no-such-family"
handlers:
  - name: restart app
    command: { cmd: "echo restarted >> {{ root }}/restarts" }
"#;

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/templates")).unwrap();
        std::fs::write(
            dir.path().join("data/templates/app.conf.j2"),
            "greeting={{ vars.greeting }}\nname={{ node.name }}\n{% if secrets.token is defined %}token={{ secrets.token }}\n{% endif %}",
        )
        .unwrap();
        let data = DataDir::new(Some(&dir.path().join("data")));
        Rig {
            renderer: Arc::new(Renderer::new(&data).unwrap()),
            data: Arc::new(data),
            dir,
            sink: Arc::new(Collect::default()),
            fail_after: Arc::default(),
            opened: Arc::default(),
        }
    }

    fn root(&self, host: &str) -> PathBuf {
        self.dir.path().join("hosts").join(host)
    }

    fn host(&self, name: &str, playbook: &str) -> HostWork {
        let root = self.root(name);
        std::fs::create_dir_all(&root).unwrap();
        HostWork {
            name: name.into(),
            site: format!("site-{name}"),
            context: json!({"node": {"name": name}, "root": root.display().to_string()}),
            playbooks: vec![Arc::new(Playbook::parse("demo.yaml", playbook).unwrap())],
            secrets: BTreeMap::new(),
            requires: Vec::new(),
        }
    }

    fn executor(&self) -> Executor {
        let fail_after = self.fail_after.clone();
        let opened = self.opened.clone();
        let connector: Connector = Arc::new(move |h: &HostWork| {
            let t = Arc::new(ShellTransport {
                fail_after: fail_after.lock().unwrap().get(&h.name).copied(),
                ..ShellTransport::default()
            });
            opened.lock().unwrap().push(t.clone());
            Box::pin(async move { Ok(t as Arc<dyn Transport>) })
        });
        Executor::new(
            self.renderer.clone(),
            self.data.clone(),
            connector,
            self.sink.clone(),
        )
    }

    fn opts(&self) -> RunOptions {
        RunOptions {
            journal_dir: Some(self.dir.path().join("state/journal")),
            ..RunOptions::default()
        }
    }

    /// [`Rig::opts`] with `--force`: every step checks the host.
    fn forced(&self) -> RunOptions {
        RunOptions {
            force: true,
            ..self.opts()
        }
    }

    fn statuses(&self, host: &str) -> Vec<(String, StepStatus)> {
        self.sink
            .take()
            .into_iter()
            .filter_map(|e| match e {
                Event::StepFinished {
                    host: h,
                    step,
                    status,
                    ..
                } if h == host => Some((step, status)),
                _ => None,
            })
            .collect()
    }
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

use StepStatus::{Changed, Failed, Ok as Fine, Skipped};

fn st(list: &[(&str, StepStatus)]) -> Vec<(String, StepStatus)> {
    list.iter().map(|(s, x)| (s.to_string(), *x)).collect()
}

#[tokio::test]
async fn first_run_changes_second_is_skipped_by_the_journal_and_force_reruns() {
    let rig = Rig::new();
    let ex = rig.executor();
    let s = ex
        .run(vec![vec![rig.host("n1", PLAYBOOK)]], &rig.opts())
        .await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Changed),
            ("config", Changed),
            ("marker", Changed),
            ("debian only", Skipped),
            ("restart app", Changed)
        ])
    );
    assert_eq!(
        read(rig.root("n1").join("etc/app.conf")),
        "greeting=hello\nname=n1\n"
    );
    assert_eq!(read(rig.root("n1").join("restarts")), "restarted\n");

    let s = ex
        .run(vec![vec![rig.host("n1", PLAYBOOK)]], &rig.opts())
        .await;
    assert_eq!(s.hosts[0].skipped, 4);
    assert_eq!(s.hosts[0].changed, 0);
    assert_eq!(read(rig.root("n1").join("marker-runs")), "x\n");

    let forced = rig.forced();
    rig.sink.take();
    let s = ex.run(vec![vec![rig.host("n1", PLAYBOOK)]], &forced).await;
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Fine),
            ("config", Fine),
            ("marker", Changed),
            ("debian only", Skipped)
        ]),
        "forced: idempotent steps report ok, the handler is not notified"
    );
    assert_eq!(s.hosts[0].changed, 1);
}

#[tokio::test]
async fn a_changed_input_reruns_that_step_and_its_handler() {
    let rig = Rig::new();
    let ex = rig.executor();
    ex.run(vec![vec![rig.host("n1", PLAYBOOK)]], &rig.opts())
        .await;
    rig.sink.take();
    let edited = PLAYBOOK.replace("greeting: hello", "greeting: bonjour");
    ex.run(vec![vec![rig.host("n1", &edited)]], &rig.opts())
        .await;
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Skipped),
            ("config", Changed),
            ("marker", Skipped),
            ("debian only", Skipped),
            ("restart app", Changed)
        ])
    );
    assert_eq!(
        read(rig.root("n1").join("restarts")),
        "restarted\nrestarted\n"
    );
}

const PLACEMENTS: &str = r#"
name: files
vars:
  greeting: hi
steps:
  - name: dir
    file: { path: "{{ root }}/etc", state: directory }
  - name: a.conf
    template: { src: app.conf.j2, dest: "{{ root }}/etc/a.conf" }
  - name: b.conf
    copy: { content: "b\n", dest: "{{ root }}/etc/b.conf", mode: "0600" }
  - name: c.conf
    copy: { content: "c\n", dest: "{{ root }}/etc/c.conf" }
"#;

#[tokio::test]
async fn placements_in_state_are_confirmed_by_one_probe() {
    let rig = Rig::new();
    let ex = rig.executor();
    let forced = rig.forced();
    ex.run(vec![vec![rig.host("n1", PLACEMENTS)]], &forced)
        .await;
    rig.sink.take();
    let s = ex
        .run(vec![vec![rig.host("n1", PLACEMENTS)]], &forced)
        .await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Fine),
            ("a.conf", Fine),
            ("b.conf", Fine),
            ("c.conf", Fine)
        ])
    );
    let warm = rig.opened.lock().unwrap().last().unwrap().clone();
    let scripts = warm.scripts.lock().unwrap().clone();
    // Facts, the probe of the three files, the dir step: nothing per file.
    assert_eq!(scripts.len(), 3, "{scripts:#?}");
    assert!(scripts[1].contains("sha256sum --"), "{}", scripts[1]);

    // A file that drifted (other mode) is found by the probe and put back.
    let b = rig.root("n1").join("etc/b.conf");
    std::fs::set_permissions(&b, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    ex.run(vec![vec![rig.host("n1", PLACEMENTS)]], &forced)
        .await;
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Fine),
            ("a.conf", Fine),
            ("b.conf", Changed),
            ("c.conf", Fine)
        ])
    );
    let mode = std::fs::metadata(&b).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[tokio::test]
async fn a_change_before_a_probed_file_makes_it_check_again() {
    let rig = Rig::new();
    let ex = rig.executor();
    let forced = rig.forced();
    // The command spoils b.conf after the probe found it in state.
    let playbook = PLACEMENTS.replace(
        "  - name: b.conf\n",
        "  - name: spoil b\n    command: { cmd: \"echo spoiled > {{ root }}/etc/b.conf\" }\n  - name: b.conf\n",
    );
    ex.run(vec![vec![rig.host("n1", &playbook)]], &forced).await;
    rig.sink.take();
    let s = ex.run(vec![vec![rig.host("n1", &playbook)]], &forced).await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Fine),
            ("a.conf", Fine),
            ("spoil b", Changed),
            ("b.conf", Changed),
            ("c.conf", Fine)
        ])
    );
    assert_eq!(read(rig.root("n1").join("etc/b.conf")), "b\n");
}

#[tokio::test]
async fn tags_select_steps() {
    let rig = Rig::new();
    let opts = RunOptions {
        tags: vec!["marker".into()],
        journal_dir: None,
        ..RunOptions::default()
    };
    rig.executor()
        .run(vec![vec![rig.host("n1", PLAYBOOK)]], &opts)
        .await;
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Skipped),
            ("config", Skipped),
            ("marker", Changed),
            ("debian only", Skipped)
        ])
    );
    let opts = RunOptions {
        skip_tags: vec!["marker".into()],
        journal_dir: None,
        ..RunOptions::default()
    };
    rig.executor()
        .run(vec![vec![rig.host("n2", PLAYBOOK)]], &opts)
        .await;
    assert!(!rig.root("n2").join("marker-runs").exists());
}

#[tokio::test]
async fn check_mode_changes_nothing_and_writes_no_journal() {
    let rig = Rig::new();
    let opts = RunOptions {
        check: true,
        ..rig.opts()
    };
    let s = rig
        .executor()
        .run(vec![vec![rig.host("n1", PLAYBOOK)]], &opts)
        .await;
    assert_eq!(s.hosts[0].changed, 4, "{}", s.table());
    let events = rig.sink.take();
    let diff = events.iter().find_map(|e| match e {
        Event::StepFinished { diff: Some(d), .. } => Some(d.clone()),
        _ => None,
    });
    assert!(diff.unwrap().contains("+greeting=hello"));
    assert!(!rig.root("n1").join("etc").exists());
    assert!(!rig.dir.path().join("state/journal/n1.jsonl").exists());
}

#[tokio::test]
async fn a_failing_host_stops_its_chain_and_others_go_on() {
    let rig = Rig::new();
    let bad = PLAYBOOK.replace(
        "state: directory }",
        "state: directory }\n  - name: boom\n    command: { cmd: 'echo broken >&2; exit 4' }",
    );
    let s = rig
        .executor()
        .run(
            vec![vec![rig.host("bad", &bad), rig.host("good", PLAYBOOK)]],
            &rig.opts(),
        )
        .await;
    assert_eq!(s.exit_code(), 1);
    assert_eq!(
        s.hosts[0].outcome,
        HostOutcome::Failed("demo / boom: exited with status 4: broken".into())
    );
    assert_eq!((s.hosts[0].changed, s.hosts[0].failed), (1, 1));
    assert_eq!(s.hosts[1].outcome, HostOutcome::Done);
    assert!(!rig.root("bad").join("etc/app.conf").exists());
    assert!(rig.root("good").join("etc/app.conf").exists());
    assert!(s.table().contains("FAILED: demo / boom"));
}

#[tokio::test]
async fn max_fail_stops_starting_new_hosts() {
    let rig = Rig::new();
    let bad = "name: demo\nsteps:\n  - name: boom\n    command: { cmd: 'exit 1' }\n";
    let opts = RunOptions {
        parallel: 1,
        max_fail: Some(MaxFail::Count(0)),
        ..rig.opts()
    };
    let s = rig
        .executor()
        .run(
            vec![vec![
                rig.host("a", bad),
                rig.host("b", PLAYBOOK),
                rig.host("c", PLAYBOOK),
            ]],
            &opts,
        )
        .await;
    let outcomes: Vec<_> = s.hosts.iter().map(|h| h.outcome.clone()).collect();
    assert!(matches!(outcomes[0], HostOutcome::Failed(_)));
    assert_eq!(
        outcomes[1],
        HostOutcome::NotStarted("--max-fail was exceeded".into())
    );
    assert_eq!(
        outcomes[2],
        HostOutcome::NotStarted("--max-fail was exceeded".into())
    );
    assert_eq!(s.exit_code(), 1);
}

#[tokio::test]
async fn waves_run_in_order_and_requirements_are_honoured() {
    let rig = Rig::new();
    let bad = "name: demo\nsteps:\n  - name: boom\n    command: { cmd: 'exit 1' }\n";
    let stamp = "name: demo\nsteps:\n  - name: stamp\n    command: { cmd: 'date +%s%N > {{ root }}/t; sleep 0.2' }\n";
    let mut joiner = rig.host("joiner", stamp);
    joiner.requires = vec!["first".into()];
    let mut orphan = rig.host("orphan", stamp);
    orphan.requires = vec!["broken".into()];
    let s = rig
        .executor()
        .run(
            vec![
                vec![rig.host("first", stamp), rig.host("broken", bad)],
                vec![joiner, orphan],
            ],
            &RunOptions::default(),
        )
        .await;
    let t = |h: &str| read(rig.root(h).join("t")).trim().parse::<u128>().unwrap();
    assert!(
        t("joiner") > t("first"),
        "the second wave starts after the first"
    );
    assert_eq!(s.hosts[3].host, "orphan");
    assert_eq!(
        s.hosts[3].outcome,
        HostOutcome::NotStarted("it requires broken, which did not succeed".into())
    );
}

#[tokio::test]
async fn an_interrupted_run_resumes_where_it_stopped() {
    let rig = Rig::new();
    // Facts (1) + dir (1) + config put (1) succeed, then the connection dies.
    rig.fail_after.lock().unwrap().insert("n1".into(), 3);
    let s = rig
        .executor()
        .run(vec![vec![rig.host("n1", PLAYBOOK)]], &rig.opts())
        .await;
    assert!(
        matches!(&s.hosts[0].outcome, HostOutcome::Failed(m) if m.contains("simulated")),
        "{}",
        s.table()
    );
    assert_eq!(
        rig.statuses("n1"),
        st(&[("dir", Changed), ("config", Changed), ("marker", Failed)])
    );
    assert!(
        !rig.root("n1").join("restarts").exists(),
        "the handler never ran"
    );

    rig.fail_after.lock().unwrap().clear();
    let s = rig
        .executor()
        .run(vec![vec![rig.host("n1", PLAYBOOK)]], &rig.opts())
        .await;
    assert_eq!(s.exit_code(), 0);
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Skipped),
            ("config", Skipped),
            ("marker", Changed),
            ("debian only", Skipped),
            ("restart app", Changed)
        ]),
        "applied steps are skipped; the handler notified before the failure runs"
    );
    assert_eq!(read(rig.root("n1").join("restarts")), "restarted\n");
}

#[tokio::test]
async fn stop_lets_the_running_step_finish_and_starts_nothing_new() {
    let rig = Rig::new();
    let slow = "name: demo\nsteps:\n  - name: slow\n    command: { cmd: 'sleep 0.5; touch {{ root }}/slow-done' }\n  - name: after\n    command: { cmd: 'touch {{ root }}/after' }\n";
    let ex = rig.executor();
    let cancel = ex.cancel_handle();
    let opts = RunOptions {
        parallel: 1,
        ..rig.opts()
    };
    // Stop (as Ctrl-C does) once the slow step is under way on host a.
    let sink = rig.sink.clone();
    let stopper = tokio::spawn(async move {
        loop {
            let started = sink.0.lock().unwrap().iter().any(
                |e| matches!(e, Event::StepStarted { host, step, .. } if host == "a" && step == "slow"),
            );
            if started {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.stop();
    });
    let s = ex
        .run(vec![vec![rig.host("a", slow), rig.host("b", slow)]], &opts)
        .await;
    stopper.await.unwrap();
    assert_eq!(s.exit_code(), 130);
    assert!(
        rig.root("a").join("slow-done").exists(),
        "the running step finished"
    );
    assert!(!rig.root("a").join("after").exists());
    assert_eq!(s.hosts[0].outcome, HostOutcome::Interrupted);
    assert_eq!(
        s.hosts[1].outcome,
        HostOutcome::NotStarted("the run was interrupted".into())
    );
    let journal = read(rig.dir.path().join("state/journal/a.jsonl"));
    assert!(
        journal.contains("\"step\":\"slow\""),
        "the finished step is journalled: {journal}"
    );
}

#[tokio::test]
async fn secrets_never_reach_events() {
    let rig = Rig::new();
    let token = "K10-very-secret-token";
    let leaky = PLAYBOOK.replace(
        "handlers:",
        "  - name: leak\n    command: { cmd: 'echo \"bad {{ secrets.token }}\" >&2; exit 1' }\nhandlers:",
    );
    let mut h = rig.host("n1", &leaky);
    h.secrets.insert("token".into(), token.into());
    let opts = RunOptions {
        diff: true,
        ..rig.opts()
    };
    let s = rig.executor().run(vec![vec![h]], &opts).await;
    assert!(
        read(rig.root("n1").join("etc/app.conf")).contains(token),
        "the secret is used on the host"
    );
    let events = serde_json::to_string(&rig.sink.take()).unwrap();
    assert!(
        events.contains("+token=********"),
        "the diff is shown, redacted: {events}"
    );
    assert!(
        events.contains("bad ********"),
        "the failure is shown, redacted: {events}"
    );
    assert!(!events.contains(token), "{events}");
    assert!(!s.table().contains(token));
}

#[tokio::test]
async fn the_os_playbook_in_check_mode_on_this_machine_fails_nothing_and_changes_nothing() {
    let data = DataDir::Embedded;
    let renderer = Arc::new(Renderer::new(&data).unwrap());
    let text = data.read_text("playbooks/os.yaml").unwrap();
    let pb = Arc::new(Playbook::parse("playbooks/os.yaml", &text).unwrap());
    let hosts_before = std::fs::read("/etc/hosts").ok();
    let sink = Arc::new(Collect::default());
    let connector: Connector = Arc::new(|_h: &HostWork| {
        Box::pin(async { Ok(Arc::new(ShellTransport::default()) as Arc<dyn Transport>) })
    });
    let ex = Executor::new(renderer, Arc::new(data), connector, sink.clone());
    let host = HostWork {
        name: "edge-1".into(),
        site: "store-1".into(),
        context: json!({
            "node": {"name": "edge-1", "role": "server", "address": "10.0.0.5"},
            "cluster": {"name": "store-1", "nodes": [
                {"name": "edge-1", "address": "10.0.0.5"}, {"name": "edge-2", "address": "10.0.0.6"}
            ]},
        }),
        playbooks: vec![pb],
        secrets: BTreeMap::new(),
        requires: Vec::new(),
    };
    let opts = RunOptions {
        check: true,
        diff: true,
        ..RunOptions::default()
    };
    let s = ex.run(vec![vec![host]], &opts).await;
    let events = sink.take();
    assert_eq!(s.exit_code(), 0, "{}\n{events:#?}", s.table());
    assert_eq!(std::fs::read("/etc/hosts").ok(), hosts_before);
    let diff = events
        .iter()
        .find_map(|e| match e {
            Event::StepFinished { step, diff, .. }
                if step == "/etc/hosts with the cluster's nodes" =>
            {
                diff.clone()
            }
            _ => None,
        })
        .unwrap_or_default();
    assert!(diff.contains("+10.0.0.6\tedge-2"), "{diff}");
    let status = |name: &str| {
        events.iter().find_map(|e| match e {
            Event::StepFinished { step, status, .. } if step == name => Some(*status),
            _ => None,
        })
    };
    assert_eq!(
        status("hostname"),
        Some(StepStatus::Changed),
        "this machine is not edge-1"
    );
    assert_eq!(
        status("service account"),
        Some(StepStatus::Skipped),
        "not asked for"
    );
}

#[tokio::test]
async fn a_registered_output_is_visible_to_later_steps() {
    let rig = Rig::new();
    let pb = "name: demo\nsteps:\n  - name: ask\n    command: { cmd: 'echo 42' }\n    register: answer\n  - name: use\n    copy: { content: \"{{ vars.answer.stdout }}\", dest: \"{{ root }}/answer\" }\n";
    let s = rig
        .executor()
        .run(vec![vec![rig.host("n1", pb)]], &rig.opts())
        .await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(read(rig.root("n1").join("answer")), "42");
    // A step with `register` always runs, so its output exists on every run.
    let s = rig
        .executor()
        .run(vec![vec![rig.host("n1", pb)]], &rig.opts())
        .await;
    assert_eq!(
        (s.hosts[0].changed, s.hosts[0].skipped),
        (1, 1),
        "{}",
        s.table()
    );
}
