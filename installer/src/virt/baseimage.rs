//! The base VM image the lab boots: built from the recipe in `images/base/`
//! (debootstrap, an overlay of files, a configure script run in a chroot),
//! turned into ext4 with `mke2fs -d` (nothing is mounted) and then qcow2, with
//! the kernel and initrd kept beside it for direct kernel boot.
//!
//! Results live in `<cache>/base/<key>/` where the key is the sha256 of the
//! recipe files, the release and the architecture; a second build with the
//! same key returns the cached image at once. This module runs external tools
//! and blocks: async callers wrap it in `spawn_blocking`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{DataDir, DataError};

/// Default Debian release of the base image.
pub const DEFAULT_RELEASE: &str = "bookworm";
/// Default Debian mirror debootstrap downloads from.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// File name of the qcow2 image inside a cache entry.
pub const IMAGE_FILE: &str = "base.qcow2";
/// File name of the kernel inside a cache entry.
pub const KERNEL_FILE: &str = "vmlinuz";
/// File name of the initrd inside a cache entry.
pub const INITRD_FILE: &str = "initrd.img";
/// Kernel command line the image expects under direct kernel boot. The
/// blacklist keeps udev from loading drivers for emulated legacy devices
/// (floppy, parallel port, VGA, nested KVM): under TCG each costs seconds,
/// and probing the absent floppy costs cloud-init many more.
pub const KERNEL_CMDLINE: &str = "root=/dev/vda rw console=ttyS0 modprobe.blacklist=floppy,parport_pc,ppdev,bochs,kvm,kvm_amd,kvm_intel,powernow_k8,pcspkr";

const MANIFEST_FILE: &str = "image.json";

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Debian release (`bookworm`).
    pub release: String,
    /// Debian architecture (`amd64`); only the host's architecture is supported.
    pub arch: String,
    /// Cache root; the image goes to `<cache>/base/<key>/`.
    pub cache: PathBuf,
    /// Debian mirror URL.
    pub mirror: String,
    /// Where the recipe (`images/base/`) is read from.
    pub data: DataDir,
}

impl BuildOptions {
    /// Options for `release` with the default cache, mirror and host architecture.
    pub fn new(release: &str) -> Result<BuildOptions, BaseImageError> {
        Ok(BuildOptions {
            release: release.to_owned(),
            arch: host_arch()?.to_owned(),
            cache: default_cache_root()?,
            mirror: DEFAULT_MIRROR.to_owned(),
            data: DataDir::Embedded,
        })
    }
}

/// A built base image in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseImage {
    /// Cache key: sha256 of the recipe files, release and architecture.
    pub key: String,
    /// Debian release.
    pub release: String,
    /// Debian architecture.
    pub arch: String,
    /// sha256 of the qcow2 file.
    pub sha256: String,
    /// Size of the qcow2 file in bytes.
    pub size: u64,
    /// sha256 of the kernel.
    pub kernel_sha256: String,
    /// sha256 of the initrd.
    pub initrd_sha256: String,
    /// Seconds the build took.
    pub build_secs: f64,
    /// Directory of the cache entry (not stored; filled in on load).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl BaseImage {
    /// Path of the qcow2 image.
    pub fn image_path(&self) -> PathBuf {
        self.dir.join(IMAGE_FILE)
    }
    /// Path of the kernel.
    pub fn kernel_path(&self) -> PathBuf {
        self.dir.join(KERNEL_FILE)
    }
    /// Path of the initrd.
    pub fn initrd_path(&self) -> PathBuf {
        self.dir.join(INITRD_FILE)
    }
}

/// Whether [`build`] built the image or found it in the cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BuildOutcome {
    /// The cache had it.
    Cached,
    /// Built now, in this much time.
    Built(Duration),
}

/// Errors of the base image build.
#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    /// Not running as root.
    #[error(
        "building the {0} image needs root (debootstrap and chroot); run `sudo edgeforge images build-{0}`"
    )]
    NotRoot(&'static str),
    /// A required tool is not installed.
    #[error("`{tool}` is not installed; install it with `apt-get install {package}`")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// Unsupported host architecture.
    #[error("the base image recipe supports amd64 hosts only, this host is {0}")]
    UnsupportedArch(String),
    /// No cache directory could be found.
    #[error("no cache directory: set XDG_CACHE_HOME or HOME, or pass --cache DIR")]
    NoCacheDir,
    /// The recipe directory is missing or unreadable.
    #[error("the base image recipe {0} is missing or has no packages.txt")]
    NoRecipe(String),
    /// A recipe file could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A file operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An external command failed.
    #[error("`{command}` failed ({status}); last lines of its log {}:\n{tail}", log.display())]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The log file with its whole output.
        log: PathBuf,
        /// The end of its output.
        tail: String,
    },
    /// The cache entry's manifest is unreadable.
    #[error("the cached image manifest {} is damaged; delete its directory and rebuild", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Builds the base image unless the cache already holds one for this recipe;
