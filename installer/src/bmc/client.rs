//! [`RedfishClient`]: the operations edgeforge needs from a BMC (status,
//! power with a bounded wait for the new state, a one-time boot override
//! verified by reading it back, virtual media insert and eject), each one
//! bounded by its own time limit.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::discovery::{self, SystemRef, link, strings, text};
use super::http::Http;
use super::{BmcConfig, BmcError, Timeouts, seconds};

const LOG_IN: &str = "log in";
const LOG_OUT: &str = "log out";
const READ_STATUS: &str = "read the system status";
const READ_POWER: &str = "read the power state";
const POWER_ON: &str = "power on";
const POWER_OFF: &str = "power off";
const SET_BOOT: &str = "set the boot override";
const READ_MEDIA: &str = "read the virtual media";
const EJECT: &str = "eject the virtual media";
const INSERT: &str = "insert the virtual media";

/// A client of one BMC. Create it with [`RedfishClient::new`], call
/// [`login`](Self::login) (operations log in on their own if it was not
/// called), and always end with [`logout`](Self::logout).
pub struct RedfishClient {
    http: Http,
    system_id: Option<String>,
    timeouts: Timeouts,
    system: OnceCell<SystemRef>,
}

/// How the client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// A Redfish session (`X-Auth-Token`), deleted by `logout`.
    Session,
    /// HTTP Basic auth on every request (the service has no SessionService).
    Basic,
}

/// A system's `PowerState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off.
    Off,
    /// On its way on.
    PoweringOn,
    /// On its way off.
    PoweringOff,
    /// Paused (a hypervisor-backed BMC).
    Paused,
    /// Any other value, or `unknown` when the BMC reports none.
    Other(String),
}

/// What a power operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerChange {
    /// The system was already in (or on its way to) that state: no action was sent.
    Unchanged(PowerState),
    /// A reset action was sent and the system reached the state.
    Changed {
        /// The `ResetType` sent.
        reset_type: &'static str,
        /// The state before.
        from: PowerState,
        /// The state reached.
        to: PowerState,
        /// From the start of the operation to the new state being read back.
        took: Duration,
    },
}

/// A one-time boot device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTarget {
    /// Virtual (or physical) CD/DVD.
    Cd,
    /// Network boot.
    Pxe,
    /// The first disk.
    Hdd,
}

/// A firmware boot mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// UEFI.
    Uefi,
    /// Legacy BIOS.
    Legacy,
}

/// A system's boot override, as the BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootOverride {
    /// `BootSourceOverrideTarget` (`Cd`, `Pxe`, `Hdd`, `None`, ...).
    pub target: Option<String>,
    /// `BootSourceOverrideEnabled` (`Once`, `Continuous`, `Disabled`).
    pub enabled: Option<String>,
    /// `BootSourceOverrideMode` (`UEFI`, `Legacy`).
    pub mode: Option<String>,
    /// The targets the BMC advertises (empty when it advertises none).
    pub allowed_targets: Vec<String>,
    /// The modes the BMC advertises, when it does.
    pub allowed_modes: Option<Vec<String>>,
}

/// One virtual media slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaSlot {
    /// Its `@odata.id`.
    pub odata_id: String,
    /// Its `Id` (`Cd`, `CD1`, ...).
    pub id: String,
    /// Its `Name`.
    pub name: String,
    /// Its `MediaTypes` (`CD`, `DVD`, `USBStick`, ...).
    pub media_types: Vec<String>,
    /// The image URL it holds, if any.
    pub image: Option<String>,
    /// `Inserted`.
    pub inserted: bool,
    /// `WriteProtected`, when reported.
    pub write_protected: Option<bool>,
    #[serde(skip)]
    insert_target: Option<String>,
    #[serde(skip)]
    eject_target: Option<String>,
}

/// What an eject did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EjectOutcome {
    /// Nothing was inserted in the slot (named by its `Id`): no action was sent.
    Empty(String),
    /// The image was ejected from the slot.
    Ejected {
        /// The slot's `Id`.
        slot: String,
        /// The image it held, if the BMC said.
        image: Option<String>,
    },
}

