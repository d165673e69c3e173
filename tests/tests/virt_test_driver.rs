//! The libvirt backend against libvirt's built-in `test:///default` driver:
//! real libvirt XML parsing and object lifecycle, no qemu. The test driver
//! keeps one shared state per process, so every test uses its own names.
//! It cannot upload volumes (virStorageVolUpload is unsupported there), so
//! uploads are covered by the end-to-end test against a real libvirtd.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use edgeforge::data::DataDir;
use edgeforge::exec::events::{Event, EventSink, StepStatus};
use edgeforge::exec::{
    ConnectError, Connector, ExecTask, Executor, RunOptions, RunSpec, Target, TaskOutcome,
};
use edgeforge::playbook::Playbook;
use edgeforge::playbook::kinds::TaskData;
use edgeforge::playbook::kinds::vm::VmTask;
use edgeforge::render::Renderer;
use edgeforge::transport::Transport;
use edgeforge::virt::baseimage::{BaseImage, BuildOutcome, IMAGE_FILE, INITRD_FILE, KERNEL_FILE};
use edgeforge::virt::lab::{self, HostPlan, LabVm};
use edgeforge::virt::{
    Accel, AccelChoice, BaseVolumes, Hypervisor, NicSpec, PoolRef, Ready, Session, VirtError,
    VmSpec, VmState,
};
use futures_util::future::BoxFuture;

const URI: &str = "test:///default";

fn spec(name: &str, lab: &str, port: u16) -> VmSpec {
    VmSpec {
        name: name.into(),
        hostname: name.into(),
        lab: lab.into(),
        cpus: 2,
        memory_mib: 1024,
        disk_gib: 4,
        image_sha256: "0".repeat(64),
        seed_sha256: "1".repeat(64),
        machine: "pc".into(),
        network: NicSpec::User {
            forward_address: "127.0.0.1".into(),
            ssh_forward_port: port,
        },
    }
}

fn base(pool: &PoolRef) -> BaseVolumes {
    BaseVolumes {
        sha256: "0".repeat(64),
        image_volume: format!("{}.qcow2", "0".repeat(64)),
        image_path: format!("{}/{}.qcow2", pool.path, "0".repeat(64)),
        image_virtual_size: 2 << 30,
        kernel_path: format!("{}/k", pool.path),
        initrd_path: format!("{}/i", pool.path),
        uploaded: false,
    }
}

/// Creates an empty raw volume (what an upload would have filled).
fn create_volume(pool: &str, name: &str) {
    let conn = virt::connect::Connect::open(Some(URI)).expect("open");
    let pool = conn.lookup_storage_pool_by_name(pool).expect("pool");
    let xml = format!(
        "<volume><name>{name}</name><capacity unit='bytes'>1048576</capacity><target><format type='raw'/></target></volume>"
    );
    virt::storage_vol::StorageVol::create_xml(&pool, &xml, 0).expect("volume");
}

async fn pool(hv: &Hypervisor, name: &str) -> PoolRef {
    hv.ensure_pool(name, &format!("/{name}"))
        .await
        .expect("pool")
}

#[tokio::test]
async fn pool_is_defined_once_and_reused() {
    let hv = Hypervisor::connect(URI, &DataDir::Embedded)
        .await
        .expect("connect");
    let first = pool(&hv, "ef-pool-once").await;
    let again = pool(&hv, "ef-pool-once").await;
    assert_eq!(first, again);
    assert_eq!(first.path, "/ef-pool-once");
    assert!(
        hv.list_volumes("ef-pool-once")
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn connect_error_names_the_uri() {
    let err = Hypervisor::connect("test:///nonexistent/file.xml", &DataDir::Embedded)
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, VirtError::Connect { .. }));
    assert!(
        err.to_string().contains("test:///nonexistent/file.xml"),
        "{err}"
    );
}