/// `progress` receives one line per build phase.
pub fn build(
    opts: &BuildOptions,
    mut progress: impl FnMut(&str),
) -> Result<(BaseImage, BuildOutcome), BaseImageError> {
    let recipe = Recipe::load(&opts.data)?;
    let key = recipe.key(&opts.release, &opts.arch);
    if let Some(image) = cached(opts, &key)? {
        return Ok((image, BuildOutcome::Cached));
    }
    preflight(
        opts,
        "base",
        &[
            ("debootstrap", "debootstrap"),
            ("mke2fs", "e2fsprogs"),
            ("qemu-img", "qemu-utils"),
            ("chroot", "coreutils"),
        ],
    )?;
    let started = Instant::now();
    let base = opts.cache.join("base");
    let work = base.join(format!(".build-{key}-{}", std::process::id()));
    let result = build_into(opts, &recipe, &key, &work, &base, started, &mut progress);
    cleanup_work_dir(&work);
    let image = result?;
    Ok((image, BuildOutcome::Built(started.elapsed())))
}

/// Checks what every image build needs: root, amd64 and the tools (program, package).
pub(super) fn preflight(
    opts: &BuildOptions,
    image: &'static str,
    tools: &[(&'static str, &'static str)],
) -> Result<(), BaseImageError> {
    if !is_root()? {
        return Err(BaseImageError::NotRoot(image));
    }
    if opts.arch != "amd64" {
        return Err(BaseImageError::UnsupportedArch(opts.arch.clone()));
    }
    for &(tool, package) in tools {
        if which(tool).is_none() {
            return Err(BaseImageError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// The image already built for these options, if the cache has it.
pub fn find_cached(opts: &BuildOptions) -> Result<Option<BaseImage>, BaseImageError> {
    let recipe = Recipe::load(&opts.data)?;
    cached(opts, &recipe.key(&opts.release, &opts.arch))
}

/// The default cache root: `$XDG_CACHE_HOME/edgeforge` (or `~/.cache/edgeforge`).
pub fn default_cache_root() -> Result<PathBuf, BaseImageError> {
    dirs::cache_dir()
        .map(|d| d.join("edgeforge"))
        .ok_or(BaseImageError::NoCacheDir)
}

/// The recipe files (relative path, contents), sorted by path.
#[derive(Debug, Clone)]
pub struct Recipe {
    files: Vec<(String, Vec<u8>)>,
}

impl Recipe {
    /// Reads `images/base/` from the data directory.
    pub fn load(data: &DataDir) -> Result<Recipe, BaseImageError> {
        Recipe::load_dir(data, "images/base")
    }

    /// Reads the recipe in `dir` (e.g. `images/live`) from the data directory.
    pub fn load_dir(data: &DataDir, dir: &str) -> Result<Recipe, BaseImageError> {
        let mut files = Vec::new();
        let prefix = format!("{dir}/");
        for rel in data.list(dir)? {
            let bytes = data.read(&rel)?;
            if let Some(path) = rel.strip_prefix(&prefix) {
                files.push((path.to_string(), bytes));
            }
        }
        files.sort();
        if !files.iter().any(|(p, _)| p == "packages.txt") {
            return Err(BaseImageError::NoRecipe(format!(
                "{dir} in {}",
                data.describe()
            )));
        }
        Ok(Recipe { files })
    }

    /// The cache key for this recipe built for `release` on `arch`.
    pub fn key(&self, release: &str, arch: &str) -> String {
        let mut h = Sha256::new();
        for (path, data) in &self.files {
            h.update(path.as_bytes());
            h.update([0]);
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        h.update(b"release\0");
        h.update(release.as_bytes());
        h.update(b"\0arch\0");
        h.update(arch.as_bytes());
        hex::encode(h.finalize())
    }

    /// The packages listed in packages.txt (comments and blank lines dropped).
    pub fn packages(&self) -> Vec<String> {
        self.file("packages.txt")
            .map(|d| {
                String::from_utf8_lossy(d)
                    .lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The recipe file at `path` (relative to the recipe directory).
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, d)| d.as_slice())
    }
}

/// The manifest of a cache entry (base or live image); `None` when the
/// entry has none (never built, or its build did not finish).
pub(crate) fn read_manifest<T: serde::de::DeserializeOwned>(
    manifest: &Path,
) -> Result<Option<T>, BaseImageError> {
    let text = match fs::read_to_string(manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BaseImageError::Io {
                what: "reading",
                path: manifest.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| BaseImageError::Manifest {
            path: manifest.to_path_buf(),
            source,
        })
}

fn cached(opts: &BuildOptions, key: &str) -> Result<Option<BaseImage>, BaseImageError> {
    let dir = opts.cache.join("base").join(key);
    let Some(mut image) = read_manifest::<BaseImage>(&dir.join(MANIFEST_FILE))? else {
        return Ok(None);
    };
    image.dir = dir;
    // A size mismatch means a damaged entry: treat it as absent and rebuild.
    let complete = fs::metadata(image.image_path()).is_ok_and(|m| m.len() == image.size)
        && image.kernel_path().is_file()
        && image.initrd_path().is_file();
    Ok(complete.then_some(image))
}

fn build_into(
    opts: &BuildOptions,
    recipe: &Recipe,
    key: &str,
    work: &Path,
    base: &Path,
    started: Instant,
    progress: &mut impl FnMut(&str),
) -> Result<BaseImage, BaseImageError> {
    let io_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BaseImageError::Io { what, path, source }
    };
    let rootfs = work.join("rootfs");
    let out = work.join("out");
    let debs = base.join("debs");
    for d in [&rootfs, &out, &debs] {
        fs::create_dir_all(d).map_err(io_err("creating", d))?;
    }
    let log = base.join(format!("build-{key}.log"));
    let _ = fs::remove_file(&log);
    let step = |progress: &mut dyn FnMut(&str), what: &str| {
        progress(&format!(
            "[{:>5.1}s] {what}",
            started.elapsed().as_secs_f64()
        ));
    };
    let mut announce = |what: &str| step(progress, what);
    bootstrap_rootfs(opts, recipe, &rootfs, &debs, &log, &mut announce)?;

    step(progress, "kernel and initrd");
    copy_boot_file(&rootfs, "vmlinuz-", &out.join(KERNEL_FILE))?;
    copy_boot_file(&rootfs, "initrd.img-", &out.join(INITRD_FILE))?;

    step(progress, "mke2fs -d (ext4 from the rootfs directory)");
    let used = dir_size(&rootfs);
    // Room for first-boot writes; cloud-init grows the filesystem to the disk.
    let size_mib = ((used / (1 << 20)) * 13 / 10 + 512).max(1024);
    let raw = work.join("root.ext4");
    run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "edgeforge-root", "-d"])
            .arg(&rootfs)
            .arg(&raw)
            .arg(format!("{size_mib}M")),
        &log,
    )?;

    step(progress, "qemu-img convert (qcow2)");
    let image_path = out.join(IMAGE_FILE);
    run(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&image_path),
        &log,
    )?;

    step(progress, "sha256");
    let hash = |p: &Path| {
        crate::artifacts::hash_file(p)
            .map(|(sha, _)| sha)
            .map_err(io_err("hashing", p))
    };
    let size = fs::metadata(&image_path)
        .map_err(io_err("reading", &image_path))?
        .len();
    let mut image = BaseImage {
        key: key.to_owned(),
        release: opts.release.clone(),
        arch: opts.arch.clone(),
        sha256: hash(&image_path)?,
        size,
        kernel_sha256: hash(&out.join(KERNEL_FILE))?,
        initrd_sha256: hash(&out.join(INITRD_FILE))?,
        build_secs: started.elapsed().as_secs_f64(),
        dir: PathBuf::new(),
    };
    let manifest = out.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&image).unwrap_or_default();
    fs::write(&manifest, text).map_err(io_err("writing", &manifest))?;
    let dest = base.join(key);
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(io_err("replacing", &dest))?;
    }
    fs::rename(&out, &dest).map_err(io_err("moving the image into", &dest))?;
    image.dir = dest;
    Ok(image)
}