/// Who the system is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemIdentity {
    /// Its `@odata.id`.
    pub odata_id: String,
    /// `Id`.
    pub id: Option<String>,
    /// `Name`.
    pub name: Option<String>,
    /// `Manufacturer`.
    pub manufacturer: Option<String>,
    /// `Model`.
    pub model: Option<String>,
    /// `SerialNumber`.
    pub serial_number: Option<String>,
    /// `UUID`.
    pub uuid: Option<String>,
}

/// Everything `edgeforge bmc status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemStatus {
    /// Who the system is.
    pub identity: SystemIdentity,
    /// Its power state.
    pub power: PowerState,
    /// Its boot override.
    pub boot: BootOverride,
    /// Its virtual media slots (the system's, else its managers').
    pub media: Vec<MediaSlot>,
}

impl RedfishClient {
    /// A client for the BMC `cfg` describes. Reads the CA file; sends nothing yet.
    pub fn new(cfg: &BmcConfig) -> Result<RedfishClient, BmcError> {
        Ok(RedfishClient {
            http: Http::new(cfg)?,
            system_id: cfg.system_id.clone(),
            timeouts: cfg.timeouts.clone(),
            system: OnceCell::new(),
        })
    }

    /// How messages name this BMC.
    pub fn bmc(&self) -> &str {
        &self.http.bmc
    }

    /// Reads the service root, logs in (a session when the service has a
    /// SessionService, else Basic auth) and finds the system. Idempotent.
    pub async fn login(&self) -> Result<AuthKind, BmcError> {
        self.bounded(LOG_IN, self.timeouts.operation, self.system())
            .await?;
        Ok(self.auth())
    }

    /// How the client authenticates now.
    pub fn auth(&self) -> AuthKind {
        if self.http.has_session() {
            AuthKind::Session
        } else {
            AuthKind::Basic
        }
    }

    /// Deletes the session, if one was opened. Call it on every path that
    /// follows [`RedfishClient::new`]: BMCs allow only a few sessions each.
    pub async fn logout(&self) -> Result<(), BmcError> {
        self.bounded(
            LOG_OUT,
            self.timeouts.operation,
            self.http.close_session(LOG_OUT),
        )
        .await
    }

    /// The chosen system's `@odata.id`.
    pub async fn system_link(&self) -> Result<String, BmcError> {
        Ok(self.system().await?.odata_id.clone())
    }

    /// Identity, power state, boot override and virtual media of the system.
    pub async fn status(&self) -> Result<SystemStatus, BmcError> {
        self.bounded(READ_STATUS, self.timeouts.operation, async {
            let system = self.system().await?;
            let (json, _) = self.http.get(READ_STATUS, &system.odata_id).await?;
            let media = discovery::media_slots(&self.http, READ_STATUS, &json).await?;
            Ok(SystemStatus {
                identity: SystemIdentity::from_json(&system.odata_id, &json),
                power: PowerState::from_json(&json),
                boot: BootOverride::from_json(&json),
                media,
            })
        })
        .await
    }

    /// The system's power state.
    pub async fn power_state(&self) -> Result<PowerState, BmcError> {
        self.bounded(READ_POWER, self.timeouts.operation, async {
            let system = self.system().await?;
            let (json, _) = self.http.get(READ_POWER, &system.odata_id).await?;
            Ok(PowerState::from_json(&json))
        })
        .await
    }

    /// Powers the system on (`On`, else `ForceOn`) and waits until it reads `On`.
    pub async fn power_on(&self) -> Result<PowerChange, BmcError> {
        self.power(true).await
    }

    /// Powers the system off (`ForceOff`, else `GracefulShutdown`) and waits
    /// until it reads `Off`.
    pub async fn power_off(&self) -> Result<PowerChange, BmcError> {
        self.power(false).await
    }

    /// Powers the system off and on again, never with a soft reboot: BMCs
    /// such as sushy-tools apply boot changes only to a powered-off machine.
    pub async fn power_cycle(&self) -> Result<Vec<PowerChange>, BmcError> {
        Ok(vec![self.power(false).await?, self.power(true).await?])
    }

