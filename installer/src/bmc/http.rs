//! The request layer under [`RedfishClient`](super::RedfishClient): one
//! reqwest client per BMC with its TLS trust (system roots, the inventory's
//! `caFile`, or none with `insecure`), the auth header (session token or
//! Basic), retries of 5xx answers and connection failures with backoff,
//! `If-Match` on PATCH with one refresh after a 412, task monitors (202 +
//! `Location`) followed until they finish, and the BMC's own error messages
//! pulled out of `error.@Message.ExtendedInfo`.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{
    ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, IF_MATCH, LOCATION, RETRY_AFTER,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{BmcConfig, BmcError, origin};
use crate::transport::target::Secret;

/// Attempts per request when the BMC answers 5xx or cannot be reached.
const MAX_ATTEMPTS: u32 = 6;
/// Backoff before the second attempt; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Upper bound of one backoff, and of a `Retry-After` on a 5xx answer.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Upper bound of a task monitor's `Retry-After`.
const MAX_TASK_POLL: Duration = Duration::from_secs(30);

/// Task states after which a task monitor has nothing more to say.
const TASK_FAILED: [&str; 3] = ["Exception", "Killed", "Cancelled"];

/// One BMC's HTTP side.
pub(super) struct Http {
    client: reqwest::Client,
    origin: url::Url,
    /// How messages name this BMC.
    pub(super) bmc: String,
    username: String,
    password: Secret,
    password_source: String,
    session: Mutex<Option<Session>>,
    last_failure: Mutex<Option<String>>,
    poll: Duration,
}

/// A Redfish session: its token and the URI that deletes it.
struct Session {
    token: Secret,
    uri: Option<String>,
}

/// One answer, read whole.
pub(super) struct Reply {
    /// The status code.
    pub(super) status: StatusCode,
    /// The headers.
    pub(super) headers: HeaderMap,
    /// The body.
    pub(super) body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`Null` when empty or not JSON).
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The resource's ETag: the `ETag` header, else `@odata.etag` in the body.
    pub(super) fn etag(&self) -> Option<String> {
        self.headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                self.json()
                    .get("@odata.etag")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    }
}