/// debootstrap (minbase) into `rootfs`, the recipe's packages with apt inside
/// it (downloads shared through `debs`), then its overlay and its
/// configure.sh in a chroot; `step` hears each phase. Shared by the base and
/// the live image.
pub(super) fn bootstrap_rootfs(
    opts: &BuildOptions,
    recipe: &Recipe,
    rootfs: &Path,
    debs: &Path,
    log: &Path,
    step: &mut dyn FnMut(&str),
) -> Result<(), BaseImageError> {
    let io_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BaseImageError::Io { what, path, source }
    };

    // debootstrap installs only the minimal base; the package list goes in
    // with apt inside the chroot, which resolves and configures a deep
    // dependency tree (cloud-init's python3 stack) reliably, where
    // `debootstrap --include` does not.
    step(&format!("debootstrap {} ({})", opts.release, opts.mirror));
    let debootstrap = run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--arch={}", opts.arch))
            .arg(format!("--cache-dir={}", debs.display()))
            .arg(&opts.release)
            .arg(rootfs)
            .arg(&opts.mirror),
        log,
    );
    if debootstrap.is_err() {
        append_log(log, &rootfs.join("debootstrap/debootstrap.log"));
    }
    debootstrap?;

    step("apt-get install (chroot): packages.txt");
    let resolv = rootfs.join("etc/resolv.conf");
    let _ = fs::remove_file(&resolv);
    fs::copy("/etc/resolv.conf", &resolv)
        .map_err(io_err("copying the host's resolver config to", &resolv))?;
    // No service may start inside the build chroot.
    let policy = rootfs.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n").map_err(io_err("writing", &policy))?;
    fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io_err("writing", &policy))?;
    run(
        Command::new("chroot")
            .arg(rootfs)
            .args(["apt-get", "-q", "update"]),
        log,
    )?;
    // Packages downloaded by earlier builds are reused, and this build's
    // downloads are kept for the next one.
    let archives = rootfs.join("var/cache/apt/archives");
    copy_debs(debs, &archives);
    run(
        Command::new("chroot")
            .arg(rootfs)
            .args(["apt-get", "-q", "-y", "--no-install-recommends", "install"])
            .args(recipe.packages())
            .env("DEBIAN_FRONTEND", "noninteractive"),
        log,
    )?;
    fs::remove_file(&policy).map_err(io_err("removing", &policy))?;
    copy_debs(&archives, debs);

    step("overlay and configure.sh (chroot)");
    for (path, data) in &recipe.files {
        if let Some(rel) = path.strip_prefix("overlay/") {
            let dest = rootfs.join(rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
            }
            fs::write(&dest, data).map_err(io_err("writing", &dest))?;
        }
    }
    let script = rootfs.join("edgeforge-configure.sh");
    fs::write(&script, recipe.file("configure.sh").unwrap_or_default())
        .map_err(io_err("writing", &script))?;
    run(
        Command::new("chroot")
            .arg(rootfs)
            .args(["/bin/sh", "/edgeforge-configure.sh"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        log,
    )?;
    fs::remove_file(&script).map_err(io_err("removing", &script))?;

    Ok(())
}

/// Runs a command with its output appended to `log`.
pub(super) fn run(cmd: &mut Command, log: &Path) -> Result<(), BaseImageError> {
    let io_err = |source| BaseImageError::Io {
        what: "writing the build log",
        path: log.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err)?;
    let line = format!("{cmd:?}");
    writeln!(file, "+ {line}").map_err(io_err)?;
    let err_file = file.try_clone().map_err(io_err)?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err_file)
        .status()
        .map_err(|source| BaseImageError::Io {
            what: "starting",
            path: PathBuf::from(cmd.get_program()),
            source,
        })?;
    if status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    Err(BaseImageError::Command {
        command: line,
        status: status.to_string(),
        log: log.to_owned(),
        tail,
    })
}