    /// Sets a one-time boot override to `target` (and `mode`, when given),
    /// then reads it back. The mode is sent only when the BMC advertises it
    /// in `BootSourceOverrideMode@Redfish.AllowableValues`; a mode the BMC
    /// does not advertise is refused here unless the system already has it.
    /// The read-back accepts `Continuous` as well as `Once`: some BMCs
    /// (sushy-tools) keep every override continuous.
    pub async fn boot_once(
        &self,
        target: BootTarget,
        mode: Option<BootMode>,
    ) -> Result<BootOverride, BmcError> {
        self.bounded(SET_BOOT, self.timeouts.operation, async {
            let system = self.system().await?;
            let (json, etag) = self.http.get(SET_BOOT, &system.odata_id).await?;
            if json.get("Boot").is_none() {
                return Err(self
                    .http
                    .protocol(SET_BOOT, "the system has no `Boot` property"));
            }
            let before = BootOverride::from_json(&json);
            let wanted = target.as_redfish();
            if !before.allowed_targets.is_empty()
                && !before.allowed_targets.iter().any(|t| t == wanted)
            {
                return Err(BmcError::NotAllowed {
                    bmc: self.http.bmc.clone(),
                    what: format!("boot target `{wanted}`"),
                    allowed: before.allowed_targets.join(", "),
                });
            }
            let send_mode = match mode {
                None => None,
                Some(m) => {
                    let m = m.as_redfish();
                    match &before.allowed_modes {
                        Some(allowed) if allowed.iter().any(|a| a == m) => Some(m),
                        Some(allowed) => {
                            return Err(BmcError::NotAllowed {
                                bmc: self.http.bmc.clone(),
                                what: format!("boot mode `{m}`"),
                                allowed: if allowed.is_empty() {
                                    "none".into()
                                } else {
                                    allowed.join(", ")
                                },
                            });
                        }
                        None if before.mode.as_deref() == Some(m) => None,
                        None => {
                            return Err(BmcError::ModeNotAdvertised {
                                bmc: self.http.bmc.clone(),
                                wanted: m,
                                current: before.mode.clone().unwrap_or_else(|| "unknown".into()),
                            });
                        }
                    }
                }
            };
            let enabled_allowed = strings(
                &json,
                &["Boot", "BootSourceOverrideEnabled@Redfish.AllowableValues"],
            );
            let enabled = match enabled_allowed {
                Some(a)
                    if !a.iter().any(|v| v == "Once") && a.iter().any(|v| v == "Continuous") =>
                {
                    "Continuous"
                }
                _ => "Once",
            };
            let mut boot = json!({
                "BootSourceOverrideTarget": wanted,
                "BootSourceOverrideEnabled": enabled,
            });
            if let Some(m) = send_mode {
                boot["BootSourceOverrideMode"] = json!(m);
            }
            self.http
                .patch(SET_BOOT, &system.odata_id, &json!({ "Boot": boot }), etag)
                .await?;
            let (after, _) = self.http.get(SET_BOOT, &system.odata_id).await?;
            let after = BootOverride::from_json(&after);
            let target_ok = after.target.as_deref() == Some(wanted);
            let enabled_ok = matches!(after.enabled.as_deref(), Some("Once" | "Continuous"));
            let mode_ok = mode.is_none_or(|m| after.mode.as_deref() == Some(m.as_redfish()));
            if !(target_ok && enabled_ok && mode_ok) {
                return Err(BmcError::NotApplied {
                    bmc: self.http.bmc.clone(),
                    operation: SET_BOOT,
                    got: after.to_string(),
                });
            }
            Ok(after)
        })
        .await
    }

    /// The system's virtual media slots (its own, else its managers').
    pub async fn media_slots(&self) -> Result<Vec<MediaSlot>, BmcError> {
        self.bounded(READ_MEDIA, self.timeouts.operation, async {
            let system = self.system().await?;
            let (json, _) = self.http.get(READ_MEDIA, &system.odata_id).await?;
            discovery::media_slots(&self.http, READ_MEDIA, &json).await
        })
        .await
    }

    /// Ejects whatever the CD/DVD slot holds; nothing is sent when it is empty.
    pub async fn eject_media(&self) -> Result<EjectOutcome, BmcError> {
        self.bounded(EJECT, self.timeouts.operation, async {
            let slot = self.cd_slot(EJECT).await?;
            self.eject_slot(EJECT, &slot).await
        })
        .await
    }

