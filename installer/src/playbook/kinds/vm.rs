//! The machine layer on libvirt: kinds that run against a hypervisor target
//! and bring one VM from nothing to answering SSH.
//!
//! `vm_image` makes sure the hypervisor has the pool, the base image (built
//! from `images/base/` or taken from the cache, uploaded once) and knows
//! whether guests get KVM or TCG — once per hypervisor per run, whichever VM
//! task gets there first. `vm_define` creates the VM's cloud-init seed and
//! disk overlay and defines the domain, or finds it defined with the same
//! spec; a VM whose recorded spec drifted is reported and rebuilt only with
//! `--recreate`. `vm_boot` starts it (one boot at a time under TCG) and waits
//! for its SSH server. The cloud-init wait that follows is a `wait` kind.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Content, Params, StepEnv, StepError, StepReport, TargetKind, TaskData};
use crate::virt::lab::{LabKeys, LabVm};
use crate::virt::{Ready, Session, VirtError, VmState};

/// A VM the machine layer brings up: its spec and the lab's key material.
#[derive(Debug, Clone)]
pub struct VmTask {
    /// The VM as the inventory describes it.
    pub vm: LabVm,
    /// The lab's login key and the VMs' host keys.
    pub keys: LabKeys,
}

/// Parameters of `vm_image` (none).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmImageParams {}

/// Parameters of `vm_define` (none).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefineParams {}

/// Parameters of `vm_boot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmBootParams {
    /// Seconds to wait for the guest's SSH server (default 900: TCG is slow).
    #[serde(default = "default_boot_timeout")]
    pub timeout: u64,
}

impl Params for VmImageParams {
    const KEY: &'static str = "vm_image";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Hypervisor];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let ready = ready(env).await?;
        Ok(StepReport {
            changed: ready.base.uploaded,
            stdout: Session::describe(ready),
            ..StepReport::default()
        })
    }
}

impl Params for VmDefineParams {
    const KEY: &'static str = "vm_define";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Hypervisor];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let task = vm_task(env)?;
        let ready = ready(env).await?;
        let hv = env.hypervisor()?.hypervisor();
        let spec = task.vm.finished_spec(&ready.base.sha256, &task.keys)?;
        let wanted = spec.spec_hash();
        let instance_id = format!("{}-{}", spec.name, wanted.get(..12).unwrap_or_default());
        let create = || async {
            let seed = task.keys.seed(&task.vm, &instance_id)?;
            hv.create_vm(&ready.pool, &spec, &ready.base, &seed, ready.accel.accel)
                .await?;
            Ok::<_, StepError>(())
        };
        let report = |changed, stdout: &str| StepReport {
            changed,
            stdout: stdout.to_string(),
            ..StepReport::default()
        };
        match hv.vm_status(&spec.name).await? {
            None => {
                if !env.check {
                    create().await?;
                }
                Ok(report(true, "created"))
            }
            Some(s) if s.spec_hash == wanted => Ok(report(false, "defined with this spec")),
            Some(_) if env.recreate => {
                if !env.check {
                    hv.remove_vm(&ready.pool.name, &spec.name).await?;
                    create().await?;
                }
                Ok(report(true, "recreated (its spec drifted)"))
            }
            Some(s) => Ok(StepReport {
                warning: Some(format!(
                    "VM {} drifted: it was made from spec {} but the inventory now asks for {}; \
                     it is left as it is, run again with --recreate to rebuild it",
                    spec.name,
                    s.spec_hash.get(..12).unwrap_or_default(),
                    wanted.get(..12).unwrap_or_default()
                )),
                ..StepReport::default()
            }),
        }
    }
}

impl Params for VmBootParams {
    const KEY: &'static str = "vm_boot";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Hypervisor];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let task = vm_task(env)?;
        let session = env.hypervisor()?;
        let hv = session.hypervisor();
        let name = &task.vm.spec.name;
        let addr = &task.vm.ssh_addr;
        let running = match hv.vm_status(name).await? {
            None if env.check => false,
            None => {
                return Err(StepError::Invalid(format!(
                    "VM {name} is not defined; the playbook must define it (vm_define) before booting it"
                )));
            }
            Some(s) => s.state == VmState::Running,
        };
        if running && crate::virt::ssh_banner(addr).await {
            return Ok(StepReport {
                stdout: format!("running, SSH answers on {addr}"),
                ..StepReport::default()
            });
        }
        let changed = StepReport {
            changed: true,
            ..StepReport::default()
        };
        if env.check {
            return Ok(changed);
        }
        // Held for the whole boot: one TCG boot at a time (None under KVM).
        let _permit = session.boot_permit().await?;
        let timeout = Duration::from_secs(self.timeout);
        let stdout = match boot(env, hv, name, addr, running, timeout).await {
            Err(StepError::Virt(VirtError::Stopped { console_log, .. })) => {
                // A guest that dies while booting (an emulator crash under TCG
                // has been seen here) gets one more start.
                env.reach
                    .progress("the VM stopped while booting; starting it once more");
                let stdout = boot(env, hv, name, addr, false, timeout).await?;
                return Ok(StepReport {
                    stdout,
                    warning: Some(format!(
                        "VM {name} stopped while booting and was started again; its console log on the hypervisor is {console_log}"
                    )),
                    ..changed
                });
            }
            other => other?,
        };
        Ok(StepReport { stdout, ..changed })
    }
}

async fn boot(
    env: &StepEnv<'_>,
    hv: &crate::virt::Hypervisor,
    name: &str,
    addr: &str,
    running: bool,
    timeout: Duration,
) -> Result<String, StepError> {
    if !running {
        hv.start_vm(name).await?;
    }
    env.reach
        .progress(&format!("booting, waiting for SSH on {addr}"));
    let took = hv.wait_for_ssh(name, addr, timeout).await?;
    Ok(format!(
        "SSH answers on {addr} after {:.0} s",
        took.as_secs_f64()
    ))
}

/// The hypervisor's shared state, established once per run.
async fn ready<'a>(env: &'a StepEnv<'a>) -> Result<&'a Ready, StepError> {
    let reach = env.reach;
    Ok(env
        .hypervisor()?
        .ready(&|line| reach.progress(line))
        .await?)
}

fn vm_task<'a>(env: &StepEnv<'a>) -> Result<&'a VmTask, StepError> {
    match env.task_data {
        TaskData::Vm(t) => Ok(t),
        _ => Err(StepError::Invalid(format!(
            "{}: VM steps run only in the machine layer of a `machine: {{type: libvirt}}` node",
            env.origin
        ))),
    }
}

fn default_boot_timeout() -> u64 {
    crate::virt::DEFAULT_BOOT_TIMEOUT.as_secs()
}
