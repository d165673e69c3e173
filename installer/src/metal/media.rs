//! The media server: edgeforge's own HTTP server for install media, so a
//! BMC can fetch a node's live ISO from the operator machine.
//!
//! It starts on the first [`MediaServer::publish`] of a run, bound to the
//! inventory's `mediaServer.listen` (an address the BMCs can reach; the
//! tests use 127.0.0.1), and stops when the run drops it. It serves only
//! what was published, each file under a path with a random token
//! (`/<token>/<node>.iso`), with `GET` and `HEAD`, `Content-Length` and
//! single byte ranges (`206`; BMCs that mount the image rather than copy it
//! read it in ranges). Anything else is 404, 405 or 416. One task per
//! connection, keep-alive honoured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OnceCell;

/// Why the media server cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr} to serve install media (mediaServer.listen); use an address of this machine that is free"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The run's media server (not started until something is published).
pub struct MediaServer {
    listen: SocketAddr,
    url: Option<String>,
    token: String,
    files: Arc<Mutex<HashMap<String, PathBuf>>>,
    log: Arc<Mutex<Vec<Served>>>,
    running: OnceCell<Running>,
}

/// One answered request, for messages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The request path.
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

struct Running {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MediaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaServer")
            .field("listen", &self.listen)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for MediaServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.get() {
            r.task.abort();
        }
    }
}

impl MediaServer {
    /// A server for `listen`; BMCs reach it at `url` (default `http://<listen>`).
    pub fn new(listen: SocketAddr, url: Option<String>) -> MediaServer {
        let mut raw = [0u8; 16];
        // A path nobody can guess: the ISO carries the live system's host key.
        let _ = getrandom::fill(&mut raw);
        MediaServer {
            listen,
            url: url.map(|u| u.trim_end_matches('/').to_string()),
            token: hex::encode(raw),
            files: Arc::default(),
            log: Arc::default(),
            running: OnceCell::new(),
        }
    }

    /// Serves `file` as `<name>` and returns the URL a BMC fetches it from;
    /// starts the server on first use.
    pub async fn publish(&self, name: &str, file: PathBuf) -> Result<String, MediaError> {
        let running =
            self.running
                .get_or_try_init(|| async {
                    let listener = TcpListener::bind(self.listen).await.map_err(|source| {
                        MediaError::Bind {
                            addr: self.listen,
                            source,
                        }
                    })?;
                    let addr = listener.local_addr().unwrap_or(self.listen);
                    let task = tokio::spawn(accept(listener, self.files.clone(), self.log.clone()));
                    Ok::<_, MediaError>(Running { addr, task })
                })
                .await?;
        let path = format!("/{}/{name}", self.token);
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.clone(), file);
        let base = self
            .url
            .clone()
            .unwrap_or_else(|| format!("http://{}", running.addr));
        Ok(format!("{base}{path}"))
    }

    /// Stops serving `<name>`.
    pub fn withdraw(&self, name: &str) {
        let path = format!("/{}/{name}", self.token);
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&path);
    }

    /// Every request answered so far.
    pub fn served(&self) -> Vec<Served> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn accept(
    listener: TcpListener,
    files: Arc<Mutex<HashMap<String, PathBuf>>>,
    log: Arc<Mutex<Vec<Served>>>,
) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let (files, log) = (files.clone(), log.clone());
        tokio::spawn(async move {
            let _ = serve(conn, &files, &log).await;
        });
    }
}

/// A request head as far as the server cares.
struct Request {
    method: String,
    path: String,
    range: Option<String>,
    close: bool,
}

/// Answers the requests of one connection until it closes.
async fn serve(
    mut conn: TcpStream,
    files: &Mutex<HashMap<String, PathBuf>>,
    log: &Mutex<Vec<Served>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_head(&mut conn, &mut buf).await? else {
            return Ok(());
        };
        let file = files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&req.path)
            .cloned();
        let (status, bytes) = answer(&mut conn, &req, file).await?;
        log.lock().unwrap_or_else(|p| p.into_inner()).push(Served {
            path: req.path.clone(),
            status,
            bytes,
        });
        if req.close {
            let _ = conn.shutdown().await;
            return Ok(());
        }
    }
}

