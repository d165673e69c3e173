//! The emulator's object store: every object as JSON under (group, resource,
//! namespace, name), one global resourceVersion counter, the bounded event
//! history watches read from, and the write paths (create, update, patch,
//! server-side apply, delete) with the apiserver's semantics. HTTP handlers
//! and the library's [`Store`] handle go through the same functions, so both
//! produce the same resourceVersions and watch events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use super::fields::{self, FieldSet, ListShapes, Scope};
use super::resources::{
    BuiltinShapes, Registry, ResourceType, SchemaShapes, StorageKey, split_api_version,
};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, Subject};

/// The default number of watch events kept for watches that resume from a resourceVersion.
pub const DEFAULT_WATCH_HISTORY: usize = 1000;

/// What a watch event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The object was created.
    Added,
    /// The object changed.
    Modified,
    /// The object is gone.
    Deleted,
}

impl EventKind {
    /// `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change, as kept for watches.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub rv: u64,
    pub key: StorageKey,
    pub namespace: String,
    pub kind: EventKind,
    pub object: Arc<Value>,
}

/// Work for the emulator's controllers, queued by writes.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    /// Fill a service-account token Secret.
    FillToken { namespace: String, name: String },
    /// Service accounts appeared in a namespace: fill Secrets waiting for them.
    ServiceAccountAdded { namespace: String },
    /// A namespace is terminating: delete its content, then it.
    FinalizeNamespace { name: String },
    /// A namespace was created: add its `default` ServiceAccount and `kube-root-ca.crt`.
    NamespaceCreated { name: String },
    /// A CRD was created or changed: set its conditions.
    EstablishCrd { name: String },
}

/// Errors loading or writing the persisted state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file could not be read.
    #[error("Could not read the state file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not the JSON this emulator writes.
    #[error("The state file {path} is not an emulator state")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Handle on an emulator's objects (cheap to clone).
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    state: Mutex<State>,
    /// The latest resourceVersion, for watches to wait on.
    pub changed: watch::Sender<u64>,
    work: mpsc::UnboundedSender<Work>,
    state_path: Option<PathBuf>,
    history_limit: usize,
    /// The CA certificate PEM, for `ca.crt` in tokens and `kube-root-ca.crt`.
    pub ca_pem: String,
}

pub(crate) struct State {
    rv: u64,
    objects: BTreeMap<StorageKey, BTreeMap<(String, String), Arc<Value>>>,
    history: VecDeque<StoredEvent>,
    /// Watches from a resourceVersion below this fail with 410 Expired.
    compacted: u64,
    pub registry: Registry,
    /// Service-account token → (namespace, Secret name).
    sa_tokens: HashMap<String, (String, String)>,
    ip_counter: u32,
}

/// How a write is attributed and carried out.
#[derive(Debug, Clone)]
pub(crate) struct WriteOptions {
    /// The field manager (from `fieldManager`, else the client's user agent).
    pub manager: String,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// Writing the `status` subresource.
    pub status: bool,
}

impl WriteOptions {
    pub(crate) fn manager(manager: &str) -> WriteOptions {
        WriteOptions {
            manager: manager.to_string(),
            dry_run: false,
            status: false,
        }
    }
}

/// The kinds of PATCH bodies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply { force: bool },
}

