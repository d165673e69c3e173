//! `images pull` against a real HTTP server on loopback: good, corrupted
//! and missing files, cut connections resumed with Range, 5xx retries, slow
//! and stalled servers, mirrors, and the offline rule (a full cache makes no
//! request at all).

mod artifacts_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use artifacts_common::*;
use edgeforge::artifacts::{
    self, ArtifactCache, ArtifactError, ArtifactRef, Mirror, Progress, PullOptions,
};
use edgeforge::cli::Outcome;
use edgeforge_tests::http::{Fault, HttpServer};

#[tokio::test]
async fn good_file_enters_the_cache_under_its_hash() {
    let srv = HttpServer::start().unwrap();
    let data = payload(300_000, 1);
    srv.add_bytes("/k3s", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let art = artifact("k3s", &data, &[srv.url("/k3s")]);

    let got = artifacts::pull(
        &cache,
        &downloader(2000, 3),
        std::slice::from_ref(&art),
        &PullOptions::default(),
    )
    .await
    .unwrap();

    assert_eq!(got.fetched.len(), 1);
    let cached = &got.fetched[0];
    assert_eq!(cached.sha256, sha(&data));
    assert_eq!(cached.size, data.len() as u64);
    assert_eq!(std::fs::read(&cached.path).unwrap(), data);
    assert_eq!(
        cache.path_of(&art.artifact),
        Some(cache.blob_path(&sha(&data)))
    );
    assert_eq!(blobs(&cache), vec![sha(&data)]);
    assert!(tmp_files(&cache).is_empty(), "{:?}", tmp_files(&cache));
    let statuses: Vec<u16> = srv.served().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![200]);
}

#[tokio::test]
async fn corrupted_file_is_refused_and_the_cache_stays_untouched() {
    let srv = HttpServer::start().unwrap();
    let data = payload(200_000, 2);
    srv.add_bytes("/k3s", data.clone());
    srv.set_fault("/k3s", Some(Fault::Corrupt));
    let mut corrupted = data.clone();
    corrupted[data.len() / 2] ^= 0xff;
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let url = srv.url("/k3s");
    let art = artifact("k3s", &data, std::slice::from_ref(&url));

    let err = artifacts::pull(
        &cache,
        &downloader(2000, 3),
        std::slice::from_ref(&art),
        &PullOptions::default(),
    )
    .await
    .unwrap_err();

    assert!(matches!(err, ArtifactError::HashMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&sha(&data)), "expected hash missing: {msg}");
    assert!(msg.contains(&sha(&corrupted)), "actual hash missing: {msg}");
    assert!(msg.contains(&url), "url missing: {msg}");
    assert!(blobs(&cache).is_empty());
    assert!(tmp_files(&cache).is_empty(), "{:?}", tmp_files(&cache));
    assert_eq!(cache.path_of(&art.artifact), None);
    assert!(cache.entries().unwrap().is_empty());
}

