//! One hypervisor for the length of a run.
//!
//! Every VM task on a hypervisor shares its [`Session`]: one libvirt
//! connection; the pool, the base image (built or found in the cache, then
//! uploaded once) and the KVM-or-TCG decision, all made once by whichever
//! task gets there first ([`Session::ready`]); and a boot gate. Under TCG two
//! guests booting at once on a small machine starve each other (each boot
//! takes about as long as all of them in sequence), so on TCG hypervisors
//! boots run one at a time ([`Session::boot_permit`]); everything else about
//! the VMs proceeds in parallel, and a booted VM's later layers go on while
//! the next one boots.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

use super::baseimage::{self, BaseImage, BuildOptions, BuildOutcome};
use super::{Accel, AccelChoice, BaseVolumes, Hypervisor, PoolRef, VirtError};

/// A hypervisor's connection and what its VMs share in one run.
pub struct Session {
    name: String,
    hv: Hypervisor,
    pool: (String, String),
    image: BuildOptions,
    ready: OnceCell<Ready>,
    boots: Semaphore,
}

/// What [`Session::ready`] established.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The storage pool.
    pub pool: PoolRef,
    /// The base image on the controller.
    pub image: BaseImage,
    /// Whether the image was built now (and how long it took) or found in the cache.
    pub built: BuildOutcome,
    /// The base image's volumes in the pool.
    pub base: BaseVolumes,
    /// KVM or TCG, and why.
    pub accel: AccelChoice,
}

impl Session {
    /// A session on `hv` (inventory name `name`) with pool `pool` at `pool_path`,
    /// building the base image with `image`.
    pub fn new(
        name: &str,
        hv: Hypervisor,
        pool: &str,
        pool_path: &str,
        image: BuildOptions,
    ) -> Session {
        Session {
            name: name.to_owned(),
            hv,
            pool: (pool.to_owned(), pool_path.to_owned()),
            image,
            ready: OnceCell::new(),
            boots: Semaphore::new(1),
        }
    }

    /// A session whose pool, base image and acceleration are already known
    /// (tools and tests that set the hypervisor up themselves).
    pub fn established(name: &str, hv: Hypervisor, ready: Ready) -> Session {
        let session = Session::new(
            name,
            hv,
            &ready.pool.name,
            &ready.pool.path,
            BuildOptions {
                release: ready.image.release.clone(),
                arch: ready.image.arch.clone(),
                cache: ready.image.dir.clone(),
                mirror: String::new(),
                data: crate::data::DataDir::Embedded,
            },
        );
        let _ = session.ready.set(ready);
        session
    }

    /// The hypervisor's inventory name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The libvirt connection.
    pub fn hypervisor(&self) -> &Hypervisor {
        &self.hv
    }

    /// The pool, the base image in it and the acceleration, established once
    /// per run; `progress` hears the phases of a base image build.
    pub async fn ready(&self, progress: &(dyn Fn(&str) + Sync)) -> Result<&Ready, VirtError> {
        self.ready
            .get_or_try_init(|| async {
                let opts = self.image.clone();
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let build = tokio::task::spawn_blocking(move || {
                    baseimage::build(&opts, |line| {
                        let _ = tx.send(line.to_string());
                    })
                });
                while let Some(line) = rx.recv().await {
                    progress(&line);
                }
                let (image, built) = build.await.map_err(VirtError::Join)??;
                let pool = self.hv.ensure_pool(&self.pool.0, &self.pool.1).await?;
                let base = self.hv.ensure_base(&pool, &image).await?;
                let accel = self.hv.detect_accel(&base, Some(&self.image.cache)).await?;
                Ok(Ready {
                    pool,
                    image,
                    built,
                    base,
                    accel,
                })
            })
            .await
    }

    /// Waits for the right to boot a guest: one at a time under TCG, at once under KVM.
    pub async fn boot_permit(&self) -> Result<Option<SemaphorePermit<'_>>, VirtError> {
        if self.ready(&|_| {}).await?.accel.accel == Accel::Kvm {
            return Ok(None);
        }
        Ok(self.boots.acquire().await.ok())
    }

    /// Where the base image cache and the KVM probe result live.
    pub fn cache_root(&self) -> PathBuf {
        self.image.cache.clone()
    }

    /// A one-line account of [`Session::ready`] for the step's report.
    pub fn describe(ready: &Ready) -> String {
        let built = match ready.built {
            BuildOutcome::Cached => "cached".to_string(),
            BuildOutcome::Built(t) => format!("built in {:.0} s", t.as_secs_f64()),
        };
        format!(
            "base image {} ({built}, {}); pool {} at {}; acceleration {}: {}{}",
            ready.image.sha256.get(..12).unwrap_or_default(),
            if ready.base.uploaded {
                "uploaded"
            } else {
                "already in the pool"
            },
            ready.pool.name,
            ready.pool.path,
            ready.accel.accel,
            ready.accel.reason,
            if ready.accel.cached {
                " (cached probe)"
            } else {
                ""
            }
        )
    }
}

/// How long a guest may take to answer SSH by default (TCG boots are slow).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(900);
