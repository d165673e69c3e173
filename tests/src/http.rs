//! A real HTTP/1.1 file server on 127.0.0.1 (ephemeral port) for artifact
//! tests and benchmarks: byte ranges (`Range: bytes=N-` / `N-M`, answered
//! with 206), a request counter and a log of what was served, and faults
//! injected per path: 404, corrupted bytes, a connection cut after K bytes
//! (once), a bandwidth throttle, a stall, 503s, and a Range header ignored. One thread per
//! connection, `Connection: close` on every response; files are sent with
//! `std::io::copy` (sendfile on Linux) when no fault applies.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The server; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

/// What a path serves.
#[derive(Debug, Clone)]
pub enum Body {
    /// Bytes in memory.
    Bytes(Arc<[u8]>),
    /// A file on disk, read per request.
    File(PathBuf),
}

/// A misbehaviour injected for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer 404 although the file exists.
    NotFound,
    /// Flip one byte in the middle of the file in every response.
    Corrupt,
    /// The first response closes the connection after this many body bytes;
    /// later responses are whole.
    CutAfter(u64),
    /// Send at most this many bytes per second.
    Throttle(u64),
    /// Send this many body bytes, then nothing more until the client gives up.
    StallAfter(u64),
    /// Answer 503 to the first N requests.
    ServerError(u32),
    /// Answer every request with the whole file (200), ignoring Range.
    IgnoreRange,
}

/// One response, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Request path.
    pub path: String,
    /// Status code sent.
    pub status: u16,
    /// The request's Range header, if any.
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    files: Mutex<HashMap<String, Route>>,
    log: Mutex<Vec<Served>>,
    requests: AtomicUsize,
    connections: AtomicUsize,
    stop: AtomicBool,
}

struct Route {
    body: Body,
    fault: Option<Fault>,
    fault_uses: u32,
}

impl HttpServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port.
    pub fn start() -> io::Result<HttpServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(&st, conn);
                });
            }
        });
        Ok(HttpServer {
            addr,
            state,
            acceptor: Some(acceptor),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of a path (`/k3s` → `http://127.0.0.1:PORT/k3s`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Serves `data` at `path`.
    pub fn add_bytes(&self, path: &str, data: Vec<u8>) {
        self.add(path, Body::Bytes(data.into()));
    }

    /// Serves the file at `file` under `path`.
    pub fn add_file(&self, path: &str, file: impl Into<PathBuf>) {
        self.add(path, Body::File(file.into()));
    }

    /// Injects (or with `None` clears) a fault for `path`.
    pub fn set_fault(&self, path: &str, fault: Option<Fault>) {
        if let Some(r) = lock(&self.state.files).get_mut(path) {
            r.fault = fault;
            r.fault_uses = 0;
        }
    }

    /// HTTP requests received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every response so far, in order.
    pub fn served(&self) -> Vec<Served> {
        lock(&self.state.log).clone()
    }

    fn add(&self, path: &str, body: Body) {
        lock(&self.state.files).insert(
            path.to_string(),
            Route {
                body,
                fault: None,
                fault_uses: 0,
            },
        );
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handles one connection: one request, one response.
fn serve(st: &State, conn: TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    st.requests.fetch_add(1, Ordering::SeqCst);
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut out = conn;

    let route = {
        let mut files = lock(&st.files);
        files.get_mut(&path).map(|r| {
            r.fault_uses += 1;
            (r.body.clone(), r.fault.clone(), r.fault_uses)
        })
    };
    let log = |status: u16| {
        lock(&st.log).push(Served {
            path: path.clone(),
            status,
            range: range.clone(),
        })
    };
    let Some((body, fault, uses)) = route else {
        log(404);
        return respond_empty(&mut out, 404, "Not Found");
    };
    match fault {
        Some(Fault::NotFound) => {
            log(404);
            return respond_empty(&mut out, 404, "Not Found");
        }
        Some(Fault::ServerError(n)) if uses <= n => {
            log(503);
            return respond_empty(&mut out, 503, "Service Unavailable");
        }
        _ => {}
    }
    let len = match &body {
        Body::Bytes(b) => b.len() as u64,
        Body::File(p) => std::fs::metadata(p)?.len(),
    };
    let honoured = range
        .as_deref()
        .filter(|_| fault != Some(Fault::IgnoreRange));
    let (start, end) = match honoured.map(|r| parse_range(r, len)) {
        None => (0, len),
        Some(Some(r)) => r,
        Some(None) => {
            log(416);
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return out.write_all(head.as_bytes());
        }
    };
    let partial = honoured.is_some();
    let status = if partial { 206 } else { 200 };
    log(status);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         Accept-Ranges: bytes\r\nConnection: close\r\n",
        if partial { "Partial Content" } else { "OK" },
        end - start
    );
    if partial {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            end.saturating_sub(1)
        ));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return Ok(());
    }

    let mut source: Box<dyn Read> = match &body {
        Body::Bytes(b) => {
            let mut c = io::Cursor::new(b.clone());
            c.set_position(start);
            Box::new(c.take(end - start))
        }
        Body::File(p) => {
            let mut f = File::open(p)?;
            f.seek(SeekFrom::Start(start))?;
            if fault.is_none() || fault == Some(Fault::IgnoreRange) {
                // Fast path: sendfile through std::io::copy.
                io::copy(&mut f.take(end - start), &mut out)?;
                return out.flush();
            }
            Box::new(f.take(end - start))
        }
    };
    send_with_fault(st, &mut *source, &mut out, start, len, fault.as_ref(), uses)
}

fn send_with_fault(
    st: &State,
    source: &mut dyn Read,
    out: &mut TcpStream,
    start: u64,
    len: u64,
    fault: Option<&Fault>,
    uses: u32,
) -> io::Result<()> {
    let chunk = match fault {
        Some(Fault::Throttle(bps)) => (*bps / 20).clamp(1, 1 << 16) as usize,
        _ => 1 << 16,
    };
    let mut buf = vec![0u8; chunk];
    let mut pos = start;
    let mut sent = 0u64;
    let began = Instant::now();
    loop {
        let limit = match fault {
            Some(Fault::CutAfter(k)) if uses == 1 => k.saturating_sub(sent),
            Some(Fault::StallAfter(k)) => k.saturating_sub(sent),
            _ => u64::MAX,
        };
        if limit == 0 {
            if let Some(Fault::StallAfter(_)) = fault {
                // Go silent until the client hangs up or the server stops.
                while !st.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            // CutAfter: drop the connection mid-body.
            return Ok(());
        }
        let want = buf.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
        let n = source.read(&mut buf[..want])?;
        if n == 0 {
            return out.flush();
        }
        if let Some(Fault::Corrupt) = fault {
            let mid = len / 2;
            if (pos..pos + n as u64).contains(&mid) {
                let i = (mid - pos) as usize;
                buf[i] ^= 0xff;
            }
        }
        out.write_all(&buf[..n])?;
        pos += n as u64;
        sent += n as u64;
        if let Some(Fault::Throttle(bps)) = fault {
            let due = Duration::from_secs_f64(sent as f64 / (*bps).max(1) as f64);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}

fn respond_empty(out: &mut TcpStream, status: u16, reason: &str) -> io::Result<()> {
    let body = format!("{status} {reason}\n");
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    out.write_all(head.as_bytes())
}

/// `bytes=N-` or `bytes=N-M` → the half-open byte range; `None` if unsatisfiable.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        len
    } else {
        b.trim().parse::<u64>().ok()?.saturating_add(1).min(len)
    };
    (start < len && start < end).then_some((start, end))
}
