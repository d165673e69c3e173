//! Command-line flags and config files the way k3s reads them (urfave/cli v1
//! flags plus k3s's `configfilearg`).
//!
//! The config file (`-c`/`--config`, else `$K3S_CONFIG_FILE`, else
//! `/etc/rancher/k3s/config.yaml`) and every `*.yaml`/`*.yml` in
//! `<config>.d/` (in name order) are read in turn: a later file replaces a
//! key, `key+:` appends to it. A missing file is no error. The merged keys
//! become `--key=value` flags placed right after the subcommand, so flags
//! given on the command line win (a list flag given on the command line
//! replaces the file's list, as k3s documents); environment variables
//! (`K3S_TOKEN`, `K3S_URL`, ...) only fill flags nobody set. For `server`
//! (and `etcd-snapshot`) a key that is no flag of the command is dropped
//! with k3s's warning `Unknown flag --x found in config.yaml, skipping`; for
//! `agent`, as in k3s, it reaches the flag parser and is fatal (`flag
//! provided but not defined: -x`), which is why agents must not be given
//! server-only keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::log;

/// What a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (last one wins).
    Str,
    /// A boolean (`--x`, `--x=false`).
    Bool,
    /// A repeatable string.
    List,
}

/// One flag of a command.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Long name first, then aliases.
    pub names: &'static [&'static str],
    /// What it takes.
    pub kind: Kind,
    /// Environment variable filling it when unset.
    pub env: Option<&'static str>,
}

const fn s(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        kind: Kind::Str,
        env: None,
    }
}
const fn se(names: &'static [&'static str], env: &'static str) -> Flag {
    Flag {
        names,
        kind: Kind::Str,
        env: Some(env),
    }
}
const fn b(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        kind: Kind::Bool,
        env: None,
    }
}
const fn l(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        kind: Kind::List,
        env: None,
    }
}

/// Flags of `k3s server` and `k3s agent` alike (logging, node, runtime, networking).
const COMMON: &[Flag] = &[
    se(&["config", "c"], "K3S_CONFIG_FILE"),
    Flag {
        names: &["debug"],
        kind: Kind::Bool,
        env: Some("K3S_DEBUG"),
    },
    s(&["v"]),
    s(&["vmodule"]),
    s(&["log", "l"]),
    b(&["alsologtostderr"]),
    se(&["data-dir", "d"], "K3S_DATA_DIR"),
    se(&["node-name"], "K3S_NODE_NAME"),
    b(&["with-node-id"]),
    l(&["node-label"]),
    l(&["node-taint"]),
    s(&["image-credential-provider-bin-dir"]),
    s(&["image-credential-provider-config"]),
    b(&["docker"]),
    s(&["container-runtime-endpoint"]),
    s(&["default-runtime"]),
    s(&["image-service-endpoint"]),
    b(&["disable-default-registry-endpoint"]),
    s(&["pause-image"]),
    s(&["snapshotter"]),
    s(&["private-registry"]),
    l(&["airgap-extra-registry"]),
    l(&["node-ip", "i"]),
    l(&["node-external-ip"]),
    l(&["node-internal-dns"]),
    l(&["node-external-dns"]),
    se(&["resolv-conf"], "K3S_RESOLV_CONF"),
    s(&["flannel-iface"]),
    s(&["flannel-conf"]),
    s(&["flannel-cni-conf"]),
    se(&["vpn-auth"], "K3S_VPN_AUTH"),
    se(&["vpn-auth-file"], "K3S_VPN_AUTH_FILE"),
    l(&["kubelet-arg"]),
    l(&["kube-proxy-arg"]),
    b(&["protect-kernel-defaults"]),
    b(&["enable-pprof"]),
    b(&["rootless"]),
    b(&["prefer-bundled-bin"]),
    b(&["selinux"]),
    se(&["lb-server-port"], "K3S_LB_SERVER_PORT"),
    s(&["bind-address"]),
    se(&["server", "s"], "K3S_URL"),
    se(&["token", "t"], "K3S_TOKEN"),
    se(&["token-file"], "K3S_TOKEN_FILE"),
];

