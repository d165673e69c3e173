//! The live installer ISO the bare-metal install flow boots as virtual
//! media: built from the recipe in `images/live/` (debootstrap, packages,
//! an overlay, a configure script in a chroot, as for the base image), its
//! rootfs packed into a zstd squashfs for live-boot, and made into a
//! UEFI-bootable ISO with `grub-mkrescue`. The live system also carries a
//! standalone GRUB EFI binary ([`DISK_LOADER`]) that the installer puts on the
//! installed disk.
//!
//! Results live in `<cache>/live/<key>/`, the key being the sha256 of the
//! recipe files, the release and the architecture; a second build with the
//! same key returns the cached ISO at once. The ISO holds nothing about any
//! node: [`node_iso`] writes a per-node copy whose only addition is a small
//! second initrd with the node's key material (`/edgeforge/node.cpio`, see
//! the recipe's README), made with xorriso in seconds rather than rebuilt.
//! Everything here runs external tools and blocks: async callers wrap it in
//! `spawn_blocking`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::baseimage::{
    self, BaseImageError, BuildOptions, BuildOutcome, Recipe, bootstrap_rootfs, cleanup_work_dir,
    copy_boot_file, preflight, run,
};

/// File name of the ISO inside a cache entry.
pub const ISO_FILE: &str = "live.iso";
/// Volume id of the ISO.
pub const VOLUME_ID: &str = "EDGEFORGE_LIVE";
/// The standalone GRUB (EFI) inside the live system that the installer
/// copies to `EFI/BOOT/BOOTX64.EFI` on the installed disk.
pub const DISK_LOADER: &str = "/usr/lib/edgeforge/BOOTX64.EFI";
/// Where the node's key material sits in the per-node ISO.
pub const NODE_CPIO: &str = "/edgeforge/node.cpio";
/// The directory of the initramfs the recipe's hook copies into the live root.
pub const NODE_DIR: &str = "edgeforge-node";

const MANIFEST_FILE: &str = "live.json";
const RECIPE_DIR: &str = "images/live";

/// A built live ISO in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveImage {
    /// Cache key: sha256 of the recipe files, release and architecture.
    pub key: String,
    /// Debian release.
    pub release: String,
    /// Debian architecture.
    pub arch: String,
    /// sha256 of the ISO.
    pub sha256: String,
    /// Size of the ISO in bytes.
    pub size: u64,
    /// Seconds the build took.
    pub build_secs: f64,
    /// Directory of the cache entry (not stored; filled in on load).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl LiveImage {
    /// Path of the ISO.
    pub fn iso_path(&self) -> PathBuf {
        self.dir.join(ISO_FILE)
    }
}

/// Builds the live ISO unless the cache already holds one for this recipe;
/// `progress` receives one line per build phase.
pub fn build(
    opts: &BuildOptions,
    mut progress: impl FnMut(&str),
) -> Result<(LiveImage, BuildOutcome), BaseImageError> {
    let recipe = Recipe::load_dir(&opts.data, RECIPE_DIR)?;
    let key = recipe.key(&opts.release, &opts.arch);
    if let Some(image) = cached(opts, &key)? {
        return Ok((image, BuildOutcome::Cached));
    }
    preflight(
        opts,
        "live",
        &[
            ("debootstrap", "debootstrap"),
            ("chroot", "coreutils"),
            ("mksquashfs", "squashfs-tools"),
            ("grub-mkrescue", "grub-common"),
            ("grub-mkstandalone", "grub-common"),
            ("xorriso", "xorriso"),
            ("mformat", "mtools"),
        ],
    )?;
    if !Path::new("/usr/lib/grub/x86_64-efi").is_dir() {
        return Err(BaseImageError::MissingTool {
            tool: "GRUB for x86_64-efi (/usr/lib/grub/x86_64-efi)",
            package: "grub-efi-amd64-bin",
        });
    }
    let started = Instant::now();
    let live = opts.cache.join("live");
    let work = live.join(format!(".build-{key}-{}", std::process::id()));
    let result = build_into(opts, &recipe, &key, &work, &live, started, &mut progress);
    cleanup_work_dir(&work);
    let image = result?;
    Ok((image, BuildOutcome::Built(started.elapsed())))
}

/// The live ISO already built for these options, if the cache has it.
pub fn find_cached(opts: &BuildOptions) -> Result<Option<LiveImage>, BaseImageError> {
    let recipe = Recipe::load_dir(&opts.data, RECIPE_DIR)?;
    cached(opts, &recipe.key(&opts.release, &opts.arch))
}

/// A file the per-node initrd puts into the live root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// Path in the live root, without the leading `/` (`root/.ssh/authorized_keys`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Content.
    pub data: Vec<u8>,
}

