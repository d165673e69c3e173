//! `k3s-standin`: a **stand-in** for the k3s binary, for tests only.
//!
//! k3s cannot be downloaded on these machines, so the harness carries this
//! binary, which behaves like k3s at every point edgeforge's k3s layer
//! touches, so the same playbooks work with a real k3s: multicall on
//! `argv[0]` (`k3s`, `kubectl`, `crictl`, `ctr`), `k3s --version`, the
//! `server`, `agent`, `kubectl`, `token` and `etcd-snapshot` subcommands,
//! config files with k3s's merge rules ([`flags`]), the files a server
//! writes (`server/tls/server-ca.crt`, `server/token` = `K10<sha256 of the
//! CA PEM>::server:<secret>` with its `node-token` and `agent-token` links,
//! `/etc/rancher/k3s/k3s.yaml`), the supervisor routes and etcd membership
//! ([`supervisor`]), Nodes with k3s's labels, annotations and conditions
//! ([`node`]), `READY=1` on `$NOTIFY_SOCKET`, clean exit on SIGTERM, k3s's
//! log format on stderr ([`log`]), and what a running node leaves behind
//! for a reset to remove ([`leftovers`]). The Kubernetes API itself is the
//! harness's [`crate::kube_emulator`], another stand-in, with gitVersion set
//! to the binary's k3s version. No production code path uses it.
//!
//! Design choices a reader should know:
//! - The datastore (the emulator's objects and the etcd member list) lives
//!   with the server that started the cluster (`cluster-init`, or a single
//!   server); a server that joins forwards every API and supervisor request
//!   to it ([`proxy`]), so all servers answer with the same objects. Losing
//!   that server loses the cluster, which real etcd quorum would survive.
//! - A joining server is an etcd learner until the cluster-init server
//!   promotes it (after `EDGEFORGE_K3S_STANDIN_LEARNER_SECONDS`, default 3,
//!   read by the cluster-init server); a second server that joins while one
//!   is still a learner fails with etcd's `too many learner members in
//!   cluster`. This is stricter than k3s ≥ 1.27, which logs `Waiting for
//!   other members to finish joining etcd cluster` and retries until its
//!   start-up deadline: the stand-in fails at once, so an installer that
//!   joins servers concurrently is caught, and one that joins them one at a
//!   time (waiting for `EtcdIsVoter=True`) works with both.
//! - One CA signs the serving certificates and the client certificates (k3s
//!   has a separate client CA); `/cacerts` and the token hash use it.
//! - A Node becomes Ready `EDGEFORGE_K3S_STANDIN_READY_SECONDS` (default 1)
//!   after it registers; there are no heartbeats, no pods, no containerd.
//! - `EDGEFORGE_K3S_STANDIN_ROOT` (stand-in only) prefixes the absolute
//!   default paths (`/etc/rancher/...`, `/var/lib/rancher/...`,
//!   `/var/lib/cni`) so several nodes can run on one test host.
//! - The network leftovers are made only on a node booted with systemd or
//!   in a network namespace of its own ([`leftovers`]), never on a test host
//!   itself; `EDGEFORGE_K3S_STANDIN_NETWORK=1|0` forces them on or off.
//! - Critical settings are k3s's `CriticalControlArgs`: of `disable`, only
//!   `servicelb` is critical (reported as `disable-service-lb`), as in k3s;
//!   the comparison happens when a server first joins, not on restarts.
//! - The version comes from a trailer appended to the executable
//!   ([`release`] writes copies with their own trailer, hence their own
//!   sha256); without one it is [`DEFAULT_VERSION`].
//!
//! The binary is built for this host; the lab's Debian 12 guests have the
//! same glibc, so the same file runs there (it links only libc, libm and
//! libgcc_s, see `ldd`).

pub mod agent;
pub mod client;
pub mod flags;
pub mod kubectl;
pub mod leftovers;
pub mod log;
pub mod node;
pub mod proxy;
pub mod server;
pub mod supervisor;
pub mod tokens;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use edgeforge::artifacts::{ArtifactCache, ArtifactRef};

/// The version a binary without a trailer reports.
pub const DEFAULT_VERSION: &str = "v1.34.2+k3s1";

/// The commit hash a binary without a trailer reports.
pub const DEFAULT_COMMIT: &str = "7bdfd72d";

/// The Go version `--version` prints on its second line, as k3s does.
pub const GO_VERSION: &str = "go1.24.9";

/// The marker of the version trailer at the end of the executable.
pub const TRAILER_MARK: &str = "EDGEFORGE-K3S-STANDIN";

/// Which k3s release this binary is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `v1.34.2+k3s1`.
    pub version: String,
    /// The 8-hex commit `--version` prints.
    pub commit: String,
}