/// Flags only `k3s server` has.
const SERVER: &[Flag] = &[
    s(&["https-listen-port"]),
    s(&["advertise-address"]),
    s(&["advertise-port"]),
    l(&["tls-san"]),
    b(&["tls-san-security"]),
    l(&["cluster-cidr"]),
    l(&["service-cidr"]),
    s(&["service-node-port-range"]),
    l(&["cluster-dns"]),
    s(&["cluster-domain"]),
    s(&["flannel-backend"]),
    b(&["flannel-ipv6-masq"]),
    b(&["flannel-external-ip"]),
    b(&["flannel-ip-masq-disable-random-fully"]),
    s(&["egress-selector-mode"]),
    s(&["servicelb-namespace"]),
    se(&["write-kubeconfig", "o"], "K3S_KUBECONFIG_OUTPUT"),
    se(&["write-kubeconfig-mode"], "K3S_KUBECONFIG_MODE"),
    se(&["write-kubeconfig-group"], "K3S_KUBECONFIG_GROUP"),
    s(&["helm-job-image"]),
    se(&["agent-token"], "K3S_AGENT_TOKEN"),
    se(&["agent-token-file"], "K3S_AGENT_TOKEN_FILE"),
    Flag {
        names: &["cluster-init"],
        kind: Kind::Bool,
        env: Some("K3S_CLUSTER_INIT"),
    },
    Flag {
        names: &["cluster-reset"],
        kind: Kind::Bool,
        env: Some("K3S_CLUSTER_RESET"),
    },
    s(&["cluster-reset-restore-path"]),
    l(&["kube-apiserver-arg"]),
    l(&["etcd-arg"]),
    l(&["kube-controller-manager-arg"]),
    l(&["kube-scheduler-arg"]),
    l(&["kube-cloud-controller-manager-arg"]),
    l(&["kube-controller-arg"]),
    l(&["kube-cloud-controller-arg"]),
    b(&["kine-tls"]),
    se(&["datastore-endpoint"], "K3S_DATASTORE_ENDPOINT"),
    se(&["datastore-cafile"], "K3S_DATASTORE_CAFILE"),
    se(&["datastore-certfile"], "K3S_DATASTORE_CERTFILE"),
    se(&["datastore-keyfile"], "K3S_DATASTORE_KEYFILE"),
    b(&["etcd-expose-metrics"]),
    b(&["etcd-disable-snapshots"]),
    s(&["etcd-snapshot-name"]),
    s(&["etcd-snapshot-schedule-cron"]),
    s(&["etcd-snapshot-retention"]),
    s(&["etcd-snapshot-dir"]),
    b(&["etcd-snapshot-compress"]),
    b(&["etcd-s3"]),
    s(&["etcd-s3-endpoint"]),
    s(&["etcd-s3-endpoint-ca"]),
    b(&["etcd-s3-skip-ssl-verify"]),
    se(&["etcd-s3-access-key"], "AWS_ACCESS_KEY_ID"),
    se(&["etcd-s3-secret-key"], "AWS_SECRET_ACCESS_KEY"),
    s(&["etcd-s3-bucket"]),
    s(&["etcd-s3-region"]),
    s(&["etcd-s3-folder"]),
    s(&["etcd-s3-proxy"]),
    s(&["etcd-s3-config-secret"]),
    b(&["etcd-s3-insecure"]),
    s(&["etcd-s3-timeout"]),
    s(&["default-local-storage-path"]),
    l(&["disable"]),
    b(&["disable-scheduler"]),
    b(&["disable-cloud-controller"]),
    b(&["disable-kube-proxy"]),
    b(&["disable-network-policy"]),
    b(&["disable-helm-controller"]),
    b(&["disable-apiserver"]),
    b(&["disable-controller-manager"]),
    b(&["disable-etcd"]),
    b(&["disable-agent"]),
    b(&["embedded-registry"]),
    b(&["supervisor-metrics"]),
    b(&["secrets-encryption"]),
    s(&["secrets-encryption-provider"]),
    se(&["system-default-registry"], "K3S_SYSTEM_DEFAULT_REGISTRY"),
];

/// Flags only `k3s agent` has.
const AGENT: &[Flag] = &[b(&["disable-apiserver-lb"])];

/// Flags of `k3s token` and `k3s etcd-snapshot` subcommands.
const CLIENT: &[Flag] = &[
    se(&["config", "c"], "K3S_CONFIG_FILE"),
    Flag {
        names: &["debug"],
        kind: Kind::Bool,
        env: Some("K3S_DEBUG"),
    },
    se(&["data-dir", "d"], "K3S_DATA_DIR"),
    se(&["kubeconfig"], "KUBECONFIG"),
    s(&["description"]),
    l(&["groups"]),
    s(&["ttl"]),
    l(&["usages"]),
    s(&["output", "o"]),
    se(&["server", "s"], "K3S_URL"),
    se(&["token", "t"], "K3S_TOKEN"),
    s(&["etcd-snapshot-dir"]),
    s(&["name"]),
    b(&["etcd-s3"]),
];

/// Keys whose values never appear in the `k3s.io/node-args` annotation.
const SECRET_FLAGS: &[&str] = &[
    "token",
    "agent-token",
    "datastore-endpoint",
    "etcd-s3-access-key",
    "etcd-s3-secret-key",
    "vpn-auth",
];

