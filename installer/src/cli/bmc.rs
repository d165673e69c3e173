//! `edgeforge bmc ...`: an operator's direct line to the Redfish BMC of one
//! inventory node: status, power, one-time boot device and virtual media.
//!
//! Thin: arguments, output and exit codes; the work is in [`crate::bmc`].
//! Every path that created a client ends with its `logout`, Ctrl-C included.
//! A node that is missing or not `type: redfish`, and settings the BMC
//! cannot be reached with (password reference, CA file), exit 2; failures on
//! the BMC's side exit 1.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::{GlobalOpts, Outcome};
use crate::artifacts::download::redact_url;
use crate::bmc::{
    AuthKind, BmcConfig, BmcError, BootMode, BootOverride, BootTarget, EjectOutcome, MediaSlot,
    PowerChange, RedfishClient, SystemStatus,
};
use crate::inventory::{Loaded, Machine};

pub(super) const BMC_EXAMPLES: &str = "\
The node must have `machine: {type: redfish}` in the inventory, with the BMC's
`endpoint`, `username` and a `password` reference ({env: VAR} or {file: PATH});
in inventory/baremetal.yaml, metal-1's password is read from $BMC_PASSWORD_RACK1.

Examples:
  edgeforge bmc status -i inventory/baremetal.yaml --node metal-1
  edgeforge bmc media insert http://10.20.0.1/live.iso -i inventory/baremetal.yaml --node metal-1
  edgeforge bmc boot cd -i inventory/baremetal.yaml --node metal-1
  edgeforge bmc power cycle -i inventory/baremetal.yaml --node metal-1

Exit codes: 0 success, 1 the BMC failed or refused, 2 invalid input (no such
node, not a Redfish node, unreadable password reference or CA file), 130
interrupted. The BMC session, if one was opened, is closed on every exit.";

const STATUS_EXAMPLES: &str = "\
Examples:
  edgeforge bmc status -i inventory/baremetal.yaml --node metal-1
  edgeforge bmc status -i inventory/baremetal.yaml --node metal-1 --format json";

const POWER_EXAMPLES: &str = "\
`off` uses ForceOff when the BMC offers it (else GracefulShutdown), `on` uses
On (else ForceOn); `cycle` is off then on, never a soft reboot, so that boot
changes made while the machine was on take effect. Nothing is sent when the
machine is already in the requested state. The command waits until the BMC
reports the new state (at most --wait seconds).

Examples:
  edgeforge bmc power off -i inventory/baremetal.yaml --node metal-1
  edgeforge bmc power cycle -i inventory/baremetal.yaml --node metal-1 --wait 600";

const BOOT_EXAMPLES: &str = "\
Sets the device the machine boots from at its next start, once (BMCs that
only keep overrides `Continuous` are accepted and reported). A --mode is sent
only when the BMC advertises boot modes; otherwise it must be the mode the
machine already has. Power-cycle the machine to boot from the device now.

Examples:
  edgeforge bmc boot cd -i inventory/baremetal.yaml --node metal-1
  edgeforge bmc boot pxe --mode uefi -i inventory/baremetal.yaml --node metal-1
  edgeforge bmc boot hdd -i inventory/baremetal.yaml --node metal-1";

const MEDIA_EXAMPLES: &str = "\
The image URL must be reachable from the BMC, not only from this machine.
An insert ejects whatever the virtual CD/DVD holds first; the image is
mounted write-protected. Some BMCs download the whole image before they
answer: --insert-timeout bounds that.

Examples:
  edgeforge bmc media insert http://10.20.0.1/live.iso -i inventory/baremetal.yaml --node metal-1
  edgeforge bmc media eject -i inventory/baremetal.yaml --node metal-1";

/// `edgeforge bmc ...`
#[derive(Debug, clap::Subcommand)]
pub enum BmcCommand {
    /// Show a node's power state, boot override, virtual media and identity.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Power a node on or off, or power-cycle it, and wait for the new state.
    #[command(after_help = POWER_EXAMPLES)]
    Power(PowerArgs),
    /// Boot a node once from CD, network or disk.
    #[command(after_help = BOOT_EXAMPLES)]
    Boot(BootArgs),
    /// Insert an image into a node's virtual CD/DVD, or eject it.
    #[command(subcommand, after_help = MEDIA_EXAMPLES)]
    Media(MediaCommand),
}

/// Which node, and how long one BMC operation may take.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The inventory.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// The node, by name; it must have `machine: {type: redfish}`.
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Seconds one BMC operation may take, retries included.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// Output format of `bmc status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// One `key  value` line each.
    Table,
    /// One JSON object.
    Json,
}

/// Arguments of `bmc status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: NodeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
}

/// What `bmc power` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PowerAction {
    /// Power on.
    On,
    /// Power off (hard: ForceOff when offered).
    Off,
    /// Off, then on.
    Cycle,
}

