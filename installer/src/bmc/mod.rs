//! Redfish BMCs: power, one-time boot and virtual media for bare metal.
//!
//! [`RedfishClient`] is the seam between edgeforge and a BMC. Its one
//! implementation speaks Redfish over reqwest (rustls) and is what the tests
//! drive, against sushy-tools and against an in-test server that mimics other
//! vendors' layouts. Nothing is addressed by a hard-coded member path: the
//! client starts at `/redfish/v1` and follows `@odata.id` links (paged
//! collections included) to the system, its reset action and its virtual
//! media. It logs in with a Redfish session when the service has a
//! SessionService and with Basic auth otherwise; callers end every use with
//! [`RedfishClient::logout`], on success, error and Ctrl-C alike.
//!
//! `http` holds the request machinery (retries, ETags, task monitors, the
//! BMC's error messages), `discovery` the link following and `client` the
//! operations. Credentials come only from the inventory's secret references
//! and never appear in errors.

mod client;
mod discovery;
mod http;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use crate::inventory::model::{Machine, SecretRef};
use crate::transport::target::{Secret, TargetError, read_secret};

pub use client::{
    AuthKind, BootMode, BootOverride, BootTarget, EjectOutcome, MediaSlot, PowerChange, PowerState,
    RedfishClient, SystemIdentity, SystemStatus,
};

/// Everything needed to talk to one BMC, secrets already read.
#[derive(Debug, Clone)]
pub struct BmcConfig {
    /// The node the BMC belongs to, for messages.
    pub node: String,
    /// The BMC's base URL (scheme, host and port), e.g. `https://10.0.0.10`.
    pub endpoint: url::Url,
    /// The system's `Id` or `UUID`, needed when the BMC lists several.
    pub system_id: Option<String>,
    /// BMC user name.
    pub username: String,
    /// BMC password.
    pub password: Secret,
    /// Where the password comes from (`environment variable BMC_PASSWORD`), for messages.
    pub password_source: String,
    /// PEM CA bundle the BMC's certificate must chain to, instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (inventory `insecure: true`); callers warn about it.
    pub insecure: bool,
    /// Time limits.
    pub timeouts: Timeouts,
}

/// Time limits of a [`RedfishClient`].
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Opening the TCP connection and the TLS handshake.
    pub connect: Duration,
    /// One operation (log in, read the status, a reset, a boot override), retries included.
    pub operation: Duration,
    /// One virtual media insert: some BMCs download the whole image before they answer.
    pub media_insert: Duration,
    /// Waiting for the system to reach the power state a reset asked for.
    pub power_wait: Duration,
    /// Interval between two reads of the power state, and between two polls of a
    /// task monitor that sent no `Retry-After`.
    pub poll: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            operation: Duration::from_secs(60),
            media_insert: Duration::from_secs(30 * 60),
            power_wait: Duration::from_secs(300),
            poll: Duration::from_secs(1),
        }
    }
}

impl BmcConfig {
    /// The BMC settings of node `node`, or `None` when its machine is not
    /// `type: redfish`. Reads the password reference.
    pub fn from_machine(node: &str, machine: &Machine) -> Result<Option<BmcConfig>, BmcError> {
        let Machine::Redfish {
            endpoint,
            system_id,
            username,
            password,
            ca_file,
            insecure,
            ..
        } = machine
        else {
            return Ok(None);
        };
        let endpoint_url = url::Url::parse(endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| BmcError::Endpoint {
                node: node.to_string(),
                reason: "it is not an http(s) URL with a host".into(),
            })?;
        if !endpoint_url.username().is_empty() || endpoint_url.password().is_some() {
            return Err(BmcError::Endpoint {
                node: node.to_string(),
                reason: "it carries credentials; write them as `username` and `password`".into(),
            });
        }
        let secret =
            read_secret("machine.password", password).map_err(|source| BmcError::Secret {
                node: node.to_string(),
                source,
            })?;
        Ok(Some(BmcConfig {
            node: node.to_string(),
            endpoint: endpoint_url,
            system_id: system_id.clone(),
            username: username.clone(),
            password: secret,
            password_source: describe_secret(password),
            ca_file: ca_file.clone(),
            insecure: *insecure,
            timeouts: Timeouts::default(),
        }))
    }