/// Which flag table a command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `k3s server`.
    Server,
    /// `k3s agent`.
    Agent,
    /// `k3s token ...` / `k3s etcd-snapshot ...`.
    Client,
}

impl Command {
    fn tables(self) -> Vec<&'static [Flag]> {
        match self {
            Command::Server => vec![COMMON, SERVER],
            Command::Agent => vec![COMMON, AGENT],
            Command::Client => vec![CLIENT],
        }
    }

    fn flag(self, name: &str) -> Option<Flag> {
        self.tables()
            .into_iter()
            .flatten()
            .find(|f| f.names.contains(&name))
            .copied()
    }

    /// Config keys of other commands are skipped with a warning only where k3s does it.
    fn strips_unknown_config_keys(self) -> bool {
        matches!(self, Command::Server | Command::Client)
    }
}

/// A command's settings after config files, flags and environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<&'static str, Vec<String>>,
    /// `[command, --key, value, ...]` as k3s records it in `k3s.io/node-args` (secrets masked).
    pub node_args: Vec<String>,
    /// Arguments after the flags.
    pub positional: Vec<String>,
    /// The config file looked at (it may not exist).
    pub config_file: PathBuf,
}

impl Settings {
    /// The last value of a string flag.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean flag (unset is false).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| parse_bool(v) == Some(true))
    }

    /// Every value of a list flag, each split at commas as k3s splits them.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.values
            .get(name)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Every value of a list flag as given (no splitting: node labels, taints).
    pub fn raw_list(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// Whether a flag was set at all (by file, command line or environment).
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

/// Why the arguments could not be read (k3s's words).
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A flag no table has.
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    /// A value flag at the end of the arguments.
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    /// A boolean flag with a value that is no boolean.
    #[error("invalid boolean value {value:?} for -{name}: parse error")]
    BadBool {
        /// The flag.
        name: String,
        /// What it was given.
        value: String,
    },
    /// A config file that is not a YAML map.
    #[error("failed to read config file {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// Parses `args` (after the subcommand) for `command`, merging the config files first.
pub fn parse(
    command: Command,
    subcommand: &str,
    args: &[String],
    default_config: &Path,
) -> Result<Settings, FlagError> {
    let config_file = find_config_file(args).unwrap_or_else(|| default_config.to_path_buf());
    let mut from_file = read_config(&config_file)?;
    if command.strips_unknown_config_keys() {
        from_file.retain(|arg| {
            let name = arg.trim_start_matches('-');
            let name = name.split('=').next().unwrap_or_default();
            let known = command.flag(name).is_some();
            if !known {
                log::warn(format!(
                    "Unknown flag {} found in config.yaml, skipping",
                    arg.split('=').next().unwrap_or_default()
                ));
            }
            known
        });
    }
    let (file_values, _) = parse_flags(command, &from_file)?;
    let (cli_values, positional) = parse_flags(command, args)?;
    let mut values: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for (name, vals) in file_values {
        values.insert(name, vals);
    }
    // A command-line value wins; a command-line list replaces the file's list.
    for (name, vals) in cli_values {
        values.insert(name, vals);
    }
    for table in command.tables() {
        for flag in table {
            let name = flag.names[0];
            if values.contains_key(name) {
                continue;
            }
            if let Some(env) = flag.env
                && let Ok(v) = std::env::var(env)
                && !v.is_empty()
            {
                values.insert(name, vec![v]);
            }
        }
    }
    let mut node_args = vec![subcommand.to_string()];
    for list in [&from_file, &args.to_vec()] {
        let mut iter = list.iter();
        while let Some(arg) = iter.next() {
            if !arg.starts_with('-') || arg == "--" {
                break;
            }
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let flag = command.flag(key.trim_start_matches('-'));
            let masked = flag.is_some_and(|f| SECRET_FLAGS.contains(&f.names[0]));
            let value = match inline {
                Some(v) => Some(v),
                None if flag.is_some_and(|f| f.kind != Kind::Bool) => iter.next().cloned(),
                None => None,
            };
            node_args.push(key);
            if let Some(v) = value {
                node_args.push(if masked { "********".into() } else { v });
            }
        }
    }
    Ok(Settings {
        values,
        node_args,
        positional,
        config_file,
    })
}

/// `-c FILE`, `--config=FILE`, or `$K3S_CONFIG_FILE` (the env wins, as in k3s).
fn find_config_file(args: &[String]) -> Option<PathBuf> {
    if let Ok(env) = std::env::var("K3S_CONFIG_FILE")
        && !env.is_empty()
    {
        return Some(env.into());
    }
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        for flag in ["--config", "-c"] {
            if arg == flag {
                return iter.next().map(PathBuf::from);
            }
            if let Some(v) = arg.strip_prefix(&format!("{flag}=")) {
                return Some(v.into());
            }
        }
    }
    None
}

