//! Fetching artifact bytes: HTTP(S) with reqwest (rustls), or a copy from a
//! mirror directory. The sha256 is computed while the bytes stream into the
//! partial file; an interrupted transfer resumes with an HTTP Range request
//! and insists on `206 Partial Content` (a `200` restarts from byte zero).
//! Transient failures (connect errors, 5xx, a cut connection, a read that
//! stalls past the per-read timeout) are retried with exponential backoff
//! and jitter; anything else moves on to the next source.

use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};

use super::cache::PartialBlob;
use super::{ArtifactError, ArtifactRef, ResolvedArtifact, Result};

/// Timeouts and retry policy of a [`Downloader`].
#[derive(Debug, Clone)]
pub struct DownloaderOptions {
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time allowed between two reads (and for the response headers); a
    /// server silent for longer is treated as stalled.
    pub read_timeout: Duration,
    /// Attempts per URL for transient failures (at least 1).
    pub attempts: u32,
    /// Backoff before the second attempt; doubles each time, with jitter.
    pub backoff_base: Duration,
    /// Upper bound of one backoff.
    pub backoff_max: Duration,
}

impl Default for DownloaderOptions {
    fn default() -> Self {
        DownloaderOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
        }
    }
}

/// Receives download events, e.g. to draw progress bars. Every method has a
/// no-op default.
pub trait Progress: Send + Sync {
    /// A transfer began; `total` is the full size when known.
    fn start(
        &self,
        _artifact: &ArtifactRef,
        _source: &str,
        _total: Option<u64>,
        _resumed_from: u64,
    ) {
    }
    /// `bytes` more arrived.
    fn advance(&self, _artifact: &ArtifactRef, _bytes: u64) {}
    /// An attempt failed and another follows after `delay`.
    fn retry(&self, _artifact: &ArtifactRef, _source: &str, _reason: &str, _delay: Duration) {}
    /// The artifact is complete and verified.
    fn finish(&self, _artifact: &ArtifactRef, _bytes: u64, _elapsed: Duration) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Where an artifact's bytes can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An HTTP(S) URL.
    Url(String),
    /// A file on this machine (a mirror directory entry).
    File(PathBuf),
}

impl Source {
    /// The URL (credentials masked) or path, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Url(u) => redact_url(u),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// A URL fit for messages and logs: user name and password replaced by `***`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

/// A local mirror that replaces the manifest's URLs: a directory or a base
/// URL holding the release files under their file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// `<dir>/<file name>`.
    Dir(PathBuf),
    /// `<url>/<file name>`.
    Url(String),
}

impl Mirror {
    /// `http://` and `https://` values are URLs; anything else is a directory.
    pub fn parse(value: &str) -> Mirror {
        if value.starts_with("http://") || value.starts_with("https://") {
            Mirror::Url(value.trim_end_matches('/').to_string())
        } else {
            Mirror::Dir(PathBuf::from(value))
        }
    }
}

/// The sources of an artifact, in the order to try them: the mirror alone
/// when one is given (so an air-gapped site never reaches for the internet),
/// else the manifest's URLs.
pub fn sources(art: &ResolvedArtifact, mirror: Option<&Mirror>) -> Vec<Source> {
    match mirror {
        Some(Mirror::Dir(d)) => vec![Source::File(d.join(&art.file))],
        Some(Mirror::Url(u)) => vec![Source::Url(format!("{u}/{}", art.file))],
        None => art.urls.iter().cloned().map(Source::Url).collect(),
    }
}

/// Downloads artifacts into partial cache files. One per run; cheap to share.
#[derive(Clone)]
pub struct Downloader {
    client: reqwest::Client,
    opts: DownloaderOptions,
    progress: Arc<dyn Progress>,
}

/// Why one attempt failed.
enum Attempt {
    /// Worth retrying the same source.
    Transient { reason: String, unreachable: bool },
    /// The source will not serve it (404, ...): try the next one.
    Permanent(String),
    /// A local failure: stop.
    Fatal(ArtifactError),
}

