//! Shared helpers of the k3s stand-in suites: stand-in processes with their
//! own `EDGEFORGE_K3S_STANDIN_ROOT`, a log file to wait on, SIGTERM, free
//! loopback ports, and the real kubectl 1.37.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any wait may take before a test gives up (a bound, not an assertion on speed).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A stand-in process.
pub struct Standin {
    child: Child,
    /// Its `EDGEFORGE_K3S_STANDIN_ROOT`.
    pub root: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
}

impl Standin {
    /// Starts `binary` with `args` under `root` (stderr to `root/standin.log`).
    pub fn spawn_with(
        binary: &Path,
        root: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> Standin {
        std::fs::create_dir_all(root).unwrap();
        let log = root.join(format!("standin-{}.log", unique()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .env("EDGEFORGE_K3S_STANDIN_ROOT", root)
            .env("EDGEFORGE_K3S_STANDIN_READY_SECONDS", "0.5")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("KUBECONFIG")
            .env_remove("K3S_TOKEN")
            .env_remove("K3S_URL")
            .env_remove("K3S_CONFIG_FILE")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Standin {
            child: cmd.spawn().expect("the stand-in starts"),
            root: root.to_path_buf(),
            log,
        }
    }

    /// Starts the stand-in binary.
    pub fn spawn(root: &Path, args: &[String], env: &[(&str, String)]) -> Standin {
        Standin::spawn_with(&edgeforge_tests::k3s_standin::binary(), root, args, env)
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics (with the log) if it exits first or never does.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the stand-in exited ({status}) before logging {needle:?}:\n{log}");
            }
            assert!(start.elapsed() < PATIENCE, "no {needle:?} in:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for it to exit on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the stand-in did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then its exit status.
    pub fn term(mut self) -> ExitStatus {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.wait_exit()
    }

    /// `root/etc/rancher/k3s/k3s.yaml`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("etc/rancher/k3s/k3s.yaml")
    }

    /// `root/var/lib/rancher/k3s/server/<file>`.
    pub fn server_file(&self, file: &str) -> PathBuf {
        self.root.join("var/lib/rancher/k3s/server").join(file)
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The flags of a server on 127.0.0.1:`port` named `name` with node IP `ip`.
pub fn server_args(name: &str, port: u16, ip: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "server",
        "--https-listen-port",
        &port.to_string(),
        "--bind-address",
        "127.0.0.1",
        "--node-ip",
        ip,
        "--node-name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Real kubectl 1.37 with `kubeconfig`.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(edgeforge_tests::kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// kubectl's stdout, asserting success.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Node as JSON.
pub fn node(kubeconfig: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&kubectl_ok(
        kubeconfig,
        &["get", "node", name, "-o", "json"],
    ))
    .unwrap()
}

/// A condition's status of a Node ("" when absent).
pub fn condition(node: &serde_json::Value, kind: &str) -> (String, String) {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

/// Polls `check` until it returns Some.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