/// A LIST query.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// The outcome of a DELETE.
#[derive(Debug)]
pub(crate) struct Deleted {
    /// The object as deleted, or as marked for deletion.
    pub object: Value,
    /// True when it is gone now; false when finalizers hold it.
    pub gone: bool,
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn subject<'a>(rt: &'a ResourceType, name: &'a str) -> Subject<'a> {
    Subject {
        group: &rt.group,
        kind: &rt.plural,
        name,
    }
}

fn kind_subject<'a>(rt: &'a ResourceType, name: &'a str) -> Subject<'a> {
    Subject {
        group: &rt.group,
        kind: &rt.kind,
        name,
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

/// The list shapes for a type.
fn shapes_for(rt: &ResourceType) -> Box<dyn ListShapes + '_> {
    match &rt.crd {
        Some(_) => Box::new(SchemaShapes(rt.schema.as_ref())),
        None => Box::new(BuiltinShapes),
    }
}

impl Store {
    pub(crate) fn new(
        ca_pem: String,
        state_path: Option<PathBuf>,
        history_limit: usize,
        crds: &[Value],
    ) -> Result<(Store, mpsc::UnboundedReceiver<Work>), StateError> {
        let (work, work_rx) = mpsc::unbounded_channel();
        let (changed, _) = watch::channel(0);
        let mut state = State {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            registry: Registry::builtin(),
            sa_tokens: HashMap::new(),
            ip_counter: 1,
        };
        let loaded = match &state_path {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
                    path: path.clone(),
                    source,
                })?;
                let saved: SavedState<Value> =
                    serde_json::from_str(&text).map_err(|source| StateError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                state.restore(saved);
                true
            }
            _ => false,
        };
        let store = Store {
            inner: Arc::new(StoreInner {
                state: Mutex::new(state),
                changed,
                work,
                state_path,
                history_limit: history_limit.max(1),
                ca_pem,
            }),
        };
        if !loaded {
            store.seed();
        }
        for crd in crds {
            let mut crd = crd.clone();
            if crd.get("apiVersion").is_none() {
                crd["apiVersion"] = json!("apiextensions.k8s.io/v1");
                crd["kind"] = json!("CustomResourceDefinition");
            }
            let name = meta_str(&crd, "name").to_string();
            if store
                .get(
                    "apiextensions.k8s.io/v1",
                    "customresourcedefinitions",
                    None,
                    &name,
                )
                .is_none()
            {
                // A CRD the options name that cannot be created is reported by its absence in discovery.
                let _ = store.create(crd);
            }
        }
        {
            // A fresh apiserver's watch cache starts at its current resourceVersion:
            // the seed's events are not kept, so each idle instance stays small.
            let mut state = store.lock();
            state.history.clear();
            state.compacted = state.rv;
            store.inner.changed.send_replace(state.rv);
        }
        Ok((store, work_rx))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent map of JSON values; keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn seed(&self) {
        let options = WriteOptions::manager("kube-apiserver");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            self.seed_object(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                &options,
            );
        }
        for object in default_rbac() {
            self.seed_object(object, &options);
        }
        self.seed_object(
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.1", "clusterIPs": ["10.43.0.1"],
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                    "sessionAffinity": "None"}
            }),
            &options,
        );
    }

    fn seed_object(&self, object: Value, options: &WriteOptions) {
        let mut state = self.lock();
        let api_version = object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let Some(rt) = state.registry.lookup(&api_version, &kind).cloned() else {
            return;
        };
        let namespace = meta_str(&object, "namespace").to_string();
        let ns = (!namespace.is_empty()).then_some(namespace.as_str());
        // Seed objects are built-in and valid; nothing to report if one already exists.
        let _ = self.create_locked(&mut state, &rt, ns, object, options, None);
    }

    /// The resource type for an apiVersion and a kind or resource name.
    pub(crate) fn resource_type(
        &self,
        api_version: &str,
        kind_or_resource: &str,
    ) -> Result<ResourceType, ApiError> {
        self.lock()
            .registry
            .lookup(api_version, kind_or_resource)
            .cloned()
            .ok_or_else(ApiError::no_route)
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// One object, or None.
    pub fn get(
        &self,
        api_version: &str,
        kind_or_resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let rt = self.resource_type(api_version, kind_or_resource).ok()?;
        self.get_typed(&rt, namespace, name).ok()
    }

    /// Every object of a type (in one namespace, or all when None), sorted by namespace and name.
    pub fn list(
        &self,
        api_version: &str,
        kind_or_resource: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let Ok(rt) = self.resource_type(api_version, kind_or_resource) else {
            return Vec::new();
        };
        self.list_typed(&rt, namespace, &ListQuery::default())
            .map(|list| list["items"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Creates an object (apiVersion, kind and namespace from the object), as a POST would.
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        let (rt, ns) = self.type_of(&object)?;
        self.create_typed(
            &rt,
            ns.as_deref(),
            object,
            &WriteOptions::manager("emulator"),
        )
    }

    /// Replaces an object, as a PUT would (a stale resourceVersion is a Conflict).
    pub fn update(&self, object: Value) -> Result<Value, ApiError> {
        let (rt, ns) = self.type_of(&object)?;
        let name = meta_str(&object, "name").to_string();
        self.replace_typed(
            &rt,
            ns.as_deref(),
            &name,
            object,
            &WriteOptions::manager("emulator"),
        )
    }

    /// Replaces an object's status, as a PUT to `/status` would.
    pub fn update_status(&self, object: Value) -> Result<Value, ApiError> {
        let (rt, ns) = self.type_of(&object)?;
        let name = meta_str(&object, "name").to_string();
        let options = WriteOptions {
            status: true,
            ..WriteOptions::manager("emulator")
        };
        self.replace_typed(&rt, ns.as_deref(), &name, object, &options)
    }

    /// Server-side apply of `object` by `field_manager`.
    pub fn apply(
        &self,
        object: Value,
        field_manager: &str,
        force: bool,
    ) -> Result<Value, ApiError> {
        let (rt, ns) = self.type_of(&object)?;
        let name = meta_str(&object, "name").to_string();
        self.patch_typed(
            &rt,
            ns.as_deref(),
            &name,
            PatchKind::Apply { force },
            object,
            &WriteOptions::manager(field_manager),
        )
        .map(|(object, _)| object)
    }

    /// Deletes an object; returns it as it was deleted, or as marked when finalizers hold it.
    pub fn delete(
        &self,
        api_version: &str,
        kind_or_resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let rt = self.resource_type(api_version, kind_or_resource)?;
        self.delete_typed(&rt, namespace, name, &Value::Null, false)
            .map(|d| d.object)
    }

    fn type_of(&self, object: &Value) -> Result<(ResourceType, Option<String>), ApiError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        if api_version.is_empty() || kind.is_empty() {
            return Err(ApiError::bad_request(
                "Object 'Kind' is missing in the object",
            ));
        }
        let rt = self.resource_type(api_version, kind)?;
        let ns = meta_str(object, "namespace");
        let ns = if rt.namespaced {
            Some(if ns.is_empty() { "default" } else { ns }.to_string())
        } else {
            None
        };
        Ok((rt, ns))
    }

    pub(crate) fn get_typed(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let state = self.lock();
        state
            .object(&rt.key(), namespace.unwrap_or_default(), name)
            .map(|o| present(rt, o))
            .ok_or_else(|| ApiError::not_found(subject(rt, name)))
    }

    pub(crate) fn list_typed(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        query: &ListQuery,
    ) -> Result<Value, ApiError> {
        let state = self.lock();
        let start_after = match &query.continue_token {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        let mut items = Vec::new();
        let mut remaining = 0usize;
        let mut next = None;
        if let Some(objects) = state.objects.get(&rt.key()) {
            for ((ns, name), object) in objects {
                if namespace.is_some_and(|n| n != ns) {
                    continue;
                }
                if let Some((after_ns, after_name)) = &start_after
                    && (ns, name) <= (after_ns, after_name)
                {
                    continue;
                }
                if !query.labels.matches(object) || !query.fields.matches(object) {
                    continue;
                }
                if query.limit.is_some_and(|limit| items.len() >= limit) {
                    if next.is_none()
                        && let Some(last) = items.last()
                    {
                        next = Some(encode_continue(
                            meta_str(last, "namespace"),
                            meta_str(last, "name"),
                        ));
                    }
                    remaining += 1;
                    continue;
                }
                items.push(present(rt, object));
            }
        }
        let mut metadata = json!({"resourceVersion": state.rv.to_string()});
        if let Some(token) = next {
            metadata["continue"] = json!(token);
            metadata["remainingItemCount"] = json!(remaining);
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": metadata,
            "items": items,
        }))
    }

    pub(crate) fn create_typed(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        object: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let created = self.create_locked(&mut state, rt, namespace, object, options, None)?;
        Ok(present(rt, &created))
    }

    fn create_locked(
        &self,
        state: &mut State,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        options: &WriteOptions,
        applied_managers: Option<Vec<ManagerEntry>>,
    ) -> Result<Value, ApiError> {
        check_type(rt, &object)?;
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let ns = check_namespace(rt, namespace, &mut object)?;
        if !meta_str(&object, "resourceVersion").is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut name = meta_str(&object, "name").to_string();
        if name.is_empty() {
            let prefix = meta_str(&object, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::required(
                    kind_subject(rt, ""),
                    "metadata.name",
                    "name or generateName is required",
                ));
            }
            name = loop {
                let candidate = format!("{prefix}{}", random_suffix());
                if state.object(&rt.key(), &ns, &candidate).is_none() {
                    break candidate;
                }
            };
            object["metadata"]["name"] = json!(name);
        }
        if let Some(why) = rt.name_rule().check(&name) {
            return Err(ApiError::invalid(
                kind_subject(rt, &name),
                "metadata.name",
                &json!(name),
                &why,
            ));
        }
        if rt.namespaced {
            state.check_namespace_open(&ns)?;
        }
        if state.object(&rt.key(), &ns, &name).is_some() {
            return Err(ApiError::already_exists(subject(rt, &name)));
        }
        validate(rt, &object, None)?;
        let meta = object["metadata"]
            .as_object_mut()
            .ok_or_else(ApiError::no_route)?;
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        for server_set in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(server_set);
        }
        if rt.status && !(rt.group.is_empty() && rt.plural == "nodes") {
            // Status is the server's (or a controller's, through /status) to set; nodes may bring theirs.
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        state.apply_defaults(rt, &mut object);
        let managers = match applied_managers {
            Some(managers) => managers,
            None => {
                let shapes = shapes_for(rt);
                let scope = Scope::Main {
                    status_subresource: rt.status,
                };
                let set = fields::fields_of(&object, shapes.as_ref(), scope);
                let mut managers = Vec::new();
                if !set.is_empty() {
                    managers.push(ManagerEntry::new(&options.manager, "Update", rt, set, None));
                }
                managers
            }
        };
        write_managers(&mut object, &managers);
        if options.dry_run {
            object["metadata"]["resourceVersion"] = json!((state.rv + 1).to_string());
            return Ok(object);
        }
        let committed = self.commit(state, rt, &ns, &name, Some(object), EventKind::Added);
        self.after_write(state, rt, &ns, &name, None, committed.as_ref());
        committed.ok_or_else(ApiError::no_route)
    }

    pub(crate) fn replace_typed(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type(rt, &object)?;
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let body_name = meta_str(&object, "name");
        if body_name.is_empty() {
            object["metadata"]["name"] = json!(name);
        } else if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut state = self.lock();
        let ns = check_namespace(rt, namespace, &mut object)?;
        let old = state
            .object(&rt.key(), &ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(subject(rt, name)))?;
        let given_rv = meta_str(&object, "resourceVersion");
        if !given_rv.is_empty() && given_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(
                subject(rt, name),
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let uid = meta_str(&object, "uid");
        if !uid.is_empty() && uid != meta_str(&old, "uid") {
            return Err(ApiError::conflict(
                subject(rt, name),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        let new = merge_for_write(rt, &old, object, options.status);
        let result = self.finish_update(&mut state, rt, &ns, name, old, new, options, false)?;
        Ok(present(rt, &result))
    }

    pub(crate) fn patch_typed(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: Value,
        options: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let mut state = self.lock();
        let ns = namespace.unwrap_or_default().to_string();
        let existing = state.object(&rt.key(), &ns, name).cloned();
        match kind {
            PatchKind::Apply { force } => {
                self.apply_locked(&mut state, rt, &ns, name, existing, body, options, force)
            }
            _ => {
                let old = existing.ok_or_else(|| ApiError::not_found(subject(rt, name)))?;
                let mut patched = old.clone();
                match kind {
                    PatchKind::Json => {
                        let patch: json_patch::Patch =
                            serde_json::from_value(body).map_err(|e| {
                                ApiError::bad_request(format!("invalid JSON patch: {e}"))
                            })?;
                        json_patch::patch(&mut patched, &patch).map_err(|e| ApiError {
                            code: 422,
                            reason: "Invalid",
                            message: format!("the server rejected our request due to an error in our request: {e}"),
                            details: None,
                        })?;
                    }
                    PatchKind::Merge => json_patch::merge(&mut patched, &body),
                    PatchKind::Strategic => {
                        if rt.crd.is_some() {
                            return Err(ApiError {
                                code: 415,
                                reason: "UnsupportedMediaType",
                                message: "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
                                details: None,
                            });
                        }
                        strategic_merge(&mut patched, &body, &BuiltinShapes, &mut Vec::new());
                    }
                    PatchKind::Apply { .. } => {}
                }
                check_type(rt, &patched)?;
                if meta_str(&patched, "name") != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        meta_str(&patched, "name")
                    )));
                }
                if meta_str(&patched, "resourceVersion") != meta_str(&old, "resourceVersion") {
                    return Err(ApiError::conflict(
                        subject(rt, name),
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                let new = merge_for_write(rt, &old, patched, options.status);
                let result =
                    self.finish_update(&mut state, rt, &ns, name, old, new, options, false)?;
                Ok((present(rt, &result), false))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_locked(
        &self,
        state: &mut State,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        existing: Option<Value>,
        applied: Value,
        options: &WriteOptions,
        force: bool,
    ) -> Result<(Value, bool), ApiError> {
        check_type(rt, &applied)?;
        let applied_name = meta_str(&applied, "name");
        if applied_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({applied_name}) does not match the name on the URL ({name})"
            )));
        }
        let applied_ns = meta_str(&applied, "namespace");
        if rt.namespaced && !applied_ns.is_empty() && applied_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let shapes = shapes_for(rt);
        let scope = if options.status {
            Scope::Status
        } else {
            Scope::Main {
                status_subresource: rt.status,
            }
        };
        let subresource = options.status.then_some("status");
        let new_set = fields::fields_of(&applied, shapes.as_ref(), scope);
        let created = existing.is_none();
        let base = match &existing {
            Some(live) => live.clone(),
            None => {
                if options.status {
                    return Err(ApiError::not_found(subject(rt, name)));
                }
                let mut skeleton = json!({
                    "apiVersion": rt.api_version(),
                    "kind": rt.kind,
                    "metadata": {"name": name},
                });
                if rt.namespaced {
                    skeleton["metadata"]["namespace"] = json!(ns);
                }
                skeleton
            }
        };
        let mut managers = read_managers(&base);
        let is_self = |m: &ManagerEntry| {
            m.manager == options.manager
                && m.operation == "Apply"
                && m.subresource.as_deref() == subresource
        };
        // Conflicts: another manager owns a leaf this apply sets to a different value.
        let mut conflicts = Vec::new();
        let mut forced: Vec<(usize, Vec<String>)> = Vec::new();
        for path in new_set.paths() {
            if !fields::is_leaf(&new_set, &path) {
                continue;
            }
            for (i, m) in managers.iter().enumerate() {
                if is_self(m) || !m.set.contains(&path) {
                    continue;
                }
                if fields::value_at(&applied, &path) != fields::value_at(&base, &path) {
                    conflicts.push((m.describe(), fields::display_path(&path)));
                    forced.push((i, path.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(ApiError::apply_conflict(&conflicts));
        }
        for (i, path) in forced {
            managers[i].set.remove(&path);
        }
        // Merge, then drop what this manager no longer applies and nobody else owns.
        let mut merged = base.clone();
        let mut scoped = applied.clone();
        if let Some(map) = scoped.as_object_mut() {
            map.retain(|k, _| match scope {
                Scope::Status => k == "status",
                Scope::Main { status_subresource } => !(status_subresource && k == "status"),
            });
            if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| {
                    matches!(
                        k.as_str(),
                        "labels" | "annotations" | "finalizers" | "ownerReferences"
                    )
                });
            }
        }
        fields::merge_applied(&mut merged, &scoped, shapes.as_ref());
        let previous = managers
            .iter()
            .find(|m| is_self(m))
            .map(|m| m.set.clone())
            .unwrap_or_default();
        let mut others = FieldSet::default();
        for m in managers.iter().filter(|m| !is_self(m)) {
            others.union(&m.set);
        }
        let mut dropped: Vec<Vec<String>> = previous
            .paths()
            .into_iter()
            .filter(|p| !new_set.contains(p) && !new_set.touches(p) && !others.touches(p))
            .collect();
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for path in &dropped {
            fields::remove_at(&mut merged, path);
        }
        let now_time = now();
        match managers.iter_mut().find(|m| is_self(m)) {
            Some(entry) => {
                if entry.set != new_set {
                    entry.time = now_time;
                }
                entry.set = new_set;
                entry.api_version = rt.api_version();
            }
            None => managers.push(ManagerEntry::new(
                &options.manager,
                "Apply",
                rt,
                new_set,
                subresource,
            )),
        }
        managers.retain(|m| !m.set.is_empty());
        write_managers(&mut merged, &managers);
        if created {
            let object = self.create_locked(
                state,
                rt,
                Some(ns).filter(|_| rt.namespaced),
                merged,
                options,
                Some(managers),
            )?;
            return Ok((present(rt, &object), true));
        }
        let old = existing.unwrap_or_default();
        let result = self.finish_update(state, rt, ns, name, old, merged, options, true)?;
        Ok((present(rt, &result), false))
    }

    /// Common tail of every update: validation, ownership, generation, finalizer-driven deletion, commit.
    #[allow(clippy::too_many_arguments)]
    fn finish_update(
        &self,
        state: &mut State,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: Value,
        mut new: Value,
        options: &WriteOptions,
        ownership_done: bool,
    ) -> Result<Value, ApiError> {
        validate(rt, &new, Some(&old))?;
        // Server-owned metadata always comes from the stored object.
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(meta) = new["metadata"].as_object_mut() {
                        meta.remove(field);
                    }
                }
            }
        }
        if let Some(meta) = new["metadata"].as_object_mut() {
            meta.remove("selfLink");
        }
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        if !ownership_done {
            let shapes = shapes_for(rt);
            let scope = if options.status {
                Scope::Status
            } else {
                Scope::Main {
                    status_subresource: rt.status,
                }
            };
            let mut managers = read_managers(&old);
            let old_set = fields::fields_of(&old, shapes.as_ref(), scope);
            let new_set = fields::fields_of(&new, shapes.as_ref(), scope);
            let changed = fields::changed_paths(&new_set, &old, &new);
            let removed: Vec<Vec<String>> = old_set
                .paths()
                .into_iter()
                .filter(|p| !new_set.contains(p))
                .collect();
            for m in &mut managers {
                for path in changed.iter().filter(|p| fields::is_leaf(&new_set, p)) {
                    m.set.remove(path);
                }
                for path in &removed {
                    m.set.remove_subtree(path);
                }
            }
            if !changed.is_empty() {
                let subresource = options.status.then_some("status");
                let index = managers.iter().position(|m| {
                    m.manager == options.manager
                        && m.operation == "Update"
                        && m.subresource.as_deref() == subresource
                });
                let entry = match index {
                    Some(i) => &mut managers[i],
                    None => {
                        managers.push(ManagerEntry::new(
                            &options.manager,
                            "Update",
                            rt,
                            FieldSet::default(),
                            subresource,
                        ));
                        let last = managers.len() - 1;
                        &mut managers[last]
                    }
                };
                for path in &changed {
                    entry.set.insert(path);
                }
                entry.time = now();
            }
            managers.retain(|m| !m.set.is_empty());
            write_managers(&mut new, &managers);
        }
        if spec_changed(rt, &old, &new) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        if new == old {
            return Ok(old);
        }
        if options.dry_run {
            return Ok(new);
        }
        let deleting = !meta_str(&old, "deletionTimestamp").is_empty();
        let finalizers_left = new["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let finalized_namespace = rt.group.is_empty()
            && rt.plural == "namespaces"
            && new["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers_left && !finalized_namespace {
            let committed = self.commit(state, rt, ns, name, Some(new), EventKind::Modified);
            let gone = self.commit(state, rt, ns, name, None, EventKind::Deleted);
            self.after_write(state, rt, ns, name, committed.as_ref(), None);
            return gone.ok_or_else(ApiError::no_route);
        }
        let committed = self.commit(state, rt, ns, name, Some(new), EventKind::Modified);
        self.after_write(state, rt, ns, name, Some(&old), committed.as_ref());
        committed.ok_or_else(ApiError::no_route)
    }

    pub(crate) fn delete_typed(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<Deleted, ApiError> {
        let mut state = self.lock();
        let ns = namespace.unwrap_or_default();
        let old = state
            .object(&rt.key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(subject(rt, name)))?;
        let pre = &options["preconditions"];
        if let Some(uid) = pre["uid"].as_str()
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                subject(rt, name),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = pre["resourceVersion"].as_str()
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                subject(rt, name),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion")
                ),
            ));
        }
        if let Some(policy) = options["propagationPolicy"].as_str()
            && !matches!(policy, "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                Subject {
                    group: &rt.group,
                    kind: "DeleteOptions",
                    name: "",
                },
                "propagationPolicy",
                &json!(policy),
                "supported values: \"Orphan\", \"Background\", \"Foreground\"",
            ));
        }
        if dry_run {
            return Ok(Deleted {
                object: present(rt, &old),
                gone: true,
            });
        }
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        let has_finalizers = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if is_namespace || has_finalizers {
            if !meta_str(&old, "deletionTimestamp").is_empty() {
                return Ok(Deleted {
                    object: present(rt, &old),
                    gone: false,
                });
            }
            let mut marked = old.clone();
            marked["metadata"]["deletionTimestamp"] = json!(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if is_namespace {
                marked["status"]["phase"] = json!("Terminating");
            }
            let committed = self
                .commit(&mut state, rt, ns, name, Some(marked), EventKind::Modified)
                .ok_or_else(ApiError::no_route)?;
            if is_namespace {
                self.queue(Work::FinalizeNamespace {
                    name: name.to_string(),
                });
            }
            return Ok(Deleted {
                object: present(rt, &committed),
                gone: false,
            });
        }
        let gone = self
            .commit(&mut state, rt, ns, name, None, EventKind::Deleted)
            .ok_or_else(ApiError::no_route)?;
        self.after_write(&mut state, rt, ns, name, Some(&old), None);
        Ok(Deleted {
            object: present(rt, &gone),
            gone: true,
        })
    }

    /// Writes `new` (or removes the object when None) under the next resourceVersion; returns what was stored.
    fn commit(
        &self,
        state: &mut State,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        new: Option<Value>,
        kind: EventKind,
    ) -> Option<Value> {
        state.rv += 1;
        let rv = state.rv;
        let key = rt.key();
        let objects = state.objects.entry(key.clone()).or_default();
        // One allocation serves the map and the watch history.
        let shared = match new {
            Some(mut object) => {
                object["metadata"]["resourceVersion"] = json!(rv.to_string());
                let shared = Arc::new(object);
                objects.insert((ns.to_string(), name.to_string()), shared.clone());
                shared
            }
            None => {
                let removed = objects.remove(&(ns.to_string(), name.to_string()))?;
                let mut object = Arc::unwrap_or_clone(removed);
                object["metadata"]["resourceVersion"] = json!(rv.to_string());
                Arc::new(object)
            }
        };
        let object = shared.as_ref();
        if key.group.is_empty() && key.resource == "secrets" {
            state.index_token(ns, name, kind, object);
        }
        let object = object.clone();
        state.history.push_back(StoredEvent {
            rv,
            key,
            namespace: ns.to_string(),
            kind,
            object: shared,
        });
        while state.history.len() > self.inner.history_limit {
            if let Some(dropped) = state.history.pop_front() {
                state.compacted = dropped.rv;
            }
        }
        self.persist(state);
        self.inner.changed.send_replace(rv);
        Some(object)
    }

    /// Reactions the apiserver's own controllers and registries have to a write.
    fn after_write(
        &self,
        state: &mut State,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("apiextensions.k8s.io", "customresourcedefinitions") => match new {
                Some(crd) => {
                    state.registry.register_crd(crd);
                    let established = crd["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Established"));
                    let renamed = old.is_some_and(|o| o["spec"]["names"] != crd["spec"]["names"]);
                    if !established || renamed {
                        self.queue(Work::EstablishCrd {
                            name: name.to_string(),
                        });
                    }
                }
                None => {
                    let removed_types: Vec<ResourceType> = state
                        .registry
                        .types()
                        .iter()
                        .filter(|t| t.crd.as_deref() == Some(name))
                        .cloned()
                        .collect();
                    if let Some(t) = removed_types.first() {
                        let keys: Vec<(String, String)> = state
                            .objects
                            .get(&t.key())
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default();
                        for (obj_ns, obj_name) in keys {
                            self.commit(state, t, &obj_ns, &obj_name, None, EventKind::Deleted);
                        }
                    }
                    state.registry.unregister_crd(name);
                }
            },
            ("", "secrets")
                if new.is_some_and(|s| {
                    s["type"] == "kubernetes.io/service-account-token"
                        && s["data"]["token"].is_null()
                }) =>
            {
                self.queue(Work::FillToken {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                });
            }
            ("", "serviceaccounts") if old.is_none() && new.is_some() => {
                self.queue(Work::ServiceAccountAdded {
                    namespace: ns.to_string(),
                });
            }
            ("", "namespaces") if old.is_none() && new.is_some() => {
                self.queue(Work::NamespaceCreated {
                    name: name.to_string(),
                });
            }
            _ => {}
        }
        if new.is_none() && rt.namespaced {
            let terminating = state
                .object(&key("", "namespaces"), "", ns)
                .is_some_and(|n| !meta_str(n, "deletionTimestamp").is_empty());
            if terminating {
                self.queue(Work::FinalizeNamespace {
                    name: ns.to_string(),
                });
            }
        }
    }

    /// The namespace controller's `/finalize`: drops `spec.finalizers`, so a terminating namespace goes.
    pub(crate) fn remove_namespace_finalizer(&self, name: &str) {
        let mut state = self.lock();
        let Some(rt) = state.registry.lookup("v1", "namespaces").cloned() else {
            return;
        };
        let Some(old) = state.object(&rt.key(), "", name).cloned() else {
            return;
        };
        let mut new = old.clone();
        new["spec"]["finalizers"] = json!([]);
        // Only the stored object changes; an error here means the namespace changed under us and is retried.
        let _ = self.finish_update(
            &mut state,
            &rt,
            "",
            name,
            old,
            new,
            &WriteOptions::manager("kube-controller-manager"),
            false,
        );
    }

    pub(crate) fn queue(&self, work: Work) {
        // The receiver lives as long as the emulator; after shutdown there is nobody to do the work.
        let _ = self.inner.work.send(work);
    }

    fn persist(&self, state: &State) {
        let Some(path) = &self.inner.state_path else {
            return;
        };
        let saved = state.save();
        let Ok(text) = serde_json::to_string(&saved) else {
            return;
        };
        let tmp = path.with_extension("tmp");
        // Persistence is best effort for a test peer: a failed write shows up as lost state on restart.
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    /// Events after `rv` in the retained history, or Err(oldest) when `rv` is older than it.
    pub(crate) fn events_since(&self, rv: u64, key: &StorageKey) -> Result<Vec<StoredEvent>, u64> {
        let state = self.lock();
        if rv < state.compacted {
            return Err(state.compacted);
        }
        Ok(state
            .history
            .iter()
            .filter(|e| e.rv > rv && e.key == *key)
            .cloned()
            .collect())
    }

    /// Names of the cluster-scoped `resource` (core group) objects created or
    /// changed after `rv` and still in the history, with the resourceVersion
    /// they were read at: for controllers that poll but must not miss an
    /// object that lived between two polls.
    pub fn touched_since(&self, resource: &str, rv: u64) -> (u64, Vec<Arc<Value>>) {
        let state = self.lock();
        let key = key("", resource);
        let touched = state
            .history
            .iter()
            .filter(|e| e.rv > rv && e.key == key && e.kind != EventKind::Deleted)
            .map(|e| e.object.clone())
            .collect();
        (state.rv, touched)
    }

    /// All current objects of a key with the current resourceVersion (the start of a watch without one).
    pub(crate) fn snapshot(&self, key: &StorageKey) -> (u64, Vec<(String, Arc<Value>)>) {
        let state = self.lock();
        let objects = state
            .objects
            .get(key)
            .map(|m| {
                m.iter()
                    .map(|((ns, _), o)| (ns.clone(), o.clone()))
                    .collect()
            })
            .unwrap_or_default();
        (state.rv, objects)
    }

    /// The identity a service-account token authenticates as, if it is a live one.
    pub(crate) fn service_account_for_token(&self, token: &str) -> Option<(String, String)> {
        let state = self.lock();
        let (ns, secret_name) = state.sa_tokens.get(token)?;
        let secret = state.object(&key("", "secrets"), ns, secret_name)?;
        let sa_name =
            secret["metadata"]["annotations"]["kubernetes.io/service-account.name"].as_str()?;
        let sa_uid =
            secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"].as_str()?;
        let sa = state.object(&key("", "serviceaccounts"), ns, sa_name)?;
        (meta_str(sa, "uid") == sa_uid).then(|| (ns.clone(), sa_name.to_string()))
    }

    /// The objects of each of `keys`.
    pub(crate) fn all_objects_by_key(
        &self,
        keys: &[StorageKey],
    ) -> HashMap<StorageKey, Vec<Value>> {
        let state = self.lock();
        keys.iter()
            .map(|k| {
                let objects = state
                    .objects
                    .get(k)
                    .map(|m| m.values().map(|o| o.as_ref().clone()).collect())
                    .unwrap_or_default();
                (k.clone(), objects)
            })
            .collect()
    }

    /// Every object, grouped by `<resource>.<group>` (core: `<resource>`), for dumps.
    pub(crate) fn all_objects(&self) -> BTreeMap<String, Vec<Value>> {
        let state = self.lock();
        let mut out = BTreeMap::new();
        for (key, objects) in &state.objects {
            if objects.is_empty() {
                continue;
            }
            let name = if key.group.is_empty() {
                key.resource.clone()
            } else {
                format!("{}.{}", key.resource, key.group)
            };
            out.insert(name, objects.values().map(|o| o.as_ref().clone()).collect());
        }
        out
    }
}

