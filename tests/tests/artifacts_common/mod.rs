//! Helpers shared by the artifact suites: payloads, manifests pointing at
//! the loopback server, and running `edgeforge images ...` in-process
//! through the real clap parser and command code.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use edgeforge::artifacts::{
    Arch, ArtifactCache, ArtifactRef, Downloader, DownloaderOptions, NoProgress, Progress,
    ResolvedArtifact,
};
use edgeforge::cli::{Cli, Command, Outcome};
use sha2::{Digest, Sha256};

/// Deterministic bytes that do not compress to nothing.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Lowercase hex sha256.
pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A resolved artifact named `name` (version `v1`, amd64) from `urls`.
pub fn artifact(name: &str, data: &[u8], urls: &[String]) -> ResolvedArtifact {
    ResolvedArtifact {
        artifact: ArtifactRef::new(name, "v1", Arch::Amd64),
        file: name.to_string(),
        urls: urls.to_vec(),
        sha256: sha(data),
        size: None,
    }
}

/// Fast retries and a short stall limit, so failure tests finish quickly.
pub fn options(read_timeout_ms: u64, attempts: u32) -> DownloaderOptions {
    DownloaderOptions {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_millis(read_timeout_ms),
        attempts,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
    }
}

/// A downloader with test options.
pub fn downloader(read_timeout_ms: u64, attempts: u32) -> Downloader {
    downloader_with(read_timeout_ms, attempts, Arc::new(NoProgress))
}

/// A downloader with test options reporting to `progress`.
pub fn downloader_with(
    read_timeout_ms: u64,
    attempts: u32,
    progress: Arc<dyn Progress>,
) -> Downloader {
    Downloader::new(options(read_timeout_ms, attempts), progress).expect("client")
}

/// The blobs in a cache's `sha256/` directory.
pub fn blobs(cache: &ArtifactCache) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.root().join("sha256"))
        .expect("sha256 dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Files left in the cache's `tmp/` directory.
pub fn tmp_files(cache: &ArtifactCache) -> Vec<String> {
    std::fs::read_dir(cache.root().join("tmp"))
        .expect("tmp dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// A manifest with a k3s-like artifact served from `base` for amd64 and arm64.
pub fn manifest_text(base: &str, version: &str, amd64: &[u8], arm64: &[u8]) -> String {
    format!(
        "# test manifest\n\
         defaults:\n  k3s: {version}\n\
         artifacts:\n\
         \x20 k3s:\n\
         \x20   component: k3s\n\
         \x20   files: {{amd64: k3s, arm64: k3s-arm64}}\n\
         \x20   urls: [\"{base}/{{version}}/{{file}}\"]\n\
         \x20   checksums: \"{base}/{{version}}/sha256sum-{{arch}}.txt\"\n\
         \x20   pins:\n\
         \x20     {version}:\n\
         \x20       amd64: {{sha256: {}}}\n\
         \x20       arm64: {{sha256: {}}}\n",
        sha(amd64),
        sha(arm64)
    )
}

/// Writes `text` to `dir/manifest.yaml` and returns the path.
pub fn write_manifest(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("manifest.yaml");
    std::fs::write(&p, text).expect("write manifest");
    p
}

/// Runs `edgeforge <args>` in-process (real argument parsing and command
/// code); only `images` commands are accepted.
pub fn edgeforge(args: &[&str]) -> Outcome {
    let cli = Cli::try_parse_from(std::iter::once("edgeforge").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("bad arguments {args:?}: {e}"));
    let Command::Images(cmd) = cli.command else {
        panic!("only `images` commands run in-process");
    };
    cmd.run(&cli.global)
}

/// Like [`edgeforge`] but returns the error text instead of printing it.
pub fn edgeforge_err(args: &[&str]) -> String {
    let cli = Cli::try_parse_from(std::iter::once("edgeforge").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("bad arguments {args:?}: {e}"));
    let Command::Images(cmd) = cli.command else {
        panic!("only `images` commands run in-process");
    };
    match cmd.execute(&cli.global) {
        Ok(o) => panic!("expected an error, got {o:?}"),
        Err(e) => format!("{e:#}"),
    }
}
