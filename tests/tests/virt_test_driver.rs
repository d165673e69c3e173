//! The libvirt backend against libvirt's built-in `test:///default` driver:
//! real libvirt XML parsing and object lifecycle, no qemu. The test driver
//! keeps one shared state per process, so every test uses its own names.
//! It cannot upload volumes (virStorageVolUpload is unsupported there), so
//! uploads are covered by the end-to-end test against a real libvirtd.

use edgeforge::virt::lab::{self, HostPlan, LabVm, VmAction};
use edgeforge::virt::{
    Accel, BaseVolumes, Hypervisor, NicSpec, PoolRef, VirtError, VmSpec, VmState,
};

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
    let hv = Hypervisor::connect(URI, None).await.expect("connect");
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
    let err = Hypervisor::connect("test:///nonexistent/file.xml", None)
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
    let hv = Hypervisor::connect(URI, None).await.expect("connect");
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
    let hv = Hypervisor::connect(URI, None).await.expect("connect");
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
    let hv = Hypervisor::connect(URI, None).await.expect("connect");
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
    let hv = Hypervisor::connect(URI, None).await.expect("connect");
    let pool = pool(&hv, "ef-base").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let qcow2 = dir.path().join(edgeforge::baseimage::IMAGE_FILE);
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow2)
        .arg("3G")
        .status()
        .expect("qemu-img");
    assert!(status.success());
    std::fs::write(dir.path().join(edgeforge::baseimage::KERNEL_FILE), b"k").expect("kernel");
    std::fs::write(dir.path().join(edgeforge::baseimage::INITRD_FILE), b"i").expect("initrd");
    let sha = edgeforge::baseimage::sha256_file(&qcow2).expect("hash");
    let image = edgeforge::baseimage::BaseImage {
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
    let hv = Hypervisor::connect(URI, None).await.expect("connect");
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

#[tokio::test]
async fn lab_up_is_idempotent_reports_drift_and_down_removes_everything() {
    let hv = Hypervisor::connect(URI, None).await.expect("connect");
    let pool = pool(&hv, "ef-drift").await;
    let base = base(&pool);
    let specs = vec![
        spec("drift-a", "drift", 2311),
        spec("drift-b", "drift", 2312),
    ];
    for s in &specs {
        create_volume(&pool.name, &s.seed_volume());
        hv.define_vm(&pool, s, &base, Accel::Tcg)
            .await
            .expect("define");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let plan_host = host("drift", specs.clone());
    let plan = lab::LabPlan {
        name: "drift".into(),
        hosts: vec![plan_host.clone()],
    };
    let keys = lab::LabKeys::ensure(dir.path(), None, &plan).expect("keys");

    // Same spec, running: nothing to do.
    let actions = lab::up(&hv, &pool, &plan_host, &base, &keys, Accel::Tcg, false)
        .await
        .expect("up");
    assert_eq!(
        actions,
        [
            ("drift-a".to_owned(), VmAction::Unchanged),
            ("drift-b".to_owned(), VmAction::Unchanged)
        ]
    );

    // More memory for b: drift, reported and left alone without --recreate.
    let mut changed = specs.clone();
    changed[1].memory_mib = 2048;
    let changed_host = host("drift", changed.clone());
    let actions = lab::up(&hv, &pool, &changed_host, &base, &keys, Accel::Tcg, false)
        .await
        .expect("up");
    assert_eq!(actions[0].1, VmAction::Unchanged);
    assert_eq!(
        actions[1].1,
        VmAction::Drifted {
            recorded: specs[1].spec_hash(),
            wanted: changed[1].spec_hash()
        }
    );
    assert!(actions[1].1.to_string().contains("--recreate"));
    let status = lab::status(&hv, &changed_host, "drift")
        .await
        .expect("status");
    let drift: Vec<bool> = status.iter().map(|r| r.drift).collect();
    assert_eq!(drift, [false, true]);

    // A stopped VM with the right spec is started.
    let conn = virt::connect::Connect::open(Some(URI)).expect("open");
    conn.lookup_domain_by_name("drift-a")
        .expect("domain")
        .destroy()
        .expect("destroy");
    assert_eq!(
        hv.vm_status("drift-a")
            .await
            .expect("status")
            .map(|s| s.state),
        Some(VmState::Shutoff)
    );
    let actions = lab::up(&hv, &pool, &plan_host, &base, &keys, Accel::Tcg, false)
        .await
        .expect("up");
    assert_eq!(actions[0].1, VmAction::Started);

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
