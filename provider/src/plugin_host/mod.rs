//! The go-plugin side of the protocol: magic cookie, version negotiation, AutoMTLS with a
//! verifier pinned to Terraform's client certificate, the handshake line, the controller's
//! Shutdown, and debug (reattach) mode.

mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::plugin::grpc_controller_server::{GrpcController, GrpcControllerServer};

pub use tls::{PinnedClientCert, server_identity, warm_up};

/// The cookie go-plugin hosts set; without it the binary was started by hand.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
/// Its value for Terraform.
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

/// Protocol versions this binary speaks.
pub const SUPPORTED: [u32; 2] = [5, 6];

/// Picks the highest version both sides speak. `offered` is `PLUGIN_PROTOCOL_VERSIONS`
/// (a comma list in any order); `restrict` is `STRONGBOX_PROVIDER_PROTOCOLS`, if set.
pub fn negotiate(offered: Option<&str>, restrict: Option<&str>) -> Result<u32, String> {
    let parse =
        |s: &str| -> Vec<u32> { s.split(',').filter_map(|v| v.trim().parse().ok()).collect() };
    let ours: Vec<u32> = match restrict {
        Some(r) => parse(r)
            .into_iter()
            .filter(|v| SUPPORTED.contains(v))
            .collect(),
        None => SUPPORTED.to_vec(),
    };
    match offered {
        // go-plugin falls back to the lowest version when the host names none.
        None => ours
            .iter()
            .min()
            .copied()
            .ok_or_else(|| "no protocol version enabled".to_string()),
        Some(o) => parse(o)
            .into_iter()
            .filter(|v| ours.contains(v))
            .max()
            .ok_or_else(|| {
                format!("Terraform offers protocol versions {o}; this provider speaks {ours:?}")
            }),
    }
}

/// Signals the server to stop (controller Shutdown).
#[derive(Clone, Default)]
pub struct Shutdown(Arc<Notify>);

impl Shutdown {
    /// Asks the server to stop.
    pub fn trigger(&self) {
        self.0.notify_one();
    }
    /// Resolves once stop was asked for.
    pub async fn wait(&self) {
        self.0.notified().await;
    }
}

/// `plugin.GRPCController`: Terraform calls Shutdown when it is done with the process.
pub struct Controller(pub Shutdown);

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(
        &self,
        _: tonic::Request<crate::plugin::Empty>,
    ) -> Result<tonic::Response<crate::plugin::Empty>, tonic::Status> {
        self.0.trigger();
        // Terraform is done with us and force-kills after 2 s; open connections must not
        // hold the exit back, so leave shortly after the reply is on its way.
        tokio::spawn(async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            remove_socket_dir();
            std::process::exit(0);
        });
        Ok(tonic::Response::new(crate::plugin::Empty {}))
    }
}

/// The controller service, ready to add to a router.
pub fn controller(shutdown: Shutdown) -> GrpcControllerServer<Controller> {
    GrpcControllerServer::new(Controller(shutdown))
}

/// How the process was started.
pub enum Launch {
    /// By Terraform through go-plugin: handshake on stdout, TLS when a client cert is given.
    Managed {
        /// Negotiated protocol version.
        version: u32,
        /// `PLUGIN_CLIENT_CERT`, PEM.
        client_cert_pem: Option<String>,
    },
    /// `--debug`: plaintext on a private Unix socket, prints `TF_REATTACH_PROVIDERS`.
    Debug {
        /// Protocol version to serve.
        version: u32,
    },
}

/// Accepted connections, TLS or plain, as tonic's incoming stream.
pub enum Incoming {
    /// AutoMTLS on loopback TCP: only the holder of Terraform's client key gets in.
    Tls(
        ReceiverStream<
            Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
        >,
    ),
    /// Plaintext (debug mode, or Terraform run with TF_DISABLE_PLUGIN_TLS), on a Unix
    /// socket in a directory only this user may enter, as go-plugin does: a loopback TCP
    /// port would let any local user drive the provider with the token it was given.
    Plain(tokio_stream::wrappers::UnixListenerStream),
}

/// Where the provider listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginAddr {
    /// Loopback TCP (AutoMTLS).
    Tcp(SocketAddr),
    /// A Unix socket (plaintext).
    Unix(PathBuf),
}

impl PluginAddr {
    /// go-plugin's network name.
    pub fn network(&self) -> &'static str {
        match self {
            PluginAddr::Tcp(_) => "tcp",
            PluginAddr::Unix(_) => "unix",
        }
    }
}

impl std::fmt::Display for PluginAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginAddr::Tcp(a) => a.fmt(f),
            PluginAddr::Unix(p) => p.display().fmt(f),
        }
    }
}

