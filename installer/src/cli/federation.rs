//! `edgeforge federation status` (each site's registration as the host sees
//! it), `edgeforge federation unjoin` (the unjoin tasks of the plan, run by
//! the executor like `apply`), and `edgeforge federate` (a federated
//! workload rendered and applied to the host).

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

use super::apply::{ApplyArgs, LogFormat};
use super::{GlobalOpts, Outcome};
use crate::Error;
use crate::data::DataDir;
use crate::federation::{self, Kube, workload};
use crate::inventory::{FederationKind, Inventory};
use crate::plan::{self, Limit, Selection};
use crate::render::Renderer;

/// Examples of `edgeforge federation`.
pub const FEDERATION_EXAMPLES: &str = "\
Examples:
  edgeforge federation status -i inventory/federation.yaml
  edgeforge federation status -i sites.yaml --format json | jq '.[] | select(.ready != \"True\")'
  edgeforge federation unjoin -i sites.yaml --site shanghai-01
  edgeforge apply -i sites.yaml --layer federation            # join (again): changes nothing when joined

Joins happen in `edgeforge apply` (the federation layer). A registration the
host keeps under the cluster's name for another cluster id is an error naming
both ids; `edgeforge apply --reregister` replaces it.";

/// `edgeforge federation ...`
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Each site's registration as the federation host sees it (name, mode, id, Ready, labels).
    Status(StatusArgs),
    /// Unregister sites from the federation host and remove what their join created on their clusters.
    Unjoin(UnjoinArgs),
}

/// Output formats of `federation status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// A table.
    Table,
    /// A JSON array, one object per site.
    Json,
}

/// Arguments of `edgeforge federation status`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
One row per site of the inventory: whether the host has its cluster, in
which mode, under which id (the UID of the cluster's kube-system namespace),
whether the host reports it Ready (and why not), and its labels there.

Examples:
  edgeforge federation status -i inventory/federation.yaml
  edgeforge federation status -i sites.yaml --format json | jq -r '.[] | select(.registered | not) | .site'")]
pub struct StatusArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
}

/// Arguments of `edgeforge federation unjoin`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The order is the upstream tools': Karmada push unregisters the Cluster on the
host (and waits until it is gone), then removes the member's RBAC, service
accounts and namespace; pull removes the Works, the Cluster, the agent's
RBAC and credential on the host, then the agent and its objects on the
member; KubeFed removes the member's objects, then the host's Secret and
KubeFedCluster. Running it again, or for a site that is not registered,
changes nothing.

Examples:
  edgeforge federation unjoin -i inventory/federation.yaml --site chengdu-dev
  edgeforge federation unjoin -i sites.yaml --site shanghai-01,beijing-01 --check")]
pub struct UnjoinArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// The sites to unjoin (comma-separated or repeated).
    #[arg(long, value_name = "SITE", value_delimiter = ',', required = true)]
    pub site: Vec<String>,
    /// Change nothing; show what would be deleted.
    #[arg(long)]
    pub check: bool,
    /// Lock, journals and outputs (default: $XDG_STATE_HOME/edgeforge/<inventory name>).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Format of the event log.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Arguments of `edgeforge federate`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The app file holds a plain Deployment (and optionally a Service), a placement
