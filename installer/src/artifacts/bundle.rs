//! Air-gap bundles: `site.tar.zst` holding `manifest.json` (name, version,
//! arch, file, sha256 and size of every artifact) followed by the files as
//! `blobs/<sha256>`. Both directions stream (tar over zstd over a file);
//! nothing is held whole in memory.
//!
//! Import is all or nothing: every blob is staged and hashed first, and only
//! when all match their entries (and the local manifest's pins, where it has
//! them) do they move into the cache.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cache::PartialBlob;
use super::{ArtifactCache, ArtifactError, ArtifactRef, CachedArtifact, Manifest, Result, io_err};

/// The `format` value of bundles this build writes and reads.
pub const BUNDLE_FORMAT: &str = "edgeforge-bundle/v1";
const MANIFEST_ENTRY: &str = "manifest.json";
const MANIFEST_MAX: u64 = 16 << 20;

/// The bundle's own table of contents (`manifest.json`, the first entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The artifacts inside.
    pub artifacts: Vec<BundleEntry>,
}

/// One artifact in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    /// Name, version and architecture.
    #[serde(flatten)]
    pub artifact: ArtifactRef,
    /// Release file name.
    pub file: String,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    /// Artifacts now in the cache.
    pub imported: Vec<CachedArtifact>,
    /// Entries the local manifest has no pin for (accepted on the bundle's word).
    pub unpinned: Vec<ArtifactRef>,
}