/// Writes `dest`: the cached live ISO plus the node's files as the second
/// initrd [`NODE_CPIO`] (a cpio archive under [`NODE_DIR`]). `dest` should
/// be private: the files include the live system's host key.
pub fn node_iso(live: &LiveImage, files: &[NodeFile], dest: &Path) -> Result<(), BaseImageError> {
    let io_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BaseImageError::Io { what, path, source }
    };
    if baseimage::which("xorriso").is_none() {
        return Err(BaseImageError::MissingTool {
            tool: "xorriso",
            package: "xorriso",
        });
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    let cpio = dest.with_extension("cpio");
    crate::state::write_private(&cpio, &node_cpio(files)).map_err(io_err("writing", &cpio))?;
    let tmp = dest.with_extension("iso.tmp");
    let _ = fs::remove_file(&tmp);
    let log = dest.with_extension("log");
    let _ = fs::remove_file(&log);
    let result = run(
        Command::new("xorriso")
            .args(["-report_about", "WARNING", "-indev"])
            .arg(live.iso_path())
            .arg("-outdev")
            .arg(&tmp)
            // The El Torito UEFI image and a GPT pointing at it, set anew:
            // `replay` of grub-mkrescue's layout (HFS+, APM, a gap partition)
            // fails once a file is added ("GPT partitions overlap").
            .args(["-boot_image", "any", "discard"])
            .args(["-boot_image", "any", "cat_path=/boot.catalog"])
            .args(["-boot_image", "any", "efi_path=/efi.img"])
            .args(["-boot_image", "any", "efi_boot_part=--efi-boot-image"])
            .arg("-map")
            .arg(&cpio)
            .arg(NODE_CPIO),
        &log,
    );
    let _ = fs::remove_file(&cpio);
    result?;
    let _ = fs::remove_file(&log);
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io_err("restricting", &tmp))?;
    fs::rename(&tmp, dest).map_err(io_err("moving the node ISO to", dest))
}

/// A cpio archive (newc) of `files` under [`NODE_DIR`], parent directories
/// first (0755, or 0700 for `root` and `.ssh` ones), owned by root.
pub fn node_cpio(files: &[NodeFile]) -> Vec<u8> {
    let mut dirs: Vec<String> = vec![NODE_DIR.to_string()];
    for f in files {
        let mut prefix = NODE_DIR.to_string();
        let parts: Vec<&str> = f.path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            prefix = format!("{prefix}/{part}");
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
            }
        }
    }
    let mut out = Vec::new();
    let mut ino = 1;
    for d in &dirs {
        let private = d.ends_with("/root") || d.ends_with("/.ssh");
        let mode = 0o040000 | if private { 0o700 } else { 0o755 };
        cpio_entry(&mut out, ino, d, mode, &[]);
        ino += 1;
    }
    for f in files {
        let name = format!("{NODE_DIR}/{}", f.path);
        cpio_entry(&mut out, ino, &name, 0o100000 | (f.mode & 0o7777), &f.data);
        ino += 1;
    }
    cpio_entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

/// One newc entry: the 110-byte ASCII header, the name, the data, each padded to 4.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
    let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn cached(opts: &BuildOptions, key: &str) -> Result<Option<LiveImage>, BaseImageError> {
    let dir = opts.cache.join("live").join(key);
    let Some(mut image) = baseimage::read_manifest::<LiveImage>(&dir.join(MANIFEST_FILE))? else {
        return Ok(None);
    };
    image.dir = dir;
    // A size mismatch means a damaged entry: treat it as absent and rebuild.
    let complete = fs::metadata(image.iso_path()).is_ok_and(|m| m.len() == image.size);
    Ok(complete.then_some(image))
}

