//! The client commands bundled in the k3s binary, as far as edgeforge uses
//! them: `kubectl` (`version`, `get nodes|pods [NAME] [-A|-n NS] [-o
//! wide|yaml|json|name]`, `cordon`/`uncordon`, `config view [--raw]`)
//! through the API with `/etc/rancher/k3s/k3s.yaml` (or `--kubeconfig`,
//! `$KUBECONFIG`), `crictl`/`ctr` (versions and the imported air-gap
//! images), `k3s token create|list|generate` (bootstrap tokens as
//! `bootstrap-token-<id>` Secrets) and `k3s etcd-snapshot list`. Anything
//! else says it is not part of the stand-in and exits 1.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::client::{Auth, Server};
use super::{Release, default_path, tokens};

const NOT_HERE: &str = "is not part of the k3s stand-in (use a real kubectl against its API)";

/// A connection from a kubeconfig's current context.
struct Kube {
    server: Server,
    auth: Auth,
}

impl Kube {
    fn load(path: &Path) -> Result<Kube, String> {
        let raw = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "error: error loading config file \"{}\": {e}",
                path.display()
            )
        })?;
        let config: Value = serde_saphyr::from_str(&raw).map_err(|e| {
            format!(
                "error: error loading config file \"{}\": {e}",
                path.display()
            )
        })?;
        let current = config["current-context"].as_str().unwrap_or_default();
        let named = |list: &str, name: &str, field: &str| -> Value {
            config[list]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"].as_str() == Some(name))
                .map(|c| c[field].clone())
                .unwrap_or(Value::Null)
        };
        let context = named("contexts", current, "context");
        let cluster = named(
            "clusters",
            context["cluster"].as_str().unwrap_or_default(),
            "cluster",
        );
        let user = named(
            "users",
            context["user"].as_str().unwrap_or_default(),
            "user",
        );
        let decode = |v: &Value| {
            v.as_str()
                .and_then(|s| data_encoding::BASE64.decode(s.as_bytes()).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let url = cluster["server"]
            .as_str()
            .ok_or("error: no server in the kubeconfig")?;
        let ca = decode(&cluster["certificate-authority-data"])
            .ok_or("error: no certificate-authority-data in the kubeconfig")?;
        let identity = match (
            decode(&user["client-certificate-data"]),
            decode(&user["client-key-data"]),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        };
        let server = Server::with_ca(
            url,
            &ca,
            identity.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        )
        .map_err(|e| format!("error: {e}"))?;
        let auth = match user["token"].as_str() {
            Some(t) => Auth::Bearer(t.to_string()),
            None => Auth::None,
        };
        Ok(Kube { server, auth })
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let body = self.server.get(path, &self.auth).await.map_err(api_error)?;
        serde_json::from_slice(&body).map_err(|e| format!("error: {e}"))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Value, String> {
        let body = self
            .server
            .send(
                method,
                path,
                &self.auth,
                &[],
                Some((content_type, body.to_string().into_bytes())),
            )
            .await
            .map_err(api_error)?;
        serde_json::from_slice(&body).map_err(|e| format!("error: {e}"))
    }
}

fn api_error(e: super::client::ClientError) -> String {
    match e {
        super::client::ClientError::Status { body, .. } => {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|s| s["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            format!("Error from server: {message}")
        }
        other => format!("error: {other}"),
    }
}

/// Flags with a value that are not kubectl's own.
const VALUE_FLAGS: &[&str] = &[
    "--description",
    "--ttl",
    "--usages",
    "--groups",
    "--data-dir",
    "-d",
    "--server",
    "-s",
    "--token",
    "-t",
    "--etcd-snapshot-dir",
];

/// Options kubectl takes anywhere on its command line.
#[derive(Default)]
struct Options {
    kubeconfig: Option<PathBuf>,
    namespace: Option<String>,
    all_namespaces: bool,
    output: Option<String>,
    raw: bool,
    words: Vec<String>,
}

fn options(args: &[String]) -> Options {
    let mut o = Options::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let mut value = |flag: &str| -> Option<String> {
            if a == flag {
                i += 1;
                return args.get(i).cloned();
            }
            a.strip_prefix(&format!("{flag}=")).map(str::to_string)
        };
        if let Some(v) = value("--kubeconfig") {
            o.kubeconfig = Some(v.into());
        } else if let Some(v) = value("--namespace").or_else(|| value("-n")) {
            o.namespace = Some(v);
        } else if let Some(v) = value("--output").or_else(|| value("-o")) {
            o.output = Some(v);
        } else if let Some(v) = a
            .strip_prefix("-o")
            .filter(|v| !v.is_empty() && !a.starts_with("--"))
        {
            o.output = Some(v.to_string());
        } else if a == "-A" || a == "--all-namespaces" {
            o.all_namespaces = true;
        } else if a == "--raw" {
            o.raw = true;
        } else if VALUE_FLAGS.contains(&a.as_str()) {
            // Flags of `token`/`etcd-snapshot` read where they are used: skip their value.
            i += 1;
        } else if !VALUE_FLAGS.iter().any(|f| a.starts_with(&format!("{f}="))) {
            o.words.push(a.clone());
        }
        i += 1;
    }
    o
}

/// `kubectl ...` (multicall or `k3s kubectl`); returns the exit code.
pub async fn run(args: Vec<String>, release: &Release) -> i32 {
    match kubectl(args, release).await {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

async fn kubectl(args: Vec<String>, release: &Release) -> Result<String, String> {
    let o = options(&args);
    let path = o
        .kubeconfig
        .clone()
        .or_else(|| {
            std::env::var_os("KUBECONFIG")
                .map(|k| PathBuf::from(k.to_string_lossy().split(':').next().unwrap_or_default()))
        })
        .unwrap_or_else(|| default_path("/etc/rancher/k3s/k3s.yaml"));
    let words: Vec<&str> = o.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["version", ..] => {
            let kube = Kube::load(&path)?;
            let v = kube.get("/version").await?;
            Ok(format!(
                "Client Version: {}\nKustomize Version: v5.7.1\nServer Version: {}\n",
                release.version,
                v["gitVersion"].as_str().unwrap_or_default()
            ))
        }
        ["config", "view", ..] => {
            let kube_raw = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "error: error loading config file \"{}\": {e}",
                    path.display()
                )
            })?;
            if o.raw {
                return Ok(kube_raw);
            }
            Ok(kube_raw
                .lines()
                .map(|l| {
                    let t = l.trim_start();
                    let indent = &l[..l.len() - t.len()];
                    match t.split_once(':') {
                        Some((k, _)) if k == "certificate-authority-data" => {
                            format!("{indent}{k}: DATA+OMITTED")
                        }
                        Some((k, _)) if k.ends_with("-data") || k == "token" => {
                            format!("{indent}{k}: REDACTED")
                        }
                        _ => l.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n")
        }
        ["get", kind, rest @ ..] => {
            let kube = Kube::load(&path)?;
            let (plural, namespaced) = match *kind {
                "nodes" | "node" | "no" => ("nodes", false),
                "pods" | "pod" | "po" => ("pods", true),
                other => return Err(format!("error: kubectl get {other} {NOT_HERE}")),
            };
            let ns = (namespaced && !o.all_namespaces)
                .then(|| o.namespace.clone().unwrap_or_else(|| "default".into()));
            let base = match &ns {
                Some(ns) => format!("/api/v1/namespaces/{ns}/{plural}"),
                None => format!("/api/v1/{plural}"),
            };
            let items: Vec<Value> = match rest.first() {
                Some(name) => vec![kube.get(&format!("{base}/{name}")).await?],
                None => kube.get(&base).await?["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            };
            let single = !rest.is_empty();
            render(
                plural,
                &items,
                single,
                o.output.as_deref(),
                o.all_namespaces,
                ns.as_deref(),
            )
        }
        [verb @ ("cordon" | "uncordon"), name, ..] => {
            let kube = Kube::load(&path)?;
            let cordon = *verb == "cordon";
            kube.send(
                reqwest::Method::PATCH,
                &format!("/api/v1/nodes/{name}"),
                "application/strategic-merge-patch+json",
                &json!({"spec": {"unschedulable": if cordon { json!(true) } else { Value::Null }}}),
            )
            .await?;
            Ok(format!("node/{name} {verb}ed\n"))
        }
        [] => Ok(
            "kubectl (k3s stand-in): version, get nodes|pods, cordon, uncordon, config view\n"
                .into(),
        ),
        [verb, ..] => Err(format!("error: kubectl {verb} {NOT_HERE}")),
    }
}

fn render(
    plural: &str,
    items: &[Value],
    single: bool,
    output: Option<&str>,
    all: bool,
    ns: Option<&str>,
) -> Result<String, String> {
    let kind = if plural == "nodes" { "Node" } else { "Pod" };
    let mut out = String::new();
    match output {
        Some("yaml") | Some("json") => {
            let value = if single {
                items.first().cloned().unwrap_or(Value::Null)
            } else {
                json!({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}})
            };
            out = if output == Some("json") {
                serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
            } else {
                serde_saphyr::to_string(&value).unwrap_or_default()
            };
        }
        Some("name") => {
            for item in items {
                out.push_str(&format!(
                    "{}/{}\n",
                    kind.to_lowercase(),
                    item["metadata"]["name"].as_str().unwrap_or_default()
                ));
            }
        }
        Some(o) if o != "wide" => {
            return Err(format!(
                "error: unable to match a printer suitable for the output format \"{o}\""
            ));
        }
        _ => {
            if items.is_empty() {
                return Err(match ns {
                    Some(ns) => format!("No resources found in {ns} namespace."),
                    None => "No resources found".into(),
                });
            }
            let wide = output == Some("wide");
            let mut rows: Vec<Vec<String>> = Vec::new();
            if plural == "nodes" {
                let mut head = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
                if wide {
                    head.extend([
                        "INTERNAL-IP",
                        "EXTERNAL-IP",
                        "OS-IMAGE",
                        "KERNEL-VERSION",
                        "CONTAINER-RUNTIME",
                    ]);
                }
                rows.push(head.into_iter().map(str::to_string).collect());
                for n in items {
                    rows.push(node_row(n, wide));
                }
            } else {
                let mut head = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
                if all {
                    head.insert(0, "NAMESPACE");
                }
                rows.push(head.into_iter().map(str::to_string).collect());
                for p in items {
                    let mut row = vec![
                        p["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        "0/1".into(),
                        p["status"]["phase"]
                            .as_str()
                            .unwrap_or("Pending")
                            .to_string(),
                        "0".into(),
                        age(&p["metadata"]["creationTimestamp"]),
                    ];
                    if all {
                        row.insert(
                            0,
                            p["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        );
                    }
                    rows.push(row);
                }
            }
            out = table(&rows);
        }
    }
    Ok(out)
}

fn node_row(n: &Value, wide: bool) -> Vec<String> {
    let ready = n["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"] == "True");
    let mut status = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = n["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| {
            k.strip_prefix("node-role.kubernetes.io/")
                .map(str::to_string)
        })
        .collect();
    roles.sort();
    let info = &n["status"]["nodeInfo"];
    let address = |kind: &str| {
        n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let mut row = vec![
        n["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        status,
        if roles.is_empty() {
            "<none>".into()
        } else {
            roles.join(",")
        },
        age(&n["metadata"]["creationTimestamp"]),
        info["kubeletVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ];
    if wide {
        row.extend([
            address("InternalIP"),
            address("ExternalIP"),
            info["osImage"].as_str().unwrap_or_default().to_string(),
            info["kernelVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            info["containerRuntimeVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ]);
    }
    row
}

/// kubectl's short age (`5s`, `3m`, `2h`, `4d`).
fn age(ts: &Value) -> String {
    let Some(ts) = ts.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - ts.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Columns padded like kubectl's tabwriter (three spaces between columns).
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn data_dir(args: &[String]) -> PathBuf {
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if a == "--data-dir" || a == "-d" {
            if let Some(d) = iter.next() {
                return d.into();
            }
        } else if let Some(d) = a.strip_prefix("--data-dir=") {
            return d.into();
        }
    }
    std::env::var_os("K3S_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_path("/var/lib/rancher/k3s"))
}

/// `crictl ...`.
pub fn crictl(args: Vec<String>, _release: &Release) -> i32 {
    let dir = data_dir(&args);
    match args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str)
    {
        None if args.iter().any(|a| a == "--version") => {
            println!("crictl version v1.34.0-k3s1");
            0
        }
        Some("version") => {
            println!(
                "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  v2.1.5-k3s1\nRuntimeApiVersion:  v1"
            );
            0
        }
        Some("images") => {
            let mut rows = vec![vec![
                "IMAGE".to_string(),
                "TAG".into(),
                "IMAGE ID".into(),
                "SIZE".into(),
            ]];
            for image in super::read_images(&dir) {
                let (name, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
                let id = &hex::encode(sha2::Digest::finalize(
                    <sha2::Sha256 as sha2::Digest>::new_with_prefix(image.as_bytes()),
                ))[..13];
                rows.push(vec![name.into(), tag.into(), id.into(), "1MB".into()]);
            }
            print!("{}", table(&rows));
            0
        }
        Some("ps" | "pods") => {
            println!(
                "CONTAINER           IMAGE               CREATED             STATE               NAME                ATTEMPT             POD ID              POD"
            );
            0
        }
        other => {
            eprintln!("crictl {} {NOT_HERE}", other.unwrap_or_default());
            1
        }
    }
}

/// `ctr ...`.
pub fn ctr(args: Vec<String>, _release: &Release) -> i32 {
    let dir = data_dir(&args);
    let words: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let words: Vec<&str> = match words.as_slice() {
        // `ctr -n k8s.io images ls`: the namespace value is the first word.
        [ns, rest @ ..]
            if args.iter().any(|a| a == "-n" || a == "--namespace") && !ns.is_empty() =>
        {
            rest.to_vec()
        }
        w => w.to_vec(),
    };
    match words.as_slice() {
        ["version"] => {
            println!("Client:\n  Version:  v2.1.5-k3s1\n\nServer:\n  Version:  v2.1.5-k3s1");
            0
        }
        ["images" | "image" | "i", "ls" | "list"] => {
            println!("REF TYPE DIGEST SIZE PLATFORMS LABELS");
            for image in super::read_images(&dir) {
                println!(
                    "{image} application/vnd.docker.distribution.manifest.v2+json - 1.0 MiB linux/amd64 -"
                );
            }
            0
        }
        ["images" | "image" | "i", "import", file, ..] => {
            let images = dir.join("agent/images");
            let _ = std::fs::create_dir_all(&images);
            let target = images.join(Path::new(file).file_name().unwrap_or_default());
            if std::fs::copy(file, &target).is_err() {
                eprintln!("ctr: open {file}: no such file or directory");
                return 1;
            }
            super::import_airgap_images(&dir);
            println!("unpacking images from {file}...done");
            0
        }
        _ => {
            eprintln!("ctr {} {NOT_HERE}", words.join(" "));
            1
        }
    }
}

/// `k3s token create|list|generate`.
pub async fn token(args: Vec<String>) -> i32 {
    let o = options(&args);
    let path = o
        .kubeconfig
        .clone()
        .unwrap_or_else(|| default_path("/etc/rancher/k3s/k3s.yaml"));
    let random = |n: usize| -> String {
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let bytes = [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat();
        bytes
            .iter()
            .take(n)
            .map(|b| alphabet[*b as usize % alphabet.len()] as char)
            .collect()
    };
    let words: Vec<&str> = o.words.iter().map(String::as_str).collect();
    let result: Result<String, String> = match words.as_slice() {
        ["generate", ..] => Ok(format!("{}.{}\n", random(6), random(16))),
        ["create", rest @ ..] => {
            let token = rest
                .first()
                .map(|t| t.to_string())
                .unwrap_or_else(|| format!("{}.{}", random(6), random(16)));
            if !tokens::is_bootstrap(&token) {
                eprintln!(
                    "Error: invalid bootstrap token {token:?}: the format is [a-z0-9]{{6}}.[a-z0-9]{{16}}"
                );
                return 1;
            }
            let (id, secret) = token.split_once('.').unwrap_or_default();
            let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
            let description = flag_value(&args, "--description").unwrap_or_default();
            let secret_object = json!({
                "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
                "data": {
                    "token-id": b64(id), "token-secret": b64(secret), "description": b64(&description),
                    "usage-bootstrap-authentication": b64("true"), "usage-bootstrap-signing": b64("true"),
                    "auth-extra-groups": b64("system:bootstrappers:k3s:default-node-token"),
                },
            });
            match Kube::load(&path) {
                Ok(kube) => match kube
                    .send(
                        reqwest::Method::POST,
                        "/api/v1/namespaces/kube-system/secrets",
                        "application/json",
                        &secret_object,
                    )
                    .await
                {
                    Ok(_) => {
                        let ca = kube.server.ca_pem.clone();
                        Ok(format!("K10{}::{token}\n", tokens::ca_hash(ca.as_bytes())))
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        ["list" | "ls", ..] => match Kube::load(&path) {
            Ok(kube) => match kube.get("/api/v1/namespaces/kube-system/secrets").await {
                Ok(list) => {
                    let mut rows = vec![
                        "TOKEN",
                        "TTL",
                        "EXPIRES",
                        "USAGES",
                        "DESCRIPTION",
                        "EXTRA GROUPS",
                    ]
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>();
                    let mut table_rows = vec![std::mem::take(&mut rows)];
                    for s in list["items"].as_array().into_iter().flatten() {
                        if s["type"] != "bootstrap.kubernetes.io/token" {
                            continue;
                        }
                        let field = |k: &str| {
                            s["data"][k]
                                .as_str()
                                .and_then(|v| data_encoding::BASE64.decode(v.as_bytes()).ok())
                                .map(|v| String::from_utf8_lossy(&v).into_owned())
                                .unwrap_or_default()
                        };
                        let desc = field("description");
                        table_rows.push(vec![
                            format!("{}.****************", field("token-id")),
                            "<forever>".into(),
                            "<never>".into(),
                            "authentication,signing".into(),
                            if desc.is_empty() {
                                "<none>".into()
                            } else {
                                desc
                            },
                            field("auth-extra-groups"),
                        ]);
                    }
                    Ok(table(&table_rows))
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        other => Err(format!("Error: k3s token {} {NOT_HERE}", other.join(" "))),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if a == flag {
            return iter.next().cloned();
        }
        if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
    }
    None
}

/// `k3s etcd-snapshot list` (snapshots on disk; the stand-in takes none itself).
pub fn etcd_snapshot(args: Vec<String>) -> i32 {
    let words: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    match words.first() {
        Some(&("list" | "ls")) => {
            let dir = flag_value(&args, "--etcd-snapshot-dir")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir(&args).join("server/db/snapshots"));
            let mut rows = vec![vec![
                "Name".to_string(),
                "Location".into(),
                "Size".into(),
                "Created".into(),
            ]];
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .collect();
            files.sort_by_key(|e| e.file_name());
            for f in files {
                let meta = f.metadata().ok();
                let created = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default();
                rows.push(vec![
                    f.file_name().to_string_lossy().into_owned(),
                    format!("file://{}", f.path().display()),
                    meta.map(|m| m.len()).unwrap_or(0).to_string(),
                    created,
                ]);
            }
            print!("{}", table(&rows));
            0
        }
        other => {
            eprintln!(
                "Error: k3s etcd-snapshot {} {NOT_HERE}",
                other.copied().unwrap_or("save")
            );
            1
        }
    }
}