/// The config file and its drop-ins as `--key=value` arguments (empty when none exists).
pub fn read_config(file: &Path) -> Result<Vec<String>, FlagError> {
    let dropin_dir = PathBuf::from(format!("{}.d", file.display()));
    let mut files = Vec::new();
    if file.exists() {
        files.push(file.to_path_buf());
    }
    if let Ok(entries) = std::fs::read_dir(&dropin_dir) {
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml")
                    })
            })
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut order: Vec<String> = Vec::new();
    let mut merged: BTreeMap<String, Value> = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|e| FlagError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let entries: OrderedMap = if text.trim().is_empty() {
            OrderedMap(Vec::new())
        } else {
            serde_saphyr::from_str(&text).map_err(|e| FlagError::Config {
                path: path.clone(),
                message: e.to_string(),
            })?
        };
        for (key, value) in entries.0 {
            let (key, append) = match key.strip_suffix('+') {
                Some(k) => (k.to_string(), true),
                None => (key, false),
            };
            if !order.contains(&key) {
                order.push(key.clone());
            }
            match merged.get_mut(&key) {
                Some(old) if append => {
                    let mut list = to_list(old);
                    list.extend(to_list(&value));
                    *old = Value::Array(list);
                }
                _ => {
                    merged.insert(key, value);
                }
            }
        }
    }
    let mut args = Vec::new();
    for key in order {
        let prefix = if key.chars().count() == 1 { "-" } else { "--" };
        match &merged[&key] {
            Value::Array(items) => {
                for item in items {
                    args.push(format!("{prefix}{key}={}", scalar(item)));
                }
            }
            other => args.push(format!("{prefix}{key}={}", scalar(other))),
        }
    }
    Ok(args)
}

fn to_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// A YAML scalar as Go's `convert.ToString` renders it.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Flag values by canonical name, in the order first seen.
type Values = Vec<(&'static str, Vec<String>)>;

/// Parses urfave/cli-style flags; returns the values by canonical name and the positional rest.
fn parse_flags(command: Command, args: &[String]) -> Result<(Values, Vec<String>), FlagError> {
    let mut values: Vec<(&'static str, Vec<String>)> = Vec::new();
    let mut push = |name: &'static str, kind: Kind, value: String| match values
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some((_, vals)) if kind == Kind::List => vals.push(value),
        Some((_, vals)) => *vals = vec![value],
        None => values.push((name, vec![value])),
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            return Ok((values, args[i + 1..].to_vec()));
        }
        if !arg.starts_with('-') || arg == "-" {
            return Ok((values, args[i..].to_vec()));
        }
        let body = arg.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let flag = command
            .flag(name)
            .ok_or_else(|| FlagError::Unknown(name.to_string()))?;
        let canonical = flag.names[0];
        match flag.kind {
            Kind::Bool => {
                let value = inline.unwrap_or_else(|| "true".into());
                if parse_bool(&value).is_none() {
                    return Err(FlagError::BadBool {
                        name: name.into(),
                        value,
                    });
                }
                push(canonical, Kind::Bool, value);
            }
            kind => {
                let value = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| FlagError::MissingValue(name.into()))?
                    }
                };
                push(canonical, kind, value);
            }
        }
        i += 1;
    }
    Ok((values, Vec::new()))
}

/// Go's strconv.ParseBool.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A YAML map in document order (k3s reads config files as a `yaml.MapSlice`).
struct OrderedMap(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of flag names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Value, Value>()? {
                    out.push((scalar(&k), v));
                }
                Ok(OrderedMap(out))
            }
            fn visit_unit<E>(self) -> Result<OrderedMap, E> {
                Ok(OrderedMap(Vec::new()))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn equals_and_space_forms_and_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("absent.yaml");
        let s = parse(
            Command::Server,
            "server",
            &args(&[
                "--node-label=a=1",
                "--node-label",
                "b=2",
                "-t",
                "secret",
                "--cluster-init",
                "--data-dir",
                "/x",
            ]),
            &none,
        )
        .unwrap();
        assert_eq!(s.raw_list("node-label"), ["a=1", "b=2"]);
        assert_eq!(s.get("token"), Some("secret"));
        assert!(s.flag("cluster-init"));
        assert_eq!(s.get("data-dir"), Some("/x"));
        assert!(s.node_args.contains(&"********".to_string()));
        assert!(!s.node_args.contains(&"secret".to_string()));
    }

    #[test]
    fn unknown_cli_flag_is_goes_flag_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse(
            Command::Agent,
            "agent",
            &args(&["--cluster-init"]),
            &dir.path().join("c.yaml"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "flag provided but not defined: -cluster-init"
        );
    }
}