    /// The warning every user of an `insecure: true` BMC prints, or `None`.
    pub fn insecure_warning(&self) -> Option<String> {
        self.insecure.then(|| {
            format!(
                "{}: TLS certificate verification is off (`insecure: true`), so anyone on \
                 the network path can pose as this BMC; set `caFile` to the CA that signed its \
                 certificate instead",
                self.label()
            )
        })
    }

    /// `the BMC of node `n` (https://host:port)`, how messages name this BMC.
    pub fn label(&self) -> String {
        format!(
            "the BMC of node `{}` ({})",
            self.node,
            origin(&self.endpoint)
        )
    }
}

/// `environment variable X` or `file /p`: where a secret comes from, never its value.
pub fn describe_secret(r: &SecretRef) -> String {
    match r {
        SecretRef::Env(var) => format!("environment variable {var}"),
        SecretRef::File(path) => format!("file {}", path.display()),
    }
}

/// `scheme://host[:port]` of a URL: what messages show of an endpoint.
fn origin(u: &url::Url) -> String {
    u.origin().ascii_serialization()
}

/// Why a BMC operation failed. Every message names the BMC (node and
/// endpoint) and, where it helps, what to change.
#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    /// The BMC password reference could not be read.
    #[error("node `{node}`: cannot read the BMC password")]
    Secret {
        /// The node.
        node: String,
        /// What was wrong with the reference.
        #[source]
        source: TargetError,
    },
    /// The inventory's `endpoint` cannot be used.
    #[error("node `{node}`: the Redfish `endpoint` is unusable: {reason}")]
    Endpoint {
        /// The node.
        node: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `caFile` could not be read.
    #[error("{bmc}: cannot read the CA file {}", path.display())]
    CaFile {
        /// The BMC's label.
        bmc: String,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The `caFile` holds no usable PEM certificate.
    #[error("{bmc}: the CA file {} holds no PEM certificate; point `caFile` at the PEM file of the CA that signed the BMC's certificate", path.display())]
    CaPem {
        /// The BMC's label.
        bmc: String,
        /// The file.
        path: PathBuf,
    },
    /// The HTTP client could not be set up.
    #[error("{bmc}: cannot set up the HTTP client")]
    Client {
        /// The BMC's label.
        bmc: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The BMC could not be reached, even after retries.
    #[error(
        "{bmc}: cannot {operation}: {reason} ({attempts} attempts); check the endpoint and that the BMC is up"
    )]
    Unreachable {
        /// The BMC's label.
        bmc: String,
        /// What was being done.
        operation: &'static str,
        /// The last failure.
        reason: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The BMC's TLS certificate was rejected.
    #[error(
        "{bmc}: the BMC's TLS certificate was not accepted ({reason}); if the BMC uses a self-signed certificate, set `caFile` to the CA that signed it"
    )]
    Certificate {
        /// The BMC's label.
        bmc: String,
        /// What the TLS library said.
        reason: String,
    },
    /// The BMC refused the credentials (HTTP 401).
    #[error(
        "{bmc}: the BMC refused the credentials of user `{user}` (HTTP 401); check `username` and the password reference ({password_source})"
    )]
    Unauthorized {
        /// The BMC's label.
        bmc: String,
        /// The user name.
        user: String,
        /// Where the password came from.
        password_source: String,
    },
    /// The user may not do this (HTTP 403).
    #[error(
        "{bmc}: user `{user}` may not {operation} (HTTP 403{messages}); give it a role that may (Operator or Administrator)"
    )]
    Forbidden {
        /// The BMC's label.
        bmc: String,
        /// The user name.
        user: String,
        /// What was being done.
        operation: &'static str,
        /// The BMC's messages, `: Id: text; ...` or empty.
        messages: String,
    },
    /// The BMC answered with an error status.
    #[error("{bmc}: cannot {operation}: {method} {path} answered HTTP {status}{messages}")]
    Status {
        /// The BMC's label.
        bmc: String,
        /// What was being done.
        operation: &'static str,
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// The BMC's messages (`error.@Message.ExtendedInfo`), `: Id: text; ...` or empty.
        messages: String,
    },
    /// An operation did not finish within its time limit.
    #[error(
        "{bmc}: gave up trying to {operation} after {timeout}{last}; check that the BMC answers, or allow more time"
    )]
    Timeout {
        /// The BMC's label.
        bmc: String,
        /// What was being done.
        operation: &'static str,
        /// The limit, e.g. `60 s`.
        timeout: String,
        /// The last failure seen before, `(last attempt: ...)` or empty.
        last: String,
    },
    /// The BMC's answer does not fit Redfish.
    #[error("{bmc}: cannot {operation}: {detail}")]
    Protocol {
        /// The BMC's label.
        bmc: String,
        /// What was being done.
        operation: &'static str,
        /// What was unexpected.
        detail: String,
    },
    /// The Systems collection is empty.
    #[error("{bmc}: the BMC lists no computer system")]
    NoSystem {
        /// The BMC's label.
        bmc: String,
    },
    /// `systemId` matches no system.
    #[error(
        "{bmc}: no system has `Id` or `UUID` `{wanted}`; the BMC lists {available}; fix `systemId`"
    )]
    SystemNotFound {
        /// The BMC's label.
        bmc: String,
        /// The inventory's `systemId`.
        wanted: String,
        /// The systems listed, `Id (Name)`.
        available: String,
    },
    /// Several systems and no `systemId`.
    #[error("{bmc}: the BMC lists {count} systems ({available}); set `systemId` to the one to use")]
    AmbiguousSystem {
        /// The BMC's label.
        bmc: String,
        /// How many.
        count: usize,
        /// The systems listed, `Id (Name)`.
        available: String,
    },
    /// No CD/DVD virtual media slot on the system or its managers.
    #[error(
        "{bmc}: no virtual media slot for CD or DVD on the system or its managers (found: {found})"
    )]
    NoVirtualMedia {
        /// The BMC's label.
        bmc: String,
        /// The slots seen, `Id [types]`, or `none`.
        found: String,
    },
    /// The BMC does not offer a value edgeforge needs.
    #[error("{bmc}: {what} is not offered by the BMC; it allows {allowed}")]
    NotAllowed {
        /// The BMC's label.
        bmc: String,
        /// The value, e.g. ``boot target `Pxe` ``.
        what: String,
        /// What the BMC allows.
        allowed: String,
    },
    /// A boot mode change was asked of a BMC that advertises no boot modes.
    #[error(
        "{bmc}: boot mode `{wanted}` is not offered by the BMC: it advertises no `BootSourceOverrideMode@Redfish.AllowableValues` and its current mode is {current}; leave out the mode or change it on the BMC itself"
    )]
    ModeNotAdvertised {
        /// The BMC's label.
        bmc: String,
        /// The requested mode.
        wanted: &'static str,
        /// The mode the system reports.
        current: String,
    },
    /// The system did not reach a power state in time.
    #[error(
        "{bmc}: the system did not reach power state {wanted} within {timeout} (last seen: {last})"
    )]
    PowerWait {
        /// The BMC's label.
        bmc: String,
        /// The state waited for.
        wanted: PowerState,
        /// The limit, e.g. `300 s`.
        timeout: String,
        /// The last state read.
        last: PowerState,
    },
    /// A BMC task (202 + task monitor) ended without success.
    #[error("{bmc}: cannot {operation}: the BMC's task ended {state}{messages}")]
    TaskFailed {
        /// The BMC's label.
        bmc: String,
        /// What was being done.
        operation: &'static str,
        /// `TaskState` (and `TaskStatus`).
        state: String,
        /// The task's messages, `: Id: text; ...` or empty.
        messages: String,
    },
    /// A change was accepted but does not read back.
    #[error("{bmc}: the BMC accepted the request to {operation} but reads back {got}")]
    NotApplied {
        /// The BMC's label.
        bmc: String,
        /// What was being done.
        operation: &'static str,
        /// What it reads back.
        got: String,
    },
}

impl BmcError {
    /// Whether the error comes from the inventory or the environment it
    /// references (exit code 2) rather than from the BMC (exit code 1).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            BmcError::Secret { .. }
                | BmcError::Endpoint { .. }
                | BmcError::CaFile { .. }
                | BmcError::CaPem { .. }
        )
    }
}

/// `60 s`, `2.5 s`: a duration as messages show it.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
