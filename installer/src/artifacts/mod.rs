//! Artifacts: the files edgeforge places on nodes (the k3s binary, the k3s
//! air-gap images), pinned by sha256 in `images/manifest.yaml`, downloaded
//! into a content-addressed cache, and carried to air-gapped sites in bundles.
//!
//! [`manifest`] says what exists and what it must hash to; [`download`]
//! fetches bytes over HTTP (resume by Range, retries, per-read timeout) or
//! from a mirror directory; [`cache`] keeps only verified files under
//! `<cache>/sha256/<hex>`; [`bundle`] packs and unpacks `site.tar.zst`;
//! [`pin`] records a new release's hashes into a manifest. Step kinds read
//! the cache through [`ArtifactCache::get`], which gives the path and the
//! hash that `Transport::put` needs.

pub mod bundle;
pub mod cache;
pub mod download;
pub mod manifest;
pub mod pin;

use std::fmt;
use std::path::PathBuf;

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

pub use cache::{ArtifactCache, CachedArtifact, Damage, VerifyReport};
pub use download::{Downloader, DownloaderOptions, Mirror, NoProgress, Progress, Source};
pub use manifest::{Manifest, ResolvedArtifact};

/// A CPU architecture artifacts are built for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM (aarch64).
    Arm64,
}

impl Arch {
    /// Every architecture, in manifest order.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The name used in manifests, file names and checksum URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One artifact by identity: name, version and architecture.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// Manifest name, e.g. `k3s` or `k3s-airgap-images`.
    pub name: String,
    /// Release, e.g. `v1.34.2+k3s1`.
    pub version: String,
    /// Architecture.
    pub arch: Arch,
}

impl ArtifactRef {
    /// Builds a reference from its three parts.
    pub fn new(name: impl Into<String>, version: impl Into<String>, arch: Arch) -> Self {
        ArtifactRef {
            name: name.into(),
            version: version.into(),
            arch,
        }
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.name, self.version, self.arch)
    }
}

/// Errors of the artifacts module.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The manifest file could not be read.
    #[error("cannot read the artifact manifest {path}")]
    ManifestRead {
        /// The manifest file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid YAML of the expected shape.
    #[error("{path}:{line}:{col}: {message}")]
    ManifestSyntax {
        /// The manifest file.
        path: String,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        col: u64,
        /// What is wrong.
        message: String,
    },
    /// The manifest parses but says something impossible.
    #[error("{path}:{line}:{col}: {message}")]
    ManifestInvalid {
        /// The manifest file.
        path: String,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        col: u64,
        /// What is wrong and what to do.
        message: String,
    },
    /// The manifest has no pin for this artifact.
    #[error(
        "the manifest has no pin for {artifact}; pinned versions of {}: {known}; \
         pin it with `edgeforge images pin {} {}`",
        .artifact.name, .artifact.name, .artifact.version
    )]
    NotPinned {
        /// The artifact asked for.
        artifact: Box<ArtifactRef>,
        /// Versions the manifest does pin, comma separated.
        known: String,
    },
    /// No artifact of that name exists in the manifest.
    #[error("the manifest has no artifact named `{name}` (known: {known})")]
    UnknownArtifact {
        /// The name asked for.
        name: String,
        /// The names the manifest has, comma separated.
        known: String,
    },
    /// Offline and the cache lacks artifacts.
    #[error(
        "offline, and the cache {cache} lacks {missing}; fetch them with `{command}` on a \
         machine with network access, or carry them here with `edgeforge images bundle` and \
         `edgeforge images import`"
    )]
    Missing {
        /// The cache directory.
        cache: PathBuf,
        /// The missing artifacts, comma separated.
        missing: String,
        /// The command that fetches them.
        command: String,
    },
    /// Downloaded bytes do not hash to the pinned value.
    #[error(
        "{artifact} from {url} has sha256 {actual}, but the manifest pins {expected}; \
         the file was deleted and did not enter the cache"
    )]
    HashMismatch {
        /// The artifact.
        artifact: Box<ArtifactRef>,
        /// Where the bytes came from.
        url: String,
        /// The pinned hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// Every source of an artifact failed.
    #[error("could not fetch {artifact}: {}{hint}", attempts.join("; "))]
    AllSourcesFailed {
        /// The artifact.
        artifact: Box<ArtifactRef>,
        /// One sentence per source tried.
        attempts: Vec<String>,
        /// Advice for the reader, possibly empty.
        hint: String,
    },
    /// A local file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// A bundle is malformed or does not match its own manifest.
    #[error("bundle {path} refused: {reason}; the cache was not changed")]
    BundleRefused {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A checksum file could not be fetched or lacks an entry.
    #[error("{0}")]
    Pin(String),
    /// The cache index is unreadable.
    #[error(
        "the cache index {path} is damaged ({reason}); delete it: the cached files stay, and \
         `edgeforge images pull` records them again without downloading"
    )]
    IndexDamaged {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result of the artifacts module.
pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;

/// Wraps an I/O error with a sentence naming what was being done.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArtifactError {
    let context = context.into();
    move |source| ArtifactError::Io { context, source }
}

