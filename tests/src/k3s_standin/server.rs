//! `k3s server`: starts a cluster (a single server, or `cluster-init` with
//! embedded etcd), restarts one from its data directory, or joins one
//! (`server: https://X:6443`): the join checks the token's CA hash against
//! X's `/cacerts`, compares the critical settings with X's
//! `/v1-k3s/config`, takes the CA from `/v1-k3s/server-bootstrap`, adds
//! itself as an etcd learner, registers its Node through X, waits for
//! promotion, then serves. Failures are fatal with k3s's wording
//! (`preparing server: failed to bootstrap cluster data: ...`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::{Auth, Server};
use super::flags::{self, Command, Settings};
use super::node::{self, NodeSpec};
use super::supervisor::{self, Cluster, Member, Members, TOO_MANY_LEARNERS};
use super::tokens;
use super::{Release, default_path, env_seconds, leftovers, log, write_mode, write_private};
use crate::kube_emulator::{Ca, Emulator, EmulatorOptions};

/// Runs `k3s server` with `args` (after the subcommand); returns the exit code.
pub async fn run(args: Vec<String>, release: &Release) -> i32 {
    let settings = match flags::parse(
        Command::Server,
        "server",
        &args,
        &default_path("/etc/rancher/k3s/config.yaml"),
    ) {
        Ok(s) => s,
        Err(e) => return log::fatal(e.to_string()),
    };
    if settings.flag("debug") {
        log::set_debug(true);
    }
    match Start::new(&settings, release) {
        Ok(start) => start.run(&settings, release).await,
        Err(msg) => log::fatal(msg),
    }
}

/// Everything a server derives from its settings before it touches the network.
struct Start {
    data_dir: PathBuf,
    server_dir: PathBuf,
    bind: IpAddr,
    port: u16,
    node_name: String,
    node_ips: Vec<String>,
    external_ips: Vec<String>,
    join_url: Option<String>,
    token: Option<String>,
    agent_token: Option<String>,
}

