//! The libvirt backend: the machine layer for VM nodes.
//!
//! [`Hypervisor`] wraps one libvirt connection (`qemu:///system`,
//! `qemu+ssh://user@host/system`, or `test:///default` in tests). It keeps a
//! directory storage pool, uploads the base image into it once (a volume
//! named by the image's sha256, with its kernel and initrd beside it),
//! creates per-VM qcow2 overlays and NoCloud seed volumes, defines and starts
//! domains rendered from `templates/libvirt/`, reports their state and the
//! spec hash recorded in their metadata, and removes them again. Everything
//! goes through libvirt's API (volumes are uploaded over streams), so a remote
//! hypervisor works the same as the local one; a `qemu+ssh://` one is reached
//! over edgeforge's own SSH connection to it ([`tunnel`]). The `virt` crate is blocking:
//! every call runs in `spawn_blocking`.

mod accel;
pub mod baseimage;
pub mod lab;
pub mod liveimage;
pub mod seed;
mod session;
pub mod tunnel;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

pub use accel::{Accel, AccelChoice};
pub use seed::SeedSpec;
pub use session::{DEFAULT_BOOT_TIMEOUT, Ready, Session};

use crate::data::DataDir;
use crate::render::Renderer;
use crate::transport::SshTarget;
use baseimage::BaseImage;

/// Default storage pool name.
pub const DEFAULT_POOL: &str = "edgeforge";
/// Default directory of the storage pool on the hypervisor.
pub const DEFAULT_POOL_PATH: &str = "/var/lib/edgeforge/images";
/// CPU model for TCG guests: plain enough for every TCG build to emulate.
pub const TCG_CPU_MODEL: &str = "qemu64";
/// Machine type of lab guests (virtio devices only, so q35 works too).
pub const DEFAULT_MACHINE: &str = "pc";

/// Errors of the libvirt backend.
#[derive(Debug, thiserror::Error)]
pub enum VirtError {
    /// Opening the connection failed.
    #[error(
        "cannot connect to libvirt at {uri}; is libvirtd running (`libvirtd -d`) and may this user use it?"
    )]
    Connect {
        /// The URI.
        uri: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A libvirt call failed.
    #[error("libvirt failed {what}")]
    Libvirt {
        /// What was being done, as a phrase ("defining domain lab-1").
        what: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A template failed to load or render.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// A local file operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A helper program failed.
    #[error("`{command}` failed: {stderr}")]
    Tool {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A name that cannot be a domain or volume name.
    #[error(
        "{what} `{name}` is not usable as a VM name: use 1-63 lowercase letters, digits and '-'"
    )]
    BadName {
        /// Which kind of name.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The requested disk is smaller than the base image.
    #[error(
        "VM {name}: disk of {disk_gib} GiB is smaller than the base image ({base_bytes} bytes); raise diskGib"
    )]
    DiskTooSmall {
        /// The VM.
        name: String,
        /// Requested size.
        disk_gib: u64,
        /// The base image's virtual size.
        base_bytes: u64,
    },
    /// The guest did not answer SSH in time.
    #[error(
        "VM {name} did not answer SSH on {addr} within {secs} s; its console log on the hypervisor is {console_log}"
    )]
    SshTimeout {
        /// The VM.
        name: String,
        /// Address probed.
        addr: String,
        /// Seconds waited.
        secs: u64,
        /// Where to look.
        console_log: String,
    },
    /// The guest stopped while we waited for it.
    #[error("VM {name} stopped while booting; its console log on the hypervisor is {console_log}")]
    Stopped {
        /// The VM.
        name: String,
        /// Where to look.
        console_log: String,
    },
    /// The base image could not be built.
    #[error(transparent)]
    BaseImage(#[from] baseimage::BaseImageError),
    /// The SSH tunnel to a remote hypervisor's libvirtd could not be set up.
    #[error("cannot reach libvirt at {uri}: {reason}")]
    Remote {
        /// The hypervisor's URI.
        uri: String,
        /// What went wrong, for a person.
        reason: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("a libvirt worker task failed")]
    Join(#[source] tokio::task::JoinError),
}

type Result<T> = std::result::Result<T, VirtError>;

/// One libvirt connection; cheap to clone.
#[derive(Clone)]
pub struct Hypervisor {
    conn: Arc<Connect>,
    uri: String,
    templates: Arc<Renderer>,
    /// The SSH forward a remote hypervisor's connection runs over; declared
    /// after `conn`, so that the connection closes before its tunnel.
    _tunnel: Option<Arc<tunnel::Tunnel>>,
}

/// A storage pool edgeforge uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRef {
    /// Pool name.
    pub name: String,
    /// Directory on the hypervisor.
    pub path: String,
}

