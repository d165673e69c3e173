//! Federation benchmark (a program, not a timed test): registers N emulated
//! member clusters into one emulated Karmada host (kube-emulator stand-ins
//! in this process, over HTTPS on loopback) with ONE run of `edgeforge apply
//! --layer federation`, for each N of `--sizes`; then the same run again
//! (nothing to change); and, for the N of `--baseline-sizes`, the same
//! joins done the way `karmadactl join` does them, one cluster at a time:
//! its request sequence (GET before every create, the cluster list for the
//! id check) with new connections per join, including its token wait
//! (`wait.PollUntilContextTimeout(1s, 30s, immediate=false)`: the first look
//! after 1 s, and the Secret it creates there is not filled yet, so one more
//! second).
//!
//! Measured: wall time, API requests per cluster (host and member logs of
//! the emulators), writes on the second run, edgeforge's peak RSS and CPU
//! (from wait4's rusage). Results: `tests/bench/results/<name>.{json,md}`.
//!
//! ```sh
//! cargo run --release -p edgeforge-tests --bin federation_bench -- --sizes 10,100,1000 --baseline-sizes 10,100
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use edgeforge_tests::federation_host::{Federation, client};
use edgeforge_tests::kube_emulator::Emulator;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

/// Register N emulated members into one emulated Karmada host: edgeforge vs karmadactl's sequence.
#[derive(Debug, Parser)]
struct Args {
    /// Member counts for edgeforge (one run each, then a second run).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    sizes: Vec<usize>,
    /// Member counts for the karmadactl-equivalent sequence (about 4 s per cluster).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    baseline_sizes: Vec<usize>,
    /// edgeforge's --parallel.
    #[arg(long, default_value_t = 100)]
    parallel: usize,
    /// Results name under tests/bench/results/ (default federation-<UTC date>).
    #[arg(long)]
    results: Option<String>,
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Measured {
    tool: String,
    n: usize,
    run: String,
    wall_s: f64,
    host_requests: usize,
    member_requests: usize,
    writes: usize,
    peak_rss_mib: Option<f64>,
    cpu_s: Option<f64>,
    note: String,
}

impl Measured {
    fn per_cluster(&self) -> f64 {
        (self.host_requests + self.member_requests) as f64 / self.n as f64
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bin = edgeforge_tests::edgeforge_bin();
    let name = args
        .results
        .clone()
        .unwrap_or_else(|| format!("federation-{}", jiff::Timestamp::now().strftime("%Y-%m-%d")));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let json_path = dir.join(format!("{name}.json"));
    let mut results: Vec<Measured> = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let record = |m: Measured, results: &mut Vec<Measured>| -> anyhow::Result<()> {
        eprintln!(
            "{:>10} N={:<5} {:<5} {:>8.2} s  {:>6.1} req/cluster  writes {:<6} rss {:>7} cpu {:>7}  {}",
            m.tool,
            m.n,
            m.run,
            m.wall_s,
            m.per_cluster(),
            m.writes,
            m.peak_rss_mib.map_or("-".into(), |r| format!("{r:.0} MiB")),
            m.cpu_s.map_or("-".into(), |c| format!("{c:.1} s")),
            m.note
        );
        results.retain(|r| !(r.tool == m.tool && r.n == m.n && r.run == m.run));
        results.push(m);
        results.sort_by(|a, b| (a.n, &a.run, &a.tool).cmp(&(b.n, &b.run, &b.tool)));
        std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)?;
        std::fs::write(dir.join(format!("{name}.md")), markdown(results, &args))?;
        Ok(())
    };
    for &n in &args.sizes {
        let (cold, warm) = runtime.block_on(edgeforge_runs(&bin, n, args.parallel))?;
        record(cold, &mut results)?;
        record(warm, &mut results)?;
    }
    for &n in &args.baseline_sizes {
        let m = runtime.block_on(karmadactl_runs(n))?;
        record(m, &mut results)?;
    }
    eprintln!("results: {}", json_path.display());
    Ok(())
}

/// Counts of the emulators' request logs since they were cleared.
fn counts(fed: &Federation) -> (usize, usize, usize) {
    let host = fed.host.requests();
    let members: Vec<_> = fed.members.iter().flat_map(Emulator::requests).collect();
    let writes = host.iter().chain(&members).filter(|r| r.write).count();
    (host.len(), members.len(), writes)
}

fn clear(fed: &Federation) {
    fed.host.clear_requests();
    for m in &fed.members {
        m.clear_requests();
    }
}

/// edgeforge's join of N members, then the same run again.
async fn edgeforge_runs(
    bin: &Path,
    n: usize,
    parallel: usize,
) -> anyhow::Result<(Measured, Measured)> {
    let fed = Federation::start(n).await?;
    let inventory = fed.write("inv.yaml", &fed.inventory("karmada", &[]))?;
    let state = fed.dir.path().join("state");
    let mut out = Vec::new();
    for run in ["cold", "warm"] {
        clear(&fed);
        let (wall, rss, cpu) = run_edgeforge(bin, &state, &inventory, parallel).await?;
        let (host, members, writes) = counts(&fed);
        let registered = fed
            .host
            .store()
            .list("cluster.karmada.io/v1alpha1", "clusters", None)
            .len();
        if registered != n {
            bail!("after the {run} run the host has {registered} Clusters, not {n}");
        }
        out.push(Measured {
            tool: "edgeforge".into(),
            n,
            run: run.into(),
            wall_s: wall.as_secs_f64(),
            host_requests: host,
            member_requests: members,
            writes,
            peak_rss_mib: Some(rss),
            cpu_s: Some(cpu),
            note: format!("one `apply --layer federation --parallel {parallel}`"),
        });
    }
    let warm = out.pop().context("two runs")?;
    let cold = out.pop().context("two runs")?;
    Ok((cold, warm))
}

/// Runs edgeforge to the end: wall time, peak RSS (MiB) and CPU seconds from wait4.
async fn run_edgeforge(
    bin: &Path,
    state: &Path,
    inventory: &Path,
    parallel: usize,
) -> anyhow::Result<(Duration, f64, f64)> {
    let bin = bin.to_path_buf();
    let state = state.to_path_buf();
    let inventory = inventory.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let child = std::process::Command::new(&bin)
            .env("XDG_STATE_HOME", &state)
            .args([
                "-q",
                "apply",
                "--layer",
                "federation",
                "--parallel",
                &parallel.to_string(),
                "-i",
            ])
            .arg(&inventory)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let pid = child.id() as libc::pid_t;
        let mut stderr = child.stderr;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = std::io::Read::read_to_string(e, &mut s);
            }
            s
        });
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own child, not yet reaped; status and usage are valid out-pointers.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let wall = start.elapsed();
        let errors = reader.join().unwrap_or_default();
        if reaped != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("edgeforge failed (status {status}): {errors}");
        }
        let cpu = usage.ru_utime.tv_sec as f64
            + usage.ru_utime.tv_usec as f64 / 1e6
            + usage.ru_stime.tv_sec as f64
            + usage.ru_stime.tv_usec as f64 / 1e6;
        Ok((wall, usage.ru_maxrss as f64 / 1024.0, cpu))
    })
    .await?
}

