//! The HTTPS front: TLS accept loop (one task per connection, hyper HTTP/1.1),
//! then per request: extension routes, fault hooks, authentication,
//! authorization, routing of the apiserver's URL space (discovery, resources,
//! subresources, watches, access reviews, OpenAPI), and the request log.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::auth::{self, Attributes, Authenticator, Identity};
use super::faults::{Fault, FaultRequest, Faults, RequestLog, RequestRecord};
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{EventKind, ListQuery, PatchKind, Store, WriteOptions, present};
use super::views;
use super::{Extension, ExtensionRequest};

/// A response body: a whole JSON document or a watch stream.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// What every connection task shares.
pub(crate) struct Shared {
    pub store: Store,
    pub auth: Arc<Authenticator>,
    pub faults: Faults,
    pub log: RequestLog,
    pub git_version: String,
    pub extension: Option<Arc<dyn Extension>>,
    pub shutdown: watch::Receiver<bool>,
    pub server_address: String,
}

/// Accepts connections until shutdown; each connection is served by its own task.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, peer)) = accepted else {
            // Out of file descriptors and the like: let the pressure pass.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut shutdown = shared.shutdown.clone();
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(tls)) = handshake.await else {
                return;
            };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(super::tls::client_identity);
            let conn = ConnInfo {
                peer,
                client_cert: client_cert.map(Arc::new),
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let conn = conn.clone();
                async move { handle(shared, conn, req).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::select! {
                _ = connection => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

#[derive(Clone)]
struct ConnInfo {
    peer: SocketAddr,
    client_cert: Option<Arc<(String, Vec<String>)>>,
}

/// Returned to hyper to close the connection without a response (the drop fault).
#[derive(Debug)]
struct DroppedByFault;

impl std::fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an armed fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// One parsed request, as the handlers see it.
struct Call {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: hyper::HeaderMap,
    body: Bytes,
    identity: Option<Identity>,
}

impl Call {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("1" | "true" | "True"))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, DroppedByFault> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let headers = req.headers().clone();
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(status_response(&ApiError::bad_request(
                "the request body could not be read or is too large",
            )));
        }
    };
    if let Some(extension) = &shared.extension {
        let ext_request = ExtensionRequest {
            method: method.clone(),
            path: path.clone(),
            query: raw_query.clone(),
            headers: headers.clone(),
            body: body.clone(),
            peer: conn.peer,
        };
        if let Some(answer) = extension.handle(&ext_request, &shared.store).await {
            return Ok(Response::builder()
                .status(answer.status)
                .header("Content-Type", answer.content_type)
                .body(full(answer.body))
                .unwrap_or_else(|_| {
                    status_response(&ApiError::internal("bad extension response"))
                }));
        }
    }
    let admin_path = path.starts_with("/_emulator/");
    let mut record = RequestRecord {
        method: method.clone(),
        path: path.clone(),
        query: raw_query.clone(),
        user: None,
        verb: String::new(),
        status: 0,
        write: false,
    };
    if !admin_path {
        let (fault, delay) = shared.faults.take(&method, &path);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match fault {
            Some(Fault::Drop) => {
                record.verb = "dropped".into();
                shared.log.push(record);
                return Err(DroppedByFault);
            }
            Some(Fault::Fail(code)) => {
                let err = if code == 503 {
                    ApiError::unavailable("the server is currently unable to handle the request")
                } else {
                    ApiError::internal("the emulator was asked to fail this request")
                };
                record.status = err.code;
                record.verb = "faulted".into();
                shared.log.push(record);
                return Ok(status_response(&err));
            }
            None => {}
        }
    }
    let authorization = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity =
        match shared
            .auth
            .authenticate(authorization, conn.client_cert.as_deref(), &shared.store)
        {
            Ok(identity) => identity,
            Err(err) => {
                record.status = err.code;
                if !admin_path {
                    shared.log.push(record);
                }
                return Ok(status_response(&err));
            }
        };
    record.user = identity.as_ref().map(|i| i.user.clone());
    let call = Call {
        method,
        path,
        query: parse_query(&raw_query),
        headers,
        body,
        identity,
    };
    let (response, verb, write) = route(&shared, &call).await;
    let response = response.unwrap_or_else(|err| status_response(&err));
    record.status = response.status().as_u16();
    record.verb = verb;
    record.write = write && response.status().is_success() && !is_dry_run(&call);
    if !admin_path {
        shared.log.push(record);
    }
    Ok(response)
}

