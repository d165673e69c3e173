//! Field ownership for server-side apply: field sets in the apiserver's
//! `FieldsV1` shape, the merge of an applied configuration into a live object,
//! conflict detection between managers, and removal of fields a manager stops
//! applying. Lists are typed by [`ListShapes`]: associative lists merge by key,
//! set lists by value, every other list is atomic (replaced whole), as in the
//! apiserver's structured merge for schemas without list annotations.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// How the lists of one resource type merge, looked up by field name and parent field.
pub(crate) trait ListShapes {
    /// The shape of the list at `path` (field names from the object root, list items skipped).
    fn shape(&self, path: &[&str]) -> ListShape;
}

/// How one list merges.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ListShape {
    /// Replaced whole; owned as one leaf.
    Atomic,
    /// Items identified by these key fields.
    Map(Vec<String>),
    /// Items are scalars identified by value.
    Set,
}

/// A set of field paths: a tree keyed by `f:<field>`, `k:<keys json>`, `v:<value json>`, `i:<index>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSet {
    /// The node itself is owned (a leaf, or `.` in FieldsV1).
    pub member: bool,
    /// Owned paths below this node.
    pub children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Reads a `fieldsV1` object.
    pub fn from_fields_v1(value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(map) = value {
            if map.is_empty() {
                set.member = true;
            }
            for (key, child) in map {
                if key == "." {
                    set.member = true;
                } else {
                    set.children
                        .insert(key.clone(), FieldSet::from_fields_v1(child));
                }
            }
        }
        set
    }

    /// Writes the `fieldsV1` object.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (key, child) in &self.children {
            map.insert(key.clone(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    /// True when nothing is owned.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Every owned path, as lists of path elements.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (key, child) in &self.children {
            prefix.push(key.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// True when `path` is an owned path (a member) of this set.
    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((head, rest)) => self.children.get(head).is_some_and(|c| c.contains(rest)),
        }
    }

    /// True when this set owns `path` or anything below it.
    pub fn touches(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => !self.is_empty(),
            Some((head, rest)) => self.children.get(head).is_some_and(|c| c.touches(rest)),
        }
    }

    /// Adds `path` as a member.
    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((head, rest)) => self.children.entry(head.clone()).or_default().insert(rest),
        }
    }

    /// Removes `path` as a member, pruning nodes left empty.
    pub fn remove(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = false,
            Some((head, rest)) => {
                if let Some(child) = self.children.get_mut(head) {
                    child.remove(rest);
                    if child.is_empty() {
                        self.children.remove(head);
                    }
                }
            }
        }
    }

    /// Removes the whole subtree at `path` (the node and everything below it).
    pub fn remove_subtree(&mut self, path: &[String]) {
        match path.split_first() {
            None => *self = FieldSet::default(),
            Some((head, rest)) => {
                if rest.is_empty() {
                    self.children.remove(head);
                } else if let Some(child) = self.children.get_mut(head) {
                    child.remove_subtree(rest);
                    if child.is_empty() {
                        self.children.remove(head);
                    }
                }
            }
        }
    }

    /// Adds every member of `other`.
    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (key, child) in &other.children {
            self.children.entry(key.clone()).or_default().union(child);
        }
    }
}

/// The paths (as `.a.b[name="x"]`) a reader sees in conflict messages.
pub(crate) fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(keys) = element.strip_prefix("k:") {
            let parsed: Map<String, Value> = serde_json::from_str(keys).unwrap_or_default();
            let inner: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

/// The fields of `object` a manager owns by setting it, skipping `exclude`d top-level/metadata fields.
pub(crate) fn fields_of(object: &Value, shapes: &dyn ListShapes, scope: Scope) -> FieldSet {
    let mut set = FieldSet::default();
    let Value::Object(map) = object else {
        return set;
    };
    for (key, value) in map {
        if !scope.includes_top(key) {
            continue;
        }
        if key == "metadata" {
            let mut meta = FieldSet::default();
            if let Value::Object(fields) = value {
                for (mk, mv) in fields {
                    if TRACKED_METADATA.contains(&mk.as_str()) && !mv.is_null() {
                        let path = ["metadata", mk.as_str()];
                        meta.children
                            .insert(format!("f:{mk}"), value_fields(mv, shapes, &path));
                    }
                }
            }
            if !meta.is_empty() {
                set.children.insert("f:metadata".into(), meta);
            }
            continue;
        }
        if value.is_null() {
            continue;
        }
        set.children.insert(
            format!("f:{key}"),
            value_fields(value, shapes, &[key.as_str()]),
        );
    }
    set
}

/// The metadata fields that carry ownership (identity and server-set fields do not).
const TRACKED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// Which top-level fields a write may own: the main resource or its status subresource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scope {
    /// Everything except `status` (for types with a status subresource) and identity fields.
    Main { status_subresource: bool },
    /// Only `status`.
    Status,
}

