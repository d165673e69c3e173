//! The machine layer on bare metal: kinds that run against a node's BMC
//! (a logged-in Redfish client) and bring the machine to answering SSH,
//! installing its OS first when the node has `machine.install`.
//!
//! `bmc_power`, `bmc_eject`, `bmc_boot` and `bmc_insert_live` drive the
//! BMC; `bmc_wait_ssh` waits for the live installer system or the installed
//! system; `bmc_write_image` streams the OS image to the disk over SSH to the
//! live system and has the node check it; `bmc_install` decides, first,
//! whether this run installs, resumes an install, or leaves an installed
//! machine alone. `playbooks/machine/redfish.yaml` puts them in order.
//!
//! A step with a `stage:` is one stage of the install, journaled in the
//! node's install record ([`crate::metal::record`]): a stage done by an
//! earlier run of the same install is skipped, so an install interrupted at
//! any point resumes at the stage it was in, and a failing stage names
//! itself and what was seen last. A finished install stays finished; one
//! whose spec (image, disk, keys) drifted is reported and redone only with
//! `--recreate`. The connections to the live system are the kinds' own
//! (its own pinned host key) and are closed when the step ends; the node's
//! connection in the executor is the installed system's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Content, Params, StepEnv, StepError, StepReport, TargetKind, TaskData};
use crate::bmc::{BootMode, BootTarget, EjectOutcome, PowerChange, PowerState};
use crate::metal::{InstallPlan, InstallRecord, MetalTask, System, install};
use crate::transport::{SshTransport, Transport};
use crate::virt::liveimage::NodeFile;

/// The power state a `bmc_power` step wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    /// Powered on.
    On,
    /// Powered off (ForceOff when offered: an installer has nothing to shut down cleanly).
    Off,
}

/// A one-time boot device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// Virtual CD/DVD.
    Cd,
    /// The first disk.
    Hdd,
    /// Network boot.
    Pxe,
}

/// A firmware boot mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareMode {
    /// UEFI (the live ISO boots only so).
    Uefi,
    /// Legacy BIOS.
    Legacy,
}

/// Which system of the machine `bmc_wait_ssh` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SshSystem {
    /// The live installer booted from the ISO (its own pinned host key).
    Live,
    /// The OS on the disk (the node's connection in the executor).
    Installed,
}

/// Parameters of `bmc_install` (none).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcInstallParams {}

/// Parameters of `bmc_power`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcPowerParams {
    /// `on` or `off`.
    pub state: Power,
    /// The install stage this step is (journaled), if it is one.
    #[serde(default)]
    pub stage: Option<String>,
}

/// Parameters of `bmc_eject`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcEjectParams {
    /// The install stage this step is, if it is one.
    #[serde(default)]
    pub stage: Option<String>,
}

/// Parameters of `bmc_insert_live`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcInsertLiveParams {
    /// The install stage this step is, if it is one.
    #[serde(default)]
    pub stage: Option<String>,
}

/// Parameters of `bmc_boot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcBootParams {
    /// `cd`, `hdd` or `pxe`.
    pub device: Device,
    /// `uefi` or `legacy` (sent only when the BMC advertises modes; otherwise
    /// the machine must already be in it).
    #[serde(default)]
    pub mode: Option<FirmwareMode>,
    /// The install stage this step is, if it is one.
    #[serde(default)]
    pub stage: Option<String>,
}

/// Parameters of `bmc_wait_ssh`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcWaitSshParams {
    /// `live` or `installed`.
    pub system: SshSystem,
    /// The install stage this step is, if it is one.
    #[serde(default)]
    pub stage: Option<String>,
}

/// Parameters of `bmc_write_image`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcWriteImageParams {
    /// The install stage this step is, if it is one.
    #[serde(default)]
    pub stage: Option<String>,
}

