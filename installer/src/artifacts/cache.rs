//! The content-addressed artifact cache.
//!
//! Layout: `<cache>/sha256/<hex>` holds verified files, named by their hash;
//! `<cache>/index.json` maps name/version/arch to a hash; `<cache>/tmp/`
//! holds partial downloads (`<hex>.part`, kept for resume) and import
//! staging. A file is renamed into `sha256/` only after its hash matched, so
//! every blob there was whole and correct when it arrived; `verify` re-hashes
//! them to catch later damage on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::download::{Downloader, Source};
use super::{ArtifactError, ArtifactRef, ResolvedArtifact, Result, io_err};

const INDEX: &str = "index.json";
const BLOBS: &str = "sha256";
const TMP: &str = "tmp";

/// An open cache directory.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    root: PathBuf,
}

/// A verified artifact in the cache: what a step needs to place it on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedArtifact {
    /// Name, version and architecture.
    #[serde(flatten)]
    pub artifact: ArtifactRef,
    /// Release file name.
    pub file: String,
    /// Lowercase hex sha256 (also the blob's file name).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The blob on disk, for `PutSource::File`.
    #[serde(skip)]
    pub path: PathBuf,
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// A blob's content no longer hashes to its name.
    Corrupt {
        /// The blob.
        path: PathBuf,
        /// Its name (the hash it had when it entered the cache).
        expected: String,
        /// What it hashes to now.
        actual: String,
    },
    /// The index names a blob that is gone.
    Missing {
        /// The index entry's artifact.
        artifact: ArtifactRef,
        /// The hash it pointed at.
        sha256: String,
    },
    /// A file in `sha256/` whose name is not a hash.
    Stray {
        /// The file.
        path: PathBuf,
    },
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Blobs that hashed correctly.
    pub ok: usize,
    /// Everything wrong.
    pub damage: Vec<Damage>,
    /// Whether damaged entries were removed.
    pub repaired: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    entries: Vec<CachedArtifact>,
}

