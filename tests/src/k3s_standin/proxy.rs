//! The HTTPS front of a server that joined a cluster. The stand-in's
//! datastore lives with the `cluster-init` server, so a joined server
//! answers `/cacerts` and `/ping` itself (it holds the cluster CA) and
//! forwards every other request, Kubernetes API and supervisor routes alike,
//! to that server: all servers answer with the same objects, as servers
//! sharing one etcd do. The caller's identity crosses the hop unchanged:
//! bearer tokens and basic auth are passed on, and a client certificate is
//! replaced by one the joined server mints for the same user and groups with
//! the cluster CA. Responses are streamed, so watches work through it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::client::Server;
use crate::kube_emulator::Ca;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Forwards to the datastore server.
pub struct Proxy {
    upstream: String,
    ca: Ca,
    anonymous: Server,
    by_identity: Mutex<HashMap<(String, Vec<String>), Server>>,
}

impl Proxy {
    /// A proxy to `upstream` (`https://host:port`) whose CA is `ca`.
    pub fn new(upstream: &str, ca: Ca) -> Result<Proxy, super::client::ClientError> {
        let anonymous = Server::with_ca(upstream, &ca.cert_pem(), None)?;
        Ok(Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            ca,
            anonymous,
            by_identity: Mutex::new(HashMap::new()),
        })
    }

    fn client_for(&self, identity: Option<&(String, Vec<String>)>) -> Server {
        let Some((user, groups)) = identity else {
            return self.anonymous.clone();
        };
        let mut cache = self.by_identity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = cache.get(&(user.clone(), groups.clone())) {
            return server.clone();
        }
        let group_refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        let server = self
            .ca
            .issue_client(user, &group_refs)
            .ok()
            .and_then(|(cert, key)| {
                Server::with_ca(&self.upstream, &self.ca.cert_pem(), Some((&cert, &key))).ok()
            })
            .unwrap_or_else(|| self.anonymous.clone());
        cache.insert((user.clone(), groups.clone()), server.clone());
        server
    }

    async fn forward(
        &self,
        identity: Option<&(String, Vec<String>)>,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let path = request.uri().path().to_string();
        match path.as_str() {
            "/cacerts" => return text(200, self.ca.cert_pem()),
            "/ping" => return text(200, "pong".into()),
            _ => {}
        }
        let query = request
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let method = request.method().clone();
        let headers = request.headers().clone();
        let body = match request.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(400, "the request body could not be read".into()),
        };
        let server = self.client_for(identity);
        let url = format!("{}{path}{query}", self.upstream);
        let mut upstream = server.http().request(method, &url);
        for (name, value) in &headers {
            if matches!(
                name.as_str(),
                "host" | "content-length" | "connection" | "transfer-encoding"
            ) {
                continue;
            }
            upstream = upstream.header(name, value);
        }
        let answer = match upstream.body(body).send().await {
            Ok(a) => a,
            Err(e) => {
                return text(
                    503,
                    format!("the server is currently unable to handle the request: {e}"),
                );
            }
        };
        let mut response = Response::builder().status(answer.status().as_u16());
        for (name, value) in answer.headers() {
            if matches!(
                name.as_str(),
                "content-length" | "connection" | "transfer-encoding"
            ) {
                continue;
            }
            response = response.header(name, value);
        }
        let stream = answer
            .bytes_stream()
            .map_ok(Frame::data)
            .map_err(std::io::Error::other);
        response
            .body(UnsyncBoxBody::new(StreamBody::new(stream)))
            .unwrap_or_else(|_| text(500, "bad upstream response".into()))
    }
}

/// Serves `proxy` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, _peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let proxy = proxy.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(crate::kube_emulator::tls::client_identity)
                .map(Arc::new);
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(proxy.forward(identity.as_deref(), req).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::select! {
                _ = connection => {}
                _ = stop.changed() => {}
            }
        });
    }
}

fn text(status: u16, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(UnsyncBoxBody::new(
            Full::new(Bytes::from(body)).map_err(|never| match never {}),
        ))
        .unwrap_or_else(|_| {
            Response::new(UnsyncBoxBody::new(
                Full::new(Bytes::new()).map_err(|never| match never {}),
            ))
        })
}
