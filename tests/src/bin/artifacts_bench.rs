//! Throughput benchmark (not a test): a 200 MiB artifact pulled over
//! loopback by edgeforge's downloader (sha256 while streaming, verified,
//! synced and renamed into the cache) and by `curl -o` in the same run, from
//! two servers: the harness's Rust server (sendfile) and Python's
//! `http.server`. Prints MiB/s of each and the ratio edgeforge/curl. A third
//! column runs `curl -o` followed by `sync --data` of its output, because
//! edgeforge syncs a file before renaming it into the cache and plain curl
//! does not.
//!
//! Run: `cargo run --release -p edgeforge-tests --bin artifacts_bench [-- SIZE_MIB ROUNDS]`

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeforge::artifacts::download::sources;
use edgeforge::artifacts::{
    Arch, ArtifactCache, ArtifactRef, Downloader, DownloaderOptions, NoProgress, ResolvedArtifact,
};
use edgeforge_tests::http::HttpServer;
use sha2::{Digest, Sha256};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let size_mib: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |a| a.parse::<usize>())?.max(1);
    let work = tempfile::Builder::new()
        .prefix("edgeforge-bench-")
        .tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))?;
    let file = work.path().join("k3s-airgap-images-amd64.tar.zst");
    let sha256 = write_payload(&file, size_mib << 20)?;
    let bytes = (size_mib << 20) as f64;
    println!(
        "artifact: {size_mib} MiB in {}, sha256 {sha256}, {rounds} rounds each, median shown",
        work.path().display()
    );

    let rust = HttpServer::start()?;
    rust.add_file("/k3s-airgap-images-amd64.tar.zst", &file);
    let python = PythonServer::start(work.path())?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let downloader = Downloader::new(DownloaderOptions::default(), Arc::new(NoProgress))?;
    println!(
        "{:<20} {:>10} {:>10} {:>7} {:>12} {:>7}",
        "server (MiB/s)", "edgeforge", "curl -o", "ratio", "curl+fsync", "ratio"
    );
    for (name, base) in [
        ("rust (sendfile)", rust.base_url()),
        ("python http.server", python.base_url.clone()),
    ] {
        let url = format!("{base}/k3s-airgap-images-amd64.tar.zst");
        let (mut ef, mut cu, mut cs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Rotate who goes first so page-cache and load effects are shared.
            for turn in 0..3 {
                match (round + turn) % 3 {
                    0 => ef.push(rt.block_on(edgeforge_pull(
                        &downloader,
                        &url,
                        &sha256,
                        work.path(),
                    ))?),
                    1 => cu.push(curl_pull(&url, work.path(), false)?),
                    _ => cs.push(curl_pull(&url, work.path(), true)?),
                }
            }
        }
        let rate = |v: &mut Vec<f64>| bytes / median(v) / 1048576.0;
        let (e, c, s) = (rate(&mut ef), rate(&mut cu), rate(&mut cs));
        println!(
            "{name:<20} {e:>10.0} {c:>10.0} {:>6.0}% {s:>12.0} {:>6.0}%",
            100.0 * e / c,
            100.0 * e / s
        );
    }
    Ok(())
}

/// One pull into a fresh cache; returns seconds.
async fn edgeforge_pull(
    downloader: &Downloader,
    url: &str,
    sha256: &str,
    work: &Path,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir_in(work)?;
    let cache = ArtifactCache::open(dir.path())?;
    let art = ResolvedArtifact {
        artifact: ArtifactRef::new("k3s-airgap-images", "bench", Arch::Amd64),
        file: "k3s-airgap-images-amd64.tar.zst".into(),
        urls: vec![url.to_string()],
        sha256: sha256.to_string(),
        size: None,
    };
    let started = Instant::now();
    cache.ensure(downloader, &art, &sources(&art, None)).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// One `curl -o` (then `sync --data` of the file when `fsync`); returns seconds.
fn curl_pull(url: &str, work: &Path, fsync: bool) -> anyhow::Result<f64> {
    let out = work.join("curl.out");
    let started = Instant::now();
    let status = Command::new("curl")
        .args(["-s", "-S", "-f", "-o"])
        .arg(&out)
        .arg(url)
        .status()?;
    anyhow::ensure!(status.success(), "curl failed: {status}");
    if fsync {
        let status = Command::new("sync").arg("--data").arg(&out).status()?;
        anyhow::ensure!(status.success(), "sync failed: {status}");
    }
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&out)?;
    Ok(secs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes `len` pseudo-random (incompressible) bytes and returns their sha256.
fn write_payload(path: &Path, len: usize) -> anyhow::Result<String> {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..len / buf.len() {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        hasher.update(&buf);
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

/// `python3 -m http.server` on a free loopback port, killed on drop.
struct PythonServer {
    child: Child,
    base_url: String,
}

impl PythonServer {
    fn start(dir: &Path) -> anyhow::Result<PythonServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = PythonServer {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "python http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