impl Scope {
    fn includes_top(self, key: &str) -> bool {
        if key == "apiVersion" || key == "kind" {
            return false;
        }
        match self {
            Scope::Main { status_subresource } => !(status_subresource && key == "status"),
            Scope::Status => key == "status",
        }
    }
}

fn value_fields(value: &Value, shapes: &dyn ListShapes, path: &[&str]) -> FieldSet {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut set = FieldSet::default();
            for (key, child) in map {
                if child.is_null() {
                    continue;
                }
                let mut child_path = path.to_vec();
                child_path.push(key);
                set.children
                    .insert(format!("f:{key}"), value_fields(child, shapes, &child_path));
            }
            if set.children.is_empty() {
                set.member = true;
            }
            set
        }
        Value::Array(items) if !items.is_empty() => match shapes.shape(path) {
            ListShape::Atomic => leaf(),
            ListShape::Set => {
                let mut set = FieldSet::default();
                for item in items {
                    set.children.insert(format!("v:{item}"), leaf());
                }
                set
            }
            ListShape::Map(keys) => {
                let mut set = FieldSet::default();
                for item in items {
                    let Some(key) = item_key(item, &keys) else {
                        return leaf();
                    };
                    let mut item_set = value_fields(item, shapes, path);
                    item_set.member = true;
                    set.children.insert(key, item_set);
                }
                set
            }
        },
        _ => leaf(),
    }
}

fn leaf() -> FieldSet {
    FieldSet {
        member: true,
        children: BTreeMap::new(),
    }
}

/// The `k:{...}` element naming `item` by its key fields, or None when a key is missing.
fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut map = Map::new();
    for key in keys {
        map.insert(key.clone(), item.get(key)?.clone());
    }
    Some(format!("k:{}", Value::Object(map)))
}

/// The value at `path` in `object`, if present.
pub(crate) fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for element in path {
        current = child(current, element)?;
    }
    Some(current)
}

fn child<'a>(value: &'a Value, element: &str) -> Option<&'a Value> {
    if let Some(field) = element.strip_prefix("f:") {
        return value.as_object()?.get(field);
    }
    let items = value.as_array()?;
    if let Some(keys) = element.strip_prefix("k:") {
        let keys: Map<String, Value> = serde_json::from_str(keys).ok()?;
        return items
            .iter()
            .find(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v)));
    }
    if let Some(json) = element.strip_prefix("v:") {
        let wanted: Value = serde_json::from_str(json).ok()?;
        return items.iter().find(|item| **item == wanted);
    }
    let index: usize = element.strip_prefix("i:")?.parse().ok()?;
    items.get(index)
}

/// Removes the value at `path` from `object`; prunes maps and lists left empty by it.
pub(crate) fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    remove_below(object, parents, last);
}

fn remove_below(value: &mut Value, parents: &[String], last: &str) -> bool {
    match parents.split_first() {
        None => remove_child(value, last),
        Some((head, rest)) => {
            let emptied = match child_mut(value, head) {
                Some(next) => {
                    let removed = remove_below(next, rest, last);
                    removed && is_empty_container(next)
                }
                None => false,
            };
            if emptied {
                remove_child(value, head);
            }
            emptied
        }
    }
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn remove_child(value: &mut Value, element: &str) -> bool {
    if let Some(field) = element.strip_prefix("f:") {
        return value
            .as_object_mut()
            .is_some_and(|m| m.remove(field).is_some());
    }
    let Some(items) = value.as_array_mut() else {
        return false;
    };
    let before = items.len();
    if let Some(keys) = element.strip_prefix("k:") {
        let keys: Map<String, Value> = serde_json::from_str(keys).unwrap_or_default();
        items.retain(|item| !keys.iter().all(|(k, v)| item.get(k) == Some(v)));
    } else if let Some(json) = element.strip_prefix("v:")
        && let Ok(wanted) = serde_json::from_str::<Value>(json)
    {
        items.retain(|item| *item != wanted);
    }
    items.len() != before
}

fn child_mut<'a>(value: &'a mut Value, element: &str) -> Option<&'a mut Value> {
    if let Some(field) = element.strip_prefix("f:") {
        return value.as_object_mut()?.get_mut(field);
    }
    let items = value.as_array_mut()?;
    if let Some(keys) = element.strip_prefix("k:") {
        let keys: Map<String, Value> = serde_json::from_str(keys).ok()?;
        return items
            .iter_mut()
            .find(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v)));
    }
    if let Some(json) = element.strip_prefix("v:") {
        let wanted: Value = serde_json::from_str(json).ok()?;
        return items.iter_mut().find(|item| **item == wanted);
    }
    let index: usize = element.strip_prefix("i:")?.parse().ok()?;
    items.get_mut(index)
}