/// The joins of N members, one at a time, with karmadactl join's requests.
async fn karmadactl_runs(n: usize) -> anyhow::Result<Measured> {
    let fed = Federation::start(n).await?;
    clear(&fed);
    let host_kc = std::fs::read_to_string(fed.host_kubeconfig())?;
    let start = Instant::now();
    for i in 0..n {
        let member_kc = std::fs::read_to_string(fed.member_kubeconfig(i))?;
        // A new process per join: new clients, new connections.
        let host = client(&host_kc).await?;
        let member = client(&member_kc).await?;
        karmadactl_join(&host, &member, &format!("site-{i}"), &fed.members[i].url()).await?;
    }
    let wall = start.elapsed();
    let (host, members, writes) = counts(&fed);
    let registered = fed
        .host
        .store()
        .list("cluster.karmada.io/v1alpha1", "clusters", None)
        .len();
    if registered != n {
        bail!("the karmadactl sequence registered {registered} Clusters, not {n}");
    }
    Ok(Measured {
        tool: "karmadactl".into(),
        n,
        run: "cold".into(),
        wall_s: wall.as_secs_f64(),
        host_requests: host,
        member_requests: members,
        writes,
        peak_rss_mib: None,
        cpu_s: None,
        note: "karmadactl join's request sequence, one cluster at a time, 1 s token polling".into(),
    })
}

