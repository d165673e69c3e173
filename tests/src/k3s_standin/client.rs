//! The stand-in's side of k3s's supervisor protocol, as a joining server or
//! an agent speaks it: fetch `/cacerts` without verification, check it
//! against the token's CA hash (k3s's `token CA hash does not match the
//! Cluster CA certificate hash: A != B`), then talk to the server over TLS
//! verified with that CA, with basic auth `server:<secret>` / `node:<secret>`
//! (or a bootstrap token as bearer) and, for the Kubernetes API, a client
//! certificate. Errors read like k3s's (`<url>: 401 Unauthorized`).

use std::time::Duration;

use super::log;
use super::tokens::{self, Token};

/// What a request to a server can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not `https://`.
    #[error("only https:// URLs are supported, invalid scheme: {0}")]
    Scheme(String),
    /// The server URL does not parse.
    #[error("Invalid server url, failed to parse: {0}")]
    Url(String),
    /// The server answered with a non-2xx status.
    #[error("{url}: {code} {reason}")]
    Status {
        /// The URL asked.
        url: String,
        /// HTTP status code.
        code: u16,
        /// Its reason phrase.
        reason: String,
        /// The body (k3s's supervisor puts its error text there).
        body: String,
    },
    /// The request did not get an answer.
    #[error("Get {url:?}: {message}")]
    Transport {
        /// The URL asked.
        url: String,
        /// Why.
        message: String,
    },
    /// `/cacerts` could not be fetched.
    #[error("failed to get CA certs: {0}")]
    CaCerts(Box<ClientError>),
    /// The token pins another CA.
    #[error("token CA hash does not match the Cluster CA certificate hash: {token} != {server}")]
    CaHash {
        /// The hash in the token.
        token: String,
        /// The hash of the server's `/cacerts`.
        server: String,
    },
    /// A TLS identity or CA could not be loaded into the client.
    #[error("the TLS client could not be built: {0}")]
    Tls(String),
}

impl ClientError {
    /// The HTTP status code, for status errors.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How a request authenticates.
#[derive(Clone)]
pub enum Auth {
    /// Nothing.
    None,
    /// Basic auth (the supervisor's `server:<secret>` / `node:<secret>`).
    Basic(String, String),
    /// A bearer token (bootstrap tokens).
    Bearer(String),
}

impl Auth {
    /// The credentials a token carries, as `user` (k3s overrides the token's user per endpoint).
    pub fn from_token(token: &Token, user: &str) -> Auth {
        if token.bootstrap {
            Auth::Bearer(token.password.clone())
        } else {
            Auth::Basic(user.to_string(), token.password.clone())
        }
    }
}

/// A server reached with its CA verified.
#[derive(Clone)]
pub struct Server {
    /// `https://host:port`, no trailing slash.
    pub base: String,
    /// The cluster CA bundle, as `/cacerts` served it.
    pub ca_pem: String,
    client: reqwest::Client,
}

impl Server {
    /// Fetches the server's CA and checks it against `token` (k3s's `ParseAndValidateToken`).
    pub async fn connect(url: &str, token: &Token) -> Result<Server, ClientError> {
        let base = normalize(url)?;
        let ca_pem = fetch_cacerts(&base)
            .await
            .map_err(|e| ClientError::CaCerts(Box::new(e)))?;
        match &token.ca_hash {
            Some(hash) => {
                let server = tokens::ca_hash(ca_pem.as_bytes());
                if *hash != server {
                    return Err(ClientError::CaHash {
                        token: hash.clone(),
                        server,
                    });
                }
            }
            None => log::warn(
                "Cluster CA certificate is not trusted by the host CA bundle, but the token does not include a CA hash. Use the full token from the server's node-token file to enable Cluster CA validation.",
            ),
        }
        Server::with_ca(&base, &ca_pem, None)
    }

    /// A server whose CA is already known, optionally with a client certificate (PEM cert + key).
    pub fn with_ca(
        base: &str,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<Server, ClientError> {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([ca])
            .http1_only()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10));
        if let Some((cert, key)) = identity {
            let pem = format!("{cert}{key}");
            let identity = reqwest::Identity::from_pem(pem.as_bytes())
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Server {
            base: base.trim_end_matches('/').to_string(),
            ca_pem: ca_pem.to_string(),
            client,
        })
    }

    /// The underlying client (for streaming requests).
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// GET `path`, returning the body of a 2xx answer.
    pub async fn get(&self, path: &str, auth: &Auth) -> Result<Vec<u8>, ClientError> {
        self.send(reqwest::Method::GET, path, auth, &[], None).await
    }

    /// A request with headers and an optional JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: &Auth,
        headers: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method, &url)
            .timeout(Duration::from_secs(30));
        request = match auth {
            Auth::None => request,
            Auth::Basic(user, pass) => request.basic_auth(user, Some(pass)),
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("Content-Type", content_type).body(bytes);
        }
        read(&url, request.send().await).await
    }
}

/// `https://host:port` from a `--server` value.
pub fn normalize(url: &str) -> Result<String, ClientError> {
    let parsed = url::Url::parse(url).map_err(|_| ClientError::Url(url.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(ClientError::Scheme(url.to_string()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| ClientError::Url(url.to_string()))?;
    let port = parsed.port().unwrap_or(443);
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("https://{host}:{port}"))
}

/// `/cacerts`, fetched without verifying the server (it is what will be verified against).
async fn fetch_cacerts(base: &str) -> Result<String, ClientError> {
    let url = format!("{base}/cacerts");
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .http1_only()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let body = read(&url, client.get(&url).send().await).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn read(
    url: &str,
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<Vec<u8>, ClientError> {
    let response = response.map_err(|e| ClientError::Transport {
        url: url.to_string(),
        message: error_chain(&e),
    })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| ClientError::Transport {
        url: url.to_string(),
        message: error_chain(&e),
    })?;
    if !status.is_success() {
        return Err(ClientError::Status {
            url: url.to_string(),
            code: status.as_u16(),
            reason: status.canonical_reason().unwrap_or_default().to_string(),
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    Ok(body.to_vec())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