/// Merges an applied configuration into `live`: maps recursively, associative
/// lists by key, set lists by union, atomic lists and scalars replaced. An
/// explicit `null` removes the field.
pub(crate) fn merge_applied(live: &mut Value, applied: &Value, shapes: &dyn ListShapes) {
    merge_value(live, applied, shapes, &mut Vec::new());
}

fn merge_value(live: &mut Value, applied: &Value, shapes: &dyn ListShapes, path: &mut Vec<String>) {
    match applied {
        Value::Object(applied_map) => {
            if !live.is_object() {
                *live = Value::Object(Map::new());
            }
            let Some(live_map) = live.as_object_mut() else {
                return;
            };
            for (key, value) in applied_map {
                if value.is_null() {
                    live_map.remove(key);
                    continue;
                }
                path.push(key.clone());
                let slot = live_map.entry(key.clone()).or_insert(Value::Null);
                merge_value(slot, value, shapes, path);
                path.pop();
            }
        }
        Value::Array(applied_items) => {
            let names: Vec<&str> = path.iter().map(String::as_str).collect();
            match shapes.shape(&names) {
                ListShape::Atomic => *live = applied.clone(),
                ListShape::Set => {
                    let mut items = live.as_array().cloned().unwrap_or_default();
                    for item in applied_items {
                        if !items.contains(item) {
                            items.push(item.clone());
                        }
                    }
                    *live = Value::Array(items);
                }
                ListShape::Map(keys) => {
                    let mut items = live.as_array().cloned().unwrap_or_default();
                    for item in applied_items {
                        let same_key = |candidate: &Value| {
                            keys.iter().all(|k| candidate.get(k) == item.get(k))
                        };
                        match items.iter_mut().find(|candidate| same_key(candidate)) {
                            Some(existing) => merge_value(existing, item, shapes, path),
                            None => items.push(item.clone()),
                        }
                    }
                    *live = Value::Array(items);
                }
            }
        }
        scalar => *live = scalar.clone(),
    }
}

/// The member paths of `new` whose value differs from (or is absent in) `old`.
pub(crate) fn changed_paths(new_set: &FieldSet, old: &Value, new: &Value) -> Vec<Vec<String>> {
    new_set
        .paths()
        .into_iter()
        .filter(|path| {
            let leafish = !has_children(new_set, path);
            let old_value = value_at(old, path);
            match old_value {
                None => true,
                Some(old_value) => leafish && Some(old_value) != value_at(new, path),
            }
        })
        .collect()
}

fn has_children(set: &FieldSet, path: &[String]) -> bool {
    let mut node = set;
    for element in path {
        match node.children.get(element) {
            Some(next) => node = next,
            None => return false,
        }
    }
    !node.children.is_empty()
}

/// True when the member at `path` of `set` is a leaf (compared by value in conflicts).
pub(crate) fn is_leaf(set: &FieldSet, path: &[String]) -> bool {
    !has_children(set, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Shapes;
    impl ListShapes for Shapes {
        fn shape(&self, path: &[&str]) -> ListShape {
            match path.last() {
                Some(&"containers") => ListShape::Map(vec!["name".into()]),
                Some(&"finalizers") => ListShape::Set,
                _ => ListShape::Atomic,
            }
        }
    }

    #[test]
    fn fields_v1_round_trip_and_shapes() {
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "c", "image": "i"}], "args": ["1", "2"]}
        });
        let set = fields_of(
            &obj,
            &Shapes,
            Scope::Main {
                status_subresource: true,
            },
        );
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({
                "f:metadata": {"f:labels": {"f:a": {}}, "f:finalizers": {"v:\"x\"": {}}},
                "f:spec": {
                    "f:args": {},
                    "f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}
                }
            })
        );
        assert_eq!(FieldSet::from_fields_v1(&v1), set);
        let path: Vec<String> = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"c\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(display_path(&path), ".spec.containers[name=\"c\"].image");
        assert_eq!(value_at(&obj, &path), Some(&json!("i")));
    }

    #[test]
    fn merge_and_remove() {
        let mut live = json!({"spec": {"containers": [{"name": "a", "image": "1"}], "x": 1}});
        merge_applied(
            &mut live,
            &json!({"spec": {"containers": [{"name": "a", "image": "2"}, {"name": "b"}], "x": null}}),
            &Shapes,
        );
        assert_eq!(
            live,
            json!({"spec": {"containers": [{"name": "a", "image": "2"}, {"name": "b"}]}})
        );
        remove_at(
            &mut live,
            &[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"a\"}".into(),
            ],
        );
        remove_at(
            &mut live,
            &[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"b\"}".into(),
            ],
        );
        assert_eq!(live, json!({}));
    }
}