#[tokio::test]
async fn vm_lifecycle_records_spec_and_cleans_up() {
    let hv = Hypervisor::connect(URI, &DataDir::Embedded)
        .await
        .expect("connect");
    let pool = pool(&hv, "ef-life").await;
    let spec = spec("ef-life-n1", "life", 2301);
    create_volume(&pool.name, &spec.seed_volume());
    hv.define_vm(&pool, &spec, &base(&pool), Accel::Tcg)
        .await
        .expect("define");

    let status = hv
        .vm_status(&spec.name)
        .await
        .expect("status")
        .expect("defined");
    assert_eq!(status.state, VmState::Shutoff, "defined, not started");
    hv.start_vm(&spec.name).await.expect("start");
    let status = hv
        .vm_status(&spec.name)
        .await
        .expect("status")
        .expect("defined");
    assert_eq!(status.state, VmState::Running);
    assert_eq!(status.lab, "life");
    assert_eq!(status.spec_hash, spec.spec_hash());
    assert_eq!(status.ssh_endpoint, "127.0.0.1:2301");
    let listed = hv.list_lab("life").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(
        hv.list_lab("other-lab")
            .await
            .expect("list")
            .iter()
            .all(|s| s.name != spec.name)
    );
    let vols = hv.list_volumes(&pool.name).await.expect("volumes");
    assert!(vols.contains(&spec.disk_volume()), "{vols:?}");

    let removed = hv.remove_vm(&pool.name, &spec.name).await.expect("remove");
    assert!(removed.destroyed && removed.undefined);
    let mut gone = removed.volumes.clone();
    gone.sort();
    assert_eq!(gone, [spec.seed_volume(), spec.disk_volume()]);
    assert!(hv.vm_status(&spec.name).await.expect("status").is_none());
    assert!(
        hv.list_volumes(&pool.name)
            .await
            .expect("volumes")
            .is_empty()
    );
    // Removing again is a no-op, not an error.
    let again = hv.remove_vm(&pool.name, &spec.name).await.expect("remove");
    assert!(!again.undefined && again.volumes.is_empty());
}

#[tokio::test]
async fn domain_xml_follows_accel_and_network() {
    let hv = Hypervisor::connect(URI, &DataDir::Embedded)
        .await
        .expect("connect");
    let pool = PoolRef {
        name: "p".into(),
        path: "/p".into(),
    };
    let s = spec("ef-xml-n1", "xml", 2302);
    let tcg = hv
        .domain_xml(&pool, &s, &base(&pool), Accel::Tcg)
        .expect("xml");
    assert!(tcg.starts_with("<domain type='qemu'>"), "{tcg}");
    assert!(tcg.contains("<model fallback='forbid'>qemu64</model>"));
    assert!(tcg.contains("<backend type='passt'/>"));
    assert!(tcg.contains("<range start='2302' to='22'/>"));
    assert!(tcg.contains("<source pool='p' volume='ef-xml-n1-seed.img'/>"));
    assert!(tcg.contains("root=/dev/vda"));
    let kvm = hv
        .domain_xml(&pool, &s, &base(&pool), Accel::Kvm)
        .expect("xml");
    assert!(kvm.starts_with("<domain type='kvm'>"));
    assert!(kvm.contains("host-passthrough"));
    let nat = VmSpec {
        network: NicSpec::Network {
            name: "edgeforge".into(),
        },
        ..s.clone()
    };
    let xml = hv
        .domain_xml(&pool, &nat, &base(&pool), Accel::Tcg)
        .expect("xml");
    assert!(xml.contains("<source network='edgeforge'/>"));
    assert!(!xml.contains("portForward"));
}

#[tokio::test]
async fn bad_names_and_small_disks_are_refused() {
    let hv = Hypervisor::connect(URI, &DataDir::Embedded)
        .await
        .expect("connect");
    let pool = pool(&hv, "ef-refuse").await;
    let bad = spec("Bad_Name", "refuse", 2303);
    let err = hv
        .define_vm(&pool, &bad, &base(&pool), Accel::Tcg)
        .await
        .expect_err("bad name");
    assert!(matches!(err, VirtError::BadName { .. }), "{err}");
    let small = VmSpec {
        disk_gib: 1,
        ..spec("ef-refuse-n1", "refuse", 2303)
    };
    let err = hv
        .define_vm(&pool, &small, &base(&pool), Accel::Tcg)
        .await
        .expect_err("small disk");
    assert!(err.to_string().contains("raise diskGib"), "{err}");
    assert!(
        hv.vm_status("ef-refuse-n1")
            .await
            .expect("status")
            .is_none()
    );
}