/// Arguments of `bmc power`.
#[derive(Debug, Clone, clap::Args)]
pub struct PowerArgs {
    /// on, off or cycle.
    #[arg(value_enum)]
    pub action: PowerAction,
    #[command(flatten)]
    pub target: NodeArgs,
    /// Seconds to wait for the BMC to report the new power state.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub wait: u64,
}

/// A boot device of `bmc boot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootDevice {
    /// The virtual (or physical) CD/DVD.
    Cd,
    /// The network (PXE).
    Pxe,
    /// The first disk.
    Hdd,
}

/// A boot mode of `bmc boot --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootModeArg {
    /// UEFI.
    Uefi,
    /// Legacy BIOS.
    Legacy,
}

/// Arguments of `bmc boot`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootArgs {
    /// cd, pxe or hdd.
    #[arg(value_enum)]
    pub device: BootDevice,
    /// Firmware boot mode to boot in.
    #[arg(long, value_enum)]
    pub mode: Option<BootModeArg>,
    #[command(flatten)]
    pub target: NodeArgs,
}

/// `bmc media ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MediaCommand {
    /// Insert an image (http or https URL the BMC can reach), ejecting what was there.
    Insert {
        /// The image URL.
        url: String,
        #[command(flatten)]
        target: NodeArgs,
        /// Seconds the insert may take (some BMCs download the image first).
        #[arg(long, value_name = "SECS", default_value_t = 1800)]
        insert_timeout: u64,
    },
    /// Eject what the virtual CD/DVD holds.
    Eject {
        #[command(flatten)]
        target: NodeArgs,
    },
}

impl BmcCommand {
    fn target(&self) -> &NodeArgs {
        match self {
            BmcCommand::Status(a) => &a.target,
            BmcCommand::Power(a) => &a.target,
            BmcCommand::Boot(a) => &a.target,
            BmcCommand::Media(MediaCommand::Insert { target, .. })
            | BmcCommand::Media(MediaCommand::Eject { target }) => target,
        }
    }
}

/// Runs `edgeforge bmc ...`.
pub fn run(g: &GlobalOpts, cmd: BmcCommand) -> Outcome {
    let target = cmd.target().clone();
    if let BmcCommand::Media(MediaCommand::Insert { url, .. }) = &cmd
        && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        eprintln!(
            "error: `{}` is not an http(s) URL; give the URL the BMC downloads the image from",
            redact_url(url)
        );
        return Outcome::InvalidInput;
    }
    let loaded = match super::load_inventory(g, &target.inventory) {
        Ok(l) => l,
        Err(outcome) => return outcome,
    };
    let (mut cfg, at) = match node_config(&loaded, &target) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("error: {message}");
            return Outcome::InvalidInput;
        }
    };
    cfg.timeouts.operation = Duration::from_secs(target.timeout);
    match &cmd {
        BmcCommand::Power(a) => cfg.timeouts.power_wait = Duration::from_secs(a.wait),
        BmcCommand::Media(MediaCommand::Insert { insert_timeout, .. }) => {
            cfg.timeouts.media_insert = Duration::from_secs(*insert_timeout);
        }
        _ => {}
    }
    if let Some(warning) = cfg.insecure_warning() {
        eprintln!("warning: {warning}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return Outcome::Failed;
        }
    };
    runtime.block_on(async {
        let client = match RedfishClient::new(&cfg) {
            Ok(c) => c,
            Err(e) => return report(&e, &at),
        };
        let outcome = tokio::select! {
            result = execute(g, &cfg, &client, &cmd) => match result {
                Ok(()) => Outcome::Success,
                Err(e) => report(&e, &at),
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: closing the BMC session");
                Outcome::Interrupted
            }
        };
        if let Err(e) = client.logout().await {
            eprintln!("warning: {}", chain(&e));
        }
        outcome
    })
}