fn build_into(
    opts: &BuildOptions,
    recipe: &Recipe,
    key: &str,
    work: &Path,
    live: &Path,
    started: Instant,
    progress: &mut impl FnMut(&str),
) -> Result<LiveImage, BaseImageError> {
    let io_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BaseImageError::Io { what, path, source }
    };
    let rootfs = work.join("rootfs");
    let iso = work.join("iso");
    let out = work.join("out");
    // Package downloads are shared with the base image's builds.
    let debs = opts.cache.join("base").join("debs");
    for d in [
        &rootfs,
        &iso.join("live"),
        &iso.join("boot/grub"),
        &out,
        &debs,
    ] {
        fs::create_dir_all(d).map_err(io_err("creating", d))?;
    }
    let log = live.join(format!("build-{key}.log"));
    let _ = fs::remove_file(&log);
    let mut step = |what: &str| {
        progress(&format!(
            "[{:>5.1}s] {what}",
            started.elapsed().as_secs_f64()
        ));
    };
    bootstrap_rootfs(opts, recipe, &rootfs, &debs, &log, &mut step)?;

    step("grub-mkstandalone (the installed disk's EFI loader)");
    let loader = rootfs.join(DISK_LOADER.trim_start_matches('/'));
    if let Some(parent) = loader.parent() {
        fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    let disk_cfg = work.join("disk-grub.cfg");
    fs::write(&disk_cfg, recipe.file("disk-grub.cfg").unwrap_or_default())
        .map_err(io_err("writing", &disk_cfg))?;
    run(
        Command::new("grub-mkstandalone")
            .args(["-O", "x86_64-efi", "-o"])
            .arg(&loader)
            // Preloaded: finding and reading the partitions must not depend
            // on loading modules from the memdisk.
            .arg(
                "--modules=part_gpt part_msdos fat ext2 search search_fs_file search_fs_uuid \
                 configfile normal linux echo test serial terminal",
            )
            .arg(format!("boot/grub/grub.cfg={}", disk_cfg.display())),
        &log,
    )?;

    step("kernel and initrd");
    copy_boot_file(&rootfs, "vmlinuz-", &iso.join("live/vmlinuz"))?;
    copy_boot_file(&rootfs, "initrd.img-", &iso.join("live/initrd.img"))?;

    step("mksquashfs (zstd)");
    run(
        Command::new("mksquashfs")
            .arg(&rootfs)
            .arg(iso.join("live/filesystem.squashfs"))
            .args(["-noappend", "-no-progress", "-comp", "zstd"])
            // zstd's default level 15 takes minutes on two cores for a few
            // percent less; 3 is fast to build and to read.
            .args(["-Xcompression-level", "3", "-e", "boot"]),
        &log,
    )?;
    let menu = iso.join("boot/grub/grub.cfg");
    fs::write(&menu, recipe.file("grub.cfg").unwrap_or_default())
        .map_err(io_err("writing", &menu))?;

    step("grub-mkrescue (UEFI ISO)");
    let iso_path = out.join(ISO_FILE);
    run(
        Command::new("grub-mkrescue")
            .arg("-o")
            .arg(&iso_path)
            .arg(&iso)
            .args(["--", "-volid", VOLUME_ID]),
        &log,
    )?;

    step("sha256");
    let (sha256, size) =
        crate::artifacts::hash_file(&iso_path).map_err(io_err("hashing", &iso_path))?;
    let mut image = LiveImage {
        key: key.to_owned(),
        release: opts.release.clone(),
        arch: opts.arch.clone(),
        sha256,
        size,
        build_secs: started.elapsed().as_secs_f64(),
        dir: PathBuf::new(),
    };
    let manifest = out.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&image).unwrap_or_default();
    fs::write(&manifest, text).map_err(io_err("writing", &manifest))?;
    let dest = live.join(key);
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(io_err("replacing", &dest))?;
    }
    fs::rename(&out, &dest).map_err(io_err("moving the ISO into", &dest))?;
    image.dir = dest;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataDir;

    #[test]
    fn the_recipe_is_keyed_like_the_base_one_and_lists_what_the_installer_runs() {
        let recipe = Recipe::load_dir(&DataDir::Embedded, RECIPE_DIR).expect("live recipe");
        let base = Recipe::load(&DataDir::Embedded).expect("base recipe");
        assert_ne!(
            recipe.key("bookworm", "amd64"),
            base.key("bookworm", "amd64")
        );
        let pkgs = recipe.packages();
        for p in [
            "live-boot",
            "openssh-server",
            "linux-image-amd64",
            "zstd",
            "fdisk",
            "dosfstools",
            "e2fsprogs",
        ] {
            assert!(pkgs.iter().any(|x| x == p), "{p} missing from {pkgs:?}");
        }
        let menu = String::from_utf8_lossy(recipe.file("grub.cfg").expect("grub.cfg"));
        assert!(
            menu.contains("boot=live") && menu.contains("toram"),
            "{menu}"
        );
        assert!(menu.contains(NODE_CPIO), "{menu}");
        let hook = recipe
            .file("overlay/etc/initramfs-tools/scripts/init-bottom/edgeforge-node")
            .expect("the initramfs hook");
        assert!(String::from_utf8_lossy(hook).contains(&format!("/{NODE_DIR}/.")));
    }

    #[test]
    fn the_node_cpio_is_newc_with_private_dirs_that_cpio_itself_reads() {
        let files = [
            NodeFile {
                path: "etc/ssh/ssh_host_ed25519_key".into(),
                mode: 0o600,
                data: b"PRIVATE\n".to_vec(),
            },
            NodeFile {
                path: "root/.ssh/authorized_keys".into(),
                mode: 0o600,
                data: b"ssh-ed25519 AAAA test\n".to_vec(),
            },
        ];
        let archive = node_cpio(&files);
        assert!(archive.starts_with(b"070701"));
        assert!(archive.len().is_multiple_of(4));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("cpio (apt-get install cpio)");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&archive)
            .expect("write");
        assert!(child.wait().expect("cpio").success());
        let root = dir.path().join(NODE_DIR);
        assert_eq!(
            fs::read(root.join("etc/ssh/ssh_host_ed25519_key")).expect("key"),
            b"PRIVATE\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            fs::metadata(root.join(p))
                .expect("metadata")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("root"), 0o700);
        assert_eq!(mode("root/.ssh"), 0o700);
        assert_eq!(mode("root/.ssh/authorized_keys"), 0o600);
        assert_eq!(mode("etc"), 0o755);
    }
}