fn is_dry_run(call: &Call) -> bool {
    call.param("dryRun") == Some("All")
}

/// Paths anonymous clients may read.
fn is_public(path: &str) -> bool {
    ["/version", "/healthz", "/readyz", "/livez"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

type Routed = (Result<Response<Body>, ApiError>, String, bool);

async fn route(shared: &Arc<Shared>, call: &Call) -> Routed {
    let non_resource = |verb: &str| (verb.to_string(), false);
    let segments: Vec<&str> = call
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let Some(identity) = &call.identity else {
        if is_public(&call.path) {
            return (non_resource_response(shared, call), "get".into(), false);
        }
        return (Err(ApiError::unauthorized()), String::new(), false);
    };
    match segments.as_slice() {
        ["_emulator", rest @ ..] => {
            if !identity.is_master() {
                let attrs = Attributes::NonResource {
                    verb: call.method.to_lowercase(),
                    path: call.path.clone(),
                };
                return (
                    auth::authorize(&shared.store, identity, &attrs).map(|_| empty()),
                    String::new(),
                    false,
                );
            }
            (admin(shared, call, rest), "admin".into(), false)
        }
        ["api", "v1", rest @ ..] | ["apis", _, _, rest @ ..] if !rest.is_empty() => {
            let (group, version) = if segments[0] == "api" {
                ("", "v1")
            } else {
                (segments[1], segments[2])
            };
            resource_request(shared, call, identity, group, version, rest).await
        }
        _ => {
            let verb = call.method.to_lowercase();
            let attrs = Attributes::NonResource {
                verb: verb.clone(),
                path: call.path.clone(),
            };
            if let Err(err) = auth::authorize(&shared.store, identity, &attrs) {
                return (Err(err), verb, false);
            }
            let (verb, write) = non_resource(&verb);
            (non_resource_response(shared, call), verb, write)
        }
    }
}

/// Discovery, version, health and OpenAPI documents.
fn non_resource_response(shared: &Arc<Shared>, call: &Call) -> Result<Response<Body>, ApiError> {
    if call.method != "GET" && call.method != "HEAD" {
        return Err(ApiError::method_not_allowed());
    }
    let segments: Vec<&str> = call
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let registry = shared.store.lock().registry.clone();
    match segments.as_slice() {
        ["version"] => Ok(json_response(200, &version_info(&shared.git_version))),
        ["healthz" | "readyz" | "livez", ..] => Ok(text_response(200, "ok")),
        ["api"] => Ok(json_response(
            200,
            &registry.core_versions(&shared.server_address),
        )),
        ["apis"] => Ok(json_response(200, &registry.group_list())),
        ["apis", group] => registry
            .group(group)
            .map(|d| json_response(200, &d))
            .ok_or_else(ApiError::no_route),
        ["api", "v1"] => registry
            .resource_list("", "v1")
            .map(|d| json_response(200, &d))
            .ok_or_else(ApiError::no_route),
        ["apis", group, version] => registry
            .resource_list(group, version)
            .map(|d| json_response(200, &d))
            .ok_or_else(ApiError::no_route),
        ["openapi", "v3"] => Ok(json_response(200, &views::openapi_v3_index(&registry))),
        ["openapi", "v3", rest @ ..] => views::openapi_v3_group(&registry, &rest.join("/"))
            .map(|d| json_response(200, &d))
            .ok_or_else(ApiError::no_route),
        _ => Err(ApiError::no_route()),
    }
}

fn version_info(git_version: &str) -> Value {
    let bare = git_version.trim_start_matches('v');
    let mut parts = bare.split(['.', '+', '-']);
    let major = parts.next().unwrap_or("1").to_string();
    let minor = parts.next().unwrap_or("0").to_string();
    let min_minor = minor
        .parse::<u32>()
        .map(|m| m.saturating_sub(1).to_string())
        .unwrap_or_default();
    json!({
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": min_minor,
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/_emulator/...`: the admin endpoints (system:masters only).
fn admin(shared: &Arc<Shared>, call: &Call, rest: &[&str]) -> Result<Response<Body>, ApiError> {
    match (call.method.as_str(), rest) {
        ("GET", ["requests"]) => Ok(json_response(200, &json!(shared.log.all()))),
        ("DELETE", ["requests"]) => {
            shared.log.clear();
            Ok(empty())
        }
        ("GET", ["state"]) => Ok(Response::builder()
            .status(200)
            .header("Content-Type", "application/yaml")
            .body(full(super::dump_yaml(&shared.store).into_bytes()))
            .unwrap_or_else(|_| empty())),
        ("POST", ["faults"]) => {
            let request: FaultRequest = serde_json::from_slice(&call.body)
                .map_err(|e| ApiError::bad_request(format!("fault request: {e}")))?;
            shared.faults.arm(request).map_err(ApiError::bad_request)?;
            Ok(empty())
        }
        ("POST", ["tokens"]) => {
            let body: Value = serde_json::from_slice(&call.body)
                .map_err(|e| ApiError::bad_request(format!("token request: {e}")))?;
            let token = body["token"].as_str().unwrap_or_default();
            let user = body["user"].as_str().unwrap_or_default();
            if token.is_empty() || user.is_empty() {
                return Err(ApiError::bad_request("token request needs token and user"));
            }
            let groups: Vec<&str> = body["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            shared
                .auth
                .add(auth::StaticToken::new(token, user, &groups));
            Ok(empty())
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Where a resource request points.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn resolve(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let registry = &shared.store.lock().registry;
    let find = |plural: &str| {
        registry
            .by_path(group, version, plural)
            .cloned()
            .ok_or_else(ApiError::no_route)
    };
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && registry
            .by_path(group, version, rest[2])
            .is_some_and(|t| t.namespaced);
    let (rt, namespace, tail) = if namespaced_path {
        (find(rest[2])?, Some(rest[1].to_string()), &rest[3..])
    } else {
        (find(rest[0])?, None, &rest[1..])
    };
    if tail.len() > 2 || (rt.namespaced && namespace.is_none() && !tail.is_empty()) {
        return Err(ApiError::no_route());
    }
    Ok(Target {
        rt,
        namespace,
        name: tail.first().map(|s| s.to_string()),
        subresource: tail.get(1).map(|s| s.to_string()),
    })
}

async fn resource_request(
    shared: &Arc<Shared>,
    call: &Call,
    identity: &Identity,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Routed {
    let target = match resolve(shared, group, version, rest) {
        Ok(t) => t,
        Err(err) => return (Err(err), String::new(), false),
    };
    let verb = match (call.method.as_str(), &target.name) {
        ("GET", None) if call.flag("watch") => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) if call.flag("watch") => "watch",
        ("GET" | "HEAD", Some(_)) => "get",
        ("POST", None) => "create",
        ("POST", Some(_)) if target.subresource.is_some() => "create",
        ("PUT", Some(_)) => "update",
        ("PATCH", Some(_)) => "patch",
        ("DELETE", None) => "deletecollection",
        ("DELETE", Some(_)) => "delete",
        _ => {
            return (
                Err(ApiError::method_not_allowed()),
                call.method.to_lowercase(),
                false,
            );
        }
    }
    .to_string();
    let write = matches!(
        verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) && !target.rt.is_virtual();
    let attrs = Attributes::Resource {
        verb: verb.clone(),
        group: target.rt.group.clone(),
        resource: target.rt.plural.clone(),
        subresource: target.subresource.clone().unwrap_or_default(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
    };
    if let Err(err) = auth::authorize(&shared.store, identity, &attrs) {
        return (Err(err), verb, false);
    }
    let result = dispatch(shared, call, identity, &target, &verb).await;
    (result, verb, write)
}

async fn dispatch(
    shared: &Arc<Shared>,
    call: &Call,
    identity: &Identity,
    target: &Target,
    verb: &str,
) -> Result<Response<Body>, ApiError> {
    let store = &shared.store;
    let rt = &target.rt;
    let ns = target.namespace.as_deref();
    if rt.is_virtual() {
        return access_review(shared, call, identity, target);
    }
    let status_sub = match target.subresource.as_deref() {
        None => false,
        Some("status") if rt.status => true,
        Some("eviction") if rt.group.is_empty() && rt.plural == "pods" && verb == "create" => {
            return evict(shared, call, target);
        }
        Some(_) => return Err(ApiError::no_route()),
    };
    let options = WriteOptions {
        manager: field_manager(call),
        dry_run: is_dry_run(call),
        status: status_sub,
    };
    if (options.dry_run || call.param("dryRun").is_some())
        && let Some(v) = call.param("dryRun").filter(|v| *v != "All")
    {
        return Err(ApiError::bad_request(format!(
            "Unsupported value: {v:?}: supported values: \"All\""
        )));
    }
    check_field_validation(call)?;
    let accept = call.header("accept");
    if !accept.is_empty() && !["json", "yaml", "*/*"].iter().any(|t| accept.contains(t)) {
        return Err(ApiError::not_acceptable());
    }
    match verb {
        "get" => {
            let object = store.get_typed(rt, ns, target.name.as_deref().unwrap_or_default())?;
            respond_object(call, rt, 200, object)
        }
        "list" => {
            let query = list_query(call, rt)?;
            let list = store.list_typed(rt, ns, &query)?;
            if wants_table(call) {
                return Ok(json_response(
                    200,
                    &views::table(rt, &list, call.param("includeObject")),
                ));
            }
            Ok(json_response(200, &list))
        }
        "watch" => watch(shared, call, target).await,
        "create" => {
            let object = decode_body(call)?;
            if store_strict(call) {
                views::check_unknown_fields(rt, &object)?;
            }
            let created = store.create_typed(rt, ns, object, &options)?;
            respond_object(call, rt, 201, created)
        }
        "update" => {
            let object = decode_body(call)?;
            if store_strict(call) {
                views::check_unknown_fields(rt, &object)?;
            }
            let name = target.name.as_deref().unwrap_or_default();
            let updated = store.replace_typed(rt, ns, name, object, &options)?;
            respond_object(call, rt, 200, updated)
        }
        "patch" => {
            let content_type = call.header("content-type");
            let kind = match content_type.split(';').next().unwrap_or_default().trim() {
                "application/json-patch+json" => PatchKind::Json,
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/apply-patch+yaml" | "application/apply-patch+cbor"
                    if content_type.contains("yaml") =>
                {
                    if call.param("fieldManager").is_none_or(str::is_empty) {
                        return Err(ApiError::bad_request(
                            "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
                        ));
                    }
                    PatchKind::Apply {
                        force: call.flag("force"),
                    }
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            if kind != PatchKind::Merge
                && call.flag("force")
                && !matches!(kind, PatchKind::Apply { .. })
            {
                return Err(ApiError::bad_request(
                    "force may only be specified with apply patches",
                ));
            }
            let body = match kind {
                PatchKind::Apply { .. } => parse_yaml(&call.body)?,
                _ => serde_json::from_slice(&call.body).map_err(|e| {
                    ApiError::bad_request(format!("the body of the patch is not valid JSON: {e}"))
                })?,
            };
            if matches!(kind, PatchKind::Apply { .. }) && store_strict(call) {
                views::check_unknown_fields(rt, &body)?;
            }
            let name = target.name.as_deref().unwrap_or_default();
            let (object, created) = store.patch_typed(rt, ns, name, kind, body, &options)?;
            respond_object(call, rt, if created { 201 } else { 200 }, object)
        }
        "delete" => {
            let options_body: Value = if call.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&call.body)
                    .map_err(|e| ApiError::bad_request(format!("DeleteOptions: {e}")))?
            };
            let mut delete_options = options_body;
            if let Some(policy) = call.param("propagationPolicy") {
                delete_options["propagationPolicy"] = json!(policy);
            }
            let name = target.name.as_deref().unwrap_or_default();
            let deleted = store.delete_typed(rt, ns, name, &delete_options, is_dry_run(call))?;
            respond_object(
                call,
                rt,
                if deleted.gone { 200 } else { 202 },
                deleted.object,
            )
        }
        "deletecollection" => {
            let query = list_query(call, rt)?;
            let list = store.list_typed(
                rt,
                ns,
                &ListQuery {
                    limit: None,
                    continue_token: None,
                    ..query
                },
            )?;
            let mut deleted = Vec::new();
            for item in list["items"].as_array().into_iter().flatten() {
                let item_ns = item["metadata"]["namespace"].as_str();
                let item_name = item["metadata"]["name"].as_str().unwrap_or_default();
                if let Ok(d) =
                    store.delete_typed(rt, item_ns, item_name, &Value::Null, is_dry_run(call))
                {
                    deleted.push(d.object);
                }
            }
            let mut out = list;
            out["items"] = json!(deleted);
            out["metadata"]["resourceVersion"] = json!(store.resource_version().to_string());
            Ok(json_response(200, &out))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn store_strict(call: &Call) -> bool {
    call.param("fieldValidation") == Some("Strict")
}

fn check_field_validation(call: &Call) -> Result<(), ApiError> {
    match call.param("fieldValidation") {
        None | Some("Strict" | "Warn" | "Ignore" | "") => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", not {other:?}"
        ))),
    }
}

/// The field manager of a non-apply write: `fieldManager`, else the user agent's first word.
fn field_manager(call: &Call) -> String {
    if let Some(m) = call.param("fieldManager").filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let agent = call.header("user-agent");
    let first = agent.split('/').next().unwrap_or_default().trim();
    if first.is_empty() {
        "unknown".into()
    } else {
        first.to_string()
    }
}

fn list_query(call: &Call, rt: &ResourceType) -> Result<ListQuery, ApiError> {
    let labels = LabelSelector::parse(call.param("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        call.param("fieldSelector").unwrap_or_default(),
        FieldSelector::indexed_fields(&rt.group, &rt.plural),
    )
    .map_err(ApiError::bad_request)?;
    let limit = match call.param("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("limit: {l:?} is not a number")))?,
        )
        .filter(|l| *l > 0),
        None => None,
    };
    Ok(ListQuery {
        labels,
        fields,
        limit,
        continue_token: call
            .param("continue")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    })
}

fn wants_table(call: &Call) -> bool {
    call.header("accept")
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn respond_object(
    call: &Call,
    rt: &ResourceType,
    code: u16,
    object: Value,
) -> Result<Response<Body>, ApiError> {
    if wants_table(call) {
        let list = json!({"metadata": {"resourceVersion": object["metadata"]["resourceVersion"]}, "items": [object]});
        return Ok(json_response(
            code,
            &views::table(rt, &list, call.param("includeObject")),
        ));
    }
    Ok(json_response(code, &object))
}

fn decode_body(call: &Call) -> Result<Value, ApiError> {
    let content_type = call.header("content-type");
    if content_type.contains("yaml") {
        return parse_yaml(&call.body);
    }
    if !content_type.is_empty() && !content_type.contains("json") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    serde_json::from_slice(&call.body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

fn parse_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// `pods/eviction`: an Eviction deletes the pod (no disruption budgets are modelled).
fn evict(shared: &Arc<Shared>, call: &Call, target: &Target) -> Result<Response<Body>, ApiError> {
    let eviction = decode_body(call)?;
    let name = target.name.as_deref().unwrap_or_default();
    // The subresource decodes into Eviction: a body without apiVersion/kind is one (kube-rs sends that).
    if eviction.get("kind").is_some_and(|k| k != "Eviction") {
        return Err(ApiError::bad_request(
            "the body of an eviction must be an Eviction",
        ));
    }
    let body_name = eviction["metadata"]["name"].as_str().unwrap_or_default();
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object: {name} vs {body_name}"
        )));
    }
    let options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or(Value::Null);
    shared.store.delete_typed(
        &target.rt,
        target.namespace.as_deref(),
        name,
        &options,
        is_dry_run(call),
    )?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// SelfSubjectAccessReview: what `kubectl auth can-i` asks.
fn access_review(
    shared: &Arc<Shared>,
    call: &Call,
    identity: &Identity,
    target: &Target,
) -> Result<Response<Body>, ApiError> {
    if call.method != "POST" || target.rt.plural != "selfsubjectaccessreviews" {
        return Err(ApiError::method_not_allowed());
    }
    let mut review = decode_body(call)?;
    let spec = &review["spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let attrs = if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        Attributes::Resource {
            verb: text(&r["verb"]),
            group: text(&r["group"]),
            resource: text(&r["resource"]),
            subresource: text(&r["subresource"]),
            namespace: text(&r["namespace"]),
            name: text(&r["name"]),
        }
    } else if let Some(n) = spec.get("nonResourceAttributes").filter(|n| n.is_object()) {
        Attributes::NonResource {
            verb: text(&n["verb"]),
            path: text(&n["path"]),
        }
    } else {
        return Err(ApiError::invalid(
            super::status::Subject {
                group: "authorization.k8s.io",
                kind: "SelfSubjectAccessReview",
                name: "",
            },
            "spec.resourceAttributes",
            &Value::Null,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    };
    let allowed = auth::allowed(&shared.store, identity, &attrs);
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by the emulator's RBAC"})
    } else {
        json!({"allowed": false})
    };
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(json_response(201, &review))
}

/// A watch: a chunked stream of JSON events until timeoutSeconds, shutdown or the client leaves.
async fn watch(
    shared: &Arc<Shared>,
    call: &Call,
    target: &Target,
) -> Result<Response<Body>, ApiError> {
    let rt = target.rt.clone();
    let mut query = list_query(call, &rt)?;
    if let Some(name) = &target.name {
        query.fields = FieldSelector::parse(&format!("metadata.name={name}"), &[])
            .map_err(ApiError::bad_request)?;
    }
    let namespace = target.namespace.clone();
    let timeout = match call.param("timeoutSeconds") {
        Some(t) => Duration::from_secs(t.parse().map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds: {t:?} is not a number"))
        })?),
        None => Duration::from_secs(1800),
    };
    // Streaming lists (client-go's WatchList, on in kubectl 1.37): the current
    // objects, then a bookmark marking the end of the initial events.
    let initial_events = call.flag("sendInitialEvents");
    if initial_events && call.param("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            super::status::Subject {
                group: "meta.k8s.io",
                kind: "ListOptions",
                name: "",
            },
            "resourceVersionMatch",
            &json!(call.param("resourceVersionMatch").unwrap_or_default()),
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    let requested = call
        .param("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0" && !initial_events);
    let start =
        match requested {
            Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion: {rv:?} is not valid"))
            })?),
            None => None,
        };
    let store = shared.store.clone();
    let mut changed = store.inner.changed.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let key = rt.key();
    let matches = move |ns: &str, object: &Value| {
        namespace.as_deref().is_none_or(|n| n == ns)
            && query.labels.matches(object)
            && query.fields.matches(object)
    };
    let line = |kind: &str, object: Value| {
        let mut bytes =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    };
    tokio::spawn(async move {
        let mut cursor = match start {
            Some(rv) => rv,
            None => {
                let (rv, objects) = store.snapshot(&key);
                for (ns, object) in objects {
                    if matches(&ns, &object)
                        && tx.send(line("ADDED", present(&rt, &object))).await.is_err()
                    {
                        return;
                    }
                }
                if initial_events {
                    let bookmark = json!({
                        "kind": rt.kind,
                        "apiVersion": rt.api_version(),
                        "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}},
                    });
                    if tx.send(line("BOOKMARK", bookmark)).await.is_err() {
                        return;
                    }
                }
                rv
            }
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            changed.borrow_and_update();
            match store.events_since(cursor, &key) {
                Err(oldest) => {
                    let status = ApiError::expired(cursor, oldest).to_status();
                    let _ = tx.send(line("ERROR", status)).await;
                    return;
                }
                Ok(events) => {
                    for event in events {
                        cursor = event.rv;
                        if matches(&event.namespace, &event.object) {
                            let kind = match event.kind {
                                EventKind::Added => "ADDED",
                                EventKind::Modified => "MODIFIED",
                                EventKind::Deleted => "DELETED",
                            };
                            if tx
                                .send(line(kind, present(&rt, &event.object)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            }
            tokio::select! {
                result = changed.changed() => if result.is_err() { return },
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(BoxBody::new(StreamBody::new(stream)))
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn parse_query(raw: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    BoxBody::new(Full::new(bytes.into()))
}

fn empty() -> Response<Body> {
    json_response(200, &json!({}))
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn text_response(code: u16, text: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(full(text.to_string()))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

pub(crate) fn status_response(err: &ApiError) -> Response<Body> {
    json_response(err.code, &err.to_status())
}