impl Params for BmcInstallParams {
    const KEY: &'static str = "bmc_install";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Bmc];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let task = metal_task(env)?;
        let plan = install_plan(env, task)?;
        let reach = env.reach;
        let image = plan.image.ready(&|line| reach.progress(line)).await?;
        let spec = plan.spec_hash(&task.node, image)?;
        let what = format!(
            "{} onto {} of {}",
            image.source,
            plan.disk.as_deref().unwrap_or("the only fixed disk"),
            task.node
        );
        let report = |changed: bool, stdout: String| StepReport {
            changed,
            stdout,
            ..StepReport::default()
        };
        let Some(dir) = env.state_dir else {
            return Ok(report(true, format!("would install {what}")));
        };
        let path = InstallRecord::path(dir, &task.node);
        let record = InstallRecord::load(&path)?;
        let short = |s: &str| s.get(..12).unwrap_or_default().to_string();
        match (record.completed, record.spec == spec) {
            (Some(_), true) => Ok(report(
                false,
                format!("installed with this spec ({}): nothing to do", short(&spec)),
            )),
            (Some(_), false) if !env.recreate => Ok(StepReport {
                warning: Some(format!(
                    "{} was installed from spec {} but the inventory now asks for {} ({what}); \
                     it is left as it is, run again with --recreate to reinstall it (its disk is erased)",
                    task.node,
                    short(&record.spec),
                    short(&spec)
                )),
                ..StepReport::default()
            }),
            (None, true) if !record.stages.is_empty() && !env.recreate => {
                let last = record.stages.last().map_or("", |s| s.stage.as_str());
                let failed = record
                    .failed
                    .as_ref()
                    .map(|f| {
                        format!(
                            "; the last attempt failed in stage {}: {}",
                            f.stage, f.error
                        )
                    })
                    .unwrap_or_default();
                Ok(report(
                    true,
                    format!("resuming the install of {what} after stage {last}{failed}"),
                ))
            }
            (completed, _) => {
                InstallRecord::begin(&spec).save(&path)?;
                let why = match completed {
                    Some(_) => " again (--recreate: its spec drifted)",
                    None if env.recreate && !record.stages.is_empty() => {
                        " from the first stage (--recreate)"
                    }
                    None => "",
                };
                Ok(report(
                    true,
                    format!("installing {what}{why} (spec {})", short(&spec)),
                ))
            }
        }
    }
}

impl Params for BmcPowerParams {
    const KEY: &'static str = "bmc_power";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Bmc];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        staged(env, self.stage.as_deref(), || async {
            let client = env.bmc()?;
            let wanted = match self.state {
                Power::On => PowerState::On,
                Power::Off => PowerState::Off,
            };
            if env.check {
                let now = client.power_state().await?;
                return Ok(StepReport {
                    changed: now != wanted,
                    stdout: format!("power {now}"),
                    ..StepReport::default()
                });
            }
            env.reach.progress(&format!("powering {}", wanted));
            let change = match self.state {
                Power::On => client.power_on().await?,
                Power::Off => client.power_off().await?,
            };
            Ok(match change {
                PowerChange::Unchanged(state) => StepReport {
                    stdout: format!("already {state}"),
                    ..StepReport::default()
                },
                PowerChange::Changed {
                    reset_type,
                    from,
                    to,
                    took,
                } => StepReport {
                    changed: true,
                    stdout: format!(
                        "{reset_type}: {from} -> {to} in {:.1} s",
                        took.as_secs_f64()
                    ),
                    ..StepReport::default()
                },
            })
        })
        .await
    }
}

impl Params for BmcEjectParams {
    const KEY: &'static str = "bmc_eject";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Bmc];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        staged(env, self.stage.as_deref(), || async {
            let client = env.bmc()?;
            if env.check {
                let inserted = client.media_slots().await?.iter().any(|s| s.inserted);
                return Ok(StepReport {
                    changed: inserted,
                    ..StepReport::default()
                });
            }
            Ok(match client.eject_media().await? {
                EjectOutcome::Empty(slot) => StepReport {
                    stdout: format!("virtual media slot {slot} is empty"),
                    ..StepReport::default()
                },
                EjectOutcome::Ejected { slot, image } => StepReport {
                    changed: true,
                    stdout: format!(
                        "ejected {} from {slot}",
                        image.as_deref().map_or("the media".into(), redact_token)
                    ),
                    ..StepReport::default()
                },
            })
        })
        .await
    }
}