/// Reads one request head (the body of a GET or HEAD is ignored); `None` at EOF.
async fn read_head(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Request>> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default();
    let version = first.next().unwrap_or_default();
    let mut req = Request {
        method,
        path: target.split('?').next().unwrap_or_default().to_string(),
        range: None,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "range" => req.range = Some(value.to_string()),
            "connection" if value.eq_ignore_ascii_case("close") => req.close = true,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => req.close = false,
            _ => {}
        }
    }
    Ok(Some(req))
}

/// Sends the answer to `req`; returns the status and the body bytes sent.
async fn answer(
    conn: &mut TcpStream,
    req: &Request,
    file: Option<PathBuf>,
) -> std::io::Result<(u16, u64)> {
    if req.method != "GET" && req.method != "HEAD" {
        return simple(conn, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n").await;
    }
    let Some(path) = file else {
        return simple(conn, 404, "Not Found", "").await;
    };
    let Ok(mut f) = tokio::fs::File::open(&path).await else {
        return simple(conn, 404, "Not Found", "").await;
    };
    let size = f.metadata().await?.len();
    let (status, start, len) = match req.range.as_deref().map(|r| byte_range(r, size)) {
        None => (200, 0, size),
        Some(Some((start, end))) => (206, start, end - start + 1),
        Some(None) => {
            return simple(
                conn,
                416,
                "Range Not Satisfiable",
                &format!("Content-Range: bytes */{size}\r\n"),
            )
            .await;
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\n",
        if status == 206 {
            "Partial Content"
        } else {
            "OK"
        }
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{size}\r\n",
            start + len - 1
        ));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await?;
    if req.method == "HEAD" {
        return Ok((status, 0));
    }
    f.seek(std::io::SeekFrom::Start(start)).await?;
    let sent = tokio::io::copy(&mut f.take(len), conn).await?;
    Ok((status, sent))
}

async fn simple(
    conn: &mut TcpStream,
    status: u16,
    reason: &str,
    headers: &str,
) -> std::io::Result<(u16, u64)> {
    let head = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n{headers}\r\n");
    conn.write_all(head.as_bytes()).await?;
    Ok((status, 0))
}

/// The inclusive byte range of a `Range: bytes=...` header (one range:
/// `a-b`, `a-`, `-n`), clamped to `size`; `None` when it cannot be satisfied.
fn byte_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(byte_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(byte_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(byte_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(byte_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(byte_range("bytes=1000-", 1000), None);
        assert_eq!(byte_range("bytes=5-1", 1000), None);
        assert_eq!(byte_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(byte_range("items=0-1", 1000), None);
    }

    /// Sends raw requests on one connection and returns what came back.
    async fn exchange(url: &str, requests: &str) -> Vec<u8> {
        let addr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(requests.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        conn.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_only_what_is_published_whole_or_by_range_and_keeps_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let iso = dir.path().join("node.iso");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&iso, &data).unwrap();
        let server = MediaServer::new("127.0.0.1:0".parse().unwrap(), None);
        let url = server.publish("metal-1.iso", iso).await.unwrap();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        assert!(url.ends_with("/metal-1.iso"));
        let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
        assert_eq!(
            path.len(),
            1 + 32 + 1 + "metal-1.iso".len(),
            "a token in the path"
        );

        let reqs = format!(
            "HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n\
             GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n\
             GET /{}/metal-1.iso HTTP/1.1\r\nHost: x\r\n\r\n\
             GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=20000-\r\n\r\n\
             POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n\
             GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "0".repeat(32)
        );
        let raw = exchange(&url, &reqs).await;
        let out = String::from_utf8_lossy(&raw);
        let statuses: Vec<&str> = out
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|a| a.split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(
            statuses,
            ["200", "206", "404", "416", "405", "200"],
            "{out}"
        );
        assert!(out.contains("Content-Range: bytes 100-199/10000"));
        let marker = b"Content-Range: bytes 100-199/10000\r\n\r\n";
        let at = raw.windows(marker.len()).position(|w| w == marker).unwrap() + marker.len();
        assert_eq!(raw[at..at + 100], data[100..200]);
        let served = server.served();
        assert_eq!(served.len(), 6);
        assert_eq!(served[1].bytes, 100);
        assert_eq!(served[5].bytes, 10_000);

        server.withdraw("metal-1.iso");
        let after = exchange(&url, &format!("GET {path} HTTP/1.0\r\n\r\n")).await;
        assert!(after.starts_with(b"HTTP/1.1 404"));
    }
}