/// Copies the .deb files of `from` that `to` lacks, best effort.
fn copy_debs(from: &Path, to: &Path) {
    let Ok(entries) = fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.extension().is_some_and(|e| e == "deb") && !to.join(&name).exists() {
            let _ = fs::copy(&path, to.join(&name));
        }
    }
}

/// Appends `extra` (another tool's own log) to `log`, best effort.
fn append_log(log: &Path, extra: &Path) {
    if let (Ok(text), Ok(mut f)) = (
        fs::read(extra),
        fs::OpenOptions::new().append(true).open(log),
    ) {
        let _ = writeln!(f, "--- {} ---", extra.display());
        let _ = f.write_all(&text);
    }
}

pub(super) fn copy_boot_file(
    rootfs: &Path,
    prefix: &str,
    dest: &Path,
) -> Result<(), BaseImageError> {
    let boot = rootfs.join("boot");
    let mut found: Vec<PathBuf> = fs::read_dir(&boot)
        .map_err(|source| BaseImageError::Io {
            what: "reading",
            path: boot.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    found.sort();
    let src = found.pop().ok_or_else(|| BaseImageError::Io {
        what: "finding the kernel or initrd in",
        path: boot.join(format!("{prefix}*")),
        source: io::ErrorKind::NotFound.into(),
    })?;
    fs::copy(&src, dest).map_err(|source| BaseImageError::Io {
        what: "copying",
        path: src,
        source,
    })?;
    Ok(())
}

pub(super) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Removes a build directory, first unmounting anything debootstrap left
/// mounted inside it so the removal never walks into /proc or /sys.
pub(super) fn cleanup_work_dir(work: &Path) {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut inside: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| Path::new(m).starts_with(work))
        .collect();
    inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in &inside {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
    let still_mounted = fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|m| Path::new(m).starts_with(work));
    if !still_mounted {
        let _ = fs::remove_dir_all(work);
    }
}

fn is_root() -> Result<bool, BaseImageError> {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .map_err(|source| BaseImageError::Io {
            what: "reading",
            path: "/proc/self".into(),
            source,
        })
}

pub(super) fn host_arch() -> Result<&'static str, BaseImageError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        other => Err(BaseImageError::UnsupportedArch(other.to_owned())),
    }
}