/// The base image as volumes in a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseVolumes {
    /// sha256 of the qcow2 image.
    pub sha256: String,
    /// Volume name of the image (`<sha256>.qcow2`).
    pub image_volume: String,
    /// Path of the image on the hypervisor.
    pub image_path: String,
    /// Virtual size of the image in bytes.
    pub image_virtual_size: u64,
    /// Path of the kernel on the hypervisor.
    pub kernel_path: String,
    /// Path of the initrd on the hypervisor.
    pub initrd_path: String,
    /// Whether this call uploaded anything (false: the pool had it all).
    pub uploaded: bool,
}

/// How a VM's NIC is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum NicSpec {
    /// User-mode networking through passt, SSH forwarded from a port on the
    /// hypervisor's loopback.
    User {
        /// Hypervisor address the port listens on.
        forward_address: String,
        /// Hypervisor port forwarded to the guest's port 22.
        ssh_forward_port: u16,
        /// Hypervisor port forwarded to the guest's API server port 6443.
        #[serde(skip_serializing_if = "Option::is_none")]
        api_forward_port: Option<u16>,
    },
    /// A libvirt network (NAT).
    Network {
        /// Network name.
        name: String,
    },
    /// A host bridge.
    Bridge {
        /// Bridge interface.
        bridge: String,
    },
}

/// Everything that defines one VM; its hash is the drift check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmSpec {
    /// Domain name (also names its volumes).
    pub name: String,
    /// Guest hostname.
    pub hostname: String,
    /// The lab (inventory) this VM belongs to.
    pub lab: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Root disk in GiB.
    pub disk_gib: u64,
    /// sha256 of the base image.
    pub image_sha256: String,
    /// sha256 of the seed's identity material (user, hostname, keys).
    pub seed_sha256: String,
    /// Machine type (`pc`, `q35`).
    pub machine: String,
    /// The NIC.
    pub network: NicSpec,
    /// A second NIC on an isolated network between the VMs, with a static address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterNic>,
}

/// A VM's NIC on its hypervisor's isolated cluster network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterNic {
    /// The libvirt network.
    pub network: String,
    /// The guest's static address on it, with the prefix length (`10.77.0.11/24`).
    pub address: String,
    /// Its MAC address (derived from the domain name).
    pub mac: String,
    /// The MAC of the VM's first NIC (so the guest tells the two apart).
    pub primary_mac: String,
    /// The interface name cloud-init gives it in the guest.
    pub iface: String,
}

impl ClusterNic {
    /// The cluster NIC of domain `name` on `network` with `address/prefix`;
    /// stable MACs in QEMU's locally administered range.
    pub fn new(name: &str, network: &str, address: &str, prefix: u8) -> ClusterNic {
        let mac = |which: &str| {
            let h = Sha256::digest(format!("{name}/{which}").as_bytes());
            format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
        };
        ClusterNic {
            network: network.to_string(),
            address: format!("{address}/{prefix}"),
            mac: mac("cluster"),
            primary_mac: mac("primary"),
            iface: crate::inventory::CLUSTER_NIC.to_string(),
        }
    }
}

impl VmSpec {
    /// sha256 over the fields whose change needs the VM recreated.
    pub fn spec_hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }

    /// Volume name of the VM's root disk overlay.
    pub fn disk_volume(&self) -> String {
        format!("{}.qcow2", self.name)
    }

    /// Volume name of the VM's NoCloud seed.
    pub fn seed_volume(&self) -> String {
        format!("{}-seed.img", self.name)
    }

    /// Where SSH is reached: `host:port` for user networking, else empty
    /// (the address comes from the DHCP lease).
    pub fn ssh_endpoint(&self) -> String {
        match &self.network {
            NicSpec::User {
                forward_address,
                ssh_forward_port,
                ..
            } => format!("{forward_address}:{ssh_forward_port}"),
            _ => String::new(),
        }
    }
}

/// Domain state as edgeforge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Running (or blocked/paused by the hypervisor).
    Running,
    /// Paused.
    Paused,
    /// Defined but not running.
    Shutoff,
    /// Crashed or in a state edgeforge does not handle.
    Other,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Shutoff => "shut off",
            VmState::Other => "other",
        })
    }
}

/// A defined domain that belongs to an edgeforge lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmStatus {
    /// Domain name.
    pub name: String,
    /// Its state.
    pub state: VmState,
    /// The lab recorded in its metadata.
    pub lab: String,
    /// The spec hash recorded in its metadata.
    pub spec_hash: String,
    /// The SSH endpoint recorded in its metadata (`host:port`), if any.
    pub ssh_endpoint: String,
    /// Addresses the hypervisor knows (DHCP lease), if any.
    pub addresses: Vec<String>,
}