fn is_404<T>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 404)
}

/// Get, and create when missing (karmadactl's Ensure*Exist).
async fn ensure<K>(api: &Api<K>, name: &str, object: Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let got = api.get(name).await;
    if is_404(&got) {
        let object: K = serde_json::from_value(object)?;
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        got?;
    }
    Ok(())
}

/// WaitForServiceAccountSecretCreation: every second (the first after one
/// second) get the service account and its Secret, creating the Secret when
/// missing, until the token is there.
async fn wait_token(member: &kube::Client, ns: &str, sa: &str) -> anyhow::Result<Secret> {
    let accounts: Api<ServiceAccount> = Api::namespaced(member.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(member.clone(), ns);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        accounts.get(sa).await?;
        let got = secrets.get(sa).await;
        let secret = if is_404(&got) {
            let object: Secret = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": sa, "namespace": ns, "annotations": {"kubernetes.io/service-account.name": sa}},
            }))?;
            secrets.create(&PostParams::default(), &object).await?
        } else {
            got?
        };
        if secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key("token"))
        {
            return Ok(secret);
        }
    }
    bail!("no token for {ns}/{sa} within 30 s")
}

/// One `karmadactl join CLUSTER`.
async fn karmadactl_join(
    host: &kube::Client,
    member: &kube::Client,
    cluster: &str,
    endpoint: &str,
) -> anyhow::Result<()> {
    let labels = json!({"karmada.io/system": "true"});
    let ns = "karmada-cluster";
    let id = Api::<Namespace>::all(member.clone())
        .get("kube-system")
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let clusters: Api<DynamicObject> = Api::all_with(
        host.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cluster.karmada.io", "v1alpha1", "Cluster"),
            "clusters",
        ),
    );
    // IsClusterIdentifyUnique lists every Cluster.
    for c in clusters.list(&ListParams::default()).await?.items {
        if c.data["spec"]["id"] == json!(id) {
            bail!(
                "the same cluster has been registered with name {:?}",
                c.metadata.name
            );
        }
    }
    // ObtainCredentialsFromMemberCluster.
    ensure(&Api::<Namespace>::all(member.clone()), ns,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(member.clone(), ns);
    ensure(&accounts, "karmada-impersonator",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "karmada-impersonator", "namespace": ns, "labels": labels}})).await?;
    let impersonator = wait_token(member, ns, "karmada-impersonator").await?;
    let sa = format!("karmada-{cluster}");
    ensure(&accounts, &sa,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns, "labels": labels}})).await?;
    let role = format!("karmada-controller-manager:{sa}");
    ensure(&Api::<ClusterRole>::all(member.clone()), &role, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role, "labels": labels},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["get"]}]})).await?;
    ensure(
        &Api::<ClusterRoleBinding>::all(member.clone()),
        &role,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role, "labels": labels},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}}),
    )
    .await?;
    let credentials = wait_token(member, ns, &sa).await?;
    let data = |s: &Secret, k: &str| -> Value {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| json!(data_encoding::BASE64.encode(&b.0)))
            .unwrap_or(Value::Null)
    };
    // RegisterClusterInControllerPlane.
    ensure(&Api::<Namespace>::all(host.clone()), ns,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})).await?;
    let secrets: Api<Secret> = Api::namespaced(host.clone(), ns);
    let impersonator_name = format!("{cluster}-impersonator");
    for (name, body) in [
        (
            impersonator_name.clone(),
            json!({"token": data(&impersonator, "token")}),
        ),
        (
            cluster.to_string(),
            json!({"caBundle": data(&credentials, "ca.crt"), "token": data(&credentials, "token")}),
        ),
    ] {
        let object: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns, "labels": labels}, "data": body}))?;
        secrets.create(&PostParams::default(), &object).await?;
    }
    let got = clusters.get(cluster).await;
    if !is_404(&got) {
        bail!("cluster {cluster} exists");
    }
    let object: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": cluster},
        "spec": {"syncMode": "Push", "apiEndpoint": endpoint, "id": id,
            "secretRef": {"namespace": ns, "name": cluster},
            "impersonatorSecretRef": {"namespace": ns, "name": impersonator_name}}}),
    )?;
    let created = clusters.create(&PostParams::default(), &object).await?;
    let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
        "name": cluster, "uid": created.metadata.uid, "controller": true, "blockOwnerDeletion": true}]}});
    for name in [impersonator_name.as_str(), cluster] {
        secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&owner))
            .await?;
    }
    Ok(())
}