impl Release {
    /// The release of the running executable (its trailer, else the default).
    pub fn current() -> Release {
        std::fs::File::open("/proc/self/exe")
            .ok()
            .and_then(|mut f| read_trailer(&mut f))
            .unwrap_or_else(|| Release {
                version: DEFAULT_VERSION.into(),
                commit: DEFAULT_COMMIT.into(),
            })
    }
}

fn read_trailer(file: &mut std::fs::File) -> Option<Release> {
    let len = file.seek(SeekFrom::End(0)).ok()?;
    let start = len.saturating_sub(256);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().find(|l| l.starts_with(TRAILER_MARK))?;
    let mut parts = line.split_whitespace().skip(1);
    Some(Release {
        version: parts.next()?.to_string(),
        commit: parts.next()?.to_string(),
    })
}

/// Entry point of the binary: dispatches on `argv[0]`, returns the exit code.
pub fn main(argv: Vec<String>) -> i32 {
    let program = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let rest: Vec<String> = argv.iter().skip(1).cloned().collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return log::fatal(format!("Error: could not start the runtime: {e}")),
    };
    let release = Release::current();
    runtime.block_on(async move {
        match program.as_str() {
            "kubectl" => kubectl::run(rest, &release).await,
            "crictl" => kubectl::crictl(rest, &release),
            "ctr" => kubectl::ctr(rest, &release),
            _ => k3s(rest, &release).await,
        }
    })
}

const HELP: &str = "NAME:
   k3s - Kubernetes, but small and simple -- a STAND-IN for tests

   This is edgeforge's k3s STAND-IN (tests/src/k3s_standin), not k3s. It
   behaves like k3s where edgeforge's k3s layer looks (files, flags, config
   merge, tokens, supervisor routes, etcd membership, Nodes, systemd notify)
   and serves the harness's Kubernetes API emulator. It runs no containers.

USAGE:
   k3s [global options] command [command options] [arguments...]

COMMANDS:
   server         Run management server
   agent          Run node agent
   kubectl        Run kubectl (version, get nodes|pods, cordon, uncordon, config view)
   crictl         Run crictl (version, images, ps)
   ctr            Run ctr (version, images ls|import)
   token          Manage bootstrap tokens (create, list, generate)
   etcd-snapshot  ETCD snapshots (list)

GLOBAL OPTIONS:
   --debug                     (logging) Turn on debug logs [$K3S_DEBUG]
   --data-dir value, -d value  (data) Folder to hold state (default: /var/lib/rancher/k3s)
   --help, -h                  show help
   --version, -v               print the version

STAND-IN ENVIRONMENT:
   EDGEFORGE_K3S_STANDIN_ROOT             prefix for /etc/rancher, /var/lib/rancher, /var/lib/cni
   EDGEFORGE_K3S_STANDIN_LEARNER_SECONDS  how long a joining server stays an etcd learner (default 3)
   EDGEFORGE_K3S_STANDIN_READY_SECONDS    how long a Node stays NotReady after registering (default 1)
   EDGEFORGE_K3S_STANDIN_NETWORK          1|0: force the cni0/flannel.1/iptables leftovers on or off
";

async fn k3s(args: Vec<String>, release: &Release) -> i32 {
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--version" | "-v" => {
                println!("k3s version {} ({})", release.version, release.commit);
                println!("go version {GO_VERSION}");
                return 0;
            }
            "--help" | "-h" => {
                print!("{HELP}");
                return 0;
            }
            "--debug" => log::set_debug(true),
            "--data-dir" | "-d" => {
                i += 1;
                if let Some(dir) = args.get(i) {
                    // SAFETY: single-threaded start-up; nothing reads the environment concurrently yet.
                    unsafe { std::env::set_var("K3S_DATA_DIR", dir) };
                }
            }
            a if a.starts_with("--data-dir=") => {
                // SAFETY: as above.
                unsafe { std::env::set_var("K3S_DATA_DIR", &a["--data-dir=".len()..]) };
            }
            _ => break,
        }
        i += 1;
    }
    let Some(command) = args.get(i) else {
        print!("{HELP}");
        return 0;
    };
    let rest = args[i + 1..].to_vec();
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "k3s {command}: the k3s STAND-IN's {command} (see `k3s --help`); flags and config keys are k3s's."
        );
        return 0;
    }
    match command.as_str() {
        "server" => server::run(rest, release).await,
        "agent" => agent::run(rest, release).await,
        "kubectl" => kubectl::run(rest, release).await,
        "crictl" => kubectl::crictl(rest, release),
        "ctr" => kubectl::ctr(rest, release),
        "token" => kubectl::token(rest).await,
        "etcd-snapshot" => kubectl::etcd_snapshot(rest),
        other => {
            eprintln!("No help topic for '{other}'");
            log::fatal(format!(
                "Error: the k3s stand-in has no {other:?} command (server, agent, kubectl, crictl, ctr, token, etcd-snapshot)"
            ))
        }
    }
}

