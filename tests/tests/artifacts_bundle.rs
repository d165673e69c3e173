//! Air-gap bundles, cache verification and `images pin`, end to end through
//! the CLI code with a real loopback HTTP server as the upstream.

mod artifacts_common;

use std::io::{Read, Write};
use std::path::Path;

use artifacts_common::*;
use edgeforge::artifacts::bundle::{BundleManifest, import_bundle};
use edgeforge::artifacts::{Arch, ArtifactCache, ArtifactError, ArtifactRef, Damage, Manifest};
use edgeforge::cli::Outcome;
use edgeforge_tests::http::HttpServer;

const VERSION: &str = "v1.2.3+k3s1";

struct Site {
    srv: HttpServer,
    dir: tempfile::TempDir,
    amd: Vec<u8>,
    arm: Vec<u8>,
}

impl Site {
    fn new() -> Site {
        let srv = HttpServer::start().unwrap();
        let (amd, arm) = (payload(600_000, 30), payload(400_000, 31));
        srv.add_bytes("/v1.2.3%2Bk3s1/k3s", amd.clone());
        srv.add_bytes("/v1.2.3%2Bk3s1/k3s-arm64", arm.clone());
        let dir = tempfile::tempdir().unwrap();
        write_manifest(
            dir.path(),
            &manifest_text(&srv.base_url(), VERSION, &amd, &arm),
        );
        Site { srv, dir, amd, arm }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn bundle(&self, cache: &str, out: &str) -> Outcome {
        let manifest = self.path("manifest.yaml");
        edgeforge(&[
            "images",
            "bundle",
            "--manifest",
            &manifest,
            "--cache",
            cache,
            "--arch",
            "amd64",
            "--arch",
            "arm64",
            "-o",
            out,
        ])
    }
}

#[test]
fn bundle_round_trip_through_an_empty_cache() {
    let site = Site::new();
    let (online, offline, out) = (
        site.path("online"),
        site.path("offline"),
        site.path("site.tar.zst"),
    );

    assert_eq!(site.bundle(&online, &out), Outcome::Success);
    assert_eq!(site.srv.requests(), 2);

    // The bundle's own manifest lists both files with hashes and sizes.
    let toc = read_toc(Path::new(&out));
    assert_eq!(toc.format, "edgeforge-bundle/v1");
    let mut listed: Vec<(Arch, String, u64)> = toc
        .artifacts
        .iter()
        .map(|e| (e.artifact.arch, e.sha256.clone(), e.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            (Arch::Amd64, sha(&site.amd), site.amd.len() as u64),
            (Arch::Arm64, sha(&site.arm), site.arm.len() as u64),
        ]
    );

    // Wipe: a fresh cache on the "air-gapped" side.
    std::fs::remove_dir_all(&online).unwrap();
    let manifest = site.path("manifest.yaml");
    assert_eq!(
        edgeforge(&[
            "images",
            "import",
            &out,
            "--cache",
            &offline,
            "--manifest",
            &manifest
        ]),
        Outcome::Success
    );
    assert_eq!(
        edgeforge(&["images", "verify", "--cache", &offline]),
        Outcome::Success
    );

    let cache = ArtifactCache::open(&offline).unwrap();
    let k3s = cache
        .get(&ArtifactRef::new("k3s", VERSION, Arch::Amd64))
        .unwrap()
        .expect("imported");
    assert_eq!(std::fs::read(&k3s.path).unwrap(), site.amd);
    assert_eq!(k3s.sha256, sha(&site.amd));

    // And an offline pull there is satisfied without any request.
    let before = site.srv.requests();
    assert_eq!(
        edgeforge(&[
            "images",
            "pull",
            "--manifest",
            &manifest,
            "--cache",
            &offline,
            "--arch",
            "amd64",
            "--arch",
            "arm64",
            "--offline",
        ]),
        Outcome::Success
    );
    assert_eq!(site.srv.requests(), before);
}

#[test]
fn a_tampered_bundle_is_refused_and_the_cache_is_untouched() {
    let site = Site::new();
    let (online, offline, out) = (
        site.path("online"),
        site.path("offline"),
        site.path("site.tar.zst"),
    );
    assert_eq!(site.bundle(&online, &out), Outcome::Success);
    let tampered = site.path("tampered.tar.zst");
    rewrite_bundle(Path::new(&out), Path::new(&tampered), |name, data| {
        if name.starts_with("blobs/") && data.len() > 1000 {
            data[1000] ^= 0x01;
        }
    });

    let manifest = site.path("manifest.yaml");
    assert_eq!(
        edgeforge(&[
            "images",
            "import",
            &tampered,
            "--cache",
            &offline,
            "--manifest",
            &manifest
        ]),
        Outcome::Failed
    );
    let cache = ArtifactCache::open(&offline).unwrap();
    let err = import_bundle(&cache, Path::new(&tampered), None).unwrap_err();
    assert!(matches!(err, ArtifactError::BundleRefused { .. }), "{err}");
    assert!(err.to_string().contains("hashes to"), "{err}");
    assert!(blobs(&cache).is_empty(), "nothing may enter the cache");
    assert!(cache.entries().unwrap().is_empty());
    assert!(tmp_files(&cache).is_empty(), "staging must be cleaned up");
}

#[test]
fn a_bundle_that_contradicts_the_manifest_pins_is_refused() {
    let site = Site::new();
    let (online, offline, out) = (
        site.path("online"),
        site.path("offline"),
        site.path("site.tar.zst"),
    );
    assert_eq!(site.bundle(&online, &out), Outcome::Success);
    // A manifest pinning other content for the same version.
    let other = tempfile::tempdir().unwrap();
    let other_manifest = write_manifest(
        other.path(),
        &manifest_text(
            &site.srv.base_url(),
            VERSION,
            b"other amd64",
            b"other arm64",
        ),
    );
    let manifest = Manifest::load(&other_manifest).unwrap();

    let cache = ArtifactCache::open(&offline).unwrap();
    let err = import_bundle(&cache, Path::new(&out), Some(&manifest))
        .unwrap_err()
        .to_string();

    assert!(err.contains("but the manifest pins"), "{err}");
    assert!(blobs(&cache).is_empty());
}

#[test]
fn verify_reports_damage_and_repair_removes_it() {
    let site = Site::new();
    let cache_dir = site.path("cache");
    let manifest = site.path("manifest.yaml");
    let pull = [
        "images",
        "pull",
        "--manifest",
        &manifest,
        "--cache",
        &cache_dir,
        "--arch",
        "amd64",
        "--arch",
        "arm64",
    ];
    assert_eq!(edgeforge(&pull), Outcome::Success);
    assert_eq!(
        edgeforge(&["images", "verify", "--cache", &cache_dir]),
        Outcome::Success
    );

    // Damage one blob on disk.
    let cache = ArtifactCache::open(&cache_dir).unwrap();
    let blob = cache.blob_path(&sha(&site.amd));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    assert_eq!(
        edgeforge(&["images", "verify", "--cache", &cache_dir]),
        Outcome::Failed
    );
    let report = cache.verify(false).unwrap();
    assert_eq!(report.ok, 1);
    assert_eq!(
        report.damage,
        vec![Damage::Corrupt {
            path: blob.clone(),
            expected: sha(&site.amd),
            actual: sha(&bytes),
        }]
    );
    assert!(blob.exists(), "without --repair nothing is removed");

    assert_eq!(
        edgeforge(&["images", "verify", "--cache", &cache_dir, "--repair"]),
        Outcome::Failed
    );
    assert!(!blob.exists());
    assert_eq!(
        cache.path_of(&ArtifactRef::new("k3s", VERSION, Arch::Amd64)),
        None
    );
    assert_eq!(
        edgeforge(&["images", "verify", "--cache", &cache_dir]),
        Outcome::Success
    );

    // A pull brings the removed file back.
    let before = site.srv.requests();
    assert_eq!(edgeforge(&pull), Outcome::Success);
    assert_eq!(site.srv.requests(), before + 1);
    assert_eq!(std::fs::read(&blob).unwrap(), site.amd);
}

#[test]
fn pin_records_a_new_release_from_its_checksum_files() {
    let site = Site::new();
    let (new_amd, new_arm) = (payload(1000, 40), payload(1000, 41));
    site.srv.add_bytes(
        "/v2.0.0%2Bk3s1/sha256sum-amd64.txt",
        format!(
            "{}  k3s\n{}  k3s-airgap-images-amd64.tar.zst\n",
            sha(&new_amd),
            sha(b"images")
        )
        .into_bytes(),
    );
    site.srv.add_bytes(
        "/v2.0.0%2Bk3s1/sha256sum-arm64.txt",
        format!("{}  k3s-arm64\n", sha(&new_arm)).into_bytes(),
    );
    let manifest = site.path("manifest.yaml");
    let before = std::fs::read_to_string(&manifest).unwrap();

    assert_eq!(
        edgeforge(&[
            "images",
            "pin",
            "k3s",
            "v2.0.0+k3s1",
            "--manifest",
            &manifest
        ]),
        Outcome::Success
    );

    let after = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        after.starts_with("# test manifest\n"),
        "comments kept:\n{after}"
    );
    let m = Manifest::load(Path::new(&manifest)).unwrap();
    let amd = m
        .resolve(&ArtifactRef::new("k3s", "v2.0.0+k3s1", Arch::Amd64))
        .unwrap();
    let arm = m
        .resolve(&ArtifactRef::new("k3s", "v2.0.0+k3s1", Arch::Arm64))
        .unwrap();
    assert_eq!((amd.sha256, arm.sha256), (sha(&new_amd), sha(&new_arm)));
    let old = m
        .resolve(&ArtifactRef::new("k3s", VERSION, Arch::Amd64))
        .unwrap();
    assert_eq!(old.sha256, sha(&site.amd), "existing pins kept");
    assert_eq!(after.lines().count(), before.lines().count() + 5);
}