impl Downloader {
    /// A downloader with these options, reporting to `progress`.
    pub fn new(opts: DownloaderOptions, progress: Arc<dyn Progress>) -> Result<Downloader> {
        let client = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .user_agent(concat!("edgeforge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ArtifactError::Client)?;
        Ok(Downloader {
            client,
            opts,
            progress,
        })
    }

    /// The HTTP client, for other fetches (checksum files) with the same settings.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The options in force.
    pub fn options(&self) -> &DownloaderOptions {
        &self.opts
    }

    /// Fills `blob` with the artifact's bytes from the first source that
    /// serves bytes hashing to the pin. On success the blob is complete and
    /// verified; on failure it holds whatever partial prefix is worth resuming
    /// (nothing after a hash mismatch).
    pub(crate) async fn fetch(
        &self,
        art: &ResolvedArtifact,
        sources: &[Source],
        blob: &mut PartialBlob,
    ) -> Result<()> {
        let started = Instant::now();
        let mut failures: Vec<ArtifactError> = Vec::new();
        let mut attempts: Vec<String> = Vec::new();
        let mut all_unreachable = !sources.is_empty();
        for source in sources {
            // A mismatch after resuming may come from a stale prefix: one more
            // pass from byte zero settles it.
            for from_zero in [false, true] {
                let resumed = blob.len() > 0;
                let outcome = match source {
                    Source::Url(url) => self.fetch_url(art, url, blob).await,
                    Source::File(path) => copy_file(art, path, blob, self.progress.as_ref()),
                };
                match outcome {
                    Ok(()) => {
                        let actual = blob.current_hash();
                        if actual == art.sha256 {
                            self.progress
                                .finish(&art.artifact, blob.len(), started.elapsed());
                            return Ok(());
                        }
                        blob.reset()?;
                        if resumed && !from_zero {
                            continue;
                        }
                        all_unreachable = false;
                        let err = ArtifactError::HashMismatch {
                            artifact: Box::new(art.artifact.clone()),
                            url: source.describe(),
                            expected: art.sha256.clone(),
                            actual,
                        };
                        attempts.push(err.to_string());
                        failures.push(err);
                    }
                    Err(Attempt::Fatal(e)) => return Err(e),
                    Err(Attempt::Permanent(reason)) => {
                        all_unreachable = false;
                        attempts.push(format!("{}: {reason}", source.describe()));
                    }
                    Err(Attempt::Transient {
                        reason,
                        unreachable,
                    }) => {
                        all_unreachable &= unreachable;
                        attempts.push(format!("{}: {reason}", source.describe()));
                    }
                }
                break;
            }
        }
        if attempts.len() == 1
            && let Some(e) = failures.pop()
        {
            return Err(e);
        }
        let hint = if sources.is_empty() {
            "no source to try: the manifest lists no URL".to_string()
        } else if all_unreachable {
            "; no source could be reached: on a machine without internet access, point at a \
             mirror with `--mirror DIR|URL` or load a bundle with `edgeforge images import FILE`"
                .to_string()
        } else {
            String::new()
        };
        Err(ArtifactError::AllSourcesFailed {
            artifact: Box::new(art.artifact.clone()),
            attempts,
            hint,
        })
    }

    async fn fetch_url(
        &self,
        art: &ResolvedArtifact,
        url: &str,
        blob: &mut PartialBlob,
    ) -> std::result::Result<(), Attempt> {
        let attempts = self.opts.attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.attempt(art, url, blob).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Transient {
                    reason,
                    unreachable,
                }) => {
                    if attempt >= attempts {
                        return Err(Attempt::Transient {
                            reason: format!("{reason} (gave up after {attempt} attempts)"),
                            unreachable,
                        });
                    }
                    let delay = self.backoff(attempt);
                    self.progress
                        .retry(&art.artifact, &redact_url(url), &reason, delay);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// One HTTP request: resumes from the blob's length when it has bytes.
    async fn attempt(
        &self,
        art: &ResolvedArtifact,
        url: &str,
        blob: &mut PartialBlob,
    ) -> std::result::Result<(), Attempt> {
        let fatal = Attempt::Fatal;
        if let Some(size) = art.size {
            if blob.len() == size {
                return Ok(());
            }
            if blob.len() > size {
                blob.reset().map_err(fatal)?;
            }
        }
        let offset = blob.len();
        let mut req = self.client.get(url);
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let read_timeout = self.opts.read_timeout;
        let resp = match tokio::time::timeout(read_timeout, req.send()).await {
            Err(_) => {
                return Err(Attempt::Transient {
                    reason: format!("no response within {read_timeout:?}"),
                    unreachable: false,
                });
            }
            Ok(Err(e)) => {
                let unreachable = e.is_connect();
                return Err(Attempt::Transient {
                    reason: crate::error::chain(&e.without_url()),
                    unreachable,
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let transient = |reason: String| Attempt::Transient {
            reason,
            unreachable: false,
        };
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let start = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(range_start);
                if start != Some(offset) {
                    blob.reset().map_err(fatal)?;
                    return Err(transient(format!(
                        "asked for bytes from {offset} but the server sent another range; \
                         restarting from zero"
                    )));
                }
            }
            StatusCode::OK => {
                if offset > 0 {
                    // The server ignored the Range header: start over.
                    blob.reset().map_err(fatal)?;
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                // `bytes */TOTAL` equal to what we hold: the partial file is complete.
                let total = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|t| t.trim().parse::<u64>().ok());
                if total == Some(offset) {
                    return Ok(());
                }
                blob.reset().map_err(fatal)?;
                return Err(transient(
                    "the server refused to resume (416); restarting from zero".into(),
                ));
            }
            s if s.is_server_error()
                || s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS =>
            {
                return Err(transient(format!("HTTP {s}")));
            }
            s => return Err(Attempt::Permanent(format!("HTTP {s}"))),
        }
        let offset = blob.len();
        let remaining = resp.content_length();
        self.progress.start(
            &art.artifact,
            &redact_url(url),
            remaining.map(|r| r + offset),
            offset,
        );
        // Hash on a blocking thread while this task receives and writes, so
        // hashing overlaps the network instead of adding to it.
        let hasher = blob.take_hasher();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let worker = tokio::task::spawn_blocking(move || {
            let mut hasher = hasher;
            while let Some(chunk) = rx.blocking_recv() {
                sha2::Digest::update(&mut hasher, &chunk);
            }
            hasher
        });
        let streamed = async {
            let tx = tx;
            let mut stream = resp.bytes_stream();
            let mut received = 0u64;
            loop {
                match tokio::time::timeout(read_timeout, stream.next()).await {
                    Err(_) => {
                        return Err(transient(format!(
                            "the server stalled: no data for {read_timeout:?} after {} bytes",
                            offset + received
                        )));
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        return Err(transient(format!(
                            "the connection was cut after {} bytes ({})",
                            offset + received,
                            crate::error::chain(&e.without_url())
                        )));
                    }
                    Ok(Some(Ok(chunk))) => {
                        let len = chunk.len() as u64;
                        blob.write_unhashed(&chunk).map_err(fatal)?;
                        if tx.send(chunk).await.is_err() {
                            return Err(hashing_failed("the hashing thread stopped"));
                        }
                        received += len;
                        self.progress.advance(&art.artifact, len);
                    }
                }
            }
            if remaining.is_some_and(|r| received < r) {
                return Err(transient(format!(
                    "the connection closed after {} bytes",
                    offset + received
                )));
            }
            Ok(())
        }
        .await;
        let hasher = worker
            .await
            .map_err(|_| hashing_failed("the hashing thread failed"))?;
        blob.restore_hasher(hasher);
        streamed
    }

    /// Exponential backoff with jitter: base·2^(n-1), capped, times 0.5–1.5.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.opts.backoff_max);
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let factor = 0.5 + (random % 1000) as f64 / 1000.0;
        capped.mul_f64(factor)
    }
}

fn hashing_failed(what: &str) -> Attempt {
    Attempt::Fatal(ArtifactError::Io {
        context: format!("{what} while downloading"),
        source: std::io::Error::other("hash worker gone"),
    })
}

/// Copies a mirror directory entry into the blob, hashing as it goes.
fn copy_file(
    art: &ResolvedArtifact,
    path: &std::path::Path,
    blob: &mut PartialBlob,
    progress: &dyn Progress,
) -> std::result::Result<(), Attempt> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Attempt::Permanent("not in the mirror directory".into()));
        }
        Err(e) => return Err(Attempt::Permanent(format!("cannot open it ({e})"))),
    };
    blob.reset().map_err(Attempt::Fatal)?;
    let total = f.metadata().ok().map(|m| m.len());
    progress.start(&art.artifact, &path.display().to_string(), total, 0);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Attempt::Permanent(format!("cannot read it ({e})")))?;
        if n == 0 {
            return Ok(());
        }
        blob.write(&buf[..n]).map_err(Attempt::Fatal)?;
        progress.advance(&art.artifact, n as u64);
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn range_start(value: &str) -> Option<u64> {
    let rest = value.strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range_start() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(range_start("items 1-2/3"), None);
    }

    #[test]
    fn credentials_never_reach_messages() {
        let shown = Source::Url("https://bob:s3cret@mirror.example/k3s".into()).describe();
        assert!(
            !shown.contains("s3cret") && !shown.contains("bob"),
            "{shown}"
        );
        assert_eq!(redact_url("http://h/k3s"), "http://h/k3s");
    }

    #[test]
    fn mirror_kinds() {
        assert_eq!(
            Mirror::parse("http://10.0.0.1:8080/k3s/"),
            Mirror::Url("http://10.0.0.1:8080/k3s".into())
        );
        assert_eq!(
            Mirror::parse("/srv/mirror"),
            Mirror::Dir("/srv/mirror".into())
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let d = Downloader::new(
            DownloaderOptions {
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_millis(1000),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .unwrap();
        let first = d.backoff(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150));
        let late = d.backoff(10);
        assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1500));
    }
}