impl Start {
    fn new(settings: &Settings, release: &Release) -> Result<Start, String> {
        let data_dir = settings
            .get("data-dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_path("/var/lib/rancher/k3s"));
        let server_dir = data_dir.join("server");
        std::fs::create_dir_all(&server_dir)
            .map_err(|e| format!("Error: can not mkdir {}: {e}", server_dir.display()))?;
        log::info(format!(
            "Starting k3s {} ({})",
            release.version, release.commit
        ));
        let port = settings
            .get("https-listen-port")
            .unwrap_or("6443")
            .parse::<u16>()
            .map_err(|_| "Error: invalid value for flag -https-listen-port".to_string())?;
        let bind = match settings.get("bind-address") {
            Some(b) => b
                .parse::<IpAddr>()
                .map_err(|_| format!("Error: invalid bind-address {b:?}"))?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let token = read_secret(settings, "token", "token-file")?;
        let agent_token = read_secret(settings, "agent-token", "agent-token-file")?;
        Ok(Start {
            data_dir,
            server_dir,
            bind,
            port,
            node_name: node_name(settings),
            node_ips: node_ips(settings),
            external_ips: settings.list("node-external-ip"),
            join_url: settings.get("server").map(str::to_string),
            token,
            agent_token,
        })
    }

    fn etcd_dir(&self) -> PathBuf {
        self.server_dir.join("db/etcd")
    }

    fn tls(&self, file: &str) -> PathBuf {
        self.server_dir.join("tls").join(file)
    }

    /// `https://<bind or 127.0.0.1>:<port>`, what k3s.yaml points at.
    fn local_url(&self) -> String {
        let host = if self.bind.is_unspecified() {
            "127.0.0.1".to_string()
        } else if self.bind.is_ipv6() {
            format!("[{}]", self.bind)
        } else {
            self.bind.to_string()
        };
        format!("https://{host}:{}", self.port)
    }

    async fn run(self, settings: &Settings, release: &Release) -> i32 {
        let etcd_initialized = self.etcd_dir().join("member/wal").is_dir();
        let result = match &self.join_url {
            Some(url) => {
                self.run_joined(settings, release, url, etcd_initialized)
                    .await
            }
            None => {
                self.run_datastore(
                    settings,
                    release,
                    settings.flag("cluster-init") || etcd_initialized,
                )
                .await
            }
        };
        match result {
            Ok(()) => 0,
            Err(msg) => log::fatal(msg),
        }
    }

    /// The server holding the datastore: a single server, or the cluster-init etcd member.
    async fn run_datastore(
        &self,
        settings: &Settings,
        release: &Release,
        etcd: bool,
    ) -> Result<(), String> {
        let ca = match load_ca(&self.tls("server-ca.crt"), &self.tls("server-ca.key")) {
            Some(ca) => ca,
            None => {
                let now = super::supervisor::now_ms() / 1000;
                let ca = Ca::generate(&format!("k3s-server-ca@{now}"))
                    .map_err(|e| format!("Error: preparing server: {e}"))?;
                self.write_ca(&ca)?;
                ca
            }
        };
        let existing = read_token_file(&self.server_dir.join("token"));
        let server_secret = match &self.token {
            Some(t) => {
                tokens::parse(t)
                    .map_err(|e| format!("Error: {e}"))?
                    .password
            }
            None => existing.unwrap_or_else(tokens::random_secret),
        };
        let agent_secret = self.agent_secret(&server_secret)?;
        self.write_tokens(&ca, &server_secret, &agent_secret)?;
        let passwd = passwd(&server_secret, &agent_secret);
        let db = self.server_dir.join("db");
        let state_path = if etcd {
            let snap = self.etcd_dir().join("member/snap");
            std::fs::create_dir_all(&snap).map_err(|e| format!("Error: {e}"))?;
            std::fs::create_dir_all(self.etcd_dir().join("member/wal"))
                .map_err(|e| format!("Error: {e}"))?;
            let sqlite = db.join("state.db");
            let target = snap.join("db");
            if sqlite.exists() && !target.exists() {
                log::info("Migrating content from sqlite to etcd");
                let _ = std::fs::copy(&sqlite, &target);
                let _ = std::fs::rename(&sqlite, db.join("state.db.migrated"));
            }
            log::info("Managed etcd cluster initializing");
            target
        } else {
            std::fs::create_dir_all(&db).map_err(|e| format!("Error: {e}"))?;
            log::info(
                "Configuring sqlite3 database connection pooling: maxIdleConns=2, maxOpenConns=0, connMaxLifetime=0s",
            );
            db.join("state.db")
        };
        let member = if etcd {
            let name = self.member_name()?;
            let ip = self
                .node_ips
                .first()
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into());
            Some(Member {
                id: 1,
                name,
                peer_urls: vec![format!("https://{}", host_port(&ip, 2380))],
                client_urls: vec![format!("https://{}", host_port(&ip, 2379))],
                is_learner: false,
                added_ms: 0,
            })
        } else {
            None
        };
        let cluster = Arc::new(Cluster::new(
            ca.clone(),
            server_secret,
            agent_secret.clone(),
            critical_config(settings),
            passwd,
            member
                .clone()
                .map(|m| (self.etcd_dir().join("standin-members.json"), m)),
            env_seconds("EDGEFORGE_K3S_STANDIN_LEARNER_SECONDS", 3.0),
        ));
        let options = EmulatorOptions {
            ca: Some(ca.clone()),
            sans: self.sans(settings),
            git_version: release.version.clone(),
            state_path: Some(state_path),
            extension: Some(cluster.clone()),
            ..EmulatorOptions::default()
        };
        let addr = SocketAddr::new(self.bind, self.port);
        let emulator = Emulator::start(options, addr)
            .await
            .map_err(|e| format!("Error: starting kubernetes: {}", error_chain(&e)))?;
        log::info(format!(
            "Running kube-apiserver --advertise-port={} --bind-address={} --secure-port={}",
            self.port, self.bind, self.port
        ));
        let store = emulator.store();
        supervisor::seed_node_rbac(&store);
        let controllers = tokio::spawn(supervisor::run_controllers(
            cluster.clone(),
            store,
            Duration::from_millis(500),
        ));
        self.write_kubeconfig(settings, &ca)?;
        let local = Server::with_ca(&self.local_url(), &ca.cert_pem(), None)
            .map_err(|e| format!("Error: {e}"))?;
        let spec = self.node_spec(
            settings,
            release,
            member.map(|m| (m.name, self.etcd_address())),
        );
        let api = self
            .register(&local, &Auth::Basic("node".into(), agent_secret), &spec)
            .await?;
        self.finish(settings, &api, &spec).await;
        controllers.abort();
        emulator.shutdown().await;
        Ok(())
    }

    /// A server joining (or rejoining after a restart) the cluster at `url`.
    async fn run_joined(
        &self,
        settings: &Settings,
        release: &Release,
        url: &str,
        initialized: bool,
    ) -> Result<(), String> {
        const PREFIX: &str = "Error: preparing server: failed to bootstrap cluster data";
        let token_text = self
            .token
            .clone()
            .ok_or_else(|| format!("{PREFIX}: failed to check if bootstrap data has been initialized: token is required to join a cluster"))?;
        let token = tokens::parse(&token_text).map_err(|e| format!("{PREFIX}: failed to check if bootstrap data has been initialized: failed to validate token: {e}"))?;
        let upstream = Server::connect(url, &token).await.map_err(|e| {
            format!("{PREFIX}: failed to check if bootstrap data has been initialized: failed to validate token: {e}")
        })?;
        let member_name = self.member_name()?;
        let ip = self
            .node_ips
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into());
        let (ca, agent_secret) = if initialized {
            log::info("Managed etcd cluster bootstrap already complete and initialized");
            let ca = load_ca(&self.tls("server-ca.crt"), &self.tls("server-ca.key")).ok_or_else(
                || {
                    format!(
                        "{PREFIX}: {} is missing",
                        self.tls("server-ca.crt").display()
                    )
                },
            )?;
            let passwd =
                std::fs::read_to_string(self.server_dir.join("cred/passwd")).unwrap_or_default();
            (
                ca,
                agent_from_passwd(&passwd).unwrap_or_else(|| token.password.clone()),
            )
        } else {
            log::info("Managed etcd cluster not yet initialized");
            self.compare_config(settings, &upstream, &token).await?;
            let bootstrap: Value = upstream
                .get(
                    "/v1-k3s/server-bootstrap",
                    &Auth::from_token(&token, "server"),
                )
                .await
                .map_err(|e| format!("{PREFIX}: {e}"))
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("{PREFIX}: {e}")))?;
            let file = |k: &str| {
                bootstrap[k]["Content"]
                    .as_str()
                    .and_then(|c| data_encoding::BASE64.decode(c.as_bytes()).ok())
                    .map(|c| String::from_utf8_lossy(&c).into_owned())
                    .unwrap_or_default()
            };
            let ca = Ca::from_pem(&file("ServerCA"), &file("ServerCAKey"))
                .map_err(|e| format!("{PREFIX}: {e}"))?;
            self.write_ca(&ca)?;
            let agent =
                agent_from_passwd(&file("PasswdFile")).unwrap_or_else(|| token.password.clone());
            self.join_etcd(&upstream, &token, &member_name, &ip).await?;
            (ca, agent)
        };
        let server_secret = token.password.clone();
        self.write_tokens(&ca, &server_secret, &agent_secret)?;
        let upstream = Server::with_ca(&upstream.base, &ca.cert_pem(), None)
            .map_err(|e| format!("Error: {e}"))?;
        let spec = self.node_spec(
            settings,
            release,
            Some((member_name.clone(), self.etcd_address())),
        );
        let node_auth = Auth::Basic("node".into(), agent_secret.clone());
        let api = self.register(&upstream, &node_auth, &spec).await?;
        self.wait_for_promotion(&upstream, &token, &member_name)
            .await?;
        let proxy = Arc::new(
            super::proxy::Proxy::new(&upstream.base, ca.clone())
                .map_err(|e| format!("Error: {e}"))?,
        );
        let tls = ca
            .server_config(&self.sans(settings))
            .map_err(|e| format!("Error: starting kubernetes: {e}"))?;
        let addr = SocketAddr::new(self.bind, self.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("Error: starting kubernetes: listen tcp {addr}: {e}"))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn(super::proxy::serve(listener, tls, proxy, stopped));
        log::info(format!(
            "Running kube-apiserver --advertise-port={} --bind-address={} --secure-port={} (stand-in: forwarding to {})",
            self.port, self.bind, self.port, upstream.base
        ));
        self.write_kubeconfig(settings, &ca)?;
        self.finish(settings, &api, &spec).await;
        let _ = stop.send(true);
        let _ = serving.await;
        Ok(())
    }

    async fn compare_config(
        &self,
        settings: &Settings,
        upstream: &Server,
        token: &tokens::Token,
    ) -> Result<(), String> {
        const PREFIX: &str = "Error: preparing server: failed to bootstrap cluster data: failed to validate server configuration";
        let remote: Value = upstream
            .get("/v1-k3s/config", &Auth::from_token(token, "node"))
            .await
            .map_err(|e| format!("{PREFIX}: {e}"))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("{PREFIX}: {e}")))?;
        let local = critical_config(settings);
        let mut mismatched = false;
        for (field, tag) in CRITICAL_TAGS {
            let mut theirs = remote[field].clone();
            if *field == "EgressSelectorMode" && theirs.as_str().is_none_or(str::is_empty) {
                theirs = local[field].clone();
            }
            if theirs != local[field] {
                log::warn(format!("critical configuration mismatched: {tag}"));
                mismatched = true;
            }
        }
        if mismatched {
            return Err(format!(
                "{PREFIX}: critical configuration value mismatch between servers"
            ));
        }
        Ok(())
    }

    async fn join_etcd(
        &self,
        upstream: &Server,
        token: &tokens::Token,
        name: &str,
        ip: &str,
    ) -> Result<(), String> {
        let auth = Auth::from_token(token, "server");
        let fail = |e: String| format!("etcd cluster join failed: {e}");
        let members: Members = upstream
            .get("/db/info", &auth)
            .await
            .map_err(|e| fail(format!("failed to get MemberList from server: {e}")))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| fail(e.to_string())))?;
        for m in &members.members {
            let node_of = m.name.rsplit_once('-').map_or(m.name.as_str(), |(n, _)| n);
            if m.name != name && node_of == self.node_name {
                let _ = std::fs::remove_file(self.etcd_dir().join("name"));
                return Err(fail(
                    "duplicate node name found, please use a unique name for this node".into(),
                ));
            }
        }
        let peer = format!("https://{}", host_port(ip, 2380));
        let cluster: Vec<String> = members
            .members
            .iter()
            .filter_map(|m| m.peer_urls.first().map(|p| format!("{}={p}", m.name)))
            .collect();
        log::info(format!(
            "Adding member {name}={peer} to etcd cluster [{}]",
            cluster.join(" ")
        ));
        let wanted = Member {
            id: 0,
            name: name.to_string(),
            peer_urls: vec![peer.clone()],
            client_urls: vec![format!("https://{}", host_port(ip, 2379))],
            is_learner: true,
            added_ms: 0,
        };
        let body = serde_json::to_vec(&wanted).unwrap_or_default();
        if let Err(e) = upstream
            .send(
                reqwest::Method::POST,
                "/db/standin-member-add",
                &auth,
                &[],
                Some(("application/json", body)),
            )
            .await
        {
            let reason = match &e {
                super::client::ClientError::Status { body, .. } if !body.is_empty() => body.clone(),
                other => other.to_string(),
            };
            if reason == TOO_MANY_LEARNERS {
                log::error(
                    "Managed etcd cluster not ready to accept new member: another server is still an etcd learner (join servers one at a time)",
                );
            }
            return Err(fail(reason));
        }
        log::info(format!(
            "Starting etcd to join cluster with members [{} {name}={peer}]",
            cluster.join(" ")
        ));
        std::fs::create_dir_all(self.etcd_dir().join("member/wal"))
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    }

    async fn wait_for_promotion(
        &self,
        upstream: &Server,
        token: &tokens::Token,
        name: &str,
    ) -> Result<(), String> {
        let auth = Auth::from_token(token, "server");
        let mut said = false;
        loop {
            if let Ok(body) = upstream.get("/db/info", &auth).await
                && let Ok(members) = serde_json::from_slice::<Members>(&body)
            {
                match members.members.iter().find(|m| m.name == name) {
                    Some(m) if !m.is_learner => return Ok(()),
                    Some(_) => {}
                    None => {
                        return Err(format!(
                            "etcd cluster join failed: this server is not a member of the etcd cluster (member {name} is gone)"
                        ));
                    }
                }
            }
            if !said {
                log::info(
                    "Waiting for etcd server to become available: this server has not yet been promoted from learner to voting member",
                );
                said = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = super::terminated() => return Err("Shutdown request received before the etcd learner was promoted".into()),
            }
        }
    }

    /// Registers this server's Node through `supervisor` and returns the kubelet's API client.
    async fn register(
        &self,
        supervisor: &Server,
        auth: &Auth,
        spec: &NodeSpec,
    ) -> Result<Server, String> {
        let password = node::node_password(&default_path("/etc/rancher/node/password"))
            .map_err(|e| format!("Error: failed to write the node password: {e}"))?;
        let (cert, key) = node::kubelet_certificate(supervisor, auth, &spec.name, &password)
            .await
            .map_err(|e| match e {
                super::client::ClientError::Status {
                    code: 403, body, ..
                } => format!("Error: {body}"),
                other => format!("Error: failed to get the kubelet certificate: {other}"),
            })?;
        let api = Server::with_ca(&supervisor.base, &supervisor.ca_pem, Some((&cert, &key)))
            .map_err(|e| format!("Error: {e}"))?;
        node::register(&api, spec)
            .await
            .map_err(|e| format!("Error: failed to register node {}: {e}", spec.name))?;
        Ok(api)
    }

    /// The common end of every start: images, leftovers, READY=1, Ready, then wait for a signal.
    async fn finish(&self, settings: &Settings, api: &Server, spec: &NodeSpec) {
        super::import_airgap_images(&self.data_dir);
        let gateway = pod_gateway(settings);
        let root = super::root();
        let _ = tokio::task::spawn_blocking(move || leftovers::create(&root, &gateway)).await;
        super::notify_ready();
        log::info("k3s is up and running");
        let api = api.clone();
        let spec = spec.clone();
        let ready = tokio::spawn(async move {
            let delay = env_seconds("EDGEFORGE_K3S_STANDIN_READY_SECONDS", 1.0);
            if let Err(e) = node::mark_ready(&api, &spec, delay).await {
                log::error(format!("Failed to update node {} status: {e}", spec.name));
            }
        });
        super::terminated().await;
        log::info("Received termination signal, shutting down k3s server");
        ready.abort();
    }

    fn agent_secret(&self, server_secret: &str) -> Result<String, String> {
        match &self.agent_token {
            Some(t) => Ok(tokens::parse(t)
                .map_err(|e| format!("Error: {e}"))?
                .password),
            None => Ok(server_secret.to_string()),
        }
    }

    fn write_ca(&self, ca: &Ca) -> Result<(), String> {
        let dir = self.server_dir.join("tls");
        std::fs::create_dir_all(&dir).map_err(|e| format!("Error: {e}"))?;
        for (file, content, mode) in [
            ("server-ca.crt", ca.cert_pem(), 0o644),
            ("server-ca.key", ca.key_pem(), 0o600),
            ("client-ca.crt", ca.cert_pem(), 0o644),
            ("client-ca.key", ca.key_pem(), 0o600),
        ] {
            write_mode(&dir.join(file), content.as_bytes(), mode)
                .map_err(|e| format!("Error: {e}"))?;
        }
        Ok(())
    }

    fn write_tokens(&self, ca: &Ca, server_secret: &str, agent_secret: &str) -> Result<(), String> {
        let err = |e: std::io::Error| format!("Error: {e}");
        let ca_pem = ca.cert_pem();
        let token_file = self.server_dir.join("token");
        write_private(
            &token_file,
            format!(
                "{}\n",
                tokens::format(ca_pem.as_bytes(), "server", server_secret)
            )
            .as_bytes(),
        )
        .map_err(err)?;
        symlink(&token_file, &self.server_dir.join("node-token")).map_err(err)?;
        log::info(format!(
            "Server node token is available at {}",
            token_file.display()
        ));
        let agent_file = self.server_dir.join("agent-token");
        if self.agent_token.is_some() {
            if agent_file.is_symlink() {
                std::fs::remove_file(&agent_file).map_err(err)?;
            }
            write_private(
                &agent_file,
                format!(
                    "{}\n",
                    tokens::format(ca_pem.as_bytes(), "node", agent_secret)
                )
                .as_bytes(),
            )
            .map_err(err)?;
        } else {
            symlink(&token_file, &agent_file).map_err(err)?;
        }
        log::info(format!(
            "Agent node token is available at {}",
            agent_file.display()
        ));
        let cred = self.server_dir.join("cred");
        std::fs::create_dir_all(&cred).map_err(err)?;
        write_private(
            &cred.join("passwd"),
            passwd(server_secret, agent_secret).as_bytes(),
        )
        .map_err(err)?;
        log::info(format!(
            "To join server node to cluster: k3s server -s {} -t ${{SERVER_NODE_TOKEN}}",
            self.advertise_url()
        ));
        log::info(format!(
            "To join agent node to cluster: k3s agent -s {} -t ${{AGENT_NODE_TOKEN}}",
            self.advertise_url()
        ));
        Ok(())
    }

    fn advertise_url(&self) -> String {
        let ip = self
            .node_ips
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into());
        format!("https://{}", host_port(&ip, self.port))
    }

    fn write_kubeconfig(&self, settings: &Settings, ca: &Ca) -> Result<(), String> {
        let err = |e: std::io::Error| format!("Error: failed to generate kubeconfig: {e}");
        let cert_file = self.tls("client-admin.crt");
        let key_file = self.tls("client-admin.key");
        let (cert, key) = match (
            std::fs::read_to_string(&cert_file),
            std::fs::read_to_string(&key_file),
        ) {
            (Ok(c), Ok(k)) if ca_signed(ca, &c) => (c, k),
            _ => {
                let (c, k) = ca
                    .issue_client("system:admin", &["system:masters"])
                    .map_err(|e| format!("Error: failed to generate kubeconfig: {e}"))?;
                write_mode(&cert_file, c.as_bytes(), 0o644).map_err(err)?;
                write_private(&key_file, k.as_bytes()).map_err(err)?;
                (c, k)
            }
        };
        let path = settings
            .get("write-kubeconfig")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_path("/etc/rancher/k3s/k3s.yaml"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
        let text = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&ca.cert_pem()),
            self.local_url(),
            b64(&cert),
            b64(&key)
        );
        let mode = match settings.get("write-kubeconfig-mode") {
            Some(m) => match u32::from_str_radix(m, 8) {
                Ok(mode) => mode,
                Err(e) => {
                    log::error(format!("Failed to set {} to mode {m}: {e}", path.display()));
                    0o600
                }
            },
            None => 0o600,
        };
        write_mode(&path, text.as_bytes(), mode).map_err(err)?;
        log::info(format!("Wrote kubeconfig {}", path.display()));
        Ok(())
    }

    fn member_name(&self) -> Result<String, String> {
        let file = self.etcd_dir().join("name");
        if let Ok(name) = std::fs::read_to_string(&file)
            && !name.trim().is_empty()
        {
            return Ok(name.trim().to_string());
        }
        let name = format!("{}-{}", self.node_name, &tokens::random_secret()[..8]);
        std::fs::create_dir_all(self.etcd_dir()).map_err(|e| format!("Error: {e}"))?;
        write_private(&file, name.as_bytes()).map_err(|e| format!("Error: {e}"))?;
        Ok(name)
    }

    fn etcd_address(&self) -> String {
        self.node_ips
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into())
    }

    fn node_spec(
        &self,
        settings: &Settings,
        release: &Release,
        etcd: Option<(String, String)>,
    ) -> NodeSpec {
        NodeSpec {
            name: self.node_name.clone(),
            server: true,
            etcd,
            version: release.version.clone(),
            labels: settings.raw_list("node-label"),
            taints: settings.raw_list("node-taint"),
            internal_ips: self.node_ips.clone(),
            external_ips: self.external_ips.clone(),
            node_args: settings.node_args.clone(),
            flannel_backend: settings
                .get("flannel-backend")
                .unwrap_or("vxlan")
                .to_string(),
        }
    }

    /// What the serving certificate covers (k3s's list).
    fn sans(&self, settings: &Settings) -> Vec<String> {
        let mut sans: Vec<String> = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
        sans.extend(settings.list("tls-san"));
        sans.extend(self.node_ips.iter().cloned());
        sans.extend(self.external_ips.iter().cloned());
        if !self.bind.is_unspecified() {
            sans.push(self.bind.to_string());
        }
        if let Some(a) = settings.get("advertise-address") {
            sans.push(a.to_string());
        }
        sans.push(self.node_name.clone());
        let domain = settings.get("cluster-domain").unwrap_or("cluster.local");
        for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
            sans.push(name.to_string());
        }
        sans.push(format!("kubernetes.default.svc.{domain}"));
        let service_cidr = settings
            .list("service-cidr")
            .into_iter()
            .next()
            .unwrap_or_else(|| "10.43.0.0/16".into());
        if let Some(ip) = nth_ip(&service_cidr, 1) {
            sans.push(ip);
        }
        let mut seen = Vec::new();
        sans.retain(|s| {
            let new = !seen.contains(s);
            seen.push(s.clone());
            new
        });
        sans
    }
}