/// The prefix for k3s's absolute default paths (`EDGEFORGE_K3S_STANDIN_ROOT`, else `/`).
pub fn root() -> PathBuf {
    std::env::var_os("EDGEFORGE_K3S_STANDIN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// An absolute default path under [`root`].
pub fn default_path(absolute: &str) -> PathBuf {
    root().join(absolute.trim_start_matches('/'))
}

/// Seconds from a stand-in environment variable.
pub fn env_seconds(name: &str, default: f64) -> Duration {
    let secs = std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v >= 0.0)
        .unwrap_or(default);
    Duration::from_secs_f64(secs)
}

/// Writes a file readable by its owner only (tokens, keys, passwords).
pub fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    write_mode(path, content, 0o600)
}

/// Writes a file with `mode` (replacing it).
pub fn write_mode(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension(format!("standin-tmp-{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// Sends `READY=1` to `$NOTIFY_SOCKET` (systemd's `Type=notify`); nothing without one.
pub fn notify_ready() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = socket.to_string_lossy().into_owned();
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let sent = if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| sock.send_to_addr(b"READY=1\n", &addr))
    } else {
        sock.send_to(b"READY=1\n", &socket)
    };
    if let Err(e) = sent {
        log::warn(format!("Failed to notify systemd of readiness: {e}"));
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn terminated() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Imports the air-gap image tarballs in `<data-dir>/agent/images/` (what k3s does at start).
pub fn import_airgap_images(data_dir: &Path) {
    let dir = data_dir.join("agent/images");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    let mut images: Vec<String> = read_images(data_dir);
    for file in files {
        let name = file.to_string_lossy().into_owned();
        if !(name.ends_with(".tar") || name.ends_with(".tar.zst") || name.ends_with(".tar.gz")) {
            continue;
        }
        log::info(format!("Importing images from {name}"));
        let start = std::time::Instant::now();
        match image_tags(&file) {
            Ok(tags) => {
                for tag in tags {
                    if !images.contains(&tag) {
                        images.push(tag);
                    }
                }
                log::info(format!(
                    "Imported images from {name} in {:?}",
                    start.elapsed()
                ));
            }
            Err(e) => log::error(format!("Unable to import {name}: {e}")),
        }
    }
    let _ = std::fs::create_dir_all(data_dir.join("agent"));
    let _ = std::fs::write(
        data_dir.join("agent/standin-images.json"),
        serde_json::to_vec_pretty(&images).unwrap_or_default(),
    );
}

/// The images imported so far.
pub fn read_images(data_dir: &Path) -> Vec<String> {
    std::fs::read(data_dir.join("agent/standin-images.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The RepoTags of a docker-archive tarball (plain, zstd or gzip).
fn image_tags(file: &Path) -> std::io::Result<Vec<String>> {
    let raw = std::fs::File::open(file)?;
    let name = file.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".zst") {
        Box::new(zstd::Decoder::new(raw)?)
    } else if name.ends_with(".gz") {
        return Err(std::io::Error::other(
            "gzip tarballs are not read by the stand-in",
        ));
    } else {
        Box::new(raw)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == "manifest.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            let manifest: serde_json::Value =
                serde_json::from_str(&text).map_err(std::io::Error::other)?;
            return Ok(manifest
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| m["RepoTags"].as_array().cloned().unwrap_or_default())
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect());
        }
    }
    Err(std::io::Error::other("no manifest.json in the tarball"))
}

/// The built stand-in binary: `$EDGEFORGE_K3S_STANDIN` when set, else
/// `target/<profile>/k3s-standin` of the running executable's profile,
/// brought up to date with `cargo build` once per process.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("EDGEFORGE_K3S_STANDIN") {
            return bin.into();
        }
        let exe = std::env::current_exe().expect("the running executable has a path");
        let mut profile_dir = exe.parent().expect("the executable is in a directory");
        if profile_dir.ends_with("deps") {
            profile_dir = profile_dir.parent().expect("deps/ has a parent");
        }
        let release = profile_dir.ends_with("release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "edgeforge-tests",
                "--bin",
                "k3s-standin",
            ])
            .args(release.then_some("--release"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env(
                "CARGO_TARGET_DIR",
                profile_dir
                    .parent()
                    .expect("the profile directory has a parent"),
            )
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build of k3s-standin failed");
        profile_dir.join("k3s-standin")
    })
    .clone()
}

/// The commit hash a stamped release reports (derived from the version, so stable).
pub fn commit_of(version: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(version.as_bytes()))[..8].to_string()
}

/// A copy of the stand-in at `dir/k3s` stamped as `version` (its own sha256 per version).
pub fn release(dir: &Path, version: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("creating the release directory");
    let path = dir.join("k3s");
    let mut bytes = std::fs::read(binary()).expect("reading the stand-in binary");
    bytes.extend_from_slice(
        format!("\n{TRAILER_MARK} {version} {}\n", commit_of(version)).as_bytes(),
    );
    std::fs::write(&path, bytes).expect("writing the stamped release");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("making the release executable");
    path
}