impl Params for BmcInsertLiveParams {
    const KEY: &'static str = "bmc_insert_live";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Bmc];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        staged(env, self.stage.as_deref(), || async {
            let task = metal_task(env)?;
            let plan = install_plan(env, task)?;
            let client = env.bmc()?;
            let reach = env.reach;
            let (live, _) = plan.live.ready(&|line| reach.progress(line)).await?;
            let (private, public) = plan.keys.read_host_key(&task.node, System::Live)?;
            let files = vec![
                NodeFile {
                    path: "etc/ssh/ssh_host_ed25519_key".into(),
                    mode: 0o600,
                    data: private.into_bytes(),
                },
                NodeFile {
                    path: "etc/ssh/ssh_host_ed25519_key.pub".into(),
                    mode: 0o644,
                    data: format!("{public}\n").into_bytes(),
                },
                NodeFile {
                    path: "root/.ssh/authorized_keys".into(),
                    mode: 0o600,
                    data: format!("{}\n", plan.keys.authorized_key()?).into_bytes(),
                },
            ];
            let name = format!("{}.iso", task.node);
            let iso = plan.media_dir.join(&name);
            reach.progress("writing the node's copy of the live ISO");
            let (live_copy, dest) = (live.clone(), iso.clone());
            tokio::task::spawn_blocking(move || {
                crate::virt::liveimage::node_iso(&live_copy, &files, &dest)
            })
            .await
            .map_err(|e| StepError::Invalid(format!("writing the node ISO: {e}")))?
            .map_err(crate::metal::MetalError::from)?;
            let url = plan.media.publish(&name, iso).await?;
            reach.progress(&format!(
                "inserting {} (the BMC may download all of it first)",
                redact_token(&url)
            ));
            let ejected = client.insert_media(&url).await?;
            Ok(StepReport {
                changed: true,
                stdout: format!(
                    "inserted {} (live ISO {}){}",
                    redact_token(&url),
                    live.sha256.get(..12).unwrap_or_default(),
                    match ejected {
                        Some(EjectOutcome::Ejected { .. }) => ", after ejecting what it held",
                        _ => "",
                    }
                ),
                ..StepReport::default()
            })
        })
        .await
    }
}

impl Params for BmcBootParams {
    const KEY: &'static str = "bmc_boot";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Bmc];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        staged(env, self.stage.as_deref(), || async {
            let client = env.bmc()?;
            let target = match self.device {
                Device::Cd => BootTarget::Cd,
                Device::Hdd => BootTarget::Hdd,
                Device::Pxe => BootTarget::Pxe,
            };
            let mode = self.mode.map(|m| match m {
                FirmwareMode::Uefi => BootMode::Uefi,
                FirmwareMode::Legacy => BootMode::Legacy,
            });
            let changed = StepReport {
                changed: true,
                ..StepReport::default()
            };
            if env.check {
                return Ok(changed);
            }
            let after = client.boot_once(target, mode).await?;
            Ok(StepReport {
                stdout: format!("next boot: {after}"),
                ..changed
            })
        })
        .await
    }
}

impl Params for BmcWaitSshParams {
    const KEY: &'static str = "bmc_wait_ssh";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Bmc];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        staged(env, self.stage.as_deref(), || async {
            if env.check {
                return Ok(StepReport::default());
            }
            let task = metal_task(env)?;
            let started = Instant::now();
            let took = match self.system {
                SshSystem::Live => {
                    let plan = install_plan(env, task)?;
                    let live = wait_for(env, task, "the live system", || async {
                        SshTransport::connect(&plan.live_target)
                            .await
                            .map_err(|e| crate::error::chain(&e))
                    })
                    .await?;
                    let _ = live.close().await;
                    started.elapsed()
                }
                SshSystem::Installed => {
                    wait_for(env, task, "the installed system", || async {
                        env.reach
                            .reconnect_host()
                            .await
                            .map_err(|e| crate::error::chain(&e))
                    })
                    .await?;
                    started.elapsed()
                }
            };
            let mut stdout = format!(
                "{} answers SSH after {:.0} s",
                match self.system {
                    SshSystem::Live => "the live system",
                    SshSystem::Installed => "the installed system",
                },
                took.as_secs_f64()
            );
            if self.system == SshSystem::Installed
                && let Some(line) = complete_install(env, task)?
            {
                stdout.push_str(&line);
            }
            Ok(StepReport {
                stdout,
                ..StepReport::default()
            })
        })
        .await
    }
}

