//! A fault proxy for HTTP peers on loopback (here: sushy-tools): it passes
//! requests through to the real server and logs their request lines, or
//! makes the peer misbehave: a BMC that hangs (reads the request, never
//! answers) or one that answers `503 Service Unavailable` to the next N
//! requests and then recovers. One thread per connection; the peer closes
//! each connection after its answer (sushy-tools does), so one connection
//! carries one request.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the proxy treats the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFault {
    /// Pass every request through.
    None,
    /// Read each request and never answer (until the proxy is dropped).
    Hang,
    /// Answer this many requests with 503 (`Retry-After: 1`), then pass through.
    Unavailable(u32),
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

struct State {
    upstream: SocketAddr,
    fault: Mutex<ProxyFault>,
    requests: Mutex<Vec<String>>,
    unavailable_sent: AtomicU32,
    stop: AtomicBool,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (ephemeral port) in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            fault: Mutex::new(ProxyFault::None),
            requests: Mutex::new(Vec::new()),
            unavailable_sent: AtomicU32::new(0),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(&st, conn);
                });
            }
        });
        Ok(FaultProxy {
            addr,
            state,
            acceptor: Some(acceptor),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets how the next requests are treated.
    pub fn set_fault(&self, fault: ProxyFault) {
        *lock(&self.state.fault) = fault;
    }

    /// `METHOD /path` of every request received so far, in order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.requests).clone()
    }

    /// How many 503 answers the proxy has sent.
    pub fn unavailable_sent(&self) -> u32 {
        self.state.unavailable_sent.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn handle(st: &State, mut client: TcpStream) -> io::Result<()> {
    let request = read_request(&mut client)?;
    let line = String::from_utf8_lossy(&request)
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        return Ok(());
    }
    lock(&st.requests).push(line);
    let fault = {
        let mut f = lock(&st.fault);
        let now = *f;
        if let ProxyFault::Unavailable(n) = now {
            *f = if n > 1 {
                ProxyFault::Unavailable(n - 1)
            } else {
                ProxyFault::None
            };
        }
        now
    };
    match fault {
        ProxyFault::Hang => {
            while !st.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
        ProxyFault::Unavailable(_) => {
            st.unavailable_sent.fetch_add(1, Ordering::SeqCst);
            let body = r#"{"error":{"code":"Base.1.8.ServiceTemporarilyUnavailable","message":"The service is temporarily unavailable.","@Message.ExtendedInfo":[{"MessageId":"Base.1.8.ServiceTemporarilyUnavailable","Message":"The service is temporarily unavailable. Retry in 1 seconds."}]}}"#;
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            client.write_all(head.as_bytes())?;
            client.write_all(body.as_bytes())?;
            client.shutdown(Shutdown::Both)
        }
        ProxyFault::None => {
            let mut upstream = TcpStream::connect(st.upstream)?;
            upstream.write_all(&request)?;
            io::copy(&mut upstream, &mut client)?;
            client.shutdown(Shutdown::Both)
        }
    }
}

/// The request's head and body (by `Content-Length`), as received.
fn read_request(conn: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}
