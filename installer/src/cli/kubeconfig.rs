//! `edgeforge kubeconfig`: a site's kubeconfig as the k3s layer fetched it
//! (`<state dir>/kubeconfig/<site>.yaml`), printed, or merged into
//! `~/.kube/config` (or another file) with [`crate::kube::kubeconfig::merge`]
//! after a backup of that file.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{GlobalOpts, Outcome};
use crate::Error;
use crate::inventory::Inventory;

/// Arguments of `edgeforge kubeconfig`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The k3s layer of `edgeforge apply` fetches each site's kubeconfig from its
first server, names its cluster, user and context after the site and points
it at the address the operator reaches (`cluster.apiServer`, a lab VM's
`apiForwardPort`, else port 6443 of the first server). This prints it, or
merges it into a kubeconfig: entries of the site's name are replaced, every
other entry and the current context stay (a file without a current context
gets the site's). The file merged into is backed up first, as
FILE.edgeforge-YYYYmmddTHHMMSSZ.bak.

Examples:
  edgeforge kubeconfig -i inventory/lab.yaml > lab.kubeconfig
  edgeforge kubeconfig -i sites.yaml --site eu-paris-01 --merge
  edgeforge kubeconfig -i sites.yaml --site eu-paris-01 --merge ./fleet.kubeconfig
  kubectl --context eu-paris-01 get nodes

Exit codes: 0 printed or merged, 1 the kubeconfig is missing or a file
cannot be written, 2 invalid inventory or --site.")]
pub struct KubeconfigArgs {
    /// The inventory file (`inventory/lab.yaml` is the built-in lab when no such file exists).
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// The site (needed when the inventory has more than one).
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,
    /// Merge into this kubeconfig (default ~/.kube/config) instead of printing.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "")]
    pub merge: Option<PathBuf>,
    /// The inventory's state directory (default: $XDG_STATE_HOME/edgeforge/<inventory name>).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Runs `edgeforge kubeconfig`.
pub fn run(g: &GlobalOpts, args: KubeconfigArgs) -> Outcome {
    let loaded = match super::load_inventory(g, &args.inventory) {
        Ok(l) => l,
        Err(outcome) => return outcome,
    };
    super::finish(kubeconfig(g, &args, &loaded.inventory))
}

fn kubeconfig(g: &GlobalOpts, args: &KubeconfigArgs, inv: &Inventory) -> Result<Outcome, Error> {
    let site = pick_site(inv, args.site.as_deref())?;
    let state = super::state_dir(args.state_dir.as_deref(), inv, &args.inventory);
    let file = state.join("kubeconfig").join(format!("{site}.yaml"));
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Io {
                what: format!(
                    "site {site} has no kubeconfig yet (the k3s layer of `edgeforge apply -i {}` \
                     fetches it): no file",
                    args.inventory.display()
                ),
                path: file,
                source: e,
            });
        }
        Err(source) => {
            return Err(Error::Io {
                what: "reading the kubeconfig".into(),
                path: file,
                source,
            });
        }
    };
    let Some(target) = &args.merge else {
        let mut out = std::io::stdout().lock();
        return match out.write_all(text.as_bytes()) {
            Ok(()) => Ok(Outcome::Success),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Outcome::Success),
            Err(source) => Err(Error::Io {
                what: "writing the kubeconfig to".into(),
                path: "standard output".into(),
                source,
            }),
        };
    };
    let target = if target.as_os_str().is_empty() {
        dirs::home_dir()
            .map(|h| h.join(".kube").join("config"))
            .ok_or_else(|| Error::Invalid("no home directory: give --merge a PATH".into()))?
    } else {
        target.clone()
    };
    let backup = merge_into(&target, &text, &file)?;
    if !g.quiet {
        eprintln!(
            "merged the kubeconfig of site {site} into {}{}; use it with `kubectl --context {site}`",
            target.display(),
            backup
                .map(|b| format!(" (previous file kept as {})", b.display()))
                .unwrap_or_default()
        );
    }
    Ok(Outcome::Success)
}

/// The site to use: `--site`, or the inventory's only one.
fn pick_site<'a>(inv: &'a Inventory, wanted: Option<&str>) -> Result<&'a str, Error> {
    let names: Vec<&str> = inv.sites.iter().map(|s| s.name.as_str()).collect();
    match wanted {
        Some(w) => names.iter().copied().find(|n| *n == w).ok_or_else(|| {
            Error::Invalid(format!(
                "--site {w}: the inventory has no such site; its sites are: {}",
                names.join(", ")
            ))
        }),
        None => match names.as_slice() {
            [only] => Ok(only),
            _ => Err(Error::Invalid(format!(
                "the inventory has {} sites; say which with --site (one of: {})",
                names.len(),
                names.join(", ")
            ))),
        },
    }
}

/// Merges kubeconfig `text` (read from `origin`) into `target`, which is
/// backed up first when it exists; returns the backup's path.
fn merge_into(target: &Path, text: &str, origin: &Path) -> Result<Option<PathBuf>, Error> {
    let io = |what: &str, path: &Path| {
        let what = what.to_string();
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    let existing = match std::fs::read_to_string(target) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading the kubeconfig", target)(e)),
    };
    let target_name = target.display().to_string();
    let origin_name = origin.display().to_string();
    let merged = crate::kube::kubeconfig::merge(
        existing.as_deref().map(|t| (t, target_name.as_str())),
        (text, origin_name.as_str()),
    )
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let backup = match &existing {
        Some(old) => {
            let stamp = crate::exec::events::utc_now()
                .replace(['-', ':'], "")
                .split('.')
                .next()
                .unwrap_or_default()
                .trim_end_matches('Z')
                .to_string();
            let mut name = target.as_os_str().to_owned();
            name.push(format!(".edgeforge-{stamp}Z.bak"));
            let path = PathBuf::from(name);
            write_0600(&path, old.as_bytes()).map_err(io("backing up the kubeconfig to", &path))?;
            Some(path)
        }
        None => None,
    };
    write_0600(target, merged.as_bytes()).map_err(io("writing the kubeconfig", target))?;
    Ok(backup)
}

/// Writes a 0600 file atomically (a temporary name beside it, then a
/// rename), creating its directory (0700) when missing and leaving an
/// existing directory's mode alone.
fn write_0600(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = dir.join(format!(
        ".{}.edgeforge-tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
