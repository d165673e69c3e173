//! Fault hooks and the request log. Faults are armed from tests (library
//! handle) or from another process (`POST /_emulator/faults`): fail the next
//! N matching requests with 500 or 503, delay matching responses, close the
//! connection of the next N matching requests without answering. The log
//! records every request with its identity, status and whether it wrote.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which requests a fault applies to (all when both are None).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestFilter {
    /// Only this HTTP method (`GET`, `PATCH`, ...).
    #[serde(default)]
    pub method: Option<String>,
    /// Only paths starting with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

impl RequestFilter {
    /// Every request.
    pub fn any() -> RequestFilter {
        RequestFilter::default()
    }

    /// Requests with `method` whose path starts with `prefix`.
    pub fn new(method: &str, prefix: &str) -> RequestFilter {
        RequestFilter {
            method: Some(method.to_string()),
            path_prefix: Some(prefix.to_string()),
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// What to do to one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault {
    /// Answer with this status (500 or 503) and a Status body.
    Fail(u16),
    /// Close the connection without a response.
    Drop,
}

#[derive(Debug, Default)]
struct FaultState {
    failures: Vec<(usize, u16, RequestFilter)>,
    drops: Vec<(usize, RequestFilter)>,
    delays: Vec<(Duration, RequestFilter)>,
}

/// How a fault handle expires tokens (the authenticator's revoke).
pub(crate) type RevokeFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Handle on an emulator's fault hooks (cheap to clone).
#[derive(Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    revoke: Option<RevokeFn>,
}

impl Faults {
    pub(crate) fn new(revoke: RevokeFn) -> Faults {
        Faults {
            state: Arc::default(),
            revoke: Some(revoke),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `count` requests matching `filter` get `code` (500 InternalError or 503 ServiceUnavailable).
    pub fn fail_next(&self, count: usize, code: u16, filter: RequestFilter) {
        self.lock().failures.push((count, code, filter));
    }

    /// The next `count` requests matching `filter` have their connection closed without a response.
    pub fn drop_next(&self, count: usize, filter: RequestFilter) {
        self.lock().drops.push((count, filter));
    }

    /// Every response to a request matching `filter` waits `delay` first, until [`Faults::clear`].
    pub fn delay(&self, delay: Duration, filter: RequestFilter) {
        self.lock().delays.push((delay, filter));
    }

    /// Makes a token (static or service-account) fail authentication from now on.
    pub fn expire_token(&self, token: &str) {
        if let Some(revoke) = &self.revoke {
            revoke(token);
        }
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        *self.lock() = FaultState::default();
    }

    /// The fault for this request, if one is armed (consuming one count), and the delay to apply.
    pub(crate) fn take(&self, method: &str, path: &str) -> (Option<Fault>, Duration) {
        let mut state = self.lock();
        let delay = state
            .delays
            .iter()
            .filter(|(_, f)| f.matches(method, path))
            .map(|(d, _)| *d)
            .max()
            .unwrap_or_default();
        if let Some(entry) = state
            .drops
            .iter_mut()
            .find(|(n, f)| *n > 0 && f.matches(method, path))
        {
            entry.0 -= 1;
            state.drops.retain(|(n, _)| *n > 0);
            return (Some(Fault::Drop), delay);
        }
        if let Some(entry) = state
            .failures
            .iter_mut()
            .find(|(n, _, f)| *n > 0 && f.matches(method, path))
        {
            entry.0 -= 1;
            let code = entry.1;
            state.failures.retain(|(n, _, _)| *n > 0);
            return (Some(Fault::Fail(code)), delay);
        }
        (None, delay)
    }
}

/// The body of `POST /_emulator/faults`: each field arms one fault.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FaultRequest {
    /// `{"count": N, "code": 503, "method": "GET", "pathPrefix": "/api"}`
    #[serde(default)]
    pub fail: Option<FailSpec>,
    /// `{"count": N, ...filter}`
    #[serde(default)]
    pub drop: Option<CountSpec>,
    /// `{"millis": D, ...filter}`
    #[serde(default)]
    pub delay: Option<DelaySpec>,
    /// A token to expire.
    #[serde(default)]
    pub expire_token: Option<String>,
    /// Disarm everything first.
    #[serde(default)]
    pub clear: bool,
}

/// `fail` in a [`FaultRequest`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FailSpec {
    pub count: usize,
    pub code: u16,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// `drop` in a [`FaultRequest`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CountSpec {
    pub count: usize,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// `delay` in a [`FaultRequest`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DelaySpec {
    pub millis: u64,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
}

impl Faults {
    /// Arms what an admin request asks for; Err names what is wrong with it.
    pub(crate) fn arm(&self, request: FaultRequest) -> Result<(), String> {
        if request.clear {
            self.clear();
        }
        if let Some(fail) = request.fail {
            if !matches!(fail.code, 500 | 503) {
                return Err(format!("fail.code must be 500 or 503, not {}", fail.code));
            }
            let filter = RequestFilter {
                method: fail.method,
                path_prefix: fail.path_prefix,
            };
            self.fail_next(fail.count, fail.code, filter);
        }
        if let Some(drop) = request.drop {
            let filter = RequestFilter {
                method: drop.method,
                path_prefix: drop.path_prefix,
            };
            self.drop_next(drop.count, filter);
        }
        if let Some(delay) = request.delay {
            let filter = RequestFilter {
                method: delay.method,
                path_prefix: delay.path_prefix,
            };
            self.delay(Duration::from_millis(delay.millis), filter);
        }
        if let Some(token) = request.expire_token {
            self.expire_token(&token);
        }
        Ok(())
    }
}

/// One request as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
    /// The authenticated user; None for anonymous or failed authentication.
    pub user: Option<String>,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...).
    pub verb: String,
    /// The HTTP status answered (0 when the connection was dropped by a fault).
    pub status: u16,
    /// True for create/update/patch/delete requests that reached the store (not dry runs, not access reviews).
    pub write: bool,
}

/// The request log (bounded: the oldest records go past 100 000).
#[derive(Clone, Default)]
pub(crate) struct RequestLog(Arc<Mutex<std::collections::VecDeque<RequestRecord>>>);

impl RequestLog {
    const LIMIT: usize = 100_000;

    pub fn push(&self, record: RequestRecord) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() >= Self::LIMIT {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub fn all(&self) -> Vec<RequestRecord> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
