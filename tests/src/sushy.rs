//! sushy-tools, OpenStack's Redfish emulator, as the real BMC peer: a
//! [`SushyLab`] defines "bare-metal" libvirt domains on the local libvirtd
//! (q35, UEFI through OVMF, `<domain type='qemu'>` since nested KVM hangs
//! guests here, an empty disk and an empty CD drive; by default 1 vCPU and
//! 256 MiB with no NIC, as the Redfish suites never boot an OS, or, for the
//! install suites, a [`MachineShape`] with a bigger disk and user-mode
//! networking whose SSH is forwarded to a loopback port), a storage pool for the images sushy
//! downloads, then starts `sushy-emulator` on 127.0.0.1 with the libvirt
//! driver, a bcrypt htpasswd and optionally TLS with a certificate from a CA
//! made for the lab. Only the lab's own domains are exposed
//! (`SUSHY_EMULATOR_ALLOWED_INSTANCES`), so domains of other tests on the
//! same libvirtd never show up. Dropping the lab stops sushy, powers the
//! domains off, undefines them (NVRAM included) and removes the pool.
//!
//! What sushy-tools 2.2 does that real BMCs may not: VirtualMedia only under
//! Systems; Basic auth only (no SessionService); no ETags;
//! `BootSourceOverrideEnabled` ignored (it reads back `Continuous`); boot
//! modes not advertised; InsertMedia downloads the image inside the POST and
//! uploads it into the pool; eject removes the CD drive from the domain; and
//! changes apply to the inactive domain definition, so they take effect on
//! the next power-on (power-cycle with ForceOff then On).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::lab::{URI, ensure_libvirtd, virsh};

/// The BMC user every lab's htpasswd has.
pub const USER: &str = "admin";

/// The Python venv the test tools live in: `$EDGEFORGE_TEST_VENV`, else
/// `/opt/edgeforge-test/venv` (created by tests/setup-host.sh).
pub fn venv() -> PathBuf {
    std::env::var_os("EDGEFORGE_TEST_VENV")
        .map_or_else(|| PathBuf::from("/opt/edgeforge-test/venv"), PathBuf::from)
}

/// What a lab looks like.
#[derive(Debug, Clone)]
pub struct SushyOptions {
    /// How many bare-metal domains sushy exposes.
    pub machines: usize,
    /// Serve HTTPS with a certificate from the lab's own CA.
    pub tls: bool,
    /// Name prefix of the domains (`<prefix>-<i>`); default `ef-bm-<tag>-<pid>`.
    pub prefix: Option<String>,
    /// Name of the storage pool sushy downloads images into; default `<prefix>-pool`.
    pub pool: Option<String>,
    /// Port sushy listens on (default: a free one).
    pub port: Option<u16>,
    /// Size, CPU and network of each machine.
    pub shape: MachineShape,
}

impl Default for SushyOptions {
    fn default() -> Self {
        SushyOptions {
            machines: 1,
            tls: false,
            prefix: None,
            pool: None,
            port: None,
            shape: MachineShape::default(),
        }
    }
}

/// Size, CPU and network of a bare-metal domain.
#[derive(Debug, Clone)]
pub struct MachineShape {
    /// Memory in MiB.
    pub memory_mib: u64,
    /// vCPUs (at most 2 here: TCG guests share two cores).
    pub vcpus: u32,
    /// Disk size in GiB.
    pub disk_gib: u64,
    /// Loopback port forwarded to port 22 of machine `i` (passt user-mode
    /// networking); no NIC for a machine without one.
    pub ssh_ports: Vec<u16>,
    /// Give the guest every CPU feature TCG emulates (`mode='maximum'`)
    /// instead of the default model, as a current server CPU would.
    pub cpu_max: bool,
}

impl Default for MachineShape {
    fn default() -> Self {
        MachineShape {
            memory_mib: 256,
            vcpus: 1,
            disk_gib: 1,
            ssh_ports: Vec::new(),
            cpu_max: false,
        }
    }
}

/// One "bare-metal" machine: a libvirt domain sushy exposes as a system.
#[derive(Debug, Clone)]
pub struct BareMetal {
    /// The domain name (sushy's system `Name`).
    pub name: String,
    /// The domain UUID (sushy's system `Id`).
    pub uuid: String,
}

impl BareMetal {
    /// What the machine's serial console printed so far (firmware, boot loader, kernel).
    pub fn console(&self, lab: &SushyLab) -> String {
        std::fs::read_to_string(lab.dir().join(format!("{}.console.log", self.name)))
            .unwrap_or_default()
    }

    /// `virsh domstate`: `running`, `shut off`, ...
    pub fn domstate(&self) -> anyhow::Result<String> {
        Ok(virsh(&["domstate", &self.name])?.trim().to_string())
    }

    /// The inactive domain XML (where sushy's changes land first).
    pub fn inactive_xml(&self) -> anyhow::Result<String> {
        virsh(&["dumpxml", "--inactive", &self.name])
    }
}