impl ArtifactCache {
    /// The default cache directory: `$XDG_CACHE_HOME/edgeforge` (or the platform equivalent).
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("edgeforge"))
    }

    /// Opens (creating if needed) a cache directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<ArtifactCache> {
        let root = dir.into();
        for sub in [BLOBS, TMP] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(io_err(format!(
                "cannot create the cache directory {}",
                d.display()
            )))?;
        }
        Ok(ArtifactCache { root })
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this hash lives (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join(BLOBS).join(sha256)
    }

    /// The cached artifact recorded for this name/version/arch, if its blob is present.
    pub fn get(&self, artifact: &ArtifactRef) -> Result<Option<CachedArtifact>> {
        let index = self.read_index()?;
        Ok(index
            .entries
            .into_iter()
            .find(|e| &e.artifact == artifact)
            .and_then(|mut e| {
                let path = self.blob_path(&e.sha256);
                let len = fs::metadata(&path).ok()?.len();
                (len == e.size).then(|| {
                    e.path = path;
                    e
                })
            }))
    }

    /// The blob path of a cached artifact, if present.
    pub fn path_of(&self, artifact: &ArtifactRef) -> Option<PathBuf> {
        self.get(artifact).ok().flatten().map(|c| c.path)
    }

    /// The cached artifact, or an error naming the command that fetches it:
    /// what a step that places an artifact on a node calls.
    pub fn require(&self, artifact: &ArtifactRef) -> Result<CachedArtifact> {
        self.get(artifact)?.ok_or_else(|| ArtifactError::Missing {
            cache: self.root.clone(),
            missing: artifact.to_string(),
            command: "edgeforge images pull -i INVENTORY".into(),
        })
    }

    /// Copies a file built on this machine (e.g. a base VM image) into the
    /// cache under `artifact`, hashing it on the way; returns the entry.
    pub fn insert_file(
        &self,
        artifact: &ArtifactRef,
        file: &str,
        src: &Path,
    ) -> Result<CachedArtifact> {
        let staging = self.staging_dir()?;
        let result = (|| {
            let mut blob = PartialBlob::open(&staging.join("blob"))?;
            let mut f =
                File::open(src).map_err(io_err(format!("cannot read {}", src.display())))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(io_err(format!("cannot read {}", src.display())))?;
                if n == 0 {
                    break;
                }
                blob.write(&buf[..n])?;
            }
            let sha256 = blob.current_hash();
            let (path, size) = self.commit(blob, &sha256)?;
            let cached = CachedArtifact {
                artifact: artifact.clone(),
                file: file.to_string(),
                sha256,
                size,
                path,
            };
            self.record(&cached)?;
            Ok(cached)
        })();
        let _ = fs::remove_dir_all(&staging);
        result
    }

    /// Every index entry, in index order.
    pub fn entries(&self) -> Result<Vec<CachedArtifact>> {
        let mut entries = self.read_index()?.entries;
        for e in &mut entries {
            e.path = self.blob_path(&e.sha256);
        }
        Ok(entries)
    }

    /// The cached copy of a pinned artifact, if a blob with its pinned hash
    /// (and size, when pinned) is present. Records the index entry when the
    /// blob came from another name (content addressing).
    pub fn lookup(&self, art: &ResolvedArtifact) -> Result<Option<CachedArtifact>> {
        let path = self.blob_path(&art.sha256);
        let Ok(meta) = fs::metadata(&path) else {
            return Ok(None);
        };
        if art.size.is_some_and(|s| s != meta.len()) {
            return Ok(None);
        }
        let cached = CachedArtifact {
            artifact: art.artifact.clone(),
            file: art.file.clone(),
            sha256: art.sha256.clone(),
            size: meta.len(),
            path,
        };
        if self.get(&art.artifact)?.as_ref() != Some(&cached) {
            self.record(&cached)?;
        }
        Ok(Some(cached))
    }

    /// The artifacts of `needs` that are not in the cache.
    pub fn missing<'a>(&self, needs: &'a [ResolvedArtifact]) -> Result<Vec<&'a ResolvedArtifact>> {
        let mut out = Vec::new();
        for art in needs {
            if self.lookup(art)?.is_none() {
                out.push(art);
            }
        }
        Ok(out)
    }

    /// Returns the cached artifact, downloading it from `sources` (in order)
    /// when absent. Nothing touches the network when the cache has it.
    pub async fn ensure(
        &self,
        downloader: &Downloader,
        art: &ResolvedArtifact,
        sources: &[Source],
    ) -> Result<CachedArtifact> {
        if let Some(c) = self.lookup(art)? {
            return Ok(c);
        }
        let part = self.root.join(TMP).join(format!("{}.part", art.sha256));
        let mut blob = PartialBlob::open(&part)?;
        // Another pull may have finished it while we waited for the lock.
        if let Some(c) = self.lookup(art)? {
            return Ok(c);
        }
        if let Err(e) = downloader.fetch(art, sources, &mut blob).await {
            // Keep a partial prefix for the next run to resume; drop an empty file.
            if blob.len() == 0 {
                blob.discard();
            }
            return Err(e);
        }
        let (path, size) = self.commit(blob, &art.sha256)?;
        let cached = CachedArtifact {
            artifact: art.artifact.clone(),
            file: art.file.clone(),
            sha256: art.sha256.clone(),
            size,
            path,
        };
        self.record(&cached)?;
        Ok(cached)
    }

    /// Re-hashes every blob; with `repair`, removes damaged blobs and index
    /// entries whose blob is gone or damaged.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let dir = self.root.join(BLOBS);
        let listing = fs::read_dir(&dir).map_err(io_err(format!(
            "cannot list the cache directory {}",
            dir.display()
        )))?;
        let mut bad_hashes = Vec::new();
        for entry in listing {
            let entry = entry.map_err(io_err(format!("cannot list {}", dir.display())))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !super::manifest::is_sha256_hex(&name) {
                report.damage.push(Damage::Stray { path });
                continue;
            }
            let (actual, _) = super::hash_file(&path)
                .map_err(io_err(format!("cannot read {}", path.display())))?;
            if actual == name {
                report.ok += 1;
            } else {
                bad_hashes.push(name.clone());
                report.damage.push(Damage::Corrupt {
                    path,
                    expected: name,
                    actual,
                });
            }
        }
        let index = self.read_index()?;
        let mut keep = Vec::new();
        for e in index.entries {
            if bad_hashes.contains(&e.sha256) {
                continue;
            }
            if !self.blob_path(&e.sha256).exists() {
                report.damage.push(Damage::Missing {
                    artifact: e.artifact.clone(),
                    sha256: e.sha256.clone(),
                });
                continue;
            }
            keep.push(e);
        }
        if repair && !report.damage.is_empty() {
            let _lock = self.lock()?;
            for d in &report.damage {
                if let Damage::Corrupt { path, .. } | Damage::Stray { path } = d {
                    fs::remove_file(path)
                        .map_err(io_err(format!("cannot remove {}", path.display())))?;
                }
            }
            self.write_index(&Index { entries: keep })?;
            report.repaired = true;
        }
        Ok(report)
    }

    /// Records an index entry (replacing any for the same name/version/arch).
    pub(crate) fn record(&self, cached: &CachedArtifact) -> Result<()> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        index.entries.retain(|e| e.artifact != cached.artifact);
        index.entries.push(cached.clone());
        index.entries.sort_by(|a, b| a.artifact.cmp(&b.artifact));
        self.write_index(&index)
    }

    /// Moves a finished partial blob into `sha256/` if it hashes to `expected`.
    pub(crate) fn commit(&self, blob: PartialBlob, expected: &str) -> Result<(PathBuf, u64)> {
        let (part, actual, size) = blob.finish()?;
        if actual != expected {
            let _ = fs::remove_file(&part);
            return Err(ArtifactError::Io {
                context: format!("{} hashes to {actual}, not {expected}", part.display()),
                source: std::io::Error::other("hash mismatch"),
            });
        }
        let dest = self.blob_path(expected);
        fs::rename(&part, &dest).map_err(io_err(format!(
            "cannot move {} into the cache",
            part.display()
        )))?;
        Ok((dest, size))
    }

    /// A fresh staging directory under `tmp/`, removed by the caller.
    pub(crate) fn staging_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join(TMP).join(format!(
            "import-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        Ok(dir)
    }

    fn lock(&self) -> Result<File> {
        let path = self.root.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!(
                "cannot open the cache lock {}",
                path.display()
            )))?;
        f.lock().map_err(io_err(format!(
            "cannot lock the cache {}",
            self.root.display()
        )))?;
        Ok(f)
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.root.join(INDEX);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ArtifactError::IndexDamaged {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_err(format!("cannot read {}", path.display()))(e)),
        }
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let path = self.root.join(INDEX);
        let tmp = self.root.join(format!("{INDEX}.tmp"));
        let json = serde_json::to_vec_pretty(index).map_err(|e| ArtifactError::Io {
            context: "cannot encode the cache index".into(),
            source: std::io::Error::other(e),
        })?;
        fs::write(&tmp, json).map_err(io_err(format!("cannot write {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io_err(format!("cannot replace {}", path.display())))
    }
}

/// A file being written into the cache, hashed as it grows. Opening an
/// existing partial file hashes what it already holds, so a download can
/// resume where it stopped. The file is locked while open, so two pulls of
/// the same artifact never interleave their bytes.
pub(crate) struct PartialBlob {
    path: PathBuf,
    file: BufWriter<File>,
    hasher: Sha256,
    len: u64,
}

impl PartialBlob {
    /// Opens (or creates) a partial file and hashes its current content.
    pub(crate) fn open(path: &Path) -> Result<PartialBlob> {
        let ctx = || format!("cannot open the partial download {}", path.display());
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(ctx()))?;
        file.lock().map_err(io_err(ctx()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err(ctx()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        file.seek(std::io::SeekFrom::End(0))
            .map_err(io_err(ctx()))?;
        Ok(PartialBlob {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, file),
            hasher,
            len,
        })
    }

    /// Bytes held so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends bytes.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(io_err(format!("cannot write {}", self.path.display())))?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Appends bytes whose hashing the caller does elsewhere (see
    /// [`PartialBlob::take_hasher`]).
    pub(crate) fn write_unhashed(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(io_err(format!("cannot write {}", self.path.display())))?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Lends out the running hash, to be fed on another thread and given
    /// back with [`PartialBlob::restore_hasher`].
    pub(crate) fn take_hasher(&mut self) -> Sha256 {
        std::mem::take(&mut self.hasher)
    }

    /// Takes back the running hash lent out by [`PartialBlob::take_hasher`].
    pub(crate) fn restore_hasher(&mut self, hasher: Sha256) {
        self.hasher = hasher;
    }

    /// Empties the file to start over from byte zero.
    pub(crate) fn reset(&mut self) -> Result<()> {
        let ctx = format!("cannot truncate {}", self.path.display());
        self.file.flush().map_err(io_err(ctx.clone()))?;
        let f = self.file.get_mut();
        f.set_len(0).map_err(io_err(ctx.clone()))?;
        f.seek(std::io::SeekFrom::Start(0)).map_err(io_err(ctx))?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Hash of the bytes so far, without closing.
    pub(crate) fn current_hash(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Deletes the file.
    pub(crate) fn discard(self) {
        let path = self.path.clone();
        drop(self);
        let _ = fs::remove_file(path);
    }

    /// Flushes to disk and returns the path, the hash and the size.
    pub(crate) fn finish(self) -> Result<(PathBuf, String, u64)> {
        let ctx = format!("cannot write {}", self.path.display());
        let file = self
            .file
            .into_inner()
            .map_err(|e| io_err(ctx.clone())(e.into_error()))?;
        file.sync_data().map_err(io_err(ctx))?;
        Ok((self.path, hex::encode(self.hasher.finalize()), self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_blob_resumes_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.part");
        let mut b = PartialBlob::open(&p).unwrap();
        b.write(b"hello ").unwrap();
        let (_, _, _) = b.finish().unwrap();
        let mut b = PartialBlob::open(&p).unwrap();
        assert_eq!(b.len(), 6);
        b.write(b"world").unwrap();
        let (_, hash, len) = b.finish().unwrap();
        assert_eq!(len, 11);
        assert_eq!(hash, hex::encode(Sha256::digest(b"hello world")));
    }

    #[test]
    fn insert_file_records_a_locally_built_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path().join("c")).unwrap();
        let src = dir.path().join("base.qcow2");
        std::fs::write(&src, b"image bytes").unwrap();
        let a = ArtifactRef::new("debian-12-base", "recipe-1", crate::artifacts::Arch::Amd64);
        assert!(
            cache
                .require(&a)
                .unwrap_err()
                .to_string()
                .contains("edgeforge images pull")
        );
        let c = cache.insert_file(&a, "base.qcow2", &src).unwrap();
        assert_eq!(c.sha256, hex::encode(Sha256::digest(b"image bytes")));
        assert_eq!(cache.require(&a).unwrap().path, cache.blob_path(&c.sha256));
        assert_eq!(std::fs::read(&c.path).unwrap(), b"image bytes");
    }

    #[test]
    fn commit_refuses_a_wrong_hash_and_deletes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let p = dir.path().join("tmp/x.part");
        let mut b = PartialBlob::open(&p).unwrap();
        b.write(b"abc").unwrap();
        let wrong = "0".repeat(64);
        assert!(cache.commit(b, &wrong).is_err());
        assert!(!p.exists());
        assert!(!cache.blob_path(&wrong).exists());
    }
}