/// The critical fields and the flag names k3s reports them by.
const CRITICAL_TAGS: &[(&str, &str)] = &[
    ("ClusterDNSs", "cluster-dns"),
    ("ClusterIPRanges", "cluster-cidr"),
    ("ClusterDomain", "cluster-domain"),
    ("DisableCCM", "disable-cloud-controller"),
    ("DisableHelmController", "disable-helm-controller"),
    ("DisableNPC", "disable-network-policy"),
    ("DisableServiceLB", "disable-service-lb"),
    ("EncryptSecrets", "secrets-encryption"),
    ("EncryptProvider", "secrets-encryption-provider"),
    ("EmbeddedRegistry", "embedded-registry"),
    ("FlannelBackend", "flannel-backend"),
    ("FlannelIPv6Masq", "flannel-ipv6-masq"),
    (
        "FlannelIPMasqDisableRandomFully",
        "flannel-ip-masq-disable-random-fully",
    ),
    ("FlannelExternalIP", "flannel-external-ip"),
    ("EgressSelectorMode", "egress-selector-mode"),
    ("ServiceIPRanges", "service-cidr"),
    ("SupervisorMetrics", "supervisor-metrics"),
];

/// k3s's `CriticalControlArgs` of these settings (with k3s's defaults), as `/v1-k3s/config` serves them.
pub fn critical_config(settings: &Settings) -> Value {
    let or = |name: &str, default: &str| {
        let list = settings.list(name);
        if list.is_empty() {
            vec![default.to_string()]
        } else {
            list
        }
    };
    let service = or("service-cidr", "10.43.0.0/16");
    let dns = match settings.list("cluster-dns") {
        d if d.is_empty() => service.iter().filter_map(|c| nth_ip(c, 10)).collect(),
        d => d,
    };
    let disables = settings.list("disable");
    json!({
        "ClusterDNSs": dns,
        "ClusterIPRanges": or("cluster-cidr", "10.42.0.0/16"),
        "ClusterDomain": settings.get("cluster-domain").unwrap_or("cluster.local"),
        "DisableCCM": settings.flag("disable-cloud-controller"),
        "DisableHelmController": settings.flag("disable-helm-controller"),
        "DisableNPC": settings.flag("disable-network-policy"),
        "DisableServiceLB": disables.iter().any(|d| d == "servicelb"),
        "EncryptSecrets": settings.flag("secrets-encryption"),
        "EncryptProvider": settings.get("secrets-encryption-provider").unwrap_or(if settings.flag("secrets-encryption") { "aescbc" } else { "" }),
        "EmbeddedRegistry": settings.flag("embedded-registry"),
        "FlannelBackend": settings.get("flannel-backend").unwrap_or("vxlan"),
        "FlannelIPv6Masq": settings.flag("flannel-ipv6-masq"),
        "FlannelIPMasqDisableRandomFully": settings.flag("flannel-ip-masq-disable-random-fully"),
        "FlannelExternalIP": settings.flag("flannel-external-ip"),
        "EgressSelectorMode": settings.get("egress-selector-mode").unwrap_or("agent"),
        "ServiceIPRanges": service,
        "SupervisorMetrics": settings.flag("supervisor-metrics"),
    })
}