    /// Inserts `image` (an http(s) URL the BMC can reach) into the CD/DVD
    /// slot, write-protected, ejecting what it held first; then reads it
    /// back. Bounded by the media insert limit, as some BMCs download the
    /// whole image inside the request. Returns the eject that came first, if any.
    pub async fn insert_media(&self, image: &str) -> Result<Option<EjectOutcome>, BmcError> {
        self.bounded(INSERT, self.timeouts.media_insert, async {
            let slot = self.cd_slot(INSERT).await?;
            let ejected = if slot.is_present() {
                Some(self.eject_slot(INSERT, &slot).await?)
            } else {
                None
            };
            let target = slot.insert_target.as_deref().ok_or_else(|| {
                self.http.protocol(
                    INSERT,
                    &format!(
                        "the virtual media slot `{}` has no `#VirtualMedia.InsertMedia` action",
                        slot.id
                    ),
                )
            })?;
            let body = json!({ "Image": image, "Inserted": true, "WriteProtected": true });
            self.http.action(INSERT, target, &body).await?;
            let (after, _) = self.http.get(INSERT, &slot.odata_id).await?;
            let after = MediaSlot::from_json(&slot.odata_id, &after);
            if !(after.inserted || after.image.as_deref() == Some(image)) {
                return Err(BmcError::NotApplied {
                    bmc: self.http.bmc.clone(),
                    operation: INSERT,
                    got: after.state(),
                });
            }
            Ok(ejected)
        })
        .await
    }

    async fn power(&self, on: bool) -> Result<PowerChange, BmcError> {
        let (operation, wanted, preferred) = if on {
            (POWER_ON, PowerState::On, ["On", "ForceOn"])
        } else {
            (POWER_OFF, PowerState::Off, ["ForceOff", "GracefulShutdown"])
        };
        let started = Instant::now();
        let sent = self
            .bounded(operation, self.timeouts.operation, async {
                let system = self.system().await?;
                let (json, _) = self.http.get(operation, &system.odata_id).await?;
                let from = PowerState::from_json(&json);
                let on_its_way = if on {
                    PowerState::PoweringOn
                } else {
                    PowerState::PoweringOff
                };
                if from == wanted || from == on_its_way {
                    return Ok((from, None));
                }
                let (target, allowed) = self.reset_action(operation, &json).await?;
                let reset_type = match &allowed {
                    None => preferred[0],
                    Some(list) => preferred
                        .into_iter()
                        .find(|p| list.iter().any(|a| a == p))
                        .ok_or_else(|| BmcError::NotAllowed {
                            bmc: self.http.bmc.clone(),
                            what: format!("a reset to {operation} ({})", preferred.join(" or ")),
                            allowed: list.join(", "),
                        })?,
                };
                self.http
                    .action(operation, &target, &json!({ "ResetType": reset_type }))
                    .await?;
                Ok((from, Some(reset_type)))
            })
            .await?;
        match sent {
            (from, None) if from == wanted => Ok(PowerChange::Unchanged(from)),
            (from, None) => {
                self.wait_power(&wanted).await?;
                Ok(PowerChange::Unchanged(from))
            }
            (from, Some(reset_type)) => {
                let to = self.wait_power(&wanted).await?;
                Ok(PowerChange::Changed {
                    reset_type,
                    from,
                    to,
                    took: started.elapsed(),
                })
            }
        }
    }

    /// The reset action's target and its allowed `ResetType`s, from
    /// `ResetType@Redfish.AllowableValues` or the action's `@Redfish.ActionInfo`.
    async fn reset_action(
        &self,
        operation: &'static str,
        system: &Value,
    ) -> Result<(String, Option<Vec<String>>), BmcError> {
        let action = system
            .get("Actions")
            .and_then(|a| a.get("#ComputerSystem.Reset"))
            .ok_or_else(|| {
                self.http.protocol(
                    operation,
                    "the system has no `#ComputerSystem.Reset` action",
                )
            })?;
        let target = text(action, &["target"])
            .ok_or_else(|| {
                self.http
                    .protocol(operation, "the reset action has no `target`")
            })?
            .to_string();
        if let Some(allowed) = strings(action, &["ResetType@Redfish.AllowableValues"]) {
            return Ok((target, Some(allowed)));
        }
        let Some(info) = text(action, &["@Redfish.ActionInfo"]) else {
            return Ok((target, None));
        };
        let (info, _) = self.http.get(operation, info).await?;
        let allowed = info
            .get("Parameters")
            .and_then(Value::as_array)
            .and_then(|params| {
                params
                    .iter()
                    .find(|p| text(p, &["Name"]) == Some("ResetType"))
            })
            .and_then(|p| strings(p, &["AllowableValues"]));
        Ok((target, allowed))
    }