/// The full path of `tool` on PATH, if any.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_recipe_release_and_arch() {
        let recipe = Recipe::load(&DataDir::Embedded).expect("built-in recipe");
        let k = recipe.key("bookworm", "amd64");
        assert_eq!(k.len(), 64);
        assert_ne!(k, recipe.key("trixie", "amd64"));
        assert_ne!(k, recipe.key("bookworm", "arm64"));
        let mut edited = recipe.clone();
        if let Some((_, data)) = edited.files.iter_mut().find(|(p, _)| p == "packages.txt") {
            data.extend_from_slice(b"vim\n");
        }
        assert_ne!(k, edited.key("bookworm", "amd64"));
        assert!(edited.packages().contains(&"vim".to_owned()));
    }

    #[test]
    fn recipe_lists_the_required_packages() {
        let recipe = Recipe::load(&DataDir::Embedded).expect("built-in recipe");
        let pkgs = recipe.packages();
        for p in [
            "openssh-server",
            "cloud-init",
            "linux-image-amd64",
            "systemd-sysv",
        ] {
            assert!(pkgs.iter().any(|x| x == p), "{p} missing from {pkgs:?}");
        }
        assert!(recipe.file("configure.sh").is_some());
        assert!(
            recipe
                .files
                .iter()
                .any(|(p, _)| p.starts_with("overlay/etc/systemd/network/"))
        );
    }

    #[test]
    fn cached_entry_is_found_and_a_damaged_one_is_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = BuildOptions {
            release: "bookworm".into(),
            arch: "amd64".into(),
            cache: tmp.path().to_owned(),
            mirror: DEFAULT_MIRROR.into(),
            data: DataDir::Embedded,
        };
        assert!(find_cached(&opts).expect("lookup").is_none());
        let key = Recipe::load(&DataDir::Embedded)
            .expect("recipe")
            .key("bookworm", "amd64");
        let dir = tmp.path().join("base").join(&key);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(IMAGE_FILE), b"qcow2").expect("write");
        fs::write(dir.join(KERNEL_FILE), b"k").expect("write");
        fs::write(dir.join(INITRD_FILE), b"i").expect("write");
        let image = BaseImage {
            key: key.clone(),
            release: "bookworm".into(),
            arch: "amd64".into(),
            sha256: crate::artifacts::hash_file(&dir.join(IMAGE_FILE))
                .expect("hash")
                .0,
            size: 5,
            kernel_sha256: String::new(),
            initrd_sha256: String::new(),
            build_secs: 1.0,
            dir: PathBuf::new(),
        };
        fs::write(
            dir.join(MANIFEST_FILE),
            serde_json::to_string(&image).expect("json"),
        )
        .expect("write");
        let found = find_cached(&opts).expect("lookup").expect("cached");
        assert_eq!(found.sha256, image.sha256);
        assert_eq!(found.dir, dir);
        let (again, outcome) = build(&opts, |_| {}).expect("cached build");
        assert_eq!(outcome, BuildOutcome::Cached);
        assert_eq!(again.key, key);
        fs::write(dir.join(IMAGE_FILE), b"truncated!").expect("write");
        assert!(find_cached(&opts).expect("lookup").is_none());
    }
}