/// The BMC settings of the node `target` names, and where the node is
/// written (`file:line:col`); an error message (exit 2) otherwise.
fn node_config(loaded: &Loaded, target: &NodeArgs) -> Result<(BmcConfig, String), String> {
    let file = target.inventory.display();
    let inv = &loaded.inventory;
    let Some(view) = inv.nodes().find(|v| v.node.name.value == target.node) else {
        let names: Vec<&str> = inv.nodes().map(|v| v.node.name.as_str()).collect();
        return Err(format!(
            "{file}: no node named `{}`; the inventory has {}",
            target.node,
            if names.is_empty() {
                "no nodes".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let name = &view.node.name;
    let at = format!("{file}:{}:{}", name.line, name.col);
    match BmcConfig::from_machine(name, &view.node.machine) {
        Ok(Some(cfg)) => Ok((cfg, at)),
        Ok(None) => Err(format!(
            "{at}: node `{name}` has `machine: {{type: {}}}`; `edgeforge bmc` works only on nodes \
             with `machine: {{type: redfish}}` and the BMC's endpoint and credentials",
            machine_type(&view.node.machine)
        )),
        Err(e) => Err(format!("{at}: {}", chain(&e))),
    }
}

fn machine_type(m: &Machine) -> &'static str {
    match m {
        Machine::Existing => "existing",
        Machine::Libvirt { .. } => "libvirt",
        Machine::Redfish { .. } => "redfish",
    }
}

/// Prints `e` (with the node's place in the inventory when the fix is
/// there) and returns its exit code.
fn report(e: &BmcError, at: &str) -> Outcome {
    eprintln!("error: {}", chain(e));
    let about_settings = e.is_input_error()
        || matches!(
            e,
            BmcError::Unauthorized { .. }
                | BmcError::SystemNotFound { .. }
                | BmcError::AmbiguousSystem { .. }
                | BmcError::Certificate { .. }
        );
    if about_settings {
        eprintln!("  --> {at} (the node's `machine` settings)");
    }
    if e.is_input_error() {
        Outcome::InvalidInput
    } else {
        Outcome::Failed
    }
}

/// An error and its sources, `outer: inner`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn execute(
    g: &GlobalOpts,
    cfg: &BmcConfig,
    client: &RedfishClient,
    cmd: &BmcCommand,
) -> Result<(), BmcError> {
    let node = &cfg.node;
    let say = |line: String| {
        if !g.quiet {
            println!("{line}");
        }
    };
    match cmd {
        BmcCommand::Status(args) => {
            client.login().await?;
            let status = client.status().await?;
            match args.format {
                StatusFormat::Table => print!("{}", status_table(cfg, client.auth(), &status)),
                StatusFormat::Json => println!("{}", status_json(cfg, client.auth(), &status)),
            }
        }
        BmcCommand::Power(args) => {
            let changes = match args.action {
                PowerAction::On => vec![client.power_on().await?],
                PowerAction::Off => vec![client.power_off().await?],
                PowerAction::Cycle => client.power_cycle().await?,
            };
            for change in changes {
                say(match change {
                    PowerChange::Unchanged(state) => {
                        format!("{node}: already {state}; no power action sent")
                    }
                    PowerChange::Changed {
                        reset_type,
                        from,
                        to,
                        took,
                    } => format!(
                        "{node}: power {from} -> {to} (ResetType {reset_type}, {:.1} s)",
                        took.as_secs_f64()
                    ),
                });
            }
        }
        BmcCommand::Boot(args) => {
            let target = match args.device {
                BootDevice::Cd => BootTarget::Cd,
                BootDevice::Pxe => BootTarget::Pxe,
                BootDevice::Hdd => BootTarget::Hdd,
            };
            let mode = args.mode.map(|m| match m {
                BootModeArg::Uefi => BootMode::Uefi,
                BootModeArg::Legacy => BootMode::Legacy,
            });
            let set = client.boot_once(target, mode).await?;
            say(format!("{node}: next boot from {set}"));
            if set.enabled.as_deref() == Some("Continuous") {
                say(format!(
                    "{node}: note: the BMC keeps the override Continuous: the machine boots from {} \
                     at every start until the override is changed",
                    target.as_redfish()
                ));
            }
        }
        BmcCommand::Media(MediaCommand::Insert { url, .. }) => {
            let ejected = client.insert_media(url).await?;
            if let Some(EjectOutcome::Ejected { slot, image }) = ejected {
                say(format!(
                    "{node}: ejected {} from {slot} first",
                    image
                        .as_deref()
                        .map_or_else(|| "the media".into(), redact_url)
                ));
            }
            say(format!(
                "{node}: inserted {} (write-protected)",
                redact_url(url)
            ));
        }
        BmcCommand::Media(MediaCommand::Eject { .. }) => match client.eject_media().await? {
            EjectOutcome::Empty(slot) => say(format!("{node}: {slot} is empty; nothing to eject")),
            EjectOutcome::Ejected { slot, image } => say(format!(
                "{node}: ejected {} from {slot}",
                image
                    .as_deref()
                    .map_or_else(|| "the media".into(), redact_url)
            )),
        },
    }
    Ok(())
}

fn auth_name(auth: AuthKind) -> &'static str {
    match auth {
        AuthKind::Session => "session",
        AuthKind::Basic => "basic auth",
    }
}

/// `bmc status` as `key  value` lines.
fn status_table(cfg: &BmcConfig, auth: AuthKind, s: &SystemStatus) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut rows: Vec<(String, String)> = vec![
        ("node".into(), cfg.node.clone()),
        (
            "bmc".into(),
            format!(
                "{} ({})",
                cfg.endpoint.origin().ascii_serialization(),
                auth_name(auth)
            ),
        ),
        ("system".into(), s.identity.odata_id.clone()),
        ("id".into(), dash(&s.identity.id)),
        ("name".into(), dash(&s.identity.name)),
        ("manufacturer".into(), dash(&s.identity.manufacturer)),
        ("model".into(), dash(&s.identity.model)),
        ("serial".into(), dash(&s.identity.serial_number)),
        ("uuid".into(), dash(&s.identity.uuid)),
        ("power".into(), s.power.to_string()),
        ("boot".into(), boot_line(&s.boot)),
    ];
    if s.media.is_empty() {
        rows.push(("media".into(), "no virtual media".into()));
    }
    for m in &s.media {
        rows.push((format!("media {}", m.id), media_line(m)));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

fn boot_line(b: &BootOverride) -> String {
    let mut line = b.to_string();
    if !b.allowed_targets.is_empty() {
        line.push_str(&format!("; targets {}", b.allowed_targets.join(", ")));
    }
    if let Some(modes) = &b.allowed_modes {
        line.push_str(&format!("; modes {}", modes.join(", ")));
    }
    line
}

fn media_line(m: &MediaSlot) -> String {
    let what = match &m.image {
        Some(image) => {
            let mut flags = vec![if m.inserted {
                "inserted"
            } else {
                "not inserted"
            }];
            if m.write_protected == Some(true) {
                flags.push("write-protected");
            }
            format!("{} ({})", redact_url(image), flags.join(", "))
        }
        None if m.inserted => "inserted".into(),
        None => "empty".into(),
    };
    let name = if m.name.is_empty() {
        String::new()
    } else {
        format!("{} ", m.name)
    };
    format!("{name}[{}]: {what}", m.media_types.join(", "))
}

/// `bmc status --format json`.
fn status_json(cfg: &BmcConfig, auth: AuthKind, s: &SystemStatus) -> serde_json::Value {
    let mut media = serde_json::to_value(&s.media).unwrap_or_default();
    if let Some(list) = media.as_array_mut() {
        for m in list {
            if let Some(image) = m.get("image").and_then(|v| v.as_str()).map(redact_url) {
                m["image"] = serde_json::Value::String(image);
            }
        }
    }
    serde_json::json!({
        "node": cfg.node,
        "endpoint": cfg.endpoint.origin().ascii_serialization(),
        "auth": auth,
        "system": s.identity,
        "power": s.power,
        "boot": s.boot,
        "media": media,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn loaded(text: &str) -> Loaded {
        crate::inventory::load_str("inv.yaml", text).unwrap()
    }

    const INVENTORY: &str = "\
apiVersion: edgeforge/v1
sites:
  - name: s1
    nodes:
      - name: vm-1
        role: server
        address: 10.0.0.1
      - name: metal-1
        role: agent
        address: 10.0.0.2
        machine:
          type: redfish
          endpoint: https://10.0.0.12
          username: admin
          password: {env: EF_TEST_CLI_BMC_PW_UNSET}
";

    fn args(node: &str) -> NodeArgs {
        NodeArgs {
            inventory: PathBuf::from("inv.yaml"),
            node: node.into(),
            timeout: 60,
        }
    }

    #[test]
    fn the_node_must_exist_and_be_redfish_and_errors_point_at_it() {
        let inv = loaded(INVENTORY);
        let err = node_config(&inv, &args("nope")).unwrap_err();
        assert_eq!(
            err,
            "inv.yaml: no node named `nope`; the inventory has vm-1, metal-1"
        );
        let err = node_config(&inv, &args("vm-1")).unwrap_err();
        assert!(
            err.starts_with("inv.yaml:5:15: node `vm-1` has `machine: {type: existing}`"),
            "{err}"
        );
        let err = node_config(&inv, &args("metal-1")).unwrap_err();
        assert!(
            err.starts_with("inv.yaml:8:15: node `metal-1`: cannot read the BMC password")
                && err.contains("EF_TEST_CLI_BMC_PW_UNSET is not set"),
            "{err}"
        );
    }

    #[test]
    fn commands_parse_with_the_node_options_after_the_subcommand() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "edgeforge",
            "bmc",
            "media",
            "insert",
            "http://h/x.iso",
            "-i",
            "f.yaml",
            "--node",
            "n1",
        ])
        .unwrap();
        let crate::cli::Command::Bmc(cmd) = cli.command else {
            panic!("not bmc");
        };
        assert_eq!(cmd.target().node, "n1");
        assert_eq!(cmd.target().inventory, Path::new("f.yaml"));
        assert!(
            crate::cli::Cli::try_parse_from([
                "edgeforge",
                "bmc",
                "boot",
                "usb",
                "-i",
                "f",
                "--node",
                "n"
            ])
            .is_err()
        );
    }
}
