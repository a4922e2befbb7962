use std::sync::Arc;
use std::time::Duration;

use strongbox_client::{Client, ClientConfig};
use strongbox_server::barrier::RootKey;
use strongbox_server::clock::ManualClock;
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
    pub addr: std::net::SocketAddr,
    pub ca_pem: String,
    pub token: String,
    _dir: tempfile::TempDir,
    _running: Running,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(ServiceConfig::default()).await
    }

    pub(crate) async fn start_with(config: ServiceConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = RootKey::random();
        let token = server::init(&data, Some(&dir.path().join("root-key")), &key).unwrap();
        let backend: Arc<dyn Backend> =
            Arc::new(RedbBackend::open(&server::db_path(&data)).unwrap());
        let clock = ManualClock::new(T0);
        let u: Unsealed = server::unseal(backend, &key, Arc::new(clock.clone()), config).unwrap();
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
            addr,
            ca_pem: certs.ca_pem,
            token: token.to_string(),
            _dir: dir,
            _running: running,
        }
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

    /// Moves the clock and runs the background jobs once.
    pub(crate) async fn advance_and_tick(
        &self,
        secs: i64,
    ) -> strongbox_server::service::TickReport {
        self.clock.advance(secs);
        self.service.tick().await.unwrap()
    }
}

pub(crate) fn text_secret(name: &str, data: &str) -> strongbox_schemas::CreateSecretRequest {
    strongbox_schemas::CreateSecretRequest {
        name: name.into(),
        secret_data: data.into(),
        ..Default::default()
    }
}

pub(crate) fn put(data: &str) -> strongbox_schemas::PutSecretValueRequest {
    strongbox_schemas::PutSecretValueRequest {
        secret_data: data.into(),
        ..Default::default()
    }
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