    async fn wait_power(&self, wanted: &PowerState) -> Result<PowerState, BmcError> {
        let started = Instant::now();
        loop {
            let state = self.power_state().await?;
            if &state == wanted {
                return Ok(state);
            }
            if started.elapsed() >= self.timeouts.power_wait {
                return Err(BmcError::PowerWait {
                    bmc: self.http.bmc.clone(),
                    wanted: wanted.clone(),
                    timeout: seconds(self.timeouts.power_wait),
                    last: state,
                });
            }
            tokio::time::sleep(self.timeouts.poll).await;
        }
    }

    async fn cd_slot(&self, operation: &'static str) -> Result<MediaSlot, BmcError> {
        let system = self.system().await?;
        let (json, _) = self.http.get(operation, &system.odata_id).await?;
        let slots = discovery::media_slots(&self.http, operation, &json).await?;
        discovery::cd_slot(&self.http, slots)
    }

    async fn eject_slot(
        &self,
        operation: &'static str,
        slot: &MediaSlot,
    ) -> Result<EjectOutcome, BmcError> {
        if !slot.is_present() {
            return Ok(EjectOutcome::Empty(slot.id.clone()));
        }
        let target = slot.eject_target.as_deref().ok_or_else(|| {
            self.http.protocol(
                operation,
                &format!(
                    "the virtual media slot `{}` has no `#VirtualMedia.EjectMedia` action",
                    slot.id
                ),
            )
        })?;
        self.http.action(operation, target, &json!({})).await?;
        let (after, _) = self.http.get(operation, &slot.odata_id).await?;
        let after = MediaSlot::from_json(&slot.odata_id, &after);
        if after.is_present() {
            return Err(BmcError::NotApplied {
                bmc: self.http.bmc.clone(),
                operation,
                got: after.state(),
            });
        }
        Ok(EjectOutcome::Ejected {
            slot: slot.id.clone(),
            image: slot.image.clone(),
        })
    }

    /// The system, found once: service root, login, then `Systems`. Not
    /// bounded itself: it counts against the operation that needs it.
    async fn system(&self) -> Result<&SystemRef, BmcError> {
        self.system
            .get_or_try_init(|| async {
                let reply = self
                    .http
                    .send(
                        LOG_IN,
                        reqwest::Method::GET,
                        "/redfish/v1/",
                        None,
                        None,
                        false,
                    )
                    .await?;
                let reply =
                    self.http
                        .check(LOG_IN, &reqwest::Method::GET, "/redfish/v1/", reply)?;
                let root = reply.json();
                if !root.is_object() {
                    return Err(self
                        .http
                        .protocol(LOG_IN, "/redfish/v1/ did not answer a Redfish service root"));
                }
                if let Some(sessions) = self.sessions_link(&root).await? {
                    self.http.open_session(LOG_IN, &sessions).await?;
                }
                discovery::find_system(&self.http, LOG_IN, &root, self.system_id.as_deref()).await
            })
            .await
    }

    /// Where sessions are created: the root's `Links.Sessions`, else its
    /// SessionService's `Sessions`; `None` without a SessionService.
    async fn sessions_link(&self, root: &Value) -> Result<Option<String>, BmcError> {
        if let Some(sessions) = root.get("Links").and_then(|l| link(l, "Sessions")) {
            return Ok(Some(sessions));
        }
        let Some(service) = link(root, "SessionService") else {
            return Ok(None);
        };
        let (json, _) = self.http.get(LOG_IN, &service).await?;
        Ok(link(&json, "Sessions"))
    }

    /// Runs one operation within `limit`; past it, the error names the BMC,
    /// the operation, the limit and the last failure seen.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        limit: Duration,
        work: impl Future<Output = Result<T, BmcError>>,
    ) -> Result<T, BmcError> {
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(BmcError::Timeout {
                bmc: self.http.bmc.clone(),
                operation,
                timeout: seconds(limit),
                last: self
                    .http
                    .last_failure()
                    .map(|l| format!(" (last attempt: {l})"))
                    .unwrap_or_default(),
            }),
        }
    }
}

