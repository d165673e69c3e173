//! The node side of an install, run over SSH on the live system as root:
//! [`partition`] the disk (GPT: a 256 MiB EFI system partition and the rest
//! for the root filesystem), [`write`] the OS image's zstd stream into the
//! root partition while the node hashes every byte it writes (sha256, one
//! pass: a second read of the disk costs minutes on a slow machine), and
//! checks that hash against the image's, and [`finalize`]: the
//! standalone GRUB from the live system on the EFI partition with an
//! `edgeforge.cfg` naming the root filesystem, an fstab by PARTUUID, and the
//! cloud-init NoCloud seed (hostname, login key, the installed system's
//! pinned host key) in `/var/lib/cloud/seed/nocloud/`. Every script fails
//! with what it found on the node, for the step's error message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{InstallImage, MetalError};
use crate::sh::quote;
use crate::transport::{ExecRequest, PutRequest, PutSource, SshTransport, Transport};
use crate::virt::liveimage::DISK_LOADER;

/// Room the EFI system partition and the GPT take beside the root filesystem.
const ESP_AND_GPT: u64 = 260 << 20;
/// Where the seed files wait on the live system before they are copied.
const SEED_DIR: &str = "/run/edgeforge/seed";
/// The kernel command line of the installed system, after `root=`.
const KERNEL_ARGS: &str =
    "ro console=tty0 console=ttyS0,115200 modprobe.blacklist=floppy,parport_pc,ppdev,pcspkr";

/// The partitions [`partition`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    /// The whole disk (`/dev/sda`).
    pub disk: String,
    /// The EFI system partition.
    pub esp: String,
    /// The root partition.
    pub root: String,
    /// The disk's size in bytes.
    pub size: u64,
}

/// Picks the disk (`disk`, else the only fixed, writable one), checks it
/// holds `image`, and partitions it, erasing what it held.
pub async fn partition(
    live: &SshTransport,
    disk: Option<&str>,
    image: &InstallImage,
) -> Result<DiskLayout, MetalError> {
    let need = image.raw_size + ESP_AND_GPT;
    let script = format!(
        r#"set -eu
want={want}
need={need}
if [ -n "$want" ]; then
    disk=$(readlink -f "$want")
    [ -b "$disk" ] || {{ echo "$want is not a block device on this machine" >&2; exit 3; }}
else
    cands=$(lsblk -dnpo NAME,TYPE,RM,RO | awk '$2 == "disk" && $3 == "0" && $4 == "0" {{ print $1 }}')
    n=$(printf '%s\n' "$cands" | grep -c . || true)
    if [ "$n" != 1 ]; then
        echo "found $n fixed disks ($(echo $cands)); set machine.install.disk to the one to install onto" >&2
        exit 3
    fi
    disk=$cands
fi
size=$(blockdev --getsize64 "$disk")
if [ "$size" -lt "$need" ]; then
    echo "$disk has $size bytes; the OS image needs at least $need" >&2
    exit 3
fi
if lsblk -nlo MOUNTPOINT "$disk" | grep -q .; then
    echo "$disk has mounted filesystems; it cannot be the install disk" >&2
    exit 3
fi
printf 'label: gpt\nsize=256MiB, type=uefi, name="EFI system"\ntype=linux, name="edgeforge-root"\n' |
    sfdisk --quiet --wipe always --wipe-partitions always "$disk" >/dev/null
udevadm settle 2>/dev/null || sleep 1
parts=$(lsblk -lnpo NAME,TYPE "$disk" | awk '$2 == "part" {{ print $1 }}')
esp=$(printf '%s\n' "$parts" | sed -n 1p)
root=$(printf '%s\n' "$parts" | sed -n 2p)
[ -b "$esp" ] && [ -b "$root" ] || {{ echo "the new partitions of $disk did not appear" >&2; exit 3; }}
mkfs.vfat -F 32 -n EFI "$esp" >/dev/null
echo "disk=$disk"
echo "esp=$esp"
echo "root=$root"
echo "size=$size"
"#,
        want = quote(disk.unwrap_or_default()),
    );
    let out = run(live, &script, "partitioning the install disk", 300).await?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .ok_or_else(|| MetalError::Node {
                what: "partitioning the install disk".into(),
                detail: format!("its report has no `{name}=` line: {out}"),
            })
    };
    Ok(DiskLayout {
        disk: field("disk")?,
        esp: field("esp")?,
        root: field("root")?,
        size: field("size")?.parse().unwrap_or(0),
    })
}

