//! KVM or TCG: which domain type a hypervisor can really run.
//!
//! /dev/kvm existing is not enough: under nested virtualization on some hosts
//! a KVM guest hangs in early boot (right after "Probing EDD"). So the
//! decision takes two steps. First the capabilities: no `kvm` domain type
//! for x86_64 means TCG. Then a probe boot: a transient KVM domain boots the
//! base image's kernel with no root device; a working KVM panics on the
//! missing root within seconds and the domain is gone (panic=-1 reboots,
//! on_reboot destroys). A domain still running after [`PROBE_TIMEOUT`] means
//! KVM hangs: it is destroyed and TCG is chosen. The probe result is cached
//! per hypervisor (URI, host name, hypervisor version, kernel), so it costs
//! its seconds once.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{BaseVolumes, DEFAULT_MACHINE, Hypervisor, VirtError, lv};

/// How long a KVM probe boot may take before KVM is declared hanging.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Hardware acceleration of guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM works: `<domain type='kvm'>`, host CPU passed through.
    Kvm,
    /// Emulation: `<domain type='qemu'>` with a plain CPU model.
    Tcg,
}

impl Accel {
    /// The libvirt domain type.
    pub fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (emulation)",
        })
    }
}

/// The choice and why it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    /// What guests will use.
    pub accel: Accel,
    /// Why, in a sentence.
    pub reason: String,
    /// Whether this came from the probe cache.
    #[serde(skip)]
    pub cached: bool,
}

pub(super) async fn detect(
    hv: &Hypervisor,
    base: &BaseVolumes,
    cache_dir: Option<&Path>,
) -> Result<AccelChoice, VirtError> {
    let (caps, host, version) = hv
        .blocking(|conn| {
            let caps = conn
                .capabilities()
                .map_err(lv("reading capabilities".into()))?;
            let host = conn.hostname().unwrap_or_default();
            let version = conn.hyp_version().unwrap_or(0);
            Ok((caps, host, version))
        })
        .await?;
    if !offers_kvm(&caps) {
        return Ok(AccelChoice {
            accel: Accel::Tcg,
            reason: "the hypervisor offers no KVM domain type for x86_64 (no /dev/kvm)".into(),
            cached: false,
        });
    }
    let key = hex::encode(Sha256::digest(format!(
        "{}\0{host}\0{version}\0{}",
        hv.uri(),
        base.kernel_path
    )));
    let cache_file = cache_dir.map(|d| d.join("accel").join(format!("{key}.json")));
    if let Some(file) = &cache_file
        && let Ok(text) = std::fs::read_to_string(file)
        && let Ok(mut choice) = serde_json::from_str::<AccelChoice>(&text)
    {
        choice.cached = true;
        return Ok(choice);
    }
    let choice = probe(hv, &base.kernel_path).await?;
    if let Some(file) = &cache_file {
        if let Some(parent) = file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(file, serde_json::to_string(&choice).unwrap_or_default());
    }
    Ok(choice)
}

/// Whether the capabilities XML lists a `kvm` domain for an x86_64 guest.
fn offers_kvm(caps: &str) -> bool {
    caps.split("<guest>")
        .skip(1)
        .any(|g| g.contains("<arch name='x86_64'>") && g.contains("<domain type='kvm'"))
}

async fn probe(hv: &Hypervisor, kernel_path: &str) -> Result<AccelChoice, VirtError> {
    let name = format!("edgeforge-kvm-probe-{}", std::process::id());
    let xml = hv.templates.render(
        "libvirt/kvm-probe.xml.tera",
        &serde_json::json!({"name": name, "machine": DEFAULT_MACHINE, "kernel_path": kernel_path}),
    )?;
    let started = Instant::now();
    let probe_name = name.clone();
    let created = hv
        .blocking(move |conn| {
            conn.create_domain_xml(&xml, 0)
                .map(|_| ())
                .map_err(lv(format!("starting the KVM probe domain {probe_name}")))
        })
        .await;
    if let Err(e) = created {
        return Ok(AccelChoice {
            accel: Accel::Tcg,
            reason: format!("a KVM guest could not start ({})", crate::error::chain(&e)),
            cached: false,
        });
    }
    loop {
        let n = name.clone();
        let running = hv
            .blocking(move |conn| {
                Ok(conn
                    .lookup_domain_by_name(&n)
                    .ok()
                    .and_then(|d| d.is_active().ok())
                    .unwrap_or(false))
            })
            .await?;
        if !running {
            return Ok(AccelChoice {
                accel: Accel::Kvm,
                reason: format!(
                    "a KVM probe boot reached the kernel's root mount in {:.1} s",
                    started.elapsed().as_secs_f64()
                ),
                cached: false,
            });
        }
        if started.elapsed() > PROBE_TIMEOUT {
            let n = name.clone();
            hv.blocking(move |conn| {
                if let Ok(d) = conn.lookup_domain_by_name(&n) {
                    let _ = d.destroy();
                }
                Ok(())
            })
            .await?;
            return Ok(AccelChoice {
                accel: Accel::Tcg,
                reason: format!(
                    "/dev/kvm is there but a KVM probe boot hung for {} s (nested KVM): falling back",
                    PROBE_TIMEOUT.as_secs()
                ),
                cached: false,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_is_read_from_capabilities() {
        let with = "<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>";
        let without = "<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/></arch></guest><guest><arch name='i686'><domain type='kvm'/></arch></guest></capabilities>";
        assert!(offers_kvm(with));
        assert!(!offers_kvm(without));
        assert_eq!(Accel::Kvm.domain_type(), "kvm");
        assert_eq!(Accel::Tcg.domain_type(), "qemu");
    }
}