#[tokio::test]
async fn not_found_moves_on_to_the_next_url() {
    let srv = HttpServer::start().unwrap();
    let data = payload(50_000, 3);
    srv.add_bytes("/b/k3s", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let art = artifact("k3s", &data, &[srv.url("/a/k3s"), srv.url("/b/k3s")]);

    artifacts::pull(
        &cache,
        &downloader(2000, 3),
        &[art],
        &PullOptions::default(),
    )
    .await
    .unwrap();

    let served: Vec<(String, u16)> = srv
        .served()
        .into_iter()
        .map(|s| (s.path, s.status))
        .collect();
    assert_eq!(served, vec![("/a/k3s".into(), 404), ("/b/k3s".into(), 200)]);
}

#[tokio::test]
async fn not_found_everywhere_is_a_clear_error() {
    let srv = HttpServer::start().unwrap();
    let data = payload(10, 4);
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let url = srv.url("/nothing/k3s");
    let art = artifact("k3s", &data, std::slice::from_ref(&url));

    let err = artifacts::pull(
        &cache,
        &downloader(2000, 3),
        &[art],
        &PullOptions::default(),
    )
    .await
    .unwrap_err()
    .to_string();

    assert!(err.contains("could not fetch k3s v1 (amd64)"), "{err}");
    assert!(err.contains(&format!("{url}: HTTP 404 Not Found")), "{err}");
    assert_eq!(srv.requests(), 1, "a 404 is not retried");
}

#[tokio::test]
async fn cut_connection_resumes_with_a_range_request() {
    let srv = HttpServer::start().unwrap();
    let data = payload(1_000_000, 5);
    srv.add_bytes("/k3s", data.clone());
    srv.set_fault("/k3s", Some(Fault::CutAfter(500_000)));
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let art = artifact("k3s", &data, &[srv.url("/k3s")]);

    let got = artifacts::pull(
        &cache,
        &downloader(2000, 3),
        &[art],
        &PullOptions::default(),
    )
    .await
    .unwrap();

    assert_eq!(std::fs::read(&got.fetched[0].path).unwrap(), data);
    let served = srv.served();
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!((served[0].status, served[0].range.clone()), (200, None));
    assert_eq!(served[1].status, 206, "{served:?}");
    let start: u64 = served[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .expect("a bytes=N- range");
    assert!(start > 0 && start <= 500_000, "resumed at {start}");
}

#[tokio::test]
async fn the_next_pull_resumes_what_a_failed_pull_left() {
    let srv = HttpServer::start().unwrap();
    let data = payload(800_000, 6);
    srv.add_bytes("/k3s", data.clone());
    srv.set_fault("/k3s", Some(Fault::CutAfter(300_000)));
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let art = artifact("k3s", &data, &[srv.url("/k3s")]);

    // One attempt only: the first pull fails and keeps its partial file.
    let err = artifacts::pull(
        &cache,
        &downloader(2000, 1),
        std::slice::from_ref(&art),
        &PullOptions::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("connection"), "{err}");
    assert_eq!(tmp_files(&cache), vec![format!("{}.part", sha(&data))]);
    assert!(blobs(&cache).is_empty());

    artifacts::pull(
        &cache,
        &downloader(2000, 1),
        &[art],
        &PullOptions::default(),
    )
    .await
    .unwrap();
    let served = srv.served();
    assert_eq!(served.last().map(|s| s.status), Some(206), "{served:?}");
    assert_eq!(blobs(&cache), vec![sha(&data)]);
    assert!(tmp_files(&cache).is_empty());
}

#[tokio::test]
async fn a_server_that_ignores_range_makes_the_download_restart_from_zero() {
    let srv = HttpServer::start().unwrap();
    let data = payload(400_000, 7);
    srv.add_bytes("/k3s", data.clone());
    srv.set_fault("/k3s", Some(Fault::IgnoreRange));
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    // A partial file from an earlier run.
    std::fs::write(
        cache.root().join(format!("tmp/{}.part", sha(&data))),
        &data[..100_000],
    )
    .unwrap();
    let art = artifact("k3s", &data, &[srv.url("/k3s")]);

    artifacts::pull(
        &cache,
        &downloader(2000, 3),
        &[art],
        &PullOptions::default(),
    )
    .await
    .unwrap();

    let served = srv.served();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(served[0].status, 200);
    assert_eq!(blobs(&cache), vec![sha(&data)]);
}

#[tokio::test]
async fn a_stale_partial_file_is_replaced_by_a_full_download() {
    let srv = HttpServer::start().unwrap();
    let data = payload(400_000, 8);
    srv.add_bytes("/k3s", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    std::fs::write(
        cache.root().join(format!("tmp/{}.part", sha(&data))),
        payload(1000, 99),
    )
    .unwrap();
    let art = artifact("k3s", &data, &[srv.url("/k3s")]);

    artifacts::pull(
        &cache,
        &downloader(2000, 3),
        &[art],
        &PullOptions::default(),
    )
    .await
    .unwrap();

    let statuses: Vec<u16> = srv.served().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![206, 200], "resume, mismatch, then from zero");
    assert_eq!(blobs(&cache), vec![sha(&data)]);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let srv = HttpServer::start().unwrap();
    let data = payload(20_000, 9);
    srv.add_bytes("/k3s", data.clone());
    srv.set_fault("/k3s", Some(Fault::ServerError(2)));
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let art = artifact("k3s", &data, &[srv.url("/k3s")]);

    artifacts::pull(
        &cache,
        &downloader(2000, 3),
        &[art],
        &PullOptions::default(),
    )
    .await
    .unwrap();

    let statuses: Vec<u16> = srv.served().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
}

#[derive(Default)]
struct Counting {
    advances: AtomicU64,
    bytes: AtomicU64,
}

impl Progress for Counting {
    fn advance(&self, _a: &ArtifactRef, bytes: u64) {
        self.advances.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(bytes, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_slow_server_completes_with_progress() {
    let srv = HttpServer::start().unwrap();
    let data = payload(150_000, 10);
    srv.add_bytes("/k3s", data.clone());
    srv.set_fault("/k3s", Some(Fault::Throttle(300_000)));
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let art = artifact("k3s", &data, &[srv.url("/k3s")]);
    let progress = Arc::new(Counting::default());

    let started = Instant::now();
    artifacts::pull(
        &cache,
        &downloader_with(2000, 1, progress.clone()),
        &[art],
        &PullOptions::default(),
    )
    .await
    .unwrap();

    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "throttle not applied"
    );
    assert!(progress.advances.load(Ordering::SeqCst) >= 5);
    assert_eq!(progress.bytes.load(Ordering::SeqCst), data.len() as u64);
    assert_eq!(blobs(&cache), vec![sha(&data)]);
}

#[tokio::test]
async fn a_stalled_server_times_out_with_a_clear_error() {
    let srv = HttpServer::start().unwrap();
    let data = payload(100_000, 11);
    srv.add_bytes("/k3s", data.clone());
    srv.set_fault("/k3s", Some(Fault::StallAfter(10_000)));
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let art = artifact("k3s", &data, &[srv.url("/k3s")]);

    let err = artifacts::pull(&cache, &downloader(300, 2), &[art], &PullOptions::default())
        .await
        .unwrap_err()
        .to_string();

    assert!(err.contains("stalled: no data for 300ms"), "{err}");
    assert!(err.contains("gave up after 2 attempts"), "{err}");
    assert!(blobs(&cache).is_empty());
    // The second attempt resumed where the first one stalled.
    let served = srv.served();
    assert_eq!(served.len(), 2);
    assert_eq!(served[1].status, 206);
}

#[tokio::test]
async fn an_unreachable_server_suggests_a_mirror_or_a_bundle() {
    let data = payload(10, 12);
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    // Nothing listens on port 1.
    let art = artifact("k3s", &data, &["http://127.0.0.1:1/k3s".to_string()]);

    let err = artifacts::pull(&cache, &downloader(500, 2), &[art], &PullOptions::default())
        .await
        .unwrap_err()
        .to_string();

    assert!(err.contains("no source could be reached"), "{err}");
    assert!(err.contains("--mirror"), "{err}");
    assert!(tmp_files(&cache).is_empty());
}

#[tokio::test]
async fn a_mirror_directory_replaces_the_urls() {
    let srv = HttpServer::start().unwrap();
    let data = payload(70_000, 13);
    let mirror = tempfile::tempdir().unwrap();
    std::fs::write(mirror.path().join("k3s"), &data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let art = artifact("k3s", &data, &[srv.url("/k3s")]);
    let opts = PullOptions {
        mirror: Some(Mirror::Dir(mirror.path().to_path_buf())),
        ..Default::default()
    };

    artifacts::pull(&cache, &downloader(2000, 3), &[art], &opts)
        .await
        .unwrap();

    assert_eq!(blobs(&cache), vec![sha(&data)]);
    assert_eq!(srv.connections(), 0, "the manifest URL must not be used");
}

#[tokio::test]
async fn a_mirror_url_replaces_the_urls() {
    let srv = HttpServer::start().unwrap();
    let data = payload(70_000, 14);
    srv.add_bytes("/mirror/k3s", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let art = artifact("k3s", &data, &["http://127.0.0.1:1/k3s".to_string()]);
    let opts = PullOptions {
        mirror: Some(Mirror::parse(&srv.url("/mirror/"))),
        ..Default::default()
    };

    artifacts::pull(&cache, &downloader(2000, 3), &[art], &opts)
        .await
        .unwrap();

    let paths: Vec<String> = srv.served().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, vec!["/mirror/k3s".to_string()]);
    assert_eq!(blobs(&cache), vec![sha(&data)]);
}

#[test]
fn cli_pull_with_a_full_cache_makes_no_request() {
    let srv = HttpServer::start().unwrap();
    let (amd, arm) = (payload(120_000, 20), payload(90_000, 21));
    srv.add_bytes("/v1.2.3%2Bk3s1/k3s", amd.clone());
    srv.add_bytes("/v1.2.3%2Bk3s1/k3s-arm64", arm.clone());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &manifest_text(&srv.base_url(), "v1.2.3+k3s1", &amd, &arm),
    );
    let inventory = dir.path().join("site.yaml");
    std::fs::write(
        &inventory,
        "apiVersion: edgeforge/v1\nversions:\n  k3s: v1.2.3+k3s1\nsites: []\n",
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let args = [
        "images",
        "pull",
        "-i",
        inventory.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--arch",
        "amd64",
        "--arch",
        "arm64",
    ];

    assert_eq!(edgeforge(&args), Outcome::Success);
    assert_eq!(srv.requests(), 2);
    let connections = srv.connections();

    assert_eq!(edgeforge(&args), Outcome::Success);
    assert_eq!(srv.requests(), 2, "a full cache must not cause any request");
    assert_eq!(srv.connections(), connections, "nor any connection");

    let c = ArtifactCache::open(&cache).unwrap();
    assert_eq!(blobs(&c).len(), 2);
}

#[test]
fn cli_offline_with_a_missing_artifact_names_it_and_the_fetch_command() {
    let srv = HttpServer::start().unwrap();
    let (amd, arm) = (payload(1000, 22), payload(1000, 23));
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &manifest_text(&srv.base_url(), "v1.2.3+k3s1", &amd, &arm),
    );
    let cache = dir.path().join("cache");
    let args = [
        "images",
        "pull",
        "--manifest",
        manifest.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--offline",
    ];

    assert_eq!(edgeforge(&args), Outcome::Failed);
    let err = edgeforge_err(&args);
    assert!(err.contains("lacks k3s v1.2.3+k3s1 (amd64)"), "{err}");
    assert!(
        err.contains(&format!(
            "`edgeforge images pull --cache {}`",
            cache.display()
        )),
        "{err}"
    );
    assert_eq!(srv.requests(), 0);
}

#[test]
fn cli_unpinned_inventory_version_is_invalid_input_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let (amd, arm) = (payload(10, 24), payload(10, 25));
    let manifest = write_manifest(
        dir.path(),
        &manifest_text("http://127.0.0.1:1", "v1.2.3+k3s1", &amd, &arm),
    );
    let inventory = dir.path().join("site.yaml");
    std::fs::write(
        &inventory,
        "apiVersion: edgeforge/v1\nversions:\n  k3s: v9.9.9+k3s1\nsites: []\n",
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let args = [
        "images",
        "pull",
        "-i",
        inventory.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];

    assert_eq!(edgeforge(&args), Outcome::InvalidInput);
    let err = edgeforge_err(&args);
    assert!(
        err.starts_with(&format!(
            "{}:3:8: versions.k3s `v9.9.9+k3s1`",
            inventory.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("edgeforge images pin k3s v9.9.9+k3s1"),
        "{err}"
    );
}

#[tokio::test]
async fn several_artifacts_download_together_and_shared_content_once() {
    let srv = HttpServer::start().unwrap();
    let (a, b) = (payload(500_000, 15), payload(300_000, 16));
    srv.add_bytes("/a", a.clone());
    srv.add_bytes("/b", b.clone());
    srv.add_bytes("/a-again", a.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let needs = [
        artifact("one", &a, &[srv.url("/a")]),
        artifact("two", &b, &[srv.url("/b")]),
        artifact("three", &a, &[srv.url("/a-again")]),
    ];

    let got = artifacts::pull(
        &cache,
        &downloader(2000, 3),
        &needs,
        &PullOptions::default(),
    )
    .await
    .unwrap();

    let names: Vec<&str> = got
        .fetched
        .iter()
        .map(|c| c.artifact.name.as_str())
        .collect();
    assert_eq!(names, vec!["one", "two", "three"]);
    assert_eq!(srv.requests(), 2, "identical content is fetched once");
    for n in &needs {
        assert_eq!(
            cache.path_of(&n.artifact),
            Some(cache.blob_path(&n.sha256)),
            "{}",
            n.artifact
        );
    }
}