/// Writes `items` (already in `cache`) into a bundle at `out`, re-hashing
/// each file as it is packed so a damaged cache cannot leak into a bundle.
pub fn write_bundle(cache: &ArtifactCache, items: &[CachedArtifact], out: &Path) -> Result<u64> {
    let tmp = out.with_file_name(format!(
        ".{}.partial",
        out.file_name()
            .map_or("bundle".into(), |n| n.to_string_lossy())
    ));
    let result = write_bundle_to(cache, items, &tmp);
    match result {
        Ok(()) => {
            fs::rename(&tmp, out).map_err(io_err(format!("cannot create {}", out.display())))?;
            Ok(fs::metadata(out).map_or(0, |m| m.len()))
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_bundle_to(cache: &ArtifactCache, items: &[CachedArtifact], tmp: &Path) -> Result<()> {
    let ctx = || format!("cannot write the bundle {}", tmp.display());
    let file = File::create(tmp).map_err(io_err(ctx()))?;
    let encoder =
        zstd::Encoder::new(BufWriter::with_capacity(1 << 20, file), 3).map_err(io_err(ctx()))?;
    let mut tar = tar::Builder::new(encoder);
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT.into(),
        artifacts: items
            .iter()
            .map(|c| BundleEntry {
                artifact: c.artifact.clone(),
                file: c.file.clone(),
                sha256: c.sha256.clone(),
                size: c.size,
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| io_err(ctx())(e.into()))?;
    append(&mut tar, MANIFEST_ENTRY, json.len() as u64, &json[..]).map_err(io_err(ctx()))?;
    let mut written = BTreeMap::new();
    for c in items {
        if written.insert(c.sha256.clone(), ()).is_some() {
            continue;
        }
        let path = cache.blob_path(&c.sha256);
        let f = File::open(&path).map_err(io_err(format!("cannot read {}", path.display())))?;
        let mut reader = HashingReader {
            inner: BufReader::with_capacity(1 << 20, f),
            hasher: Sha256::new(),
        };
        append(
            &mut tar,
            &format!("blobs/{}", c.sha256),
            c.size,
            &mut reader,
        )
        .map_err(io_err(ctx()))?;
        let actual = hex::encode(reader.hasher.finalize());
        if actual != c.sha256 {
            return Err(ArtifactError::Io {
                context: format!(
                    "the cached {} ({}) is damaged: it hashes to {actual}; run \
                     `edgeforge images verify --repair` and pull again",
                    c.artifact,
                    path.display()
                ),
                source: std::io::Error::other("hash mismatch"),
            });
        }
    }
    let encoder = tar.into_inner().map_err(io_err(ctx()))?;
    let mut buf = encoder.finish().map_err(io_err(ctx()))?;
    buf.flush().map_err(io_err(ctx()))?;
    let file = buf
        .into_inner()
        .map_err(|e| io_err(ctx())(e.into_error()))?;
    file.sync_all().map_err(io_err(ctx()))
}

/// Reads a bundle into the cache. Refuses the whole bundle (leaving the cache
/// as it was) when any file does not hash to its entry, an entry is missing,
/// or an entry contradicts a pin in `manifest`.
pub fn import_bundle(
    cache: &ArtifactCache,
    bundle: &Path,
    manifest: Option<&Manifest>,
) -> Result<ImportSummary> {
    let staging = cache.staging_dir()?;
    let result = import_staged(cache, bundle, manifest, &staging);
    let _ = fs::remove_dir_all(&staging);
    result
}

fn import_staged(
    cache: &ArtifactCache,
    bundle: &Path,
    manifest: Option<&Manifest>,
    staging: &Path,
) -> Result<ImportSummary> {
    let refuse = |reason: String| ArtifactError::BundleRefused {
        path: bundle.to_path_buf(),
        reason,
    };
    let file = File::open(bundle).map_err(io_err(format!("cannot open {}", bundle.display())))?;
    let decoder =
        zstd::Decoder::new(file).map_err(|e| refuse(format!("not a zstd stream ({e})")))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive
        .entries()
        .map_err(|e| refuse(format!("not a tar archive ({e})")))?;

    let first = entries
        .next()
        .ok_or_else(|| refuse("it is empty".into()))?
        .map_err(|e| refuse(format!("unreadable entry ({e})")))?;
    let first_path = entry_path(&first);
    if first_path != MANIFEST_ENTRY {
        return Err(refuse(format!(
            "its first entry is `{first_path}`, not `{MANIFEST_ENTRY}`"
        )));
    }
    let mut json = Vec::new();
    first
        .take(MANIFEST_MAX)
        .read_to_end(&mut json)
        .map_err(|e| refuse(format!("unreadable {MANIFEST_ENTRY} ({e})")))?;
    let bm: BundleManifest = serde_json::from_slice(&json)
        .map_err(|e| refuse(format!("{MANIFEST_ENTRY} is invalid ({e})")))?;
    if bm.format != BUNDLE_FORMAT {
        return Err(refuse(format!(
            "format `{}` is not `{BUNDLE_FORMAT}`",
            bm.format
        )));
    }

    let mut summary = ImportSummary::default();
    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &bm.artifacts {
        if !super::manifest::is_sha256_hex(&e.sha256) {
            return Err(refuse(format!(
                "{} has an invalid sha256 `{}`",
                e.artifact, e.sha256
            )));
        }
        if let Some(m) = manifest {
            if let Ok(pinned) = m.resolve(&e.artifact) {
                if pinned.sha256 != e.sha256 {
                    return Err(refuse(format!(
                        "it says {} has sha256 {}, but the manifest pins {}",
                        e.artifact, e.sha256, pinned.sha256
                    )));
                }
            } else {
                summary.unpinned.push(e.artifact.clone());
            }
        }
        sizes.insert(e.sha256.as_str(), e.size);
    }

    let mut staged: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| refuse(format!("unreadable entry ({e})")))?;
        let path = entry_path(&entry);
        let Some(hash) = path.strip_prefix("blobs/") else {
            return Err(refuse(format!("unexpected entry `{path}`")));
        };
        let Some(&size) = sizes.get(hash) else {
            return Err(refuse(format!(
                "`{path}` is not listed in {MANIFEST_ENTRY}"
            )));
        };
        let dest = staging.join(hash);
        let mut blob = PartialBlob::open(&dest)?;
        let mut reader = entry;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| refuse(format!("`{path}` is truncated or unreadable ({e})")))?;
            if n == 0 {
                break;
            }
            blob.write(&buf[..n])?;
        }
        let (p, actual, len) = blob.finish()?;
        if actual != hash || len != size {
            return Err(refuse(format!(
                "`{path}` hashes to {actual} ({len} bytes); expected {hash} ({size} bytes)"
            )));
        }
        staged.insert(hash.to_string(), p);
    }
    for e in &bm.artifacts {
        if !staged.contains_key(&e.sha256) {
            return Err(refuse(format!("the file of {} is missing", e.artifact)));
        }
    }

    for (hash, p) in &staged {
        let dest = cache.blob_path(hash);
        fs::rename(p, &dest).map_err(io_err(format!(
            "cannot move {} into the cache",
            p.display()
        )))?;
    }
    for e in bm.artifacts {
        let cached = CachedArtifact {
            path: cache.blob_path(&e.sha256),
            artifact: e.artifact,
            file: e.file,
            sha256: e.sha256,
            size: e.size,
        };
        cache.record(&cached)?;
        summary.imported.push(cached);
    }
    Ok(summary)
}

fn append<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: R,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
}

fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    entry
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