(sites by name, or a selector over the sites' cluster labels) and per-site
overrides (replicas, image, JSON-patch add/remove/replace). For Karmada it
becomes a PropagationPolicy (Duplicated) and an OverridePolicy (plaintext and
imageOverrider) beside the Deployment and Service; for KubeFed a
FederatedNamespace, FederatedDeployment and FederatedService. Objects already
as rendered are not written again.

Examples:
  edgeforge federate -i inventory/federation.yaml -f inventory/nginx-app.yaml --dry-run
  edgeforge federate -i inventory/federation.yaml -f inventory/nginx-app.yaml
  edgeforge check -i inventory/federation.yaml --app inventory/nginx-app.yaml")]
pub struct FederateArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// The app file.
    #[arg(short = 'f', long = "file", value_name = "APP")]
    pub app: PathBuf,
    /// Print the rendered objects instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `edgeforge federation ...`.
pub fn run(g: &GlobalOpts, cmd: FederationCommand) -> Outcome {
    match cmd {
        FederationCommand::Status(args) => {
            let loaded = match super::load_inventory(g, &args.inventory) {
                Ok(l) => l,
                Err(o) => return o,
            };
            super::finish(status(&args, &loaded.inventory))
        }
        FederationCommand::Unjoin(args) => {
            let loaded = match super::load_inventory(g, &args.inventory) {
                Ok(l) => l,
                Err(o) => return o,
            };
            super::finish(unjoin(g, &args, &loaded.inventory))
        }
    }
}

/// Runs `edgeforge federate`.
pub fn run_federate(g: &GlobalOpts, args: FederateArgs) -> Outcome {
    let loaded = match super::load_inventory(g, &args.inventory) {
        Ok(l) => l,
        Err(o) => return o,
    };
    super::finish(federate(g, &args, &loaded.inventory))
}

/// The federation host's connection, from the inventory.
async fn connect_host(inv: &Inventory) -> Result<crate::kube::KubeConn, Error> {
    if inv.federation.kind == FederationKind::None {
        return Err(Error::Invalid(
            "the inventory has no federation (`federation.type: none`); set `karmada` or `kubefed` and its `kubeconfig`".into(),
        ));
    }
    let Some(kubeconfig) = &inv.federation.kubeconfig else {
        return Err(Error::Invalid(
            "the inventory's `federation` has no `kubeconfig`".into(),
        ));
    };
    let conn = crate::kube::connect_file_with(
        kubeconfig,
        inv.federation.context.as_deref(),
        inv.federation.insecure_skip_tls_verify,
    )
    .await?;
    if conn.insecure {
        eprintln!(
            "warning: TLS verification of {} is off (insecureSkipTLSVerify): anyone on the path can read its tokens",
            conn.source
        );
    }
    Ok(conn)
}

fn status(args: &StatusArgs, inv: &Inventory) -> Result<Outcome, Error> {
    let rows = super::runtime()?.block_on(async {
        let conn = connect_host(inv).await?;
        let host = Kube::new(&conn, "federation host", false);
        federation::status::status(&host, inv)
            .await
            .map_err(Error::from)
    })?;
    match args.format {
        StatusFormat::Table => print!("{}", federation::status::table(&rows)),
        StatusFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
        ),
    }
    Ok(Outcome::Success)
}

fn unjoin(g: &GlobalOpts, args: &UnjoinArgs, inv: &Inventory) -> Result<Outcome, Error> {
    if inv.federation.kind == FederationKind::None {
        return Err(Error::Invalid(
            "the inventory has no federation (`federation.type: none`): nothing to unjoin".into(),
        ));
    }
    for site in &args.site {
        if !inv.sites.iter().any(|s| s.name.value == *site) {
            let known: Vec<&str> = inv.sites.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::Invalid(format!(
                "--site {site}: the inventory has no such site (its sites: {})",
                known.join(", ")
            )));
        }
    }
    let pattern = args
        .site
        .iter()
        .map(|s| format!("site:{s}"))
        .collect::<Vec<_>>()
        .join(",");
    let limit = Limit::parse(&pattern).map_err(|e| Error::Invalid(e.to_string()))?;
    let selection = Selection {
        limit: Some(limit),
        layers: Vec::new(),
    };
    let plan = plan::federation_unjoin(inv, &selection)?;
    let data = DataDir::new(g.data_dir.as_deref());
    let renderer = Renderer::new(&data)?;
    let mut apply = ApplyArgs::with_inventory(args.inventory.clone());
    apply.check = args.check;
    apply.state_dir.clone_from(&args.state_dir);
    apply.log_format = args.log_format;
    super::apply::execute(g, &apply, inv, &plan, data, renderer)
}

fn federate(g: &GlobalOpts, args: &FederateArgs, inv: &Inventory) -> Result<Outcome, Error> {
    let app = workload::load(&args.app)?;
    let data = DataDir::new(g.data_dir.as_deref());
    let renderer = Renderer::new(&data)?;
    let file = args.app.display().to_string();
    let objects = workload::render(&file, &app, inv, &renderer)?;
    if args.dry_run {
        for o in &objects {
            let text = serde_saphyr::to_string(o).unwrap_or_else(|_| o.to_string());
            println!("---\n{}", text.trim_end());
        }
        return Ok(Outcome::Success);
    }
    let changes = super::runtime()?.block_on(async {
        let conn = connect_host(inv).await?;
        let host = Kube::new(&conn, "federation host", false);
        workload::apply(&host, &objects).await?;
        Ok::<_, Error>(host.changes())
    })?;
    if !g.quiet {
        for c in &changes {
            println!("{c}");
        }
        println!(
            "{}: {} object(s), {} written, {} already as rendered",
            args.app.display(),
            objects.len(),
            changes.len(),
            objects.len().saturating_sub(changes.len())
        );
    }
    Ok(Outcome::Success)
}