/// An edgeforge artifact cache holding stamped stand-in releases and air-gap tarballs, and a manifest pinning them.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The cache directory (point `EDGEFORGE_CACHE` at it).
    pub cache: PathBuf,
    /// A manifest file in `images/manifest.yaml`'s format pinning every file in the cache.
    pub manifest: PathBuf,
}

/// The images a generated air-gap tarball lists (the real tarball's main ones).
pub const AIRGAP_IMAGES: &[&str] = &[
    "docker.io/rancher/mirrored-pause:3.6",
    "docker.io/rancher/mirrored-coredns-coredns:1.12.3",
    "docker.io/rancher/local-path-provisioner:v0.0.32",
    "docker.io/rancher/mirrored-metrics-server:v0.8.0",
    "docker.io/rancher/klipper-helm:v0.9.8-build20250709",
];

impl Artifacts {
    /// Fills `dir/cache` with artifact `k3s` and `k3s-airgap-images` (amd64) for each version; writes `dir/manifest.yaml`.
    pub fn prepare(dir: &Path, versions: &[&str]) -> Artifacts {
        let cache_dir = dir.join("cache");
        let cache = ArtifactCache::open(&cache_dir).expect("opening the artifact cache");
        let mut k3s_pins = String::new();
        let mut airgap_pins = String::new();
        for version in versions {
            let release_dir = dir.join("releases").join(version);
            let binary = release(&release_dir, version);
            let k3s = cache
                .insert_file(
                    &ArtifactRef::new("k3s", *version, edgeforge::artifacts::Arch::Amd64),
                    "k3s",
                    &binary,
                )
                .expect("inserting the stand-in into the cache");
            let tarball = release_dir.join("k3s-airgap-images-amd64.tar.zst");
            write_airgap_tarball(&tarball, version);
            let airgap = cache
                .insert_file(
                    &ArtifactRef::new(
                        "k3s-airgap-images",
                        *version,
                        edgeforge::artifacts::Arch::Amd64,
                    ),
                    "k3s-airgap-images-amd64.tar.zst",
                    &tarball,
                )
                .expect("inserting the air-gap tarball into the cache");
            k3s_pins.push_str(&format!(
                "      {version}:\n        amd64:\n          sha256: {}\n",
                k3s.sha256
            ));
            airgap_pins.push_str(&format!(
                "      {version}:\n        amd64:\n          sha256: {}\n",
                airgap.sha256
            ));
        }
        let default = versions.first().copied().unwrap_or(DEFAULT_VERSION);
        let manifest = format!(
            "# Test manifest written by edgeforge_tests::k3s_standin::Artifacts: the k3s STAND-IN's\n\
             # stamped releases and generated air-gap tarballs, never real k3s.\n\
             defaults:\n  k3s: {default}\n\
             artifacts:\n\
             \x20 k3s:\n    description: The k3s stand-in binary (tests only).\n    component: k3s\n    files:\n      amd64: k3s\n      arm64: k3s-arm64\n\
             \x20   urls:\n      - \"https://github.com/k3s-io/k3s/releases/download/{{version}}/{{file}}\"\n    pins:\n{k3s_pins}\
             \x20 k3s-airgap-images:\n    description: A generated air-gap image tarball (tests only).\n    component: k3s\n    files:\n      amd64: k3s-airgap-images-amd64.tar.zst\n      arm64: k3s-airgap-images-arm64.tar.zst\n\
             \x20   urls:\n      - \"https://github.com/k3s-io/k3s/releases/download/{{version}}/{{file}}\"\n    pins:\n{airgap_pins}"
        );
        let manifest_path = dir.join("manifest.yaml");
        std::fs::write(&manifest_path, manifest).expect("writing the test manifest");
        Artifacts {
            cache: cache_dir,
            manifest: manifest_path,
        }
    }
}

/// A small docker-archive tarball (zstd) naming [`AIRGAP_IMAGES`], distinct per version.
pub fn write_airgap_tarball(path: &Path, version: &str) {
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": AIRGAP_IMAGES,
        "Layers": [],
    }]);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Labels": {"io.k3s.standin.version": version}}});
    let mut tarred = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tarred);
        for (name, body) in [
            ("manifest.json", manifest.to_string()),
            ("config.json", config.to_string()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, body.as_bytes())
                .expect("building the air-gap tarball");
        }
        builder.finish().expect("finishing the air-gap tarball");
    }
    let compressed = zstd::encode_all(&tarred[..], 3).expect("compressing the air-gap tarball");
    std::fs::write(path, compressed).expect("writing the air-gap tarball");
}
