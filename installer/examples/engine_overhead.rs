//! Measures what the step engine itself costs per step, without any network:
//! 20 hosts × a 20-step playbook (8 templates, 4 guarded commands, 4 line
//! edits, 2 directories, 2 copies) over a transport that answers at once.
//! Run: `cargo run -p edgeforge --example engine_overhead`.
//! The numbers are the engine's floor (render, hash, journal, events); a real
//! run adds the transport's round trips on top.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use edgeforge::data::DataDir;
use edgeforge::exec::events::{Event, EventSink};
use edgeforge::exec::{ConnectError, Connector, ExecTask, Executor, RunOptions, RunSpec, Target};
use edgeforge::playbook::Playbook;
use edgeforge::playbook::kinds::TaskData;
use edgeforge::render::Renderer;
use edgeforge::transport::{
    ExecOutput, ExecRequest, PutOutcome, PutRequest, Transport, TransportError,
};
use futures_util::future::BoxFuture;
use serde_json::json;

/// Answers every request immediately: facts for the facts script, "ok" for steps.
struct InstantTransport;

impl Transport for InstantTransport {
    fn exec<'a>(
        &'a self,
        req: ExecRequest<'a>,
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>> {
        let stdout = if req.script.contains("os-release") {
            b"os_id=debian\narch=x86_64\npkg_mgr=apt-get\nmachine_id=m\nboot_id=b\n".to_vec()
        } else {
            b"__EF_STATUS__ ok\n".to_vec()
        };
        Box::pin(async move {
            Ok(ExecOutput {
                status: 0,
                stdout,
                stderr: Vec::new(),
            })
        })
    }
    fn put<'a>(
        &'a self,
        _req: PutRequest<'a>,
    ) -> BoxFuture<'a, Result<PutOutcome, TransportError>> {
        Box::pin(async { Ok(PutOutcome::Unchanged) })
    }
    fn get<'a>(
        &'a self,
        _p: &'a str,
        _x: bool,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, TransportError>> {
        Box::pin(async { Ok(None) })
    }
    fn close(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Opens an [`InstantTransport`] for every host.
struct Instant0;

impl Connector for Instant0 {
    fn host<'a>(&'a self, _n: &'a str) -> BoxFuture<'a, Result<Arc<dyn Transport>, ConnectError>> {
        Box::pin(async { Ok(Arc::new(InstantTransport) as Arc<dyn Transport>) })
    }
    fn kube<'a>(
        &'a self,
        t: &'a Target,
    ) -> BoxFuture<'a, Result<edgeforge::kube::KubeConn, ConnectError>> {
        Box::pin(async move { Err(ConnectError::NotConfigured(t.to_string())) })
    }
    fn hypervisor<'a>(
        &'a self,
        n: &'a str,
    ) -> BoxFuture<'a, Result<Arc<edgeforge::virt::Session>, ConnectError>> {
        Box::pin(async move { Err(ConnectError::NotConfigured(n.to_string())) })
    }
}

struct Discard;
impl EventSink for Discard {
    fn emit(&self, _e: &Event) {}
}

fn playbook() -> String {
    let mut s = String::from("name: bench\nsteps:\n");
    for i in 0..8 {
        s += &format!(
            "  - name: template {i}\n    template: {{ src: t{i}.j2, dest: /etc/bench/t{i}.conf }}\n"
        );
    }
    for i in 0..4 {
        s += &format!(
            "  - name: command {i}\n    command: {{ cmd: 'touch /tmp/b{i}', creates: /tmp/b{i} }}\n"
        );
    }
    for i in 0..4 {
        s += &format!(
            "  - name: line {i}\n    lineinfile: {{ path: /etc/bench/l, line: 'k{i}={{{{ node.name }}}}' }}\n"
        );
    }
    for i in 0..2 {
        s += &format!(
            "  - name: dir {i}\n    file: {{ path: /srv/b{i}, state: directory, mode: '0755' }}\n"
        );
    }
    for i in 0..2 {
        s += &format!(
            "  - name: copy {i}\n    copy: {{ content: 'payload {i}', dest: /srv/b{i}/f }}\n"
        );
    }
    s
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("templates")).expect("mkdir");
    for i in 0..8 {
        let t = format!(
            "# file {i}\nname={{{{ node.name }}}}\n{{% for n in cluster.nodes %}}{{{{ n }}}}\n{{% endfor %}}"
        );
        std::fs::write(dir.path().join(format!("templates/t{i}.j2")), t).expect("write");
    }
    let data = DataDir::new(Some(dir.path()));
    let renderer = Arc::new(Renderer::new(&data).expect("templates"));
    let pb = Arc::new(Playbook::parse("bench.yaml", &playbook()).expect("playbook"));
    let hosts = |n: usize| {
        RunSpec {
        tasks: (0..n)
            .map(|i| ExecTask {
                key: format!("node-{i}/os"),
                subject: format!("node-{i}"),
                site: format!("site-{}", i / 3),
                node: Some(format!("node-{i}")),
                layer: "os".into(),
                target: Target::Host(format!("node-{i}")),
                playbook: pb.clone(),
                context: json!({"node": {"name": format!("node-{i}")}, "cluster": {"nodes": ["a", "b", "c"]}}),
                secrets: BTreeMap::new(),
                data: TaskData::None,
                deps: Vec::new(),
                group: None,
            })
            .collect(),
    }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let executor = Executor::new(
        renderer,
        Arc::new(data),
        Arc::new(Instant0),
        Arc::new(Discard),
    );
    let opts = RunOptions {
        state_dir: Some(dir.path().join("state")),
        ..RunOptions::default()
    };
    let steps = 20.0 * 20.0;
    println!("engine overhead, 20 hosts x 20 steps, instant transport (no network)");
    for label in ["cold (no journal yet)", "warm (journal skips)"] {
        let t = Instant::now();
        let s = rt
            .block_on(executor.run(hosts(20), &opts))
            .expect("the run starts");
        let el = t.elapsed();
        assert_eq!(s.exit_code(), 0, "{}", s.table());
        println!(
            "{label:<24} {:>8.1} ms total  {:>7.1} µs/step",
            el.as_secs_f64() * 1e3,
            el.as_secs_f64() * 1e6 / steps
        );
    }
}