impl Http {
    /// The HTTP side of the BMC `cfg` describes; no request is sent yet.
    pub(super) fn new(cfg: &BmcConfig) -> Result<Http, BmcError> {
        let bmc = cfg.label();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.timeouts.connect)
            .user_agent(concat!("edgeforge/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|source| BmcError::CaFile {
                bmc: bmc.clone(),
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| BmcError::CaPem {
                    bmc: bmc.clone(),
                    path: path.clone(),
                })?;
            builder = builder.tls_certs_only(certs);
        }
        if cfg.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|source| BmcError::Client {
            bmc: bmc.clone(),
            source,
        })?;
        let mut base = cfg.endpoint.clone();
        base.set_path("/");
        base.set_query(None);
        base.set_fragment(None);
        Ok(Http {
            client,
            origin: base,
            bmc,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            password_source: cfg.password_source.clone(),
            session: Mutex::new(None),
            last_failure: Mutex::new(None),
            poll: cfg.timeouts.poll,
        })
    }

    /// Whether requests carry a session token (else Basic auth).
    pub(super) fn has_session(&self) -> bool {
        lock(&self.session).is_some()
    }

    /// The last transient failure (a 5xx, a refused connection) not yet
    /// followed by an answer: what a timeout message adds.
    pub(super) fn last_failure(&self) -> Option<String> {
        lock(&self.last_failure).clone()
    }

    /// Logs in: a session through `sessions` (the service root's
    /// `Links.Sessions` or its SessionService's `Sessions`) when given,
    /// else nothing to do (Basic auth goes with every request).
    pub(super) async fn open_session(
        &self,
        operation: &'static str,
        sessions: &str,
    ) -> Result<(), BmcError> {
        let body = serde_json::json!({
            "UserName": self.username,
            "Password": self.password.expose(),
        });
        let reply = self
            .send(operation, Method::POST, sessions, Some(&body), None, false)
            .await?;
        let reply = self.check(operation, &Method::POST, sessions, reply)?;
        let token = reply
            .headers
            .get("X-Auth-Token")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.protocol(operation, "the new session has no X-Auth-Token"))?;
        let uri = reply
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                reply
                    .json()
                    .get("@odata.id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        *lock(&self.session) = Some(Session {
            token: Secret::new(token),
            uri,
        });
        Ok(())
    }

    /// Deletes the session, if there is one; later requests use Basic auth.
    pub(super) async fn close_session(&self, operation: &'static str) -> Result<(), BmcError> {
        let Some(uri) = lock(&self.session).as_ref().map(|s| s.uri.clone()) else {
            return Ok(());
        };
        let result = match &uri {
            Some(uri) => match self
                .send(operation, Method::DELETE, uri, None, None, true)
                .await
            {
                Ok(reply) if reply.status == StatusCode::NOT_FOUND => Ok(()),
                Ok(reply) => self
                    .check(operation, &Method::DELETE, uri, reply)
                    .map(|_| ()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        };
        *lock(&self.session) = None;
        result
    }

    /// GETs `target` and returns its JSON and ETag; error statuses are errors.
    pub(super) async fn get(
        &self,
        operation: &'static str,
        target: &str,
    ) -> Result<(Value, Option<String>), BmcError> {
        let reply = self
            .send(operation, Method::GET, target, None, None, true)
            .await?;
        let reply = self.check(operation, &Method::GET, target, reply)?;
        let json = reply.json();
        if !json.is_object() {
            return Err(self.protocol(
                operation,
                &format!("GET {target} did not answer a JSON object"),
            ));
        }
        let etag = reply.etag();
        Ok((json, etag))
    }

    /// POSTs an action (never with `If-Match`) and follows its task, if any.
    pub(super) async fn action(
        &self,
        operation: &'static str,
        target: &str,
        body: &Value,
    ) -> Result<Reply, BmcError> {
        let reply = self
            .send(operation, Method::POST, target, Some(body), None, true)
            .await?;
        let reply = self.check(operation, &Method::POST, target, reply)?;
        self.follow_task(operation, reply).await
    }

    /// PATCHes `target` with `If-Match: etag` when the resource had an ETag;
    /// a 412 (the resource changed meanwhile) refreshes the ETag and tries
    /// once more. Follows the task, if any.
    pub(super) async fn patch(
        &self,
        operation: &'static str,
        target: &str,
        body: &Value,
        etag: Option<String>,
    ) -> Result<Reply, BmcError> {
        let mut reply = self
            .send(
                operation,
                Method::PATCH,
                target,
                Some(body),
                etag.as_deref(),
                true,
            )
            .await?;
        if reply.status == StatusCode::PRECONDITION_FAILED {
            let (_, fresh) = self.get(operation, target).await?;
            reply = self
                .send(
                    operation,
                    Method::PATCH,
                    target,
                    Some(body),
                    fresh.as_deref(),
                    true,
                )
                .await?;
        }
        let reply = self.check(operation, &Method::PATCH, target, reply)?;
        self.follow_task(operation, reply).await
    }

    /// Sends one request, retrying 5xx answers (except 501) and failed
    /// connections with backoff (honouring `Retry-After`). Returns whatever
    /// the BMC finally answered, error statuses included.
    pub(super) async fn send(
        &self,
        operation: &'static str,
        method: Method,
        target: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        authenticated: bool,
    ) -> Result<Reply, BmcError> {
        let url = self.url(operation, target)?;
        let payload = body.map(serde_json::to_vec).transpose().map_err(|e| {
            self.protocol(operation, &format!("cannot encode the request body: {e}"))
        })?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .header(ACCEPT, "application/json")
                .header("OData-Version", "4.0");
            if authenticated {
                req = self.authorize(req);
            }
            if let Some(bytes) = &payload {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(bytes.clone());
            }
            if let Some(tag) = if_match {
                req = req.header(IF_MATCH, tag);
            }
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    resp.bytes().await.map(|b| Reply {
                        status,
                        headers,
                        body: b.to_vec(),
                    })
                }
                Err(e) => Err(e),
            };
            let (reason, delay) = match outcome {
                Ok(reply) if retryable(reply.status) && attempt < MAX_ATTEMPTS => {
                    let delay = retry_after(&reply.headers)
                        .unwrap_or_else(|| backoff(attempt))
                        .min(MAX_BACKOFF);
                    (
                        format!("{method} {target} answered HTTP {}", reply.status.as_u16()),
                        delay,
                    )
                }
                Ok(reply) => {
                    *lock(&self.last_failure) = None;
                    return Ok(reply);
                }
                Err(e) => {
                    let reason = error_chain(&e);
                    if is_certificate_problem(&reason) {
                        return Err(BmcError::Certificate {
                            bmc: self.bmc.clone(),
                            reason,
                        });
                    }
                    if attempt >= MAX_ATTEMPTS {
                        return Err(BmcError::Unreachable {
                            bmc: self.bmc.clone(),
                            operation,
                            reason,
                            attempts: attempt,
                        });
                    }
                    (reason, backoff(attempt))
                }
            };
            *lock(&self.last_failure) = Some(reason);
            tokio::time::sleep(delay).await;
        }
    }

    /// Passes a success through; turns an error status into the error that
    /// explains it, with the BMC's messages.
    pub(super) fn check(
        &self,
        operation: &'static str,
        method: &Method,
        target: &str,
        reply: Reply,
    ) -> Result<Reply, BmcError> {
        let status = reply.status;
        if status.is_success() {
            return Ok(reply);
        }
        let messages = bmc_messages(&reply);
        Err(match status {
            StatusCode::UNAUTHORIZED => BmcError::Unauthorized {
                bmc: self.bmc.clone(),
                user: self.username.clone(),
                password_source: self.password_source.clone(),
            },
            StatusCode::FORBIDDEN => BmcError::Forbidden {
                bmc: self.bmc.clone(),
                user: self.username.clone(),
                operation,
                messages: prefixed("; ", &messages),
            },
            _ => BmcError::Status {
                bmc: self.bmc.clone(),
                operation,
                method: method.to_string(),
                path: target.to_string(),
                status: status.as_u16(),
                messages: prefixed(": ", &messages),
            },
        })
    }

    /// A [`BmcError::Protocol`] for this BMC.
    pub(super) fn protocol(&self, operation: &'static str, detail: &str) -> BmcError {
        BmcError::Protocol {
            bmc: self.bmc.clone(),
            operation,
            detail: detail.to_string(),
        }
    }

    /// Follows a `202 Accepted` with a task monitor until the task is done:
    /// polls the monitor, waiting what its `Retry-After` says, until it
    /// stops answering 202; a task that ends in `Exception`, `Killed` or
    /// `Cancelled` (or `Critical`) is an error with the task's messages.
    async fn follow_task(&self, operation: &'static str, reply: Reply) -> Result<Reply, BmcError> {
        if reply.status != StatusCode::ACCEPTED {
            return Ok(reply);
        }
        let monitor = reply
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                reply
                    .json()
                    .get("TaskMonitor")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        let Some(monitor) = monitor else {
            return Ok(reply);
        };
        let mut reply = reply;
        loop {
            let task = reply.json();
            let state = task.get("TaskState").and_then(Value::as_str);
            let status = task.get("TaskStatus").and_then(Value::as_str);
            if let Some(state) = state {
                let failed = TASK_FAILED.contains(&state)
                    || (state == "Completed" && status == Some("Critical"));
                if failed {
                    return Err(BmcError::TaskFailed {
                        bmc: self.bmc.clone(),
                        operation,
                        state: match status {
                            Some(s) => format!("{state} ({s})"),
                            None => state.to_string(),
                        },
                        messages: prefixed(": ", &task_messages(&task)),
                    });
                }
            }
            let running =
                reply.status == StatusCode::ACCEPTED || state.is_some_and(|s| s != "Completed");
            if !running {
                return Ok(reply);
            }
            let delay = retry_after(&reply.headers)
                .unwrap_or(self.poll)
                .min(MAX_TASK_POLL);
            tokio::time::sleep(delay).await;
            let next = self
                .send(operation, Method::GET, &monitor, None, None, true)
                .await?;
            reply = self.check(operation, &Method::GET, &monitor, next)?;
        }
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let token = lock(&self.session)
            .as_ref()
            .and_then(|s| HeaderValue::from_str(s.token.expose()).ok());
        match token {
            Some(mut value) => {
                value.set_sensitive(true);
                req.header("X-Auth-Token", value)
            }
            None => req.basic_auth(&self.username, Some(self.password.expose())),
        }
    }

    /// `target` (an absolute path, or a URL on the BMC's own origin) as a URL.
    /// A link to another host is refused: credentials go to the BMC only.
    fn url(&self, operation: &'static str, target: &str) -> Result<url::Url, BmcError> {
        let url = self.origin.join(target).map_err(|e| {
            self.protocol(operation, &format!("the link `{target}` is not a URL: {e}"))
        })?;
        if url.origin() != self.origin.origin() {
            return Err(self.protocol(
                operation,
                &format!(
                    "the link `{target}` leads away from the BMC ({}); edgeforge only follows links on the BMC itself",
                    origin(&url)
                ),
            ));
        }
        Ok(url)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 5xx answers worth another attempt: all but 501 Not Implemented.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED
}