#[tokio::test]
async fn base_volumes_already_in_the_pool_are_not_uploaded_again() {
    let hv = Hypervisor::connect(URI, &DataDir::Embedded)
        .await
        .expect("connect");
    let pool = pool(&hv, "ef-base").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let qcow2 = dir.path().join(IMAGE_FILE);
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow2)
        .arg("3G")
        .status()
        .expect("qemu-img");
    assert!(status.success());
    std::fs::write(dir.path().join(KERNEL_FILE), b"k").expect("kernel");
    std::fs::write(dir.path().join(INITRD_FILE), b"i").expect("initrd");
    let (sha, _) = edgeforge::artifacts::hash_file(&qcow2).expect("hash");
    let image = BaseImage {
        key: "k".into(),
        release: "bookworm".into(),
        arch: "amd64".into(),
        sha256: sha.clone(),
        size: std::fs::metadata(&qcow2).expect("size").len(),
        kernel_sha256: String::new(),
        initrd_sha256: String::new(),
        build_secs: 0.0,
        dir: dir.path().to_owned(),
    };
    for suffix in ["qcow2", "vmlinuz", "initrd"] {
        create_volume(&pool.name, &format!("{sha}.{suffix}"));
    }
    let vols = hv.ensure_base(&pool, &image).await.expect("base");
    assert!(!vols.uploaded);
    assert_eq!(vols.image_virtual_size, 3 << 30);
    assert_eq!(vols.image_path, format!("/ef-base/{sha}.qcow2"));
    assert_eq!(vols.kernel_path, format!("/ef-base/{sha}.vmlinuz"));
}

#[tokio::test]
async fn the_test_driver_gets_tcg_with_a_reason() {
    let hv = Hypervisor::connect(URI, &DataDir::Embedded)
        .await
        .expect("connect");
    let pool = PoolRef {
        name: "p".into(),
        path: "/p".into(),
    };
    let choice = hv.detect_accel(&base(&pool), None).await.expect("detect");
    assert_eq!(choice.accel, Accel::Tcg);
    assert!(choice.reason.contains("no KVM"), "{}", choice.reason);
}

fn host(lab: &str, vms: Vec<VmSpec>) -> HostPlan {
    HostPlan {
        hypervisor: "local".into(),
        uri: URI.into(),
        pool: format!("ef-{lab}"),
        pool_path: format!("/ef-{lab}"),
        vms: vms
            .into_iter()
            .map(|spec| LabVm {
                node: spec.hostname.clone(),
                ssh_addr: spec.ssh_endpoint(),
                user: "root".into(),
                identity_file: None,
                spec,
            })
            .collect(),
    }
}

/// Hands the executor one established session; hosts are out of reach.
struct OneHypervisor(Arc<Session>);

impl Connector for OneHypervisor {
    fn host<'a>(&'a self, n: &'a str) -> BoxFuture<'a, Result<Arc<dyn Transport>, ConnectError>> {
        Box::pin(async move { Err(ConnectError::NotConfigured(format!("no SSH to {n} here"))) })
    }
    fn kube<'a>(
        &'a self,
        t: &'a Target,
    ) -> BoxFuture<'a, Result<edgeforge::kube::KubeConn, ConnectError>> {
        Box::pin(async move { Err(ConnectError::NotConfigured(t.to_string())) })
    }
    fn hypervisor<'a>(&'a self, _n: &'a str) -> BoxFuture<'a, Result<Arc<Session>, ConnectError>> {
        let s = self.0.clone();
        Box::pin(async move { Ok(s) })
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn emit(&self, e: &Event) {
        self.0.lock().expect("events").push(e.clone());
    }
}

/// The "VM defined" results (status, message) by subject; VMs are defined concurrently, so their
/// events arrive in any order.
fn define_results(events: &[Event]) -> Vec<(String, StepStatus, Option<String>)> {
    let mut results: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepFinished {
                subject,
                step,
                status,
                message,
                ..
            } if step == "VM defined" => Some((subject.clone(), *status, message.clone())),
            _ => None,
        })
        .collect();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    results
}