/// The `n`th address of an IPv4 CIDR (`10.43.0.0/16`, 10 → `10.43.0.10`).
fn nth_ip(cidr: &str, n: u32) -> Option<String> {
    let (net, _) = cidr.split_once('/')?;
    let ip: Ipv4Addr = net.parse().ok()?;
    Some(Ipv4Addr::from(u32::from(ip).wrapping_add(n)).to_string())
}

/// `cni0`'s address: the first address of the first /24 of the cluster CIDR.
pub fn pod_gateway(settings: &Settings) -> String {
    let cidr = settings
        .list("cluster-cidr")
        .into_iter()
        .next()
        .unwrap_or_else(|| "10.42.0.0/16".into());
    nth_ip(&cidr, 1).map_or_else(|| "10.42.0.1/24".into(), |ip| format!("{ip}/24"))
}

/// `--token`, else the contents of `--token-file` (and the same for the agent token).
pub fn read_secret(
    settings: &Settings,
    flag: &str,
    file_flag: &str,
) -> Result<Option<String>, String> {
    if let Some(t) = settings.get(flag) {
        return Ok(Some(t.to_string()));
    }
    match settings.get(file_flag) {
        Some(file) => std::fs::read_to_string(file)
            .map(|t| Some(t.trim().to_string()).filter(|t| !t.is_empty()))
            .map_err(|e| format!("Error: failed to read token file {file}: {e}")),
        None => Ok(None),
    }
}