/// Backoff before attempt `attempt + 1`: 250 ms, doubling, capped.
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// An error and its sources as one line, without repeated parts.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// Whether a connection failure is the TLS library refusing the certificate.
fn is_certificate_problem(chain: &str) -> bool {
    let lower = chain.to_ascii_lowercase();
    lower.contains("certificate") || lower.contains("unknownissuer")
}

fn prefixed(prefix: &str, text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("{prefix}{text}")
    }
}

/// The BMC's explanation of an error answer: each
/// `error.@Message.ExtendedInfo[]` as `MessageId: Message` (the top-level
/// `error.message` stands in for missing texts), else `error.code:
/// error.message`, else the start of a plain-text body.
pub(super) fn bmc_messages(reply: &Reply) -> String {
    let json = reply.json();
    let Some(error) = json.get("error") else {
        let text = String::from_utf8_lossy(&reply.body);
        let text = text.trim();
        if text.is_empty() || text.starts_with('{') || text.starts_with('<') {
            return String::new();
        }
        return text.chars().take(300).collect();
    };
    let top = error.get("message").and_then(Value::as_str).unwrap_or("");
    let infos = error
        .get("@Message.ExtendedInfo")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut lines: Vec<String> = infos.iter().map(message_line).collect();
    let any_text = infos
        .iter()
        .any(|i| i.get("Message").and_then(Value::as_str).is_some());
    if !any_text && !top.is_empty() {
        match lines.first_mut() {
            Some(first) => *first = format!("{first}: {top}"),
            None => {
                let code = error.get("code").and_then(Value::as_str).unwrap_or("");
                lines.push(if code.is_empty() {
                    top.to_string()
                } else {
                    format!("{code}: {top}")
                });
            }
        }
    }
    lines.retain(|l| !l.is_empty());
    lines.join("; ")
}

/// A task's `Messages[]` as `MessageId: Message; ...`.
fn task_messages(task: &Value) -> String {
    task.get("Messages")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .map(message_line)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// One Redfish Message as `MessageId: Message`.
fn message_line(m: &Value) -> String {
    let id = m.get("MessageId").and_then(Value::as_str).unwrap_or("");
    let text = m.get("Message").and_then(Value::as_str).unwrap_or("");
    match (id.is_empty(), text.is_empty()) {
        (false, false) => format!("{id}: {text}"),
        (false, true) => id.to_string(),
        (true, false) => text.to_string(),
        (true, true) => String::new(),
    }
}