/// What [`Hypervisor::remove_vm`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// The domain was running and was destroyed.
    pub destroyed: bool,
    /// The domain was undefined.
    pub undefined: bool,
    /// Volumes deleted.
    pub volumes: Vec<String>,
}

impl Hypervisor {
    /// Opens a connection to `uri`, rendering its XML with the templates of
    /// `data`. A URI that reaches its host over SSH (`qemu+ssh://`) needs
    /// [`Hypervisor::connect_via`] and the host's SSH target.
    pub async fn connect(uri: &str, data: &DataDir) -> Result<Hypervisor> {
        Hypervisor::connect_via(uri, None, data).await
    }

    /// Opens a connection to `uri`; with `ssh`, over edgeforge's own SSH
    /// connection to that host (see [`tunnel`]), so the host key is checked
    /// as the inventory says.
    pub async fn connect_via(
        uri: &str,
        ssh: Option<&SshTarget>,
        data: &DataDir,
    ) -> Result<Hypervisor> {
        let templates = Arc::new(Renderer::new(data)?);
        let tunnel = match ssh {
            Some(target) if tunnel::is_ssh_uri(uri) => {
                Some(Arc::new(tunnel::Tunnel::open(uri, target).await?))
            }
            _ => None,
        };
        let owned = tunnel
            .as_ref()
            .map_or_else(|| uri.to_owned(), |t| t.local_uri.clone());
        // libvirt prints every error to stderr by default, including the
        // expected "not found" of a lookup; errors reach callers as values.
        virt::error::clear_error_callback();
        let conn = tokio::task::spawn_blocking(move || Connect::open(Some(&owned)))
            .await
            .map_err(VirtError::Join)?
            .map_err(|source| VirtError::Connect {
                uri: uri.to_owned(),
                source,
            })?;
        Ok(Hypervisor {
            conn: Arc::new(conn),
            uri: uri.to_owned(),
            templates,
            _tunnel: tunnel,
        })
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Makes sure a directory pool `name` at `path` exists, is built, active
    /// and autostarted.
    pub async fn ensure_pool(&self, name: &str, path: &str) -> Result<PoolRef> {
        let xml = self.templates.render(
            "libvirt/pool.xml.tera",
            &serde_json::json!({"name": name, "path": path}),
        )?;
        let name = name.to_owned();
        self.blocking(move |conn| {
            let pool = match conn.lookup_storage_pool_by_name(&name) {
                Ok(p) => p,
                Err(_) => conn
                    .define_storage_pool_xml(&xml, 0)
                    .map_err(lv(format!("defining storage pool {name}")))?,
            };
            if !pool
                .is_active()
                .map_err(lv(format!("reading storage pool {name}")))?
            {
                // For a dir pool, build without flags only creates the
                // directory (and is harmless when it exists).
                pool.build(0)
                    .map_err(lv(format!("building storage pool {name}")))?;
                pool.create(0)
                    .map_err(lv(format!("starting storage pool {name}")))?;
            }
            if pool.is_persistent().unwrap_or(false) {
                let _ = pool.set_autostart(true);
            }
            let desc = pool
                .xml_desc(0)
                .map_err(lv(format!("reading storage pool {name}")))?;
            let path = xml_text(&desc, "path").unwrap_or_default();
            Ok(PoolRef { name, path })
        })
        .await
    }

    /// Uploads the base image, kernel and initrd into `pool` unless volumes
    /// named by the image's sha256 are already there.
    pub async fn ensure_base(&self, pool: &PoolRef, image: &BaseImage) -> Result<BaseVolumes> {
        let sha = image.sha256.clone();
        let files = [
            (format!("{sha}.qcow2"), image.image_path()),
            (format!("{sha}.vmlinuz"), image.kernel_path()),
            (format!("{sha}.initrd"), image.initrd_path()),
        ];
        let virtual_size = qcow2_virtual_size(&image.image_path())?;
        let mut uploaded = false;
        let mut paths = Vec::new();
        for (volume, file) in files {
            let (path, did) = self.ensure_uploaded(pool, &volume, &file).await?;
            uploaded |= did;
            paths.push(path);
        }
        let [image_path, kernel_path, initrd_path]: [String; 3] =
            paths.try_into().unwrap_or_default();
        Ok(BaseVolumes {
            image_volume: format!("{sha}.qcow2"),
            sha256: sha,
            image_path,
            image_virtual_size: virtual_size,
            kernel_path,
            initrd_path,
            uploaded,
        })
    }

    /// Chooses KVM or TCG for this hypervisor (see [`accel`]); the result of
    /// the probe boot is cached in `cache_dir` when given.
    pub async fn detect_accel(
        &self,
        base: &BaseVolumes,
        cache_dir: Option<&Path>,
    ) -> Result<AccelChoice> {
        accel::detect(self, base, cache_dir).await
    }

    /// Creates the VM's seed volume and overlay disk and defines the domain
    /// (stopped: [`Hypervisor::start_vm`] boots it).
    pub async fn create_vm(
        &self,
        pool: &PoolRef,
        spec: &VmSpec,
        base: &BaseVolumes,
        seed: &SeedSpec,
        accel: Accel,
    ) -> Result<()> {
        check_name("VM", &spec.name)?;
        self.upload_seed(pool, spec, seed).await?;
        self.define_vm(pool, spec, base, accel).await
    }

    /// Renders the NoCloud seed of `spec` and uploads it as its seed volume.
    pub async fn upload_seed(&self, pool: &PoolRef, spec: &VmSpec, seed: &SeedSpec) -> Result<()> {
        let seed_file = seed::build(&self.templates, seed)?;
        self.upload_volume(pool, &spec.seed_volume(), seed_file.path())
            .await
            .map(|_| ())
    }

    /// Creates the overlay disk (backed by the base image) and defines the
    /// domain, stopped; the seed volume must exist.
    pub async fn define_vm(
        &self,
        pool: &PoolRef,
        spec: &VmSpec,
        base: &BaseVolumes,
        accel: Accel,
    ) -> Result<()> {
        check_name("VM", &spec.name)?;
        let capacity = spec.disk_gib.saturating_mul(1 << 30);
        if capacity < base.image_virtual_size {
            return Err(VirtError::DiskTooSmall {
                name: spec.name.clone(),
                disk_gib: spec.disk_gib,
                base_bytes: base.image_virtual_size,
            });
        }
        let vol_xml = self.templates.render(
            "libvirt/volume.xml.tera",
            &serde_json::json!({
                "name": spec.disk_volume(),
                "capacity": capacity,
                "format": "qcow2",
                "backing_path": base.image_path,
            }),
        )?;
        let domain_xml = self.domain_xml(pool, spec, base, accel)?;
        let (pool_name, disk, name) = (pool.name.clone(), spec.disk_volume(), spec.name.clone());
        self.blocking(move |conn| {
            let pool = lookup_pool(conn, &pool_name)?;
            if let Ok(old) = pool.lookup_storage_vol_by_name(&disk) {
                old.delete(0)
                    .map_err(lv(format!("deleting the stale volume {disk}")))?;
            }
            StorageVol::create_xml(&pool, &vol_xml, 0)
                .map_err(lv(format!("creating the disk volume {disk}")))?;
            conn.define_domain_xml(&domain_xml)
                .map_err(lv(format!("defining domain {name}")))?;
            Ok(())
        })
        .await
    }

    /// The domain XML for `spec` (what [`Hypervisor::create_vm`] defines).
    pub fn domain_xml(
        &self,
        pool: &PoolRef,
        spec: &VmSpec,
        base: &BaseVolumes,
        accel: Accel,
    ) -> Result<String> {
        Ok(self.templates.render(
            "libvirt/domain.xml.tera",
            &serde_json::json!({
                "domain_type": accel.domain_type(),
                "name": spec.name,
                "hostname": spec.hostname,
                "lab": spec.lab,
                "spec_hash": spec.spec_hash(),
                "memory_mib": spec.memory_mib,
                "cpus": spec.cpus,
                "machine": spec.machine,
                "kernel_path": base.kernel_path,
                "initrd_path": base.initrd_path,
                "cmdline": baseimage::KERNEL_CMDLINE,
                "tcg_cpu_model": TCG_CPU_MODEL,
                "pool": pool.name,
                "disk_volume": spec.disk_volume(),
                "seed_volume": spec.seed_volume(),
                "ssh_endpoint": spec.ssh_endpoint(),
                "network": spec.network,
                "cluster": spec.cluster,
                "console_log": console_log(&spec.name),
            }),
        )?)
    }

    /// Defines, starts and autostarts the isolated network `name` (no
    /// address on this host, no forwarding) when it is not there or not
    /// running; true when it did anything.
    pub async fn ensure_isolated_network(&self, name: &str) -> Result<bool> {
        check_name("network", name)?;
        let xml = self.templates.render(
            "libvirt/isolated-network.xml.tera",
            &serde_json::json!({ "name": name }),
        )?;
        let name = name.to_owned();
        self.blocking(move |conn| {
            let mut changed = false;
            // VMs are defined concurrently: another one may define or start
            // the network between our look and our act, which is fine.
            let net = match conn.lookup_network_by_name(&name) {
                Ok(net) => net,
                Err(_) => match conn.define_network_xml(&xml) {
                    Ok(net) => {
                        changed = true;
                        net
                    }
                    Err(e) => conn
                        .lookup_network_by_name(&name)
                        .map_err(|_| e)
                        .map_err(lv(format!("defining network {name}")))?,
                },
            };
            if !net.is_active().unwrap_or(false) {
                match net.create() {
                    Ok(_) => changed = true,
                    Err(_) if net.is_active().unwrap_or(false) => {}
                    Err(e) => return Err(lv(format!("starting network {name}"))(e)),
                }
            }
            let _ = net.set_autostart(true);
            Ok(changed)
        })
        .await
    }

    /// Removes network `name` unless a defined domain still uses it; true when removed.
    pub async fn remove_network_if_unused(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.blocking(move |conn| {
            let Ok(net) = conn.lookup_network_by_name(&name) else {
                return Ok(false);
            };
            let doms = conn
                .list_all_domains(0)
                .map_err(lv("listing domains".into()))?;
            let needle = format!("network='{name}'");
            let used = doms
                .iter()
                .any(|d| d.xml_desc(0).is_ok_and(|x| x.contains(&needle)));
            if used {
                return Ok(false);
            }
            if net.is_active().unwrap_or(false) {
                net.destroy()
                    .map_err(lv(format!("stopping network {name}")))?;
            }
            net.undefine()
                .map_err(lv(format!("undefining network {name}")))?;
            Ok(true)
        })
        .await
    }

    /// Starts the defined, stopped domain `name`.
    pub async fn start_vm(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.blocking(move |conn| {
            conn.lookup_domain_by_name(&name)
                .and_then(|d| d.create())
                .map_err(lv(format!("starting domain {name}")))
        })
        .await
    }

    /// The status of domain `name`, or None when it is not defined.
    pub async fn vm_status(&self, name: &str) -> Result<Option<VmStatus>> {
        let name = name.to_owned();
        self.blocking(move |conn| match conn.lookup_domain_by_name(&name) {
            Ok(dom) => status_of(&dom).map(Some),
            Err(_) => Ok(None),
        })
        .await
    }

    /// Every defined domain whose metadata names lab `lab`.
    pub async fn list_lab(&self, lab: &str) -> Result<Vec<VmStatus>> {
        let lab = lab.to_owned();
        self.blocking(move |conn| {
            let doms = conn
                .list_all_domains(0)
                .map_err(lv("listing domains".into()))?;
            let mut out = Vec::new();
            for dom in doms {
                if let Ok(status) = status_of(&dom)
                    && status.lab == lab
                {
                    out.push(status);
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    /// Destroys and undefines domain `name` and deletes its disk and seed
    /// volumes from `pool`; the base image stays.
    pub async fn remove_vm(&self, pool: &str, name: &str) -> Result<Removed> {
        let (pool, name) = (pool.to_owned(), name.to_owned());
        self.blocking(move |conn| {
            let mut removed = Removed::default();
            let mut volumes = vec![format!("{name}.qcow2"), format!("{name}-seed.img")];
            if let Ok(dom) = conn.lookup_domain_by_name(&name) {
                if let Ok(desc) = dom.xml_desc(0) {
                    for tag in ["edgeforge:disk", "edgeforge:seed"] {
                        if let Some(v) = xml_text(&desc, tag)
                            && !volumes.contains(&v)
                        {
                            volumes.push(v);
                        }
                    }
                }
                if dom.is_active().unwrap_or(false) {
                    dom.destroy()
                        .map_err(lv(format!("destroying domain {name}")))?;
                    removed.destroyed = true;
                }
                dom.undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM)
                    .or_else(|_| dom.undefine())
                    .map_err(lv(format!("undefining domain {name}")))?;
                removed.undefined = true;
            }
            let pool = lookup_pool(conn, &pool)?;
            for v in volumes {
                if let Ok(vol) = pool.lookup_storage_vol_by_name(&v) {
                    vol.delete(0).map_err(lv(format!("deleting volume {v}")))?;
                    removed.volumes.push(v);
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Volume names in `pool`.
    pub async fn list_volumes(&self, pool: &str) -> Result<Vec<String>> {
        let pool = pool.to_owned();
        self.blocking(move |conn| {
            let p = lookup_pool(conn, &pool)?;
            let _ = p.refresh(0);
            let mut v = p
                .list_volumes()
                .map_err(lv(format!("listing volumes of pool {pool}")))?;
            v.sort();
            Ok(v)
        })
        .await
    }

    /// Waits until the VM answers with an SSH banner on `addr`, failing
    /// early when the domain stops and after `timeout`.
    pub async fn wait_for_ssh(
        &self,
        name: &str,
        addr: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let started = Instant::now();
        let mut last_state_check = Instant::now();
        loop {
            if ssh_banner(addr).await {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                return Err(VirtError::SshTimeout {
                    name: name.to_owned(),
                    addr: addr.to_owned(),
                    secs: timeout.as_secs(),
                    console_log: console_log(name),
                });
            }
            if last_state_check.elapsed() > Duration::from_secs(5) {
                last_state_check = Instant::now();
                let state = self.vm_status(name).await?.map(|s| s.state);
                if state != Some(VmState::Running) {
                    return Err(VirtError::Stopped {
                        name: name.to_owned(),
                        console_log: console_log(name),
                    });
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Runs `f` with the connection on the blocking thread pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&conn))
            .await
            .map_err(VirtError::Join)?
    }

    /// The path of `volume`, uploading `file` into it first when it is not
    /// in the pool; the bool says whether it uploaded.
    async fn ensure_uploaded(
        &self,
        pool: &PoolRef,
        volume: &str,
        file: &Path,
    ) -> Result<(String, bool)> {
        let (pool_name, vol_name) = (pool.name.clone(), volume.to_owned());
        let existing = self
            .blocking(move |conn| {
                let pool = lookup_pool(conn, &pool_name)?;
                Ok(pool
                    .lookup_storage_vol_by_name(&vol_name)
                    .ok()
                    .and_then(|v| v.path().ok()))
            })
            .await?;
        match existing {
            Some(path) => Ok((path, false)),
            None => Ok((self.upload_volume(pool, volume, file).await?, true)),
        }
    }

    /// (Re)creates `volume` in `pool` with the contents of `file`, streamed
    /// through libvirt; returns its path on the hypervisor.
    async fn upload_volume(&self, pool: &PoolRef, volume: &str, file: &Path) -> Result<String> {
        let len = std::fs::metadata(file)
            .map_err(|source| VirtError::Io {
                what: "reading",
                path: file.to_owned(),
                source,
            })?
            .len();
        let xml = self.templates.render(
            "libvirt/volume.xml.tera",
            &serde_json::json!({"name": volume, "capacity": len, "format": "raw", "backing_path": ""}),
        )?;
        let (pool_name, vol_name, file) = (pool.name.clone(), volume.to_owned(), file.to_owned());
        self.blocking(move |conn| {
            let pool = lookup_pool(conn, &pool_name)?;
            if let Ok(old) = pool.lookup_storage_vol_by_name(&vol_name) {
                old.delete(0)
                    .map_err(lv(format!("deleting the stale volume {vol_name}")))?;
            }
            let vol = StorageVol::create_xml(&pool, &xml, 0)
                .map_err(lv(format!("creating volume {vol_name}")))?;
            if let Err(e) = stream_file(conn, &vol, &file, len, &vol_name) {
                // Never leave a half-written volume under a content name.
                let _ = vol.delete(0);
                return Err(e);
            }
            let _ = pool.refresh(0);
            vol.path()
                .map_err(lv(format!("reading the path of volume {vol_name}")))
        })
        .await
    }
}

fn stream_file(
    conn: &Connect,
    vol: &StorageVol,
    file: &Path,
    len: u64,
    vol_name: &str,
) -> Result<()> {
    use std::io::Read;
    let io_err = |source| VirtError::Io {
        what: "reading",
        path: file.to_owned(),
        source,
    };
    let stream = Stream::new(conn, 0).map_err(lv("opening an upload stream".into()))?;
    vol.upload(&stream, 0, len, 0)
        .map_err(lv(format!("uploading into volume {vol_name}")))?;
    let mut f = std::fs::File::open(file).map_err(io_err)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        let mut chunk = buf.get(..n).unwrap_or_default();
        while !chunk.is_empty() {
            let sent = stream
                .send(chunk)
                .map_err(lv(format!("uploading into volume {vol_name}")))?;
            let sent = usize::try_from(sent).unwrap_or(0).min(chunk.len());
            chunk = chunk.get(sent..).unwrap_or_default();
        }
    }
    stream
        .finish()
        .map_err(lv(format!("finishing the upload into volume {vol_name}")))
}

fn status_of(dom: &Domain) -> Result<VmStatus> {
    let name = dom.name().map_err(lv("reading a domain name".into()))?;
    let desc = dom
        .xml_desc(0)
        .map_err(lv(format!("reading domain {name}")))?;
    let info = dom
        .info()
        .map_err(lv(format!("reading the state of domain {name}")))?;
    use virt::domain::DomainState as S;
    let state = match info.state.known() {
        Some(S::Running | S::Blocked) => VmState::Running,
        Some(S::Paused | S::PMSuspended) => VmState::Paused,
        Some(S::Shutoff | S::Shutdown) => VmState::Shutoff,
        _ => VmState::Other,
    };
    let addresses = if state == VmState::Running {
        dom.interface_addresses(virt::sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
            .map(|ifs| {
                ifs.into_iter()
                    .flat_map(|i| i.addrs.into_iter().map(|a| a.addr))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(VmStatus {
        lab: xml_text(&desc, "edgeforge:lab").unwrap_or_default(),
        spec_hash: xml_text(&desc, "edgeforge:spec").unwrap_or_default(),
        ssh_endpoint: xml_text(&desc, "edgeforge:ssh").unwrap_or_default(),
        addresses,
        state,
        name,
    })
}

fn lookup_pool(conn: &Connect, name: &str) -> Result<StoragePool> {
    conn.lookup_storage_pool_by_name(name)
        .map_err(lv(format!("finding storage pool {name}")))
}

/// The text of the first `<tag>` element in `xml` (enough for the flat
/// metadata edgeforge writes and libvirt echoes back).
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml.get(start..)?.find(&format!("</{tag}>"))? + start;
    let raw = xml.get(start..end)?;
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Builds the NoCloud seed image of `seed` locally (the file
/// [`Hypervisor::create_vm`] uploads), for tools that boot qemu themselves.
pub fn seed_image(data: &DataDir, seed: &SeedSpec) -> Result<tempfile::NamedTempFile> {
    seed::build(&Renderer::new(data)?, seed)
}

/// Where libvirt's virtlogd writes a VM's serial console on the hypervisor.
pub fn console_log(name: &str) -> String {
    format!("/var/log/libvirt/qemu/{name}-console.log")
}

/// Whether `name` can name a domain and its volumes (hostname rules).
fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(VirtError::BadName {
            what,
            name: name.to_owned(),
        })
    }
}

/// Whether something at `addr` sends an SSH identification line.
///
/// The probe sends its own identification first: behind passt's port
/// forwarding the server's line only arrives once the client has sent data.
/// One connection at a time, and a patient read: a booting guest under TCG
/// may take many seconds to fork sshd for a connection, and probes that give
/// up early only pile more unfinished sshd children onto it.
pub async fn ssh_banner(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .ok()?
        .ok()?;
        s.write_all(b"SSH-2.0-edgeforge-probe\r\n").await.ok()?;
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf.starts_with(b"SSH-"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(90), attempt).await,
        Ok(Some(true))
    )
}

/// Virtual size of a qcow2 file, read from its header.
fn qcow2_virtual_size(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut header = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|source| VirtError::Io {
            what: "reading the qcow2 header of",
            path: path.to_owned(),
            source,
        })?;
    if !header.starts_with(b"QFI\xfb") {
        return Err(VirtError::Io {
            what: "not a qcow2 image:",
            path: path.to_owned(),
            source: std::io::ErrorKind::InvalidData.into(),
        });
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(header.get(24..32).unwrap_or(&[0; 8]));
    Ok(u64::from_be_bytes(size))
}

/// Maps a libvirt error into [`VirtError::Libvirt`] with a phrase.
fn lv(what: String) -> impl FnOnce(virt::error::Error) -> VirtError {
    move |source| VirtError::Libvirt { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_reads_metadata() {
        let xml = "<domain><metadata><edgeforge:vm xmlns:edgeforge='x'><edgeforge:lab>a&amp;b</edgeforge:lab></edgeforge:vm></metadata></domain>";
        assert_eq!(xml_text(xml, "edgeforge:lab").as_deref(), Some("a&b"));
        assert_eq!(xml_text(xml, "edgeforge:spec"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("VM", "lab-node-1").is_ok());
        for bad in ["", "Upper", "-x", "a_b", "a.b", &"x".repeat(64)] {
            assert!(check_name("VM", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn spec_hash_tracks_drift_fields() {
        let spec = VmSpec {
            name: "lab-n1".into(),
            hostname: "n1".into(),
            lab: "lab".into(),
            cpus: 2,
            memory_mib: 1024,
            disk_gib: 4,
            image_sha256: "ab".into(),
            seed_sha256: "cd".into(),
            machine: "pc".into(),
            network: NicSpec::User {
                forward_address: "127.0.0.1".into(),
                ssh_forward_port: 2201,
                api_forward_port: None,
            },
            cluster: None,
        };
        let h = spec.spec_hash();
        assert_eq!(h, spec.clone().spec_hash());
        for changed in [
            VmSpec {
                cpus: 1,
                ..spec.clone()
            },
            VmSpec {
                memory_mib: 2048,
                ..spec.clone()
            },
            VmSpec {
                disk_gib: 5,
                ..spec.clone()
            },
            VmSpec {
                image_sha256: "cd".into(),
                ..spec.clone()
            },
        ] {
            assert_ne!(changed.spec_hash(), h);
        }
        assert_eq!(spec.ssh_endpoint(), "127.0.0.1:2201");
        assert_eq!(spec.disk_volume(), "lab-n1.qcow2");
        assert_eq!(spec.seed_volume(), "lab-n1-seed.img");
        // Labs without the k3s network keep their recorded spec hash.
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            !json.contains("cluster") && !json.contains("api_forward_port"),
            "{json}"
        );
        let with_nic = VmSpec {
            cluster: Some(ClusterNic::new("lab-n1", "ef-lab", "10.77.0.11", 24)),
            ..spec.clone()
        };
        assert_ne!(with_nic.spec_hash(), h);
    }

    #[tokio::test]
    async fn a_vm_on_a_cluster_network_gets_a_second_nic_and_its_api_forwarded() {
        let hv = Hypervisor::connect("test:///default", &DataDir::Embedded)
            .await
            .unwrap();
        let nic = ClusterNic::new("lab-n1", "ef-lab", "10.77.0.11", 24);
        assert_eq!(
            nic,
            ClusterNic::new("lab-n1", "ef-lab", "10.77.0.11", 24),
            "stable"
        );
        assert_ne!(nic.mac, nic.primary_mac);
        assert!(
            nic.mac.starts_with("52:54:00:") && nic.mac.len() == 17,
            "{}",
            nic.mac
        );
        let spec = VmSpec {
            name: "lab-n1".into(),
            hostname: "n1".into(),
            lab: "lab".into(),
            cpus: 2,
            memory_mib: 1024,
            disk_gib: 4,
            image_sha256: "ab".into(),
            seed_sha256: "cd".into(),
            machine: "pc".into(),
            network: NicSpec::User {
                forward_address: "127.0.0.1".into(),
                ssh_forward_port: 2211,
                api_forward_port: Some(2216),
            },
            cluster: Some(nic.clone()),
        };
        let pool = PoolRef {
            name: "edgeforge".into(),
            path: "/var/lib/edgeforge/images".into(),
        };
        let base = BaseVolumes {
            sha256: "ab".into(),
            image_volume: "ab.qcow2".into(),
            image_path: "/p/ab.qcow2".into(),
            image_virtual_size: 1,
            kernel_path: "/p/vmlinuz".into(),
            initrd_path: "/p/initrd".into(),
            uploaded: false,
        };
        let xml = hv.domain_xml(&pool, &spec, &base, Accel::Tcg).unwrap();
        assert!(xml.contains("<range start='2211' to='22'/>"), "{xml}");
        assert!(xml.contains("<range start='2216' to='6443'/>"), "{xml}");
        assert!(
            xml.contains(&format!("<mac address='{}'/>", nic.primary_mac)),
            "{xml}"
        );
        let second = xml
            .split("<interface type='network'>")
            .nth(1)
            .expect("a second NIC");
        assert!(
            second.contains(&format!("<mac address='{}'/>", nic.mac)),
            "{xml}"
        );
        assert!(second.contains("<source network='ef-lab'/>"), "{xml}");
        // The network libvirt defines for it has no address and no forward.
        assert!(hv.ensure_isolated_network("ef-unit").await.unwrap());
        assert!(!hv.ensure_isolated_network("ef-unit").await.unwrap());
        let net = hv
            .blocking(|conn| {
                conn.lookup_network_by_name("ef-unit")
                    .and_then(|n| n.xml_desc(0))
                    .map_err(lv("reading the network".into()))
            })
            .await
            .unwrap();
        assert!(!net.contains("<ip") && !net.contains("<forward"), "{net}");
        assert!(hv.remove_network_if_unused("ef-unit").await.unwrap());
        // The guest tells its NICs apart by MAC and names the second one.
        let seed = hv
            .templates
            .render(
                "libvirt/network-config.tera",
                &serde_json::json!({ "cluster": nic }),
            )
            .unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&seed).unwrap();
        assert_eq!(
            doc["ethernets"]["primary"]["match"]["macaddress"],
            nic.primary_mac
        );
        assert_eq!(doc["ethernets"]["primary"]["dhcp4"], true);
        assert_eq!(doc["ethernets"]["cluster"]["match"]["macaddress"], nic.mac);
        assert_eq!(
            doc["ethernets"]["cluster"]["set-name"],
            crate::inventory::CLUSTER_NIC
        );
        assert_eq!(doc["ethernets"]["cluster"]["addresses"][0], "10.77.0.11/24");
    }
}
