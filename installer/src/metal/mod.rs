//! Bare metal installed through its BMC: what the machine layer's Redfish
//! steps (`playbook::kinds::bmc`) need beside the Redfish client.
//!
//! A [`MetalTask`] is one Redfish node's machine task, built by the
//! executor's prepare step: the SSH wait limit and, for a node with
//! `machine.install`, its [`InstallPlan`]: the OS image to write
//! ([`image`]: the base image or the node's own, turned once per image into
//! a zstd stream with the sha256 of what must land on the disk), the live ISO
//! ([`crate::virt::liveimage`], with a per-node copy carrying the node's
//! keys), the run's [`media::MediaServer`] that serves it to the BMC, the
//! key material ([`keys`]: a login key, and a live and an installed host key
//! per node, all pinned), the SSH target of the live system, and the
//! node-side work ([`install`]: partitioning, the streamed write checked by
//! sha256 on the node, the boot loader and the cloud-init seed). Progress
//! of each install is journaled per stage ([`record`]).

pub mod image;
pub mod install;
pub mod keys;
pub mod media;
pub mod record;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::transport::SshTarget;
use crate::virt::baseimage::{BaseImageError, BuildOptions, BuildOutcome};
use crate::virt::liveimage::LiveImage;
pub use image::{InstallImage, OsImage};
pub use keys::{MetalKeys, System};
pub use media::MediaServer;
pub use record::InstallRecord;

/// How long a machine may take to answer SSH after power-on, by default.
pub const DEFAULT_SSH_TIMEOUT: Duration = Duration::from_secs(1200);

/// Errors of the bare-metal install outside the BMC.
#[derive(Debug, thiserror::Error)]
pub enum MetalError {
    /// The base image or the live ISO could not be built or read.
    #[error(transparent)]
    Image(#[from] BaseImageError),
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
    /// A local helper program failed.
    #[error("`{command}` failed: {stderr}")]
    Tool {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The key material could not be made or read.
    #[error(transparent)]
    Keys(#[from] crate::virt::lab::LabError),
    /// The install journal could not be read or written.
    #[error(transparent)]
    Record(#[from] record::RecordError),
    /// The media server could not start.
    #[error(transparent)]
    Media(#[from] media::MediaError),
    /// The templates of the cloud-init seed did not render.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// Work on the node (over SSH to its live system) failed.
    #[error("{what} on the live system failed{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Node {
        /// What was being done (`partitioning /dev/sda`).
        what: String,
        /// What the node said.
        detail: String,
    },
    /// The SSH connection to the live system failed.
    #[error("talking to the live system")]
    Transport(#[from] crate::transport::TransportError),
    /// A blocking task panicked or was cancelled.
    #[error("an image preparation task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// One Redfish node's machine task.
#[derive(Debug)]
pub struct MetalTask {
    /// The node.
    pub node: String,
    /// How long the machine may take to answer SSH after power-on.
    pub ssh_timeout: Duration,
    /// The install, when the node has `machine.install`.
    pub install: Option<InstallPlan>,
}

/// Everything one node's install needs.
#[derive(Debug)]
pub struct InstallPlan {
    /// The login user of the installed system.
    pub user: String,
    /// The disk to install onto (`None`: the machine's only fixed disk).
    pub disk: Option<String>,
    /// The OS image, prepared once per run for every node that uses it.
    pub image: Arc<SharedImage>,
    /// The live ISO, built or found once per run.
    pub live: Arc<SharedLive>,
    /// The run's media server.
    pub media: Arc<MediaServer>,
    /// The key material of the inventory's installs.
    pub keys: MetalKeys,
    /// The live system's SSH server: the node's address, root, the login
    /// key, only the live host key edgeforge generated.
    pub live_target: SshTarget,
    /// Where per-node ISOs are written (private: they carry host keys).
    pub media_dir: PathBuf,
}

/// An OS image shared by the nodes that install it.
#[derive(Debug)]
pub struct SharedImage {
    /// Where it comes from.
    pub source: OsImage,
    /// Cache root for the prepared stream.
    pub cache: PathBuf,
    ready: OnceCell<InstallImage>,
}

impl SharedImage {
    /// An image from `source`, its stream prepared under `cache` on first use.
    pub fn new(source: OsImage, cache: PathBuf) -> SharedImage {
        SharedImage {
            source,
            cache,
            ready: OnceCell::new(),
        }
    }

    /// The prepared image (built, converted and compressed on first use);
    /// `progress` hears the phases.
    pub async fn ready(
        &self,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<&InstallImage, MetalError> {
        self.ready
            .get_or_try_init(|| async {
                let (source, cache) = (self.source.clone(), self.cache.clone());
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let work = tokio::task::spawn_blocking(move || {
                    image::prepare(&source, &cache, &mut |line: &str| {
                        let _ = tx.send(line.to_string());
                    })
                });
                while let Some(line) = rx.recv().await {
                    progress(&line);
                }
                work.await.map_err(MetalError::Join)?
            })
            .await
    }
}

/// The live ISO, shared by every install of a run.
#[derive(Debug)]
pub struct SharedLive {
    /// How it is built (release, cache, mirror, recipe).
    pub opts: BuildOptions,
    ready: OnceCell<(LiveImage, BuildOutcome)>,
}

impl SharedLive {
    /// The live ISO built with `opts` on first use.
    pub fn new(opts: BuildOptions) -> SharedLive {
        SharedLive {
            opts,
            ready: OnceCell::new(),
        }
    }

    /// The ISO (built now, or found in the cache); `progress` hears a build's phases.
    pub async fn ready(
        &self,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<&(LiveImage, BuildOutcome), MetalError> {
        self.ready
            .get_or_try_init(|| async {
                let opts = self.opts.clone();
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let build = tokio::task::spawn_blocking(move || {
                    crate::virt::liveimage::build(&opts, |line| {
                        let _ = tx.send(line.to_string());
                    })
                });
                while let Some(line) = rx.recv().await {
                    progress(&line);
                }
                Ok(build.await.map_err(MetalError::Join)??)
            })
            .await
    }
}

impl InstallPlan {
    /// The spec hash of installing `image` on `node`: what the install
    /// writes. A finished install with another spec has drifted.
    pub fn spec_hash(&self, node: &str, image: &InstallImage) -> Result<String, MetalError> {
        let (_, host_public) = self.keys.read_host_key(node, System::Installed)?;
        let material = format!(
            "{}\0{}\0{}\0{}\0{}\0{}",
            image.raw_sha256,
            self.disk.as_deref().unwrap_or("-"),
            self.user,
            node,
            host_public,
            self.keys.authorized_key()?
        );
        Ok(hex::encode(Sha256::digest(material)))
    }
}