/// How many artifacts [`pull`] downloads at once.
pub const PARALLEL_DOWNLOADS: usize = 3;

/// How [`pull`] may reach for artifacts the cache lacks.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Fetch from this mirror instead of the manifest's URLs.
    pub mirror: Option<download::Mirror>,
    /// Never touch the network: fail when anything is missing.
    pub offline: bool,
    /// The command that would fetch what is missing, quoted in the offline error.
    pub fetch_command: String,
}

/// What [`pull`] did.
#[derive(Debug, Clone, Default)]
pub struct PullSummary {
    /// Artifacts that were already cached (no request made for them).
    pub present: Vec<CachedArtifact>,
    /// Artifacts downloaded by this call.
    pub fetched: Vec<CachedArtifact>,
}

impl PullSummary {
    /// Every artifact, in the order asked.
    pub fn all(&self) -> Vec<CachedArtifact> {
        let mut v = self.present.clone();
        v.extend(self.fetched.iter().cloned());
        v
    }
}

/// Makes every artifact of `needs` present in `cache`. When the cache has
/// them all this performs no network request at all; otherwise, unless
/// `offline`, it downloads only the missing ones.
pub async fn pull(
    cache: &ArtifactCache,
    downloader: &Downloader,
    needs: &[ResolvedArtifact],
    opts: &PullOptions,
) -> Result<PullSummary> {
    let mut summary = PullSummary::default();
    let mut missing = Vec::new();
    for art in needs {
        match cache.lookup(art)? {
            Some(c) => summary.present.push(c),
            None => missing.push(art),
        }
    }
    if missing.is_empty() {
        return Ok(summary);
    }
    if opts.offline {
        return Err(ArtifactError::Missing {
            cache: cache.root().to_path_buf(),
            missing: missing
                .iter()
                .map(|a| a.artifact.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            command: opts.fetch_command.clone(),
        });
    }
    // A few transfers at once (the k3s binary and its images tarball come
    // from the same release); results keep the order asked. Content shared
    // by several names is downloaded once (its partial file is locked).
    let mut seen = std::collections::HashSet::new();
    let (unique, shared): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|art| seen.insert(art.sha256.clone()));
    let fetches = unique.into_iter().map(|art| async move {
        let sources = download::sources(art, opts.mirror.as_ref());
        cache.ensure(downloader, art, &sources).await
    });
    summary.fetched = futures_util::stream::iter(fetches)
        .buffered(PARALLEL_DOWNLOADS)
        .try_collect()
        .await?;
    for art in shared {
        if let Some(c) = cache.lookup(art)? {
            summary.fetched.push(c);
        }
    }
    Ok(summary)
}
/// The hex sha256 and size of a file, streamed: the one file hasher of the
/// program (artifacts, uploads, the base image).
pub fn hash_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}