fn key(group: &str, resource: &str) -> StorageKey {
    StorageKey {
        group: group.to_string(),
        resource: resource.to_string(),
    }
}

impl State {
    fn object(&self, key: &StorageKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .map(Arc::as_ref)
    }

    fn check_namespace_open(&self, ns: &str) -> Result<(), ApiError> {
        let Some(namespace) = self.object(&key("", "namespaces"), "", ns) else {
            return Err(ApiError::not_found(Subject {
                group: "",
                kind: "namespaces",
                name: ns,
            }));
        };
        if !meta_str(namespace, "deletionTimestamp").is_empty() {
            let mut err = ApiError::forbidden(
                Subject {
                    group: "",
                    kind: "namespaces",
                    name: ns,
                },
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            );
            err.details = Some(json!({
                "name": ns, "kind": "namespaces",
                "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]
            }));
            return Err(err);
        }
        Ok(())
    }

    fn apply_defaults(&mut self, rt: &ResourceType, object: &mut Value) {
        let name = meta_str(object, "name").to_string();
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") => {
                object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
                if object["spec"]["finalizers"].is_null() {
                    object["spec"]["finalizers"] = json!(["kubernetes"]);
                }
                object["status"] = json!({"phase": "Active"});
            }
            ("", "secrets") => {
                if object["type"].is_null() {
                    object["type"] = json!("Opaque");
                }
                fold_string_data(object);
            }
            ("", "services") => {
                if object["spec"]["type"].is_null() {
                    object["spec"]["type"] = json!("ClusterIP");
                }
                if object["spec"]["clusterIP"].is_null() && object["spec"]["type"] != "ExternalName"
                {
                    self.ip_counter += 1;
                    let n = self.ip_counter;
                    let ip = format!("10.43.{}.{}", (n >> 8) & 0xff, n & 0xff);
                    object["spec"]["clusterIP"] = json!(ip);
                    object["spec"]["clusterIPs"] = json!([ip]);
                }
                if object["spec"]["sessionAffinity"].is_null() {
                    object["spec"]["sessionAffinity"] = json!("None");
                }
                if let Some(ports) = object["spec"]["ports"].as_array_mut() {
                    for port in ports {
                        if port["protocol"].is_null() {
                            port["protocol"] = json!("TCP");
                        }
                        if port["targetPort"].is_null() {
                            port["targetPort"] = port["port"].clone();
                        }
                    }
                }
                if object["status"].is_null() {
                    object["status"] = json!({"loadBalancer": {}});
                }
            }
            ("", "pods") => {
                if object["status"]["phase"].is_null() {
                    object["status"]["phase"] = json!("Pending");
                }
                if object["spec"]["restartPolicy"].is_null() {
                    object["spec"]["restartPolicy"] = json!("Always");
                }
            }
            ("apps", "deployments") => {
                if object["spec"]["replicas"].is_null() {
                    object["spec"]["replicas"] = json!(1);
                }
                if object["spec"]["strategy"].is_null() {
                    object["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
                }
            }
            _ => {}
        }
    }

    fn index_token(&mut self, ns: &str, name: &str, kind: EventKind, secret: &Value) {
        self.sa_tokens
            .retain(|_, (tns, tname)| !(tns == ns && tname == name));
        if kind == EventKind::Deleted || secret["type"] != "kubernetes.io/service-account-token" {
            return;
        }
        let Some(encoded) = secret["data"]["token"].as_str() else {
            return;
        };
        if let Ok(token) = data_encoding::BASE64.decode(encoded.as_bytes())
            && let Ok(token) = String::from_utf8(token)
        {
            self.sa_tokens
                .insert(token, (ns.to_string(), name.to_string()));
        }
    }

    fn save(&self) -> SavedState<&Value> {
        let mut objects = BTreeMap::new();
        for (key, map) in &self.objects {
            if map.is_empty() {
                continue;
            }
            objects.insert(
                format!("{}/{}", key.group, key.resource),
                map.values().map(Arc::as_ref).collect(),
            );
        }
        SavedState {
            resource_version: self.rv,
            objects,
        }
    }

    fn restore(&mut self, saved: SavedState<Value>) {
        self.rv = saved.resource_version;
        self.compacted = saved.resource_version;
        for (name, objects) in saved.objects {
            let (group, resource) = name.split_once('/').unwrap_or(("", name.as_str()));
            let key = key(group, resource);
            let is_crd = group == "apiextensions.k8s.io" && resource == "customresourcedefinitions";
            for object in objects {
                if is_crd {
                    self.registry.register_crd(&object);
                }
                let ns = meta_str(&object, "namespace").to_string();
                let obj_name = meta_str(&object, "name").to_string();
                if group.is_empty() && resource == "secrets" {
                    self.index_token(&ns, &obj_name, EventKind::Added, &object);
                }
                self.objects
                    .entry(key.clone())
                    .or_default()
                    .insert((ns, obj_name), Arc::new(object));
            }
        }
    }
}

