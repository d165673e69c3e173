//! Micro-benchmark: per-command overhead of a framed command on the running
//! shell versus one fresh exec channel per command, on one loopback sshd
//! (and the local transport for reference). Prints numbers; asserts nothing.
//!
//! Usage: `cargo run --release -p edgeforge-tests --bin transport_overhead [N]`

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edgeforge::transport::{ExecRequest, LocalTransport, SshTransport, Transport};
use edgeforge_tests::SshdFleet;

const TRUE: ExecRequest<'static> = ExecRequest {
    script: "true",
    stdin: None,
    privileged: false,
    timeout: None,
};

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let fleet = SshdFleet::start(1)?;
    let started = Instant::now();
    let ssh = SshTransport::connect(&fleet.target(0)).await?;
    let connect = started.elapsed();
    let local = LocalTransport::new();

    let framed = measure(n, || ssh.exec(TRUE)).await?;
    let channel_n = (n / 10).max(20);
    let channel = measure(channel_n, || ssh.exec_channel(TRUE)).await?;
    let local_framed = measure(n, || local.exec(TRUE)).await?;

    println!("one loopback OpenSSH sshd, `true` run sequentially; connect+auth took {connect:?}");
    println!(
        "{:<34} {:>6} {:>12} {:>12} {:>12}",
        "path", "runs", "mean", "median", "p99"
    );
    for (name, runs, samples) in [
        ("ssh framed shell (running sh)", n, &framed),
        ("ssh exec channel per command", channel_n, &channel),
        ("local framed shell", n, &local_framed),
    ] {
        let (mean, median, p99) = stats(samples);
        println!("{name:<34} {runs:>6} {mean:>12?} {median:>12?} {p99:>12?}");
    }
    let ratio = stats(&channel).0.as_secs_f64() / stats(&framed).0.as_secs_f64();
    println!("exec channel / framed shell: {ratio:.0}x");
    ssh.close().await.context("closing")?;
    Ok(())
}

async fn measure<F, Fut>(n: usize, mut f: F) -> Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
            Output = Result<edgeforge::transport::ExecOutput, edgeforge::transport::TransportError>,
        >,
{
    f().await?; // warm-up: opens the shell
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = f().await?;
        samples.push(t.elapsed());
        anyhow::ensure!(out.status == 0, "`true` exited {}", out.status);
    }
    Ok(samples)
}

fn stats(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let mut s = samples.to_vec();
    s.sort();
    let total: Duration = s.iter().sum();
    let mean = total / u32::try_from(s.len().max(1)).unwrap_or(u32::MAX);
    let at = |q: f64| {
        s.get(((s.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    (mean, at(0.5), at(0.99))
}