impl PowerState {
    fn from_json(system: &Value) -> PowerState {
        match text(system, &["PowerState"]) {
            Some("On") => PowerState::On,
            Some("Off") => PowerState::Off,
            Some("PoweringOn") => PowerState::PoweringOn,
            Some("PoweringOff") => PowerState::PoweringOff,
            Some("Paused") => PowerState::Paused,
            Some(other) => PowerState::Other(other.to_string()),
            None => PowerState::Other("unknown".into()),
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "On",
            PowerState::Off => "Off",
            PowerState::PoweringOn => "PoweringOn",
            PowerState::PoweringOff => "PoweringOff",
            PowerState::Paused => "Paused",
            PowerState::Other(s) => s,
        })
    }
}

impl Serialize for PowerState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl BootTarget {
    /// The `BootSourceOverrideTarget` value.
    pub fn as_redfish(self) -> &'static str {
        match self {
            BootTarget::Cd => "Cd",
            BootTarget::Pxe => "Pxe",
            BootTarget::Hdd => "Hdd",
        }
    }
}

impl BootMode {
    /// The `BootSourceOverrideMode` value.
    pub fn as_redfish(self) -> &'static str {
        match self {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        }
    }
}

impl BootOverride {
    fn from_json(system: &Value) -> BootOverride {
        let field = |k: &str| text(system, &["Boot", k]).map(str::to_string);
        BootOverride {
            target: field("BootSourceOverrideTarget"),
            enabled: field("BootSourceOverrideEnabled"),
            mode: field("BootSourceOverrideMode"),
            allowed_targets: strings(
                system,
                &["Boot", "BootSourceOverrideTarget@Redfish.AllowableValues"],
            )
            .unwrap_or_default(),
            allowed_modes: strings(
                system,
                &["Boot", "BootSourceOverrideMode@Redfish.AllowableValues"],
            ),
        }
    }
}

impl fmt::Display for BootOverride {
    /// `Cd (Once, mode UEFI)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.target.as_deref().unwrap_or("none"))?;
        let mut extra = Vec::new();
        if let Some(e) = &self.enabled {
            extra.push(e.clone());
        }
        if let Some(m) = &self.mode {
            extra.push(format!("mode {m}"));
        }
        if !extra.is_empty() {
            write!(f, " ({})", extra.join(", "))?;
        }
        Ok(())
    }
}

impl MediaSlot {
    pub(super) fn from_json(odata_id: &str, v: &Value) -> MediaSlot {
        let action = |name: &str| {
            v.get("Actions")
                .and_then(|a| a.get(name))
                .and_then(|a| text(a, &["target"]))
                .map(str::to_string)
        };
        MediaSlot {
            odata_id: odata_id.to_string(),
            id: text(v, &["Id"]).unwrap_or(odata_id).to_string(),
            name: text(v, &["Name"]).unwrap_or("").to_string(),
            media_types: strings(v, &["MediaTypes"]).unwrap_or_default(),
            image: text(v, &["Image"])
                .filter(|i| !i.is_empty() && *i != "None")
                .map(str::to_string),
            inserted: v.get("Inserted").and_then(Value::as_bool).unwrap_or(false),
            write_protected: v.get("WriteProtected").and_then(Value::as_bool),
            insert_target: action("#VirtualMedia.InsertMedia"),
            eject_target: action("#VirtualMedia.EjectMedia"),
        }
    }

    /// Whether the slot holds an image.
    pub fn is_present(&self) -> bool {
        self.inserted || self.image.is_some()
    }

    /// `Inserted: true, Image: URL`, for messages.
    fn state(&self) -> String {
        format!(
            "Inserted: {}, Image: {}",
            self.inserted,
            self.image.as_deref().map_or_else(
                || "none".to_string(),
                crate::artifacts::download::redact_url
            )
        )
    }
}

impl SystemIdentity {
    fn from_json(odata_id: &str, v: &Value) -> SystemIdentity {
        let field = |k: &str| {
            text(v, &[k])
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string)
        };
        SystemIdentity {
            odata_id: odata_id.to_string(),
            id: field("Id"),
            name: field("Name"),
            manufacturer: field("Manufacturer"),
            model: field("Model"),
            serial_number: field("SerialNumber"),
            uuid: field("UUID"),
        }
    }
}
