//! Waiting kinds: `wait_for` (a port, a path or a command on the host),
//! `reboot` (reboot, then reconnect until the boot id changes) and
//! `wait_cloud_init` (until cloud-init has finished inside a machine the
//! machine layer just booted). Waits poll with a deadline and a timeout says
//! what was awaited and what was seen last.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Content, Params, Presence, StepEnv, StepError, StepReport, TargetKind};
use crate::sh::quote;

/// Parameters of `wait_for` (exactly one of port, path, command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// A TCP port that must accept connections.
    #[serde(default)]
    pub port: Option<u16>,
    /// The address for `port` (default 127.0.0.1).
    #[serde(default = "default_localhost")]
    pub host: String,
    /// A path that must exist (or, with `state: absent`, not exist).
    #[serde(default)]
    pub path: Option<String>,
    /// A command that must succeed.
    #[serde(default)]
    pub command: Option<String>,
    /// Present (default) or absent (port closed, path gone).
    #[serde(default)]
    pub state: Presence,
    /// Seconds before giving up (default 300).
    #[serde(default = "default_wait")]
    pub timeout: u64,
}

/// Parameters of `reboot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootParams {
    /// Seconds to wait for the host to come back (default 600).
    #[serde(default = "default_reboot")]
    pub timeout: u64,
}

/// Parameters of `wait_cloud_init`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInitParams {
    /// Seconds to wait for SSH and for cloud-init to finish (default 900).
    #[serde(default = "default_cloud_init")]
    pub timeout: u64,
}

impl Params for WaitParams {
    const KEY: &'static str = "wait_for";
    const RUNTIME_STATE: bool = true;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let timeout = Some(Duration::from_secs(self.timeout + 30));
        env.run_framed(&wait_body(self)?, None, timeout).await
    }
}

impl Params for RebootParams {
    const KEY: &'static str = "reboot";
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let changed = StepReport {
            changed: true,
            ..StepReport::default()
        };
        if env.check {
            return Ok(changed);
        }
        let timeout = Duration::from_secs(self.timeout);
        let boot_id = "cat /proc/sys/kernel/random/boot_id";
        let before = env
            .exec(boot_id, None, Some(Duration::from_secs(30)))
            .await?
            .stdout;
        env.exec(
            "nohup sh -c 'sleep 2; reboot' >/dev/null 2>&1 &",
            None,
            Some(Duration::from_secs(30)),
        )
        .await?;
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_secs(5)).await;
            // The old connection died with the old boot; open a new one.
            if let Err(e) = env.reach.reconnect_host().await {
                last = Some(crate::error::chain(&e));
                continue;
            }
            match env.exec(boot_id, None, Some(Duration::from_secs(10))).await {
                Ok(out) if out.status == 0 && !out.stdout.is_empty() && out.stdout != before => {
                    return Ok(changed);
                }
                Ok(_) => last = Some("the boot id has not changed yet".into()),
                Err(e) => last = Some(crate::error::chain(&e)),
            }
        }
        Err(StepError::Timeout {
            what: "the host coming back after the reboot".into(),
            after: timeout,
            last,
        })
    }
}

impl Params for CloudInitParams {
    const KEY: &'static str = "wait_cloud_init";
    const TARGETS: &'static [TargetKind] =
        &[TargetKind::Host, TargetKind::Hypervisor, TargetKind::Bmc];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        // `status --wait` returns at once when cloud-init is done; 2 means done
        // with recoverable errors (newer releases), which still leaves the
        // machine configured. A machine without cloud-init has nothing to wait for.
        // `status --wait` returns once cloud-init has finished: 0 done; 1 done
        // with errors in some module, 2 with recoverable errors (newer
        // releases). Finished either way: the details go into a warning, since
        // the machine is reachable with the key cloud-init put in. A machine
        // without cloud-init has nothing to wait for.
        const SCRIPT: &str =
            "command -v cloud-init >/dev/null 2>&1 || { echo 'status: no cloud-init'; exit 0; }
             cloud-init status --wait >/dev/null 2>&1; rc=$?
             cloud-init status --long 2>&1 | grep -v '^ *$' | tail -n 8
             exit $rc";
        let timeout = Duration::from_secs(self.timeout);
        let start = Instant::now();
        let mut last: Option<String> = None;
        while start.elapsed() < timeout {
            let left = timeout.saturating_sub(start.elapsed());
            // Right after boot cloud-init restarts sshd once: a refused or
            // dropped connection is retried on a new one.
            let transport = match env.reach.node_host().await {
                Ok(t) => t,
                Err(e) => {
                    last = Some(crate::error::chain(&e));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            let req = crate::transport::ExecRequest {
                script: SCRIPT,
                stdin: None,
                privileged: true,
                timeout: Some(left),
            };
            match transport.exec(req).await {
                Ok(out) if out.status == 0 => {
                    return Ok(StepReport {
                        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
                        ..StepReport::default()
                    });
                }
                Ok(out) if out.status == 1 || out.status == 2 => {
                    let detail = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Ok(StepReport {
                        warning: Some(format!(
                            "cloud-init finished with errors inside the machine: {detail}"
                        )),
                        ..StepReport::default()
                    });
                }
                Ok(out) => {
                    return Err(StepError::Remote {
                        status: out.status,
                        stderr: super::tail(
                            &format!(
                                "cloud-init failed inside the machine: {}{}",
                                String::from_utf8_lossy(&out.stdout),
                                String::from_utf8_lossy(&out.stderr)
                            ),
                            6,
                        ),
                    });
                }
                Err(e) => {
                    last = Some(crate::error::chain(&e));
                    let _ = env.reach.reconnect_host().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        Err(StepError::Timeout {
            what: "cloud-init finishing inside the machine".into(),
            after: timeout,
            last,
        })
    }
}

fn wait_body(p: &WaitParams) -> Result<String, StepError> {
    let cond = match (p.port, &p.path, &p.command) {
        (Some(port), None, None) => format!(
            "ef_probe() {{ if command -v nc >/dev/null 2>&1; then nc -z -w 2 {h} {port} >/dev/null 2>&1; \
             else bash -c 'exec 3<>/dev/tcp/$1/$2' sh {h} {port} 2>/dev/null; fi; }}",
            h = quote(&p.host)
        ),
        (None, Some(path), None) => format!("ef_probe() {{ [ -e {} ]; }}", quote(path)),
        (None, None, Some(cmd)) => format!("ef_probe() {{ ( {cmd} ) >/dev/null 2>&1; }}"),
        _ => {
            return Err(StepError::Invalid(
                "wait_for needs exactly one of `port`, `path`, `command`".into(),
            ));
        }
    };
    let test = match p.state {
        Presence::Present => "ef_probe",
        Presence::Absent => "! ef_probe",
    };
    Ok(format!(
        "{cond}\nif [ \"$ef_check\" != 1 ]; then\n\
         \x20 end=$(( $(date +%s) + {t} ))\n\
         \x20 until {test}; do\n\
         \x20   if [ \"$(date +%s)\" -ge \"$end\" ]; then echo 'gave up after {t} s' >&2; exit 1; fi\n\
         \x20   sleep 1\n\
         \x20 done\n\
         fi",
        t = p.timeout
    ))
}

fn default_localhost() -> String {
    "127.0.0.1".into()
}
fn default_wait() -> u64 {
    300
}
fn default_reboot() -> u64 {
    600
}
fn default_cloud_init() -> u64 {
    900
}