/// The persisted state: the resourceVersion counter and every object.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedState<V> {
    #[serde(rename = "resourceVersion")]
    resource_version: u64,
    objects: BTreeMap<String, Vec<V>>,
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct ManagerEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    set: FieldSet,
}

impl ManagerEntry {
    fn new(
        manager: &str,
        operation: &str,
        rt: &ResourceType,
        set: FieldSet,
        subresource: Option<&str>,
    ) -> ManagerEntry {
        ManagerEntry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: rt.api_version(),
            time: now(),
            subresource: subresource.map(str::to_string),
            set,
        }
    }

    /// How conflict messages name the manager.
    fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {} at {}", self.api_version, self.time));
        }
        out
    }
}

fn read_managers(object: &Value) -> Vec<ManagerEntry> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| ManagerEntry {
                    manager: e["manager"].as_str().unwrap_or_default().to_string(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                    time: e["time"].as_str().unwrap_or_default().to_string(),
                    subresource: e["subresource"].as_str().map(str::to_string),
                    set: FieldSet::from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_managers(object: &mut Value, managers: &[ManagerEntry]) {
    let entries: Vec<Value> = managers
        .iter()
        .map(|m| {
            let mut entry = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": m.set.to_fields_v1(),
            });
            if let Some(sub) = &m.subresource {
                entry["subresource"] = json!(sub);
            }
            entry
        })
        .collect();
    if let Some(meta) = object["metadata"].as_object_mut() {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// The object as served for a type's version (custom resources answer in the version asked for).
pub(crate) fn present(rt: &ResourceType, object: &Value) -> Value {
    let mut object = object.clone();
    object["apiVersion"] = json!(rt.api_version());
    object
}

/// The body's apiVersion and kind must be the path's.
fn check_type(rt: &ResourceType, object: &Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not a JSON object",
        ));
    }
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the object",
        ));
    }
    let (group, _) = split_api_version(api_version);
    if group != rt.group {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

/// The namespace the object lands in; the body's must match the path's.
fn check_namespace(
    rt: &ResourceType,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<String, ApiError> {
    let body_ns = meta_str(object, "namespace").to_string();
    if !rt.namespaced {
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        return Ok(String::new());
    }
    let ns = namespace.unwrap_or("default").to_string();
    if !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    object["metadata"]["namespace"] = json!(ns);
    Ok(ns)
}

/// Type-specific validation (immutable fields, CRD naming).
fn validate(rt: &ResourceType, new: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = meta_str(new, "name");
    let subject = kind_subject(rt, name);
    for (field, value) in [
        ("labels", &new["metadata"]["labels"]),
        ("annotations", &new["metadata"]["annotations"]),
    ] {
        if let Some(map) = value.as_object()
            && let Some((k, v)) = map.iter().find(|(_, v)| !v.is_string())
        {
            return Err(ApiError::invalid(
                subject,
                &format!("metadata.{field}.{k}"),
                v,
                "must be a string",
            ));
        }
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let spec = &new["spec"];
            let expected = format!(
                "{}.{}",
                spec["names"]["plural"].as_str().unwrap_or_default(),
                spec["group"].as_str().unwrap_or_default()
            );
            if name != expected {
                return Err(ApiError::invalid(
                    subject,
                    "metadata.name",
                    &json!(name),
                    "must be spec.names.plural+\".\"+spec.group",
                ));
            }
            if spec["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                return Err(ApiError::required(subject, "spec.names.kind", ""));
            }
            let versions = spec["versions"].as_array().map(Vec::len).unwrap_or(0);
            if versions == 0 {
                return Err(ApiError::required(
                    subject,
                    "spec.versions",
                    "must have exactly one version marked as storage version",
                ));
            }
            if let Some(old) = old
                && old["spec"]["scope"] != spec["scope"]
            {
                return Err(ApiError::invalid(
                    subject,
                    "spec.scope",
                    &spec["scope"],
                    "field is immutable",
                ));
            }
        }
        ("", "secrets") | ("", "configmaps") => {
            if let Some(old) = old {
                if old["immutable"] == json!(true) {
                    for field in ["data", "stringData", "binaryData"] {
                        if old[field] != new[field]
                            && !(field == "stringData" && new[field].is_null())
                        {
                            return Err(ApiError::invalid(
                                subject,
                                field,
                                &Value::Null,
                                "field is immutable when `immutable` is set",
                            ));
                        }
                    }
                    if new["immutable"] != json!(true) {
                        return Err(ApiError::invalid(
                            subject,
                            "immutable",
                            &new["immutable"],
                            "field is immutable when `immutable` is set",
                        ));
                    }
                }
                if rt.plural == "secrets" && !new["type"].is_null() && old["type"] != new["type"] {
                    return Err(ApiError::invalid(
                        subject,
                        "type",
                        &new["type"],
                        "field is immutable",
                    ));
                }
            }
        }
        ("apps", "deployments") => {
            if let Some(old) = old
                && old["spec"]["selector"] != new["spec"]["selector"]
            {
                return Err(ApiError::invalid(
                    subject,
                    "spec.selector",
                    &new["spec"]["selector"],
                    "field is immutable",
                ));
            }
        }
        ("", "services") => {
            if let Some(old) = old {
                let new_ip = &new["spec"]["clusterIP"];
                if !new_ip.is_null() && old["spec"]["clusterIP"] != *new_ip {
                    return Err(ApiError::invalid(
                        subject,
                        "spec.clusterIPs[0]",
                        new_ip,
                        "may not change once set",
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The object a write stores: the status subresource takes only status, the main resource keeps the stored status.
fn merge_for_write(rt: &ResourceType, old: &Value, mut new: Value, status_write: bool) -> Value {
    if rt.group.is_empty() && rt.plural == "secrets" {
        fold_string_data(&mut new);
        if new["type"].is_null() {
            new["type"] = old["type"].clone();
        }
    }
    if status_write {
        let mut merged = old.clone();
        merged["status"] = new["status"].take();
        if merged["status"].is_null()
            && let Some(map) = merged.as_object_mut()
        {
            map.remove("status");
        }
        return merged;
    }
    if rt.status {
        match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    if rt.group.is_empty() && rt.plural == "namespaces" {
        // spec.finalizers changes only through /finalize.
        new["spec"]["finalizers"] = old["spec"]["finalizers"].clone();
    }
    new
}

/// Secrets: `stringData` is write-only and lands base64-encoded in `data`.
fn fold_string_data(secret: &mut Value) {
    let Some(string_data) = secret.get("stringData").and_then(Value::as_object).cloned() else {
        if let Some(map) = secret.as_object_mut() {
            map.remove("stringData");
        }
        return;
    };
    for (k, v) in string_data {
        let text = v.as_str().unwrap_or_default();
        secret["data"][k] = json!(data_encoding::BASE64.encode(text.as_bytes()));
    }
    if let Some(map) = secret.as_object_mut() {
        map.remove("stringData");
    }
}

/// True when a change bumps generation: anything outside metadata (and outside status for types with a status subresource).
fn spec_changed(rt: &ResourceType, old: &Value, new: &Value) -> bool {
    let strip = |object: &Value| -> Map<String, Value> {
        let mut map = object.as_object().cloned().unwrap_or_default();
        map.remove("metadata");
        if !rt.generation_covers_status() {
            map.remove("status");
        }
        map
    };
    strip(old) != strip(new)
}

/// Strategic merge patch: merge patch, except that lists with merge keys merge
/// item by item, `metadata.finalizers` merges as a set, and `$patch`,
/// `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` directives apply.
fn strategic_merge(
    target: &mut Value,
    patch: &Value,
    shapes: &dyn ListShapes,
    path: &mut Vec<String>,
) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        if let Some(map) = replacement.as_object_mut() {
            map.remove("$patch");
        }
        *target = replacement;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (key, value) in patch_map {
        if key == "$patch" || key.starts_with("$setElementOrder/") || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) = (target[field].as_array_mut(), value.as_array()) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        let Some(target_map) = target.as_object_mut() else {
            return;
        };
        if value.is_null() || value.get("$patch").and_then(Value::as_str) == Some("delete") {
            target_map.remove(key);
            continue;
        }
        path.push(key.clone());
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        let shape = shapes.shape(&names);
        let slot = target_map.entry(key.clone()).or_insert(Value::Null);
        match (value, shape) {
            (Value::Array(items), fields::ListShape::Map(keys)) => {
                let mut list = slot.as_array().cloned().unwrap_or_default();
                for item in items {
                    let same =
                        |candidate: &Value| keys.iter().all(|k| candidate.get(k) == item.get(k));
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    if delete {
                        list.retain(|candidate| !same(candidate));
                        continue;
                    }
                    match list.iter_mut().find(|candidate| same(candidate)) {
                        Some(existing) => strategic_merge(existing, item, shapes, path),
                        None => list.push(item.clone()),
                    }
                }
                *slot = Value::Array(list);
            }
            (Value::Array(items), fields::ListShape::Set) => {
                let mut list = slot.as_array().cloned().unwrap_or_default();
                for item in items {
                    if !list.contains(item) {
                        list.push(item.clone());
                    }
                }
                *slot = Value::Array(list);
            }
            (Value::Object(_), _) => strategic_merge(slot, value, shapes, path),
            _ => *slot = value.clone(),
        }
        path.pop();
    }
}

fn encode_continue(ns: &str, name: &str) -> String {
    data_encoding::BASE64URL_NOPAD.encode(json!([ns, name]).to_string().as_bytes())
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(token.as_bytes())
        .map_err(|_| bad())?;
    let (ns, name): (String, String) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((ns, name))
}

/// The RBAC objects a fresh apiserver has that matter here.
fn default_rbac() -> Vec<Value> {
    let cluster_role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": rules})
    };
    let binding = |name: &str, role: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects})
    };
    let read = json!(["get", "list", "watch"]);
    let write = json!(["create", "delete", "deletecollection", "patch", "update"]);
    let core_read = json!([
        "configmaps",
        "endpoints",
        "events",
        "pods",
        "pods/status",
        "serviceaccounts",
        "services",
        "services/status",
        "namespaces",
        "namespaces/status"
    ]);
    vec![
        cluster_role(
            "cluster-admin",
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]}
            ]),
        ),
        cluster_role(
            "system:discovery",
            json!([
                {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}
            ]),
        ),
        cluster_role(
            "system:basic-user",
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}
            ]),
        ),
        cluster_role(
            "system:public-info-viewer",
            json!([
                {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}
            ]),
        ),
        cluster_role(
            "view",
            json!([
                {"apiGroups": [""], "resources": core_read, "verbs": read},
                {"apiGroups": ["apps"], "resources": ["deployments", "deployments/status"], "verbs": read}
            ]),
        ),
        cluster_role(
            "edit",
            json!([
                {"apiGroups": [""], "resources": core_read, "verbs": read},
                {"apiGroups": [""], "resources": ["configmaps", "events", "pods", "secrets", "serviceaccounts", "services"], "verbs": write},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": read},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {"apiGroups": ["apps"], "resources": ["deployments", "deployments/status"], "verbs": read},
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": write}
            ]),
        ),
        cluster_role(
            "admin",
            json!([
                {"apiGroups": ["", "apps"], "resources": ["*"], "verbs": ["*"]},
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["*"]}
            ]),
        ),
        binding("cluster-admin", "cluster-admin", &["system:masters"]),
        binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
}