#[test]
fn pin_with_an_incomplete_checksum_file_leaves_the_manifest_alone() {
    let site = Site::new();
    site.srv.add_bytes(
        "/v2.0.0%2Bk3s1/sha256sum-amd64.txt",
        format!("{}  k3s\n", sha(b"x")).into_bytes(),
    );
    // No arm64 checksum file at all: 404.
    let manifest = site.path("manifest.yaml");
    let before = std::fs::read_to_string(&manifest).unwrap();

    assert_eq!(
        edgeforge(&[
            "images",
            "pin",
            "k3s",
            "v2.0.0+k3s1",
            "--manifest",
            &manifest
        ]),
        Outcome::Failed
    );
    let err = edgeforge_err(&[
        "images",
        "pin",
        "k3s",
        "v2.0.0+k3s1",
        "--manifest",
        &manifest,
    ]);
    assert!(err.contains("sha256sum-arm64.txt: HTTP 404"), "{err}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), before);
}

fn read_toc(bundle: &Path) -> BundleManifest {
    let dec = zstd::Decoder::new(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut archive = tar::Archive::new(dec);
    let mut first = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.path().unwrap().to_str(), Some("manifest.json"));
    let mut json = String::new();
    first.read_to_string(&mut json).unwrap();
    serde_json::from_str(&json).unwrap()
}

/// Copies a bundle entry by entry, letting `edit` change each entry's bytes.
fn rewrite_bundle(src: &Path, dst: &Path, edit: impl Fn(&str, &mut Vec<u8>)) {
    let dec = zstd::Decoder::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut archive = tar::Archive::new(dec);
    let enc = zstd::Encoder::new(std::fs::File::create(dst).unwrap(), 1).unwrap();
    let mut builder = tar::Builder::new(enc);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        edit(&name, &mut data);
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, &data[..]).unwrap();
    }
    builder
        .into_inner()
        .unwrap()
        .finish()
        .unwrap()
        .flush()
        .unwrap();
}