/// The private directory of the plaintext socket, removed when the process ends.
static SOCKET_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Removes the plaintext socket's directory, if one was made; called on the way out
/// (`std::process::exit` runs no destructors).
pub fn remove_socket_dir() {
    if let Some(dir) = SOCKET_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The socket's file name in its directory.
const SOCKET_NAME: &str = "plugin.sock";

/// Where the socket's directory goes: the temp dir (`TMPDIR`), unless the socket's path
/// would not fit in a `sockaddr_un` (107 bytes and a NUL on Linux, 103 on macOS); then
/// `/tmp`.
fn socket_base() -> PathBuf {
    #[cfg(target_os = "macos")]
    const LONGEST: usize = 103;
    #[cfg(not(target_os = "macos"))]
    const LONGEST: usize = 107;
    let tmp = std::env::temp_dir();
    let below = "/strongbox-plugin-0123456789abcdef/".len() + SOCKET_NAME.len();
    if tmp.as_os_str().len() + below <= LONGEST {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

/// A new directory under `base` that only this user may enter (0700).
fn private_dir(base: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    for _ in 0..16 {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("random name: {e}"))?;
        let dir = base.join(format!(
            "strongbox-plugin-{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        // create, not create_all: an existing path (another user's trap) is never reused.
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(anyhow::anyhow!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(anyhow::anyhow!(
        "cannot create a private directory under {}",
        base.display()
    ))
}

/// Binds the listener and, for TLS, starts accepting handshakes in the background.
/// Returns the address, the handshake certificate (DER) if any, and the stream.
pub async fn listen(
    client_cert_pem: Option<&str>,
) -> anyhow::Result<(PluginAddr, Option<Vec<u8>>, Incoming)> {
    let Some(pem) = client_cert_pem else {
        let dir = private_dir(&socket_base())?;
        let _ = SOCKET_DIR.set(dir.clone());
        let path = dir.join(SOCKET_NAME);
        let listener = tokio::net::UnixListener::bind(&path)?;
        return Ok((
            PluginAddr::Unix(path),
            None,
            Incoming::Plain(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        ));
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (server_cfg, server_der) = tls::server_config(pem)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg);
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                // Out of descriptors, say: a pause, not a loop that spins a core.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "refused a TLS connection"),
                    Err(_) => tracing::warn!("TLS handshake timed out"),
                }
            });
        }
    });
    Ok((
        PluginAddr::Tcp(addr),
        Some(server_der),
        Incoming::Tls(ReceiverStream::new(rx)),
    ))
}

/// The go-plugin handshake line: `1|VERSION|NETWORK|ADDR|grpc|CERT` (CERT: DER, base64
/// without padding; empty for plaintext).
pub fn handshake_line(version: u32, addr: &PluginAddr, cert_der: Option<&[u8]>) -> String {
    let cert = cert_der
        .map(|d| base64::engine::general_purpose::STANDARD_NO_PAD.encode(d))
        .unwrap_or_default();
    format!("1|{version}|{}|{addr}|grpc|{cert}", addr.network())
}

/// The `TF_REATTACH_PROVIDERS` value for debug mode.
pub fn reattach_json(source: &str, version: u32, addr: &PluginAddr) -> String {
    serde_json::json!({
        source: {
            "Protocol": "grpc",
            "ProtocolVersion": version,
            "Pid": std::process::id(),
            "Test": true,
            "Addr": {"Network": addr.network(), "String": addr.to_string()}
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common() {
        assert_eq!(negotiate(Some("5,6"), None), Ok(6));
        assert_eq!(negotiate(Some("6,5"), None), Ok(6));
        assert_eq!(negotiate(Some("5"), None), Ok(5), "Terraform 0.12-0.15.3");
        assert_eq!(negotiate(Some("5,6"), Some("5")), Ok(5));
        assert_eq!(negotiate(None, None), Ok(5));
        assert!(negotiate(Some("4"), None).is_err());
        assert!(negotiate(Some("6"), Some("5")).is_err());
    }

    #[test]
    fn handshake_line_format() {
        let tcp = PluginAddr::Tcp("127.0.0.1:1234".parse().unwrap());
        let l = handshake_line(6, &tcp, Some(&[1, 2, 3, 4]));
        assert_eq!(l, "1|6|tcp|127.0.0.1:1234|grpc|AQIDBA");
        let unix = PluginAddr::Unix("/tmp/d/plugin.sock".into());
        assert_eq!(
            handshake_line(5, &unix, None),
            "1|5|unix|/tmp/d/plugin.sock|grpc|"
        );
    }
}