/// The node name: `node-name`, else the hostname (with `-<id>` when `with-node-id`).
pub fn node_name(settings: &Settings) -> String {
    let base = settings
        .get("node-name")
        .map(str::to_string)
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_lowercase())
                .unwrap_or_else(|_| "localhost".into())
        });
    if settings.flag("with-node-id") {
        let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
        let id: String = id.trim().chars().take(8).collect();
        format!("{base}-{id}")
    } else {
        base
    }
}

/// `node-ip`, else the address of the interface with the default route (else 127.0.0.1).
pub fn node_ips(settings: &Settings) -> Vec<String> {
    let given = settings.list("node-ip");
    if !given.is_empty() {
        return given;
    }
    // `ip route get` asks the kernel's routing table; nothing is sent.
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "route", "get", "1.1.1.1"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src"
            && let Some(ip) = words.next()
        {
            return vec![ip.to_string()];
        }
    }
    vec!["127.0.0.1".into()]
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

fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn passwd(server_secret: &str, agent_secret: &str) -> String {
    format!("{server_secret},server,server,k3s:server\n{agent_secret},node,node,k3s:agent\n")
}

fn agent_from_passwd(passwd: &str) -> Option<String> {
    passwd
        .lines()
        .find(|l| l.split(',').nth(1) == Some("node"))
        .and_then(|l| l.split(',').next())
        .map(str::to_string)
}

fn read_token_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    tokens::parse(text.trim()).ok().map(|t| t.password)
}

fn load_ca(cert: &Path, key: &Path) -> Option<Ca> {
    let cert = std::fs::read_to_string(cert).ok()?;
    let key = std::fs::read_to_string(key).ok()?;
    Ca::from_pem(&cert, &key).ok()
}

fn ca_signed(ca: &Ca, cert_pem: &str) -> bool {
    // The admin certificate is reused only while the CA that signed it is the cluster's.
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes());
    let cert_der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes());
    let (Ok(ca_der), Ok(cert_der)) = (ca_der, cert_der) else {
        return false;
    };
    let (Ok((_, ca)), Ok((_, cert))) = (
        x509_parser::parse_x509_certificate(ca_der.as_ref()),
        x509_parser::parse_x509_certificate(cert_der.as_ref()),
    ) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

use rustls::pki_types::pem::PemObject;

/// `link` → `target`, replacing a regular file (k3s keeps `node-token` a symlink).
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    if link.is_symlink() {
        return Ok(());
    }
    if link.exists() {
        std::fs::remove_file(link)?;
    }
    std::os::unix::fs::symlink(target, link)
}
