use std::sync::Arc;
use std::time::Duration;

use strongbox_client::{Client, ClientConfig};
use strongbox_server::barrier::RootKey;
use strongbox_server::clock::{Clock, ManualClock};
use strongbox_server::server::{self, Running, ServeOptions, Unsealed};
use strongbox_server::service::{Service, ServiceConfig};
use strongbox_server::storage::{Backend, RedbBackend};
use strongbox_server::tls;

/// 2026-01-01T00:00:00Z.
pub(crate) const T0: i64 = 1_767_225_600;

pub(crate) struct TestServer {
    pub client: Client,
    pub clock: ManualClock,
    pub service: Service,
    /// The storage below the server, for tests that play an attacker with disk access.
    pub backend: Arc<dyn Backend>,
    pub addr: std::net::SocketAddr,
    pub ca_pem: String,
    pub token: String,
    _dir: tempfile::TempDir,
    /// The serving task and its stop switch.
    pub running: Running,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(ServiceConfig::default()).await
    }

    pub(crate) async fn start_with(config: ServiceConfig) -> Self {
        Self::start_wrapped(config, |b| b).await
    }

    /// A server over the redb backend as `wrap` wraps it (to inject storage failures).
    pub(crate) async fn start_wrapped(
        config: ServiceConfig,
        wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>,
    ) -> Self {
        Self::start_full(config, wrap, tls::ConnectionLimits::default()).await
    }

    /// A server with these connection limits.
    pub(crate) async fn start_with_limits(limits: tls::ConnectionLimits) -> Self {
        Self::start_full(ServiceConfig::default(), |b| b, limits).await
    }

    pub(crate) async fn start_full(
        config: ServiceConfig,
        wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>,
        limits: tls::ConnectionLimits,
    ) -> Self {
        Self::start_clocked(config, wrap, limits, |c| Arc::new(c)).await
    }

    /// A server whose clock is `clock_of` over the test's manual clock (to make the
    /// clock misbehave).
    pub(crate) async fn start_clocked(
        config: ServiceConfig,
        wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>,
        limits: tls::ConnectionLimits,
        clock_of: impl FnOnce(ManualClock) -> Arc<dyn Clock>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = RootKey::random();
        let token = server::init(&data, Some(&dir.path().join("root-key")), &key).unwrap();
        let backend: Arc<dyn Backend> = wrap(Arc::new(
            RedbBackend::open(&server::db_path(&data)).unwrap(),
        ));
        let clock = ManualClock::new(T0);
        let u: Unsealed =
            server::unseal(backend.clone(), &key, clock_of(clock.clone()), config).unwrap();
        let service = u.service.clone();
        let certs = tls::dev_certificates().unwrap();
        let tls_cfg =
            tls::server_config(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes()).unwrap();
        let running = server::start(
            u,
            ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                tls: tls_cfg,
                tick_interval: Duration::from_secs(3600),
                limits,
            },
        )
        .await
        .unwrap();
        let addr = running.addr;
        let client = Client::new(ClientConfig {
            address: format!("https://127.0.0.1:{}", addr.port()),
            token: token.to_string(),
            ca_cert_pem: Some(certs.ca_pem.as_bytes().to_vec()),
            timeout: None,
        })
        .unwrap();
        Self {
            client,
            clock,
            service,
            backend,
            addr,
            ca_pem: certs.ca_pem,
            token: token.to_string(),
            _dir: dir,
            running,
        }
    }

    /// The file holding the server's root key.
    pub(crate) fn root_key_file(&self) -> std::path::PathBuf {
        self._dir.path().join("root-key")
    }

    /// A client with another token.
    pub(crate) fn client_with_token(&self, token: &str) -> Client {
        Client::new(ClientConfig {
            address: format!("https://127.0.0.1:{}", self.addr.port()),
            token: token.into(),
            ca_cert_pem: Some(self.ca_pem.as_bytes().to_vec()),
            timeout: None,
        })
        .unwrap()
    }

    /// A plain HTTPS client trusting the server's CA (no token).
    pub(crate) fn http(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap()
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Writes the CA certificate to a file in the test's temp dir (for the CLI).
    pub(crate) fn ca_file(&self) -> std::path::PathBuf {
        let p = self._dir.path().join("ca.pem");
        std::fs::write(&p, &self.ca_pem).unwrap();
        p
    }

    /// The `strongbox` binary, set up to talk to this server with `token`.
    pub(crate) fn cli(&self, token: &str) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"));
        c.env("STRONGBOX_ADDR", self.base())
            .env("STRONGBOX_TOKEN", token)
            .env("STRONGBOX_CACERT", self.ca_file())
            .env_remove("RUST_BACKTRACE");
        c
    }

    /// A policy with this document, a principal with only that policy, and a client
    /// with a token of the principal.
    pub(crate) async fn principal_with(&self, name: &str, document: serde_json::Value) -> Client {
        let token = self.principal_token(name, document).await;
        self.client_with_token(&token)
    }

    /// Like [`principal_with`](Self::principal_with), returning the token.
    pub(crate) async fn principal_token(&self, name: &str, document: serde_json::Value) -> String {
        let document = serde_json::from_value(document).unwrap();
        self.client
            .create_policy(&strongbox_schemas::CreatePolicyRequest {
                name: format!("{name}-policy"),
                description: None,
                document,
            })
            .await
            .unwrap();
        self.client
            .create_principal(&strongbox_schemas::CreatePrincipalRequest {
                name: name.into(),
                description: None,
                policies: Some(vec![format!("{name}-policy")]),
            })
            .await
            .unwrap();
        let t = self
            .client
            .create_token(name, &Default::default())
            .await
            .unwrap();
        t.token
    }

    /// Moves the clock and runs the background jobs once.
    pub(crate) async fn advance_and_tick(
        &self,
        secs: i64,
    ) -> strongbox_server::service::TickReport {
        self.clock.advance(secs);
        self.service.tick().await.unwrap()
    }
}