impl Params for BmcWriteImageParams {
    const KEY: &'static str = "bmc_write_image";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Bmc];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        staged(env, self.stage.as_deref(), || async {
            let task = metal_task(env)?;
            let plan = install_plan(env, task)?;
            if env.check {
                return Ok(StepReport {
                    changed: true,
                    ..StepReport::default()
                });
            }
            let reach = env.reach;
            let image = plan.image.ready(&|line| reach.progress(line)).await?;
            let live = SshTransport::connect(&plan.live_target)
                .await
                .map_err(|e| {
                    StepError::Invalid(format!(
                        "cannot reach the live system ({}); if the machine left it (a power cut, a \
                     reboot), run apply again with --recreate to start the install over",
                        crate::error::chain(&e)
                    ))
                })?;
            let result = write_image(env, task, plan, image, &live).await;
            let _ = live.close().await;
            result
        })
        .await
    }
}

/// Partitions, writes, checks and finalizes, over `live`.
async fn write_image(
    env: &StepEnv<'_>,
    task: &MetalTask,
    plan: &InstallPlan,
    image: &crate::metal::InstallImage,
    live: &SshTransport,
) -> Result<StepReport, StepError> {
    let reach = env.reach;
    reach.progress("partitioning the install disk");
    let layout = install::partition(live, plan.disk.as_deref(), image).await?;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    reach.progress(&format!(
        "writing {} to {} ({:.0} MiB, {:.0} MiB compressed)",
        image.source,
        layout.root,
        mib(image.raw_size),
        mib(image.stream_size)
    ));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let ticker = {
        let sent = sent.clone();
        let total = image.stream_size;
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = sent.load(Ordering::Relaxed);
                reach.progress(&format!(
                    "{:.0} of {:.0} MiB sent ({:.1} MiB/s)",
                    mib(now),
                    mib(total),
                    mib(now) / started.elapsed().as_secs_f64().max(0.1)
                ));
            }
        }
    };
    tokio::select! {
        r = install::write(live, &layout, image, sent) => r?,
        () = ticker => {}
    }
    let wrote = started.elapsed();
    let spec = plan.spec_hash(&task.node, image)?;
    let (host_private, host_public) = plan.keys.read_host_key(&task.node, System::Installed)?;
    let seed = crate::virt::SeedSpec {
        hostname: task.node.clone(),
        instance_id: format!("{}-{}", task.node, spec.get(..12).unwrap_or_default()),
        user: plan.user.clone(),
        authorized_key: plan.keys.authorized_key()?,
        host_key_private: host_private,
        host_key_public: host_public,
        // A bare-metal node's network is the site's, not a lab network.
        cluster: None,
    };
    let files = crate::virt::seed::render_files(env.renderer, &seed)?;
    reach.progress("installing the boot loader and the cloud-init seed");
    install::finalize(live, &layout, &files).await?;
    Ok(StepReport {
        changed: true,
        stdout: format!(
            "wrote {} to {} ({} on {}) in {:.0} s; sha256 {} checked on the node",
            image.source,
            layout.root,
            layout.esp,
            layout.disk,
            wrote.as_secs_f64(),
            image.raw_sha256.get(..12).unwrap_or_default()
        ),
        ..StepReport::default()
    })
}