/// sushy-emulator in front of bare-metal domains; all removed when dropped.
pub struct SushyLab {
    /// The machines, in the order they were defined.
    pub machines: Vec<BareMetal>,
    child: Option<Child>,
    addr: SocketAddr,
    tls: bool,
    pool: String,
    dir: tempfile::TempDir,
}

impl SushyLab {
    /// Defines the machines and the pool, then starts sushy and waits until it
    /// serves the service root. `tag` keeps names apart between tests.
    pub fn start(tag: &str, opts: &SushyOptions) -> anyhow::Result<SushyLab> {
        ensure_libvirtd()?;
        let sushy = venv().join("bin/sushy-emulator");
        if !sushy.is_file() {
            bail!(
                "{} is missing: run tests/setup-host.sh (it installs sushy-tools into the test venv)",
                sushy.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("ef-sushy-{tag}-"))
            .tempdir()
            .context("creating the lab directory")?;
        // qemu runs as libvirt-qemu: it must reach the disks and NVRAM in here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let prefix = opts
            .prefix
            .clone()
            .unwrap_or_else(|| format!("ef-bm-{tag}-{}", std::process::id()));
        let mut lab = SushyLab {
            machines: Vec::new(),
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: opts.tls,
            pool: opts
                .pool
                .clone()
                .unwrap_or_else(|| format!("{prefix}-pool")),
            dir,
        };
        let pool_dir = lab.dir.path().join("pool");
        std::fs::create_dir(&pool_dir)?;
        std::fs::set_permissions(
            &pool_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        // A pool left over from a killed run of the same test goes first.
        let _ = virsh(&["pool-destroy", &lab.pool]);
        virsh(&[
            "pool-create-as",
            &lab.pool,
            "dir",
            "--target",
            &pool_dir.display().to_string(),
        ])?;
        for i in 0..opts.machines {
            let name = format!("{prefix}-{i}");
            let machine = define_machine(lab.dir.path(), &name, &opts.shape, i)?;
            lab.machines.push(machine);
        }
        lab.write_credentials()?;
        if opts.tls {
            make_certificates(lab.dir.path())?;
        }
        lab.addr = match opts.port {
            Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            None => free_port()?,
        };
        lab.write_config()?;
        let log = std::fs::File::create(lab.dir.path().join("sushy.log"))?;
        let child = Command::new(&sushy)
            .arg("--config")
            .arg(lab.dir.path().join("sushy.conf"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", sushy.display()))?;
        lab.child = Some(child);
        lab.wait_until_serving()?;
        Ok(lab)
    }

    /// `http(s)://127.0.0.1:PORT`: the BMC endpoint.
    pub fn endpoint(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The address sushy listens on (for a [`crate::fault_proxy::FaultProxy`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The file holding the BMC password (for a `{file: ...}` reference).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("bmc-password")
    }

    /// The password itself, for checks that it appears nowhere.
    pub fn password(&self) -> String {
        std::fs::read_to_string(self.password_file()).unwrap_or_default()
    }

    /// The PEM file of the lab's CA (TLS labs only).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// The lab's directory (inventories may be written here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What sushy logged so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sushy.log")).unwrap_or_default()
    }

    /// An inventory with one site whose nodes are Redfish machines:
    /// `(node name, endpoint, systemId, caFile)` each, all with the lab's
    /// user and password file; the first is the server, the others agents.
    pub fn inventory(&self, nodes: &[(&str, &str, Option<&str>, Option<&Path>)]) -> String {
        let mut yaml = String::from(
            "apiVersion: edgeforge/v1\nname: redfish-test\nsites:\n  - name: rack\n    nodes:\n",
        );
        for (i, (name, endpoint, system_id, ca)) in nodes.iter().enumerate() {
            yaml.push_str(&format!(
                "      - name: {name}\n        role: {}\n        address: 127.0.0.{}\n        machine:\n\
                 \x20         type: redfish\n          endpoint: \"{endpoint}\"\n          username: {USER}\n\
                 \x20         password: {{file: \"{}\"}}\n",
                if i == 0 { "server" } else { "agent" },
                i + 2,
                self.password_file().display()
            ));
            if let Some(id) = system_id {
                yaml.push_str(&format!("          systemId: \"{id}\"\n"));
            }
            if let Some(ca) = ca {
                yaml.push_str(&format!("          caFile: \"{}\"\n", ca.display()));
            }
        }
        yaml
    }

    fn write_credentials(&self) -> anyhow::Result<()> {
        let mut raw = [0u8; 12];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
        let password: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(self.password_file(), format!("{password}\n"))?;
        // The password goes to htpasswd on stdin, never on a command line.
        let mut child = Command::new("htpasswd")
            .args(["-i", "-B", "-c"])
            .arg(self.dir.path().join("htpasswd"))
            .arg(USER)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running htpasswd (apt-get install apache2-utils)")?;
        child
            .stdin
            .take()
            .context("htpasswd stdin")?
            .write_all(password.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("htpasswd: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let allowed: Vec<String> = self
            .machines
            .iter()
            .map(|m| format!("'{}'", m.uuid))
            .collect();
        let mut conf = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_LIBVIRT_URI = '{URI}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
             SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
             SUSHY_EMULATOR_STORAGE_POOL = '{pool}'\n\
             SUSHY_EMULATOR_ALLOWED_INSTANCES = [{allowed}]\n\
             SUSHY_EMULATOR_BOOT_LOADER_MAP = {{'UEFI': {{'x86_64': '/usr/share/OVMF/OVMF_CODE_4M.fd'}}, 'Legacy': {{'x86_64': None}}}}\n",
            port = self.addr.port(),
            auth = d.join("htpasswd").display(),
            state = d.join("state").display(),
            pool = self.pool,
            allowed = allowed.join(", "),
        );
        if self.tls {
            conf.push_str(&format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                d.join("bmc.pem").display(),
                d.join("bmc.key").display()
            ));
        }
        std::fs::write(d.join("sushy.conf"), conf)?;
        Ok(())
    }

    fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("sushy-emulator exited ({status}):\n{}", self.log());
            }
            if TcpStream::connect(self.addr).is_ok() && self.log().contains("Running on") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "sushy-emulator did not listen on {} within 60 s:\n{}",
            self.addr,
            self.log()
        )
    }
}

impl Drop for SushyLab {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for m in &self.machines {
            let _ = virsh(&["destroy", &m.name]);
            let _ = virsh(&["undefine", "--nvram", &m.name]);
        }
        let _ = virsh(&["pool-destroy", &self.pool]);
    }
}

/// Defines bare-metal domain number `index` with its disk and NVRAM in `dir`.
fn define_machine(
    dir: &Path,
    name: &str,
    shape: &MachineShape,
    index: usize,
) -> anyhow::Result<BareMetal> {
    let disk = dir.join(format!("{name}.qcow2"));
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg(format!("{}G", shape.disk_gib))
        .output()
        .context("running qemu-img")?;
    if !out.status.success() {
        bail!("qemu-img create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let cpu = if shape.cpu_max {
        "  <cpu mode='maximum' check='none'/>\n"
    } else {
        ""
    };
    let nic = match shape.ssh_ports.get(index) {
        Some(port) => format!(
            "    <interface type='user'>\n\
             \x20     <backend type='passt'/>\n\
             \x20     <portForward proto='tcp' address='127.0.0.1'>\n\
             \x20       <range start='{port}' to='22'/>\n\
             \x20     </portForward>\n\
             \x20     <model type='virtio'/>\n\
             \x20   </interface>\n"
        ),
        None => String::new(),
    };
    let xml = format!(
        "<domain type='qemu'>\n\
         \x20 <name>{name}</name>\n\
         \x20 <memory unit='MiB'>{memory}</memory>\n\
         \x20 <vcpu>{vcpus}</vcpu>\n\
         \x20 <os>\n\
         \x20   <type arch='x86_64' machine='q35'>hvm</type>\n\
         \x20   <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\n\
         \x20   <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>{nvram}</nvram>\n\
         \x20 </os>\n\
         \x20 <features><acpi/></features>\n\
         {cpu}\
         \x20 <devices>\n\
         \x20   <disk type='file' device='disk'>\n\
         \x20     <driver name='qemu' type='qcow2'/>\n\
         \x20     <source file='{disk}'/>\n\
         \x20     <target dev='sda' bus='sata'/>\n\
         \x20     <boot order='1'/>\n\
         \x20   </disk>\n\
         \x20   <disk type='file' device='cdrom'>\n\
         \x20     <driver name='qemu' type='raw'/>\n\
         \x20     <target dev='sdb' bus='sata'/>\n\
         \x20     <readonly/>\n\
         \x20   </disk>\n\
         {nic}\
         \x20   <serial type='pty'>\n\
         \x20     <log file='{console}' append='on'/>\n\
         \x20     <target port='0'/>\n\
         \x20   </serial>\n\
         \x20   <console type='pty'><target type='serial' port='0'/></console>\n\
         \x20 </devices>\n\
         </domain>\n",
        memory = shape.memory_mib,
        vcpus = shape.vcpus,
        nvram = dir.join(format!("{name}_VARS.fd")).display(),
        disk = disk.display(),
        console = dir.join(format!("{name}.console.log")).display(),
    );
    let file = dir.join(format!("{name}.xml"));
    std::fs::write(&file, xml)?;
    // A domain left over from a killed run of the same test goes first.
    let _ = virsh(&["destroy", name]);
    let _ = virsh(&["undefine", "--nvram", name]);
    virsh(&["define", &file.display().to_string()])?;
    let uuid = virsh(&["domuuid", name])?.trim().to_string();
    Ok(BareMetal {
        name: name.to_string(),
        uuid,
    })
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it
/// (`bmc.pem`, `bmc.key`), made with openssl.
fn make_certificates(dir: &Path) -> anyhow::Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=edgeforge test BMC CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    )?;
    openssl(
        dir,
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "bmc.key",
                "-out",
                "bmc.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.join("bmc.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "bmc.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "bmc.pem",
            "-days",
            "2",
            "-extfile",
            "bmc.ext",
        ],
    )
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A loopback port free right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