#[tokio::test]
async fn the_machine_layer_finds_defined_vms_reports_drift_and_down_removes_everything() {
    let hv = Hypervisor::connect(URI, &DataDir::Embedded)
        .await
        .expect("connect");
    let pool = pool(&hv, "ef-drift").await;
    let base = base(&pool);
    let dir = tempfile::tempdir().expect("tempdir");
    let plan_host = host(
        "drift",
        vec![
            spec("drift-a", "drift", 2311),
            spec("drift-b", "drift", 2312),
        ],
    );
    let plan = lab::LabPlan {
        name: "drift".into(),
        hosts: vec![plan_host.clone()],
    };
    let keys = lab::LabKeys::ensure(dir.path(), None, &plan).expect("keys");
    // The VMs exist with the spec the inventory asks for (as after a `lab up`).
    for vm in &plan_host.vms {
        let spec = vm.finished_spec(&base.sha256, &keys).expect("spec");
        create_volume(&pool.name, &spec.seed_volume());
        hv.define_vm(&pool, &spec, &base, Accel::Tcg)
            .await
            .expect("define");
    }
    let ready = Ready {
        pool: pool.clone(),
        image: BaseImage {
            key: "k".into(),
            release: "bookworm".into(),
            arch: "amd64".into(),
            sha256: base.sha256.clone(),
            size: 0,
            kernel_sha256: String::new(),
            initrd_sha256: String::new(),
            build_secs: 0.0,
            dir: dir.path().to_owned(),
        },
        built: BuildOutcome::Cached,
        base: base.clone(),
        accel: AccelChoice {
            accel: Accel::Tcg,
            reason: "the test driver has no KVM".into(),
            cached: false,
        },
    };
    let session = Arc::new(Session::established("local", hv.clone(), ready));
    let data = DataDir::Embedded;
    let renderer = Arc::new(Renderer::new(&data).expect("renderer"));
    let playbook = Arc::new(
        Playbook::parse(
            "machine.yaml",
            "name: machine/libvirt\ntarget: hypervisor\nsteps:\n  - name: base image and pool\n    vm_image: {}\n  - name: VM defined\n    vm_define: {}\n",
        )
        .expect("playbook"),
    );
    let spec_of = |host: &HostPlan| RunSpec {
        tasks: host
            .vms
            .iter()
            .map(|vm| ExecTask {
                key: format!("{}/machine", vm.node),
                subject: vm.node.clone(),
                site: "drift".into(),
                node: Some(vm.node.clone()),
                layer: "machine".into(),
                target: Target::Hypervisor("local".into()),
                playbook: playbook.clone(),
                context: serde_json::json!({}),
                secrets: BTreeMap::new(),
                data: TaskData::Vm(Arc::new(VmTask {
                    vm: vm.clone(),
                    keys: keys.clone(),
                })),
                deps: Vec::new(),
            })
            .collect(),
    };
    let run = |spec: RunSpec| {
        let sink = Arc::new(Collect::default());
        let ex = Executor::new(
            renderer.clone(),
            Arc::new(data.clone()),
            Arc::new(OneHypervisor(session.clone())),
            sink.clone(),
        );
        async move {
            let summary = ex.run(spec, &RunOptions::default()).await.expect("run");
            let events = std::mem::take(&mut *sink.0.lock().expect("events"));
            (summary, events)
        }
    };

    // Defined with the planned spec: nothing to do, no warning.
    let (summary, events) = run(spec_of(&plan_host)).await;
    assert!(
        summary.tasks.iter().all(|t| t.outcome == TaskOutcome::Done),
        "{}",
        summary.table()
    );
    assert_eq!(
        define_results(&events),
        [
            ("drift-a".to_owned(), StepStatus::Ok, None),
            ("drift-b".to_owned(), StepStatus::Ok, None)
        ]
    );

    // More memory for b: drift, reported as a warning and left alone without --recreate.
    let mut changed_host = plan_host.clone();
    changed_host.vms[1].spec.memory_mib = 2048;
    let (summary, events) = run(spec_of(&changed_host)).await;
    assert_eq!(summary.exit_code(), 0, "{}", summary.table());
    let results = define_results(&events);
    assert_eq!(results[0], ("drift-a".to_owned(), StepStatus::Ok, None));
    let warning = results[1].2.clone().expect("a drift warning");
    assert!(
        warning.contains("drift-b drifted") && warning.contains("--recreate"),
        "{warning}"
    );
    let status = lab::status(&hv, &changed_host, "drift", Some(&base.sha256), &keys)
        .await
        .expect("status");
    let drift: Vec<Option<bool>> = status.iter().map(|r| r.drift).collect();
    assert_eq!(drift, [Some(false), Some(true)]);

    // A stopped VM keeps its definition: the machine layer finds it as defined.
    let conn = virt::connect::Connect::open(Some(URI)).expect("open");
    let _ = conn
        .lookup_domain_by_name("drift-a")
        .and_then(|d| d.destroy());
    assert_eq!(
        hv.vm_status("drift-a")
            .await
            .expect("status")
            .map(|s| s.state),
        Some(VmState::Shutoff)
    );

    // Down removes both domains and all their volumes.
    let removed = lab::down(&hv, &plan_host, "drift").await.expect("down");
    assert_eq!(removed.len(), 2);
    assert!(hv.list_lab("drift").await.expect("list").is_empty());
    assert!(
        hv.list_volumes(&pool.name)
            .await
            .expect("volumes")
            .is_empty()
    );
}