/// Tries `attempt` every few seconds until it succeeds or the node's SSH
/// wait limit passes; the timeout says what was seen last, and what the BMC
/// said about the power state.
async fn wait_for<T, F, Fut>(
    env: &StepEnv<'_>,
    task: &MetalTask,
    what: &str,
    mut attempt: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let client = env.bmc()?;
    let started = Instant::now();
    let mut last_power: Option<String> = None;
    let mut last: Option<String> = None;
    let mut polled = Instant::now() - Duration::from_secs(60);
    while started.elapsed() < task.ssh_timeout {
        match attempt().await {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
        if polled.elapsed() >= Duration::from_secs(30) {
            polled = Instant::now();
            last_power = Some(match client.power_state().await {
                Ok(p) => format!("the BMC reports power {p}"),
                Err(e) => format!(
                    "the BMC did not say its power state: {}",
                    crate::error::chain(&e)
                ),
            });
        }
        env.reach.progress(&format!(
            "waiting for {what} to answer SSH ({:.0} s){}",
            started.elapsed().as_secs_f64(),
            last_power
                .as_deref()
                .map(|p| format!("; {p}"))
                .unwrap_or_default()
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Err(StepError::Timeout {
        what: format!("{what} answering SSH"),
        after: task.ssh_timeout,
        last: Some(
            [last, last_power]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; "),
        ),
    })
}

/// Marks a journaled install complete; its stage timings, for the report.
fn complete_install(env: &StepEnv<'_>, task: &MetalTask) -> Result<Option<String>, StepError> {
    let (Some(_), Some(dir)) = (&task.install, env.state_dir) else {
        return Ok(None);
    };
    let path = InstallRecord::path(dir, &task.node);
    let mut record = InstallRecord::load(&path)?;
    if record.completed.is_some() || record.stages.is_empty() {
        return Ok(None);
    }
    let now = crate::metal::record::now();
    record.completed = Some(now);
    record.save(&path)?;
    Ok(Some(format!(
        "; installed in {} s (stages: {})",
        now.saturating_sub(record.started),
        record.timings()
    )))
}

/// Runs `work` as install stage `stage` (when given, and the node is being
/// installed): skipped when the node's install record has it done, recorded
/// when it succeeds, and, when it fails, recorded and reported with its name.
async fn staged<F, Fut>(
    env: &StepEnv<'_>,
    stage: Option<&str>,
    work: F,
) -> Result<StepReport, StepError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<StepReport, StepError>>,
{
    let task = metal_task(env)?;
    let (Some(stage), Some(_)) = (stage, &task.install) else {
        return work().await;
    };
    let Some(dir) = env.state_dir else {
        return if env.check {
            Ok(StepReport {
                changed: true,
                stdout: format!("would run install stage {stage}"),
                ..StepReport::default()
            })
        } else {
            work().await
        };
    };
    let path = InstallRecord::path(dir, &task.node);
    let mut record = InstallRecord::load(&path)?;
    if record.completed.is_some() {
        return Ok(StepReport {
            stdout: format!("installed; stage {stage} is not needed"),
            ..StepReport::default()
        });
    }
    if let Some(done) = record.done(stage) {
        return Ok(StepReport {
            stdout: format!(
                "stage {stage} was done by an earlier run ({:.1} s); the install resumes after it",
                done.secs
            ),
            ..StepReport::default()
        });
    }
    let started = Instant::now();
    match work().await {
        Ok(report) => {
            record.finish_stage(stage, started.elapsed().as_secs_f64());
            record.save(&path)?;
            Ok(report)
        }
        Err(e) => {
            record.fail_stage(stage, &crate::error::chain(&e));
            let _ = record.save(&path);
            Err(StepError::Install {
                stage: stage.to_string(),
                node: task.node.clone(),
                source: Box::new(e),
            })
        }
    }
}

fn metal_task<'a>(env: &StepEnv<'a>) -> Result<&'a MetalTask, StepError> {
    match env.task_data {
        TaskData::Metal(t) => Ok(t),
        _ => Err(StepError::Invalid(format!(
            "{}: BMC steps run only in the machine layer of a `machine: {{type: redfish}}` node",
            env.origin
        ))),
    }
}

fn install_plan<'a>(env: &StepEnv<'_>, task: &'a MetalTask) -> Result<&'a InstallPlan, StepError> {
    task.install.as_ref().ok_or_else(|| {
        StepError::Invalid(format!(
            "{}: node {} has no `machine.install`; install steps need `when: node.install`",
            env.origin, task.node
        ))
    })
}

/// A media URL as messages show it: the random path token left out.
fn redact_token(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let mut parts: Vec<&str> = rest.split('/').collect();
            if parts.len() == 3 && parts[1].len() == 32 {
                parts[1] = "…";
            }
            format!("{scheme}://{}", parts.join("/"))
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_urls_lose_their_token_in_messages() {
        let token = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            redact_token(&format!("http://10.0.0.1:8088/{token}/metal-1.iso")),
            "http://10.0.0.1:8088/…/metal-1.iso"
        );
        assert_eq!(
            redact_token("https://images.example.com/live.iso"),
            "https://images.example.com/live.iso"
        );
    }
}