/// The results as a Markdown table, with how they were made.
fn markdown(results: &[Measured], args: &Args) -> String {
    let mut by_n: BTreeMap<usize, Vec<&Measured>> = BTreeMap::new();
    for r in results {
        by_n.entry(r.n).or_default().push(r);
    }
    let mut md = String::from(
        "# Federation benchmark: registering N clusters into one Karmada host\n\n\
         Generated by `tests/src/bin/federation_bench.rs`; rerun with the command in the README.\n\
         The host and the N members are kube-emulator stand-ins (HTTPS on loopback, one CA) in the\n\
         benchmark's own process, on the same 2 cores as the client. *edgeforge*: one `edgeforge\n\
         apply --layer federation` for all N (push mode: identify, check, credentials, register per\n\
         site); *warm*: the same run again right after (nothing to change). *karmadactl*: the request\n\
         sequence of `karmadactl join`, one cluster after the other with new connections each time,\n\
         including its token polling (first look after 1 s; the Secret it creates then is filled by\n\
         the next look, 1 s later), in this process (no exec per join, so its CPU is not separable).\n\
         Requests per cluster count every request the host and the members answered. Peak memory and\n\
         CPU are edgeforge's (wait4 rusage).\n\n\
         | N | tool | run | wall | per cluster | requests per cluster (host + member) | writes | peak RSS | CPU | vs karmadactl |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (n, rows) in &by_n {
        let baseline = rows
            .iter()
            .find(|r| r.tool == "karmadactl")
            .map(|r| r.wall_s);
        for r in rows {
            let vs = match (baseline, r.tool.as_str()) {
                (Some(b), "edgeforge") => format!("{:.0}× faster", b / r.wall_s),
                (_, "karmadactl") => "1×".into(),
                _ => "n/a".into(),
            };
            md.push_str(&format!(
                "| {n} | {} | {} | {:.2} s | {:.1} ms | {:.1} ({:.1} + {:.1}) | {} | {} | {} | {vs} |\n",
                r.tool,
                r.run,
                r.wall_s,
                r.wall_s * 1000.0 / *n as f64,
                r.per_cluster(),
                r.host_requests as f64 / *n as f64,
                r.member_requests as f64 / *n as f64,
                r.writes,
                r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0} MiB")),
                r.cpu_s.map_or("-".into(), |c| format!("{c:.1} s")),
            ));
        }
    }
    md.push_str(&format!(
        "\nedgeforge ran with `--parallel {}`. Machine: {} cores, {}.\n",
        args.parallel,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_else(|| "unknown CPU".into())
    ));
    md
}
