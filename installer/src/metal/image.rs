//! The OS image an install writes, as the stream that goes to the node.
//!
//! The source is edgeforge's base image (built from `images/base/` or found
//! in the cache, as for the VM lab) or a qcow2 or raw root filesystem image
//! the inventory names. Once per source, keyed by its sha256, it is turned
//! into what the node needs: the raw filesystem bytes (`qemu-img convert`),
//! hashed (the node checks what landed on its disk against that sha256) and
//! compressed with zstd, since most of a fresh filesystem is empty. The
//! result lives in `<cache>/install/<source sha256>/`. Blocking: async
//! callers run it in `spawn_blocking`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::MetalError;
use crate::virt::baseimage::{self, BuildOptions, BuildOutcome};

/// zstd level of the stream: fast to make, small enough for slow links.
const ZSTD_LEVEL: i32 = 3;
const STREAM_FILE: &str = "image.raw.zst";
const MANIFEST_FILE: &str = "image.json";

/// Where an install's OS image comes from.
#[derive(Debug, Clone)]
pub enum OsImage {
    /// edgeforge's base image, built with these options when not cached.
    Base(BuildOptions),
    /// A qcow2 or raw root filesystem image on this machine.
    File(PathBuf),
}

/// An OS image ready to stream to nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallImage {
    /// What it was made from, for messages (`base image 3182bf3d5e1b`, a path).
    pub source: String,
    /// sha256 of the source file.
    pub source_sha256: String,
    /// sha256 of the raw filesystem bytes: what must be on the node's disk.
    pub raw_sha256: String,
    /// Size of the raw filesystem in bytes.
    pub raw_size: u64,
    /// The zstd stream of the raw bytes.
    pub stream: PathBuf,
    /// Its size in bytes.
    pub stream_size: u64,
}

/// Prepares `source` under `cache` (once per source sha256); `progress`
/// hears the phases.
pub fn prepare(
    source: &OsImage,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<InstallImage, MetalError> {
    let (path, sha, label, format) = match source {
        OsImage::Base(opts) => {
            let (image, outcome) = baseimage::build(opts, |line| progress(line))?;
            if let BuildOutcome::Built(t) = outcome {
                progress(&format!("base image built in {:.0} s", t.as_secs_f64()));
            }
            let label = format!("base image {}", image.sha256.get(..12).unwrap_or_default());
            (image.image_path(), image.sha256, label, "qcow2")
        }
        OsImage::File(path) => {
            progress(&format!("hashing {}", path.display()));
            let (sha, _) = crate::artifacts::hash_file(path).map_err(io_err("hashing", path))?;
            let format = if is_qcow2(path)? { "qcow2" } else { "raw" };
            (path.clone(), sha, path.display().to_string(), format)
        }
    };
    let dir = cache.join("install").join(&sha);
    if let Some(found) = cached(&dir)? {
        return Ok(found);
    }
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let raw = dir.join(format!(".raw-{}", std::process::id()));
    progress(&format!("qemu-img convert {label} to raw"));
    let out = Command::new("qemu-img")
        .args(["convert", "-f", format, "-O", "raw"])
        .arg(&path)
        .arg(&raw)
        .output()
        .map_err(io_err(
            "running qemu-img (apt-get install qemu-utils) for",
            &path,
        ))?;
    if !out.status.success() {
        let _ = fs::remove_file(&raw);
        return Err(MetalError::Tool {
            command: format!("qemu-img convert -f {format} -O raw {}", path.display()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    progress("sha256 and zstd of the raw filesystem");
    let tmp = dir.join(format!(".{STREAM_FILE}-{}", std::process::id()));
    let result = compress(&raw, &tmp);
    let _ = fs::remove_file(&raw);
    let (raw_sha256, raw_size) = result.inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    let stream = dir.join(STREAM_FILE);
    fs::rename(&tmp, &stream).map_err(io_err("moving the stream to", &stream))?;
    let stream_size = fs::metadata(&stream)
        .map_err(io_err("reading", &stream))?
        .len();
    let image = InstallImage {
        source: label,
        source_sha256: sha,
        raw_sha256,
        raw_size,
        stream,
        stream_size,
    };
    let manifest = dir.join(MANIFEST_FILE);
    fs::write(
        &manifest,
        serde_json::to_string_pretty(&image).unwrap_or_default(),
    )
    .map_err(io_err("writing", &manifest))?;
    Ok(image)
}

/// Hashes `raw` while compressing it into `dest`; returns its sha256 and size.
fn compress(raw: &Path, dest: &Path) -> Result<(String, u64), MetalError> {
    let mut input = fs::File::open(raw).map_err(io_err("reading", raw))?;
    let file = fs::File::create(dest).map_err(io_err("creating", dest))?;
    let mut encoder = zstd::stream::Encoder::new(io::BufWriter::new(file), ZSTD_LEVEL)
        .map_err(io_err("compressing into", dest))?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(io_err("reading", raw))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
        encoder
            .write_all(&buf[..n])
            .map_err(io_err("compressing into", dest))?;
    }
    let mut writer = encoder.finish().map_err(io_err("compressing into", dest))?;
    writer.flush().map_err(io_err("writing", dest))?;
    writer
        .get_ref()
        .sync_all()
        .map_err(io_err("writing", dest))?;
    Ok((hex::encode(hash.finalize()), size))
}

fn cached(dir: &Path) -> Result<Option<InstallImage>, MetalError> {
    let manifest = dir.join(MANIFEST_FILE);
    let text = match fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading", &manifest)(e)),
    };
    let Ok(mut image) = serde_json::from_str::<InstallImage>(&text) else {
        return Ok(None);
    };
    image.stream = dir.join(STREAM_FILE);
    let complete = fs::metadata(&image.stream).is_ok_and(|m| m.len() == image.stream_size);
    Ok(complete.then_some(image))
}

fn is_qcow2(path: &Path) -> Result<bool, MetalError> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).map_err(io_err("reading", path))?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == *b"QFI\xfb")
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MetalError {
    let path = path.to_owned();
    move |source| MetalError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_image_file_becomes_a_stream_once_whose_hash_is_the_raw_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("root.img");
        // qemu-img works in 512-byte sectors: a raw image is a whole number of them.
        let data: Vec<u8> = (0..3u32 << 20)
            .map(|i| if i < 1 << 20 { (i % 7) as u8 } else { 0 })
            .collect();
        fs::write(&src, &data).unwrap();
        let cache = tmp.path().join("cache");
        let mut lines = Vec::new();
        let image = prepare(&OsImage::File(src.clone()), &cache, &mut |l: &str| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(image.raw_size, data.len() as u64);
        assert_eq!(image.raw_sha256, hex::encode(Sha256::digest(&data)));
        assert!(image.stream_size < data.len() as u64 / 10, "{image:?}");
        let back = zstd::stream::decode_all(fs::File::open(&image.stream).unwrap()).unwrap();
        assert_eq!(back, data);
        assert!(lines.iter().any(|l| l.contains("qemu-img convert")));
        // A second call finds it.
        let mut again_lines = Vec::new();
        let again = prepare(&OsImage::File(src), &cache, &mut |l: &str| {
            again_lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(again, image);
        assert!(!again_lines.iter().any(|l| l.contains("qemu-img")));
    }
}