/// Streams the image into the root partition (`sent` counts the
/// compressed bytes sent so far, for progress) and checks the sha256 the
/// node computed over the bytes it wrote against the image's.
pub async fn write(
    live: &SshTransport,
    layout: &DiskLayout,
    image: &InstallImage,
    sent: Arc<AtomicU64>,
) -> Result<(), MetalError> {
    let what = format!("writing the OS image to {}", layout.root);
    let file = tokio::fs::File::open(&image.stream)
        .await
        .map_err(|source| MetalError::Io {
            what: "reading",
            path: image.stream.clone(),
            source,
        })?;
    let input = Counting {
        inner: tokio::io::BufReader::with_capacity(1 << 20, file),
        sent,
    };
    // At least 1 MB/s, and never less than half an hour.
    let limit = Duration::from_secs((image.stream_size >> 20).max(1800));
    // tee hands every byte to the disk and to the hash; a stream that breaks
    // off leaves a hash that does not match, a failed write fails tee.
    let script = format!(
        r#"set -eu
root={root}
fifo=/run/edgeforge-image.fifo
sum=/run/edgeforge-image.sha256
rm -f "$fifo" "$sum"
mkfifo "$fifo"
if command -v openssl >/dev/null; then
    openssl dgst -sha256 -r < "$fifo" > "$sum" &
else
    sha256sum < "$fifo" > "$sum" &
fi
hasher=$!
zstd -dcq | tee "$fifo" > "$root"
wait "$hasher"
sync
rm -f "$fifo"
cut -d' ' -f1 "$sum"
"#,
        root = quote(&layout.root)
    );
    let out = live.exec_streamed(&script, input, limit).await?;
    if out.status != 0 {
        return Err(MetalError::Node {
            what,
            detail: format!(
                "exit status {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got = stdout.split_whitespace().next().unwrap_or_default();
    if got != image.raw_sha256 {
        return Err(MetalError::Node {
            what: format!("checking what was written to {}", layout.root),
            detail: format!(
                "the node hashed the bytes it wrote to sha256 {got}, the image's is {}; the \
                 stream was damaged or cut short: run apply again to rewrite it",
                image.raw_sha256
            ),
        });
    }
    Ok(())
}

/// Installs the boot loader, the fstab and the cloud-init seed
/// (`seed`: file name and content) into the written system.
pub async fn finalize(
    live: &SshTransport,
    layout: &DiskLayout,
    seed: &[(&str, String)],
) -> Result<(), MetalError> {
    let mkdir = format!("install -d -m 0700 {}", quote(SEED_DIR));
    run(live, &mkdir, "making the seed directory", 60).await?;
    for (name, text) in seed {
        let path = format!("{SEED_DIR}/{name}");
        live.put(PutRequest {
            path: &path,
            source: PutSource::Bytes(text.as_bytes()),
            sha256: None,
            mode: 0o600,
            owner: None,
            privileged: false,
        })
        .await?;
    }
    let files: Vec<String> = seed
        .iter()
        .map(|(n, _)| quote(&format!("{SEED_DIR}/{n}")))
        .collect();
    let script = format!(
        r#"set -eu
root={root}
esp={esp}
m=/mnt/edgeforge-root
e=/mnt/edgeforge-esp
mkdir -p "$m" "$e"
mount "$root" "$m"
trap 'umount "$e" 2>/dev/null; umount "$m" 2>/dev/null' EXIT
mount "$esp" "$e"
fsuuid=$(blkid -s UUID -o value "$root")
partuuid=$(blkid -s PARTUUID -o value "$root")
[ -n "$fsuuid" ] && [ -n "$partuuid" ] || {{ echo "blkid knows no UUID of $root" >&2; exit 3; }}
[ -e "$m/vmlinuz" ] && [ -e "$m/initrd.img" ] || {{ echo "the image has no /vmlinuz and /initrd.img" >&2; exit 3; }}
printf '# Written by the edgeforge installer.\nPARTUUID=%s / ext4 defaults,errors=remount-ro 0 1\n' "$partuuid" > "$m/etc/fstab"
install -d -m 0700 "$m/var/lib/cloud/seed/nocloud"
install -m 0600 {files} "$m/var/lib/cloud/seed/nocloud/"
rm -rf {seed_dir}
install -d "$e/EFI/BOOT"
install -m 0644 {loader} "$e/EFI/BOOT/BOOTX64.EFI"
cat > "$e/EFI/BOOT/edgeforge.cfg" <<EOF
# Written by the edgeforge installer; read by EFI/BOOT/BOOTX64.EFI.
set timeout=0
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
search --no-floppy --fs-uuid --set=root $fsuuid
linux /vmlinuz root=PARTUUID=$partuuid {kernel_args}
initrd /initrd.img
boot
EOF
sync
umount "$e"
umount "$m"
trap - EXIT
echo "partuuid=$partuuid"
"#,
        root = quote(&layout.root),
        esp = quote(&layout.esp),
        files = files.join(" "),
        seed_dir = quote(SEED_DIR),
        loader = quote(DISK_LOADER),
        kernel_args = KERNEL_ARGS,
    );
    run(
        live,
        &script,
        "installing the boot loader and the seed",
        300,
    )
    .await?;
    Ok(())
}

/// Runs `script` as root on the live system; its stdout, or an error with its stderr.
async fn run(
    live: &SshTransport,
    script: &str,
    what: &str,
    timeout_secs: u64,
) -> Result<String, MetalError> {
    let out = live
        .exec(ExecRequest {
            script,
            stdin: None,
            privileged: false,
            timeout: Some(Duration::from_secs(timeout_secs)),
        })
        .await?;
    if out.status != 0 {
        return Err(MetalError::Node {
            what: what.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A reader that counts what was read from it.
struct Counting<R> {
    inner: R,
    sent: Arc<AtomicU64>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}
