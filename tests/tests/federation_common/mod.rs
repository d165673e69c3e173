//! Shared helpers of the federation suites: run the edgeforge binary with
//! its own state, snapshot what an emulator holds, compare objects without
//! the fields a server sets.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;

use edgeforge_tests::kube_emulator::Emulator;
use serde_json::Value;

/// What `edgeforge` printed and how it ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both streams, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `edgeforge ARGS` with `XDG_STATE_HOME=state_home` (without blocking the emulators' runtime).
pub async fn edgeforge(state_home: &Path, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(edgeforge_tests::edgeforge_bin())
        .env("XDG_STATE_HOME", state_home)
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .await
        .expect("edgeforge runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `edgeforge apply -i INVENTORY --layer federation EXTRA...`.
pub async fn join(state_home: &Path, inventory: &Path, extra: &[&str]) -> Run {
    let inv = inventory.display().to_string();
    let mut args = vec!["apply", "-i", inv.as_str(), "--layer", "federation"];
    args.extend_from_slice(extra);
    edgeforge(state_home, &args).await
}

/// `(resource, namespace, name)` of every object an emulator holds.
pub fn snapshot(emu: &Emulator) -> BTreeSet<(String, String, String)> {
    let yaml = emu.dump_yaml();
    let all: std::collections::BTreeMap<String, Vec<Value>> =
        serde_saphyr::from_str(&yaml).expect("the dump reads back");
    all.into_iter()
        .flat_map(|(resource, objects)| {
            objects.into_iter().map(move |o| {
                (
                    resource.clone(),
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
        })
        .collect()
}

/// What `after` has that `before` had not.
pub fn added(
    before: &BTreeSet<(String, String, String)>,
    after: &BTreeSet<(String, String, String)>,
) -> BTreeSet<(String, String, String)> {
    after.difference(before).cloned().collect()
}

/// A set of `(resource, namespace, name)` from literals.
pub fn objects(list: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    list.iter()
        .map(|(r, ns, n)| (r.to_string(), ns.to_string(), n.to_string()))
        .collect()
}

/// What a namespace's controllers put into a new namespace `ns`.
pub fn namespace_defaults(ns: &str) -> Vec<(String, String, String)> {
    vec![
        ("namespaces".into(), String::new(), ns.into()),
        ("serviceaccounts".into(), ns.into(), "default".into()),
        ("configmaps".into(), ns.into(), "kube-root-ca.crt".into()),
    ]
}

/// One object from the emulator's store.
pub fn get(emu: &Emulator, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Value {
    emu.store()
        .get(api_version, kind, ns, name)
        .unwrap_or_else(|| {
            panic!(
                "{kind} {}{name} exists",
                ns.map(|n| format!("{n}/")).unwrap_or_default()
            )
        })
}

/// The object without what the server sets (uid, resourceVersion,
/// creationTimestamp, generation, managedFields) and without `status`.
pub fn user_fields(mut v: Value) -> Value {
    if let Some(meta) = v["metadata"].as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            meta.remove(k);
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    v
}

/// A Secret's data value as text.
pub fn secret_data(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].as_str().unwrap_or_default();
    String::from_utf8(
        data_encoding::BASE64
            .decode(b64.as_bytes())
            .expect("base64"),
    )
    .expect("utf-8")
}

/// Requests that wrote to the emulator since its log was cleared.
pub fn writes(emu: &Emulator) -> Vec<String> {
    emu.requests()
        .into_iter()
        .filter(|r| r.write)
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}