/// A new CMK with the defaults; its id.
pub(crate) async fn new_key(s: &TestServer) -> String {
    s.client
        .create_key(&Default::default())
        .await
        .unwrap()
        .key_id
}

pub(crate) fn text_secret(name: &str, data: &str) -> strongbox_schemas::CreateSecretRequest {
    strongbox_schemas::CreateSecretRequest {
        name: name.into(),
        secret_data: data.into(),
        ..Default::default()
    }
}

/// Holds the store's writer thread busy for `held`, starting within 100 ms (the call
/// returns then): writes asked for meanwhile queue behind it, and the group-commit
/// writer takes them in one batch. Await the handle for the end of the hold.
pub(crate) async fn hold_writer(
    service: &Service,
    held: Duration,
) -> tokio::task::JoinHandle<Result<(), strongbox_server::storage::StorageError>> {
    let store = service.store().clone();
    let busy = tokio::spawn(async move {
        store
            .write(move |_| {
                std::thread::sleep(held);
                Ok(())
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    busy
}

pub(crate) fn put(data: &str) -> strongbox_schemas::PutSecretValueRequest {
    strongbox_schemas::PutSecretValueRequest {
        secret_data: data.into(),
        ..Default::default()
    }
}

/// A raw answer that must be `400 InvalidParameter` whose message holds `needle`; the
/// message.
pub(crate) async fn invalid_parameter(r: reqwest::Response, needle: &str) -> String {
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "InvalidParameter", "{body}");
    let m = body["message"].as_str().unwrap_or_default().to_string();
    assert!(m.contains(needle), "{m}");
    m
}

/// Asserts the error code and that the message names `needle`.
#[track_caller]
pub(crate) fn assert_code<T: std::fmt::Debug>(
    r: Result<T, strongbox_client::Error>,
    code: strongbox_client::ErrorCode,
    needle: &str,
) {
    match r {
        Err(strongbox_client::Error::Api {
            code: c,
            message,
            request_id,
            ..
        }) => {
            assert_eq!(c, code, "message: {message}");
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            );
            assert_eq!(request_id.len(), 32, "request id present");
        }
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// An answer with its request id.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub request_id: String,
    pub body: serde_json::Value,
}

/// One request with `token` (or none): path segments are percent-encoded like the
/// client does.
pub(crate) async fn call(
    s: &TestServer,
    token: Option<&str>,
    method: &str,
    segments: &[&str],
    body: Option<&serde_json::Value>,
) -> Reply {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let mut url = s.base();
    for seg in segments {
        url.push('/');
        url.extend(utf8_percent_encode(seg, SET));
    }
    let ca = reqwest::Certificate::from_pem(s.ca_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .user_agent("route-table-test")
        .build()
        .unwrap();
    let mut rb = http.request(method.parse().unwrap(), url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let bytes = r.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Reply {
        status,
        request_id,
        body,
    }
}

/// The audit records of one request (there must be exactly one).
pub(crate) async fn records_of(
    s: &TestServer,
    request_id: &str,
) -> Vec<strongbox_schemas::AuditRecord> {
    let mut q = strongbox_client::AuditQuery {
        request_id: Some(request_id.into()),
        limit: Some(1000),
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let page = s.client.list_audit(&q).await.unwrap();
        out.extend(page.records);
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => return out,
        }
    }
}

/// Asserts that the audit trail holds, for each of `actions`, a request of `principal`
/// refused with `Forbidden` and recorded as `Denied`.
pub(crate) async fn assert_denied(s: &TestServer, principal: &str, actions: &[&str]) {
    let audit = s
        .client
        .list_audit(&strongbox_client::AuditQuery {
            principal: Some(principal.into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    for action in actions {
        assert!(
            audit.records.iter().any(|r| r.action == *action
                && r.outcome == strongbox_schemas::AuditOutcome::Denied
                && r.error_code == Some(strongbox_client::ErrorCode::Forbidden)),
            "{action}: {:?}",
            audit.records
        );
    }
}

/// What a [`Relay`] does with the connections it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayMode {
    /// Relays them to the server.
    Up,
    /// Closes them (the server, as far as the client can tell, is gone).
    Down,
    /// Holds them open and relays nothing (a network that drops every packet).
    Hang,
}

/// A TCP relay to the server that can be cut: while not [`RelayMode::Up`], it closes
/// or holds (as its mode says) the connections it relays and every new one.
pub(crate) struct Relay {
    pub(crate) addr: std::net::SocketAddr,
    mode: tokio::sync::watch::Sender<RelayMode>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub(crate) async fn to(server: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watch) = tokio::sync::watch::channel(RelayMode::Up);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    if *watch.borrow() == RelayMode::Up
                        && let Ok(mut outbound) = tokio::net::TcpStream::connect(server).await
                    {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = watch.wait_for(|m| *m != RelayMode::Up) => {}
                        }
                    }
                    if *watch.borrow() == RelayMode::Hang {
                        // Held until the relay goes back up (or away), then closed.
                        let _ = watch.wait_for(|m| *m != RelayMode::Hang).await;
                    }
                    drop(inbound);
                });
            }
        });
        Self { addr, mode, task }
    }

    /// Up (relays) or down (closes).
    pub(crate) fn set(&self, up: bool) {
        self.set_mode(if up { RelayMode::Up } else { RelayMode::Down });
    }

    pub(crate) fn set_mode(&self, mode: RelayMode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
