//! TLS for the API: rustls with the aws-lc-rs provider only, and the accept loop.
//! The server never serves plain HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The one crypto provider of the workspace.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS server configuration from PEM certificate chain and key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<ServerConfig>> {
    Ok(reloadable_server_config(cert_pem, key_pem)?.0)
}

/// [`server_config`], with the handle that replaces its certificate while it serves.
pub fn reloadable_server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<(Arc<ServerConfig>, Arc<ServerCertificate>)> {
    let cert = Arc::new(ServerCertificate(std::sync::RwLock::new(Arc::new(
        certified_key(cert_pem, key_pem)?,
    ))));
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), cert))
}

/// Reads the TLS private key file. One that other users may read or write (any of the
/// mode's "other" bits) is refused, as the root key file is; a group that shares it
/// (0640 `root:ssl-cert`) is the operator's choice.
pub fn read_key_file(path: &Path) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let reading = || format!("reading {}", path.display());
    // The mode of the file opened, not of whatever is at the path a moment later.
    let mut file = std::fs::File::open(path).with_context(reading)?;
    let meta = file.metadata().with_context(reading)?;
    let mode = meta.permissions().mode();
    anyhow::ensure!(
        mode & 0o007 == 0,
        "TLS key file {} has mode {:o}: other users may read or change it; make it 0600 (chmod 600), or 0640 for a group",
        path.display(),
        mode & 0o777
    );
    // Room for the whole file at once: a buffer that grew would leave copies unwiped.
    let room = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut key = zeroize::Zeroizing::new(Vec::with_capacity(room));
    file.read_to_end(&mut key).with_context(reading)?;
    Ok(key)
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .context("reading the TLS certificate PEM")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the TLS certificate file holds no certificate"
    );
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("reading the TLS key PEM")?
        .context("the TLS key file holds no private key")?;
    CertifiedKey::from_der(certs, key, &provider()).context("TLS certificate and key do not match")
}

/// The certificate the server presents: every new handshake takes the one in place,
/// so [`replace`](Self::replace) applies to new connections at once and leaves
/// established ones as they are.
#[derive(Debug)]
pub struct ServerCertificate(std::sync::RwLock<Arc<CertifiedKey>>);

impl ServerCertificate {
    /// Presents this chain and key from now on, if they parse and belong together;
    /// otherwise the error says why and the certificate in place stays.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<()> {
        let new = Arc::new(certified_key(cert_pem, key_pem)?);
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(())
    }

    /// [`replace`](Self::replace) from PEM files (as `SIGHUP` does).
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> anyhow::Result<()> {
        let cert =
            std::fs::read(cert_file).with_context(|| format!("reading {}", cert_file.display()))?;
        let key = read_key_file(key_file)?;
        self.replace(&cert, &key)
            .with_context(|| format!("{} and {}", cert_file.display(), key_file.display()))
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// PEM files of a development CA and a server certificate it signed for
/// `localhost`, `127.0.0.1` and `::1`.
pub struct DevCertificates {
    /// The CA certificate clients should trust.
    pub ca_pem: String,
    /// The server certificate chain.
    pub cert_pem: String,
    /// The server key.
    pub key_pem: String,
}

/// Generates a throwaway CA and server certificate.
pub fn dev_certificates() -> anyhow::Result<DevCertificates> {
    dev_certificates_for(&[])
}

/// [`dev_certificates`] whose server certificate also names `extra` (host names or
/// addresses).
pub fn dev_certificates_for(extra: &[String]) -> anyhow::Result<DevCertificates> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Strongbox development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(
        extra
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    Ok(DevCertificates {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// Writes `contents` to `path` readable by the owner only, replacing the file there: a
/// new file (0600 from its creation) takes the name, so that whoever had the old one
/// open (while it was readable by others, say) never sees what is written.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".new-{}", hex::encode(rand::random::<[u8; 8]>())));
    let temp = path.with_file_name(name);
    let written = write_private_new(&temp, contents)
        .and_then(|()| std::fs::rename(&temp, path).map_err(anyhow::Error::from));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e.context(format!("writing {}", path.display())));
    }
    crate::storage::sync_parent_dir(path)
        .with_context(|| format!("syncing the directory of {}", path.display()))
}

/// Writes `contents` to a new file `path` readable by the owner only; refuses if the
/// file exists.
pub fn write_private_new(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

/// Limits on connections, so that clients that connect and then send nothing, or drip
/// their headers, cannot hold the server's connections and memory.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections served at once. At the limit, the connection idle longest (no request
    /// under way) is asked to close to make way for a new one; while every connection has
    /// a request under way, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Connections served at once from one client address (an IPv6 client's /64);
    /// past this, its new ones are closed at once, so that one client cannot hold
    /// every place. Behind a proxy every client has the proxy's address: raise it.
    pub max_connections_per_address: usize,
    /// Requests without a valid token answered (and recorded) per second from one
    /// client address, in bursts of ten times as many, and twenty times as many
    /// server-wide; past that they are refused with 429 and, but for one an address a
    /// minute, not recorded (`api::throttle`). 0: no limit.
    pub unauthenticated_per_second: u32,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for a connection's first request to arrive (HTTP/1.1 and HTTP/2), and for
    /// each request's headers (HTTP/1.1, also on an idle keep-alive connection); HTTP/2
    /// connections are pinged at this interval and closed when a ping goes unanswered
    /// as long.
    pub header_read_timeout: Duration,
    /// Time for a request's body to arrive once its headers have.
    pub body_read_timeout: Duration,
    /// Time a connection may stay open with no request under way; then it is closed
    /// gracefully (HTTP/2: a GOAWAY). HTTP/1.1 keep-alive connections are closed sooner,
    /// at `header_read_timeout`, when that is shorter.
    pub idle_timeout: Duration,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_address: 1024,
            unauthenticated_per_second: 2,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: crate::api::BODY_READ_TIMEOUT,
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Requests one HTTP/2 connection may have open at once (hyper's default is 200): each
/// may hold a body of up to `MAX_BODY_BYTES` while it arrives.
const MAX_CONCURRENT_STREAMS: u32 = 32;

/// The open connections of each client address (IPv6 clients by /64, which one client
/// usually has whole).
#[derive(Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's place in [`PerAddress`], given back when dropped.
struct AddressPlace(Arc<PerAddress>, std::net::IpAddr);

/// The client an address stands for: an IPv4 address (also one seen as IPv4-mapped
/// IPv6), or an IPv6 address's /64, which one client usually has whole.
pub(crate) fn client_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX)).into(),
        },
        v4 => v4,
    }
}

impl PerAddress {
    /// A place for a connection from `ip`, unless it has `max` already.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<AddressPlace> {
        let client = client_of(ip);
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(client).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressPlace(self.clone(), client))
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut open = self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// The requests under way on one connection, and when the last one ended.
struct Activity {
    /// Whether any request has begun.
    asked: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Response bodies still being sent (their handlers have returned).
    sending: std::sync::atomic::AtomicUsize,
    idle_since: std::sync::Mutex<tokio::time::Instant>,
    /// Told when the last request under way ends.
    quiet: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            asked: false.into(),
            in_flight: 0.into(),
            sending: 0.into(),
            idle_since: std::sync::Mutex::new(tokio::time::Instant::now()),
            quiet: tokio::sync::Notify::new(),
        })
    }

    /// Something was sent on the connection now (a frame of a response body).
    fn touch(&self) {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
    }

    fn asked(&self) -> bool {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When the connection has been idle for `timeout`, or `None` while a request is
    /// under way.
    fn idle_deadline(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        if self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(since + timeout)
    }
}

/// A response body that counts each frame it hands to the connection as the
/// connection's activity: a long download (a backup) that keeps moving is not taken for
/// an idle connection once its handler has returned, and one the client stops taking (an
/// HTTP/2 window kept at 0, an HTTP/1 client that stops reading) still is, an idle
/// timeout after its last frame.
struct Progressing {
    body: axum::body::Body,
    activity: Arc<Activity>,
}

impl Progressing {
    /// Counted among the bodies being sent until it ends or is dropped.
    fn new(body: axum::body::Body, activity: Arc<Activity>) -> Self {
        activity
            .sending
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self { body, activity }
    }
}

impl Drop for Progressing {
    fn drop(&mut self) {
        self.activity
            .sending
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl hyper::body::Body for Progressing {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            self.activity.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// One request under way on a connection; its end is the connection's latest activity.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity
            .asked
            .store(true, std::sync::atomic::Ordering::Relaxed);
        activity
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first, so that a check that sees no request under way also sees when
        // the last one ended.
        self.0.touch();
        let before = self
            .0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        if before == 1 {
            self.0.quiet.notify_one();
        }
    }
}

/// Bytes of request line and headers an HTTP/1 connection buffers (hyper's default is
/// about 400 KB); HTTP/2 header lists are limited to 16 KB by default.
const MAX_HEADER_BUFFER: usize = 32 * 1024;

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish (HTTP/2 connections get a GOAWAY, idle HTTP/1 ones are closed) for
/// up to `limits.shutdown_grace`. A connection with no request under way for
/// `limits.idle_timeout` is closed the same way.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let places = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let permits = Arc::new(tokio::sync::Semaphore::new(places));
    let per_address = Arc::new(PerAddress::default());
    let connections = Arc::new(Connections::default());
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(place) = per_address.take(peer.ip(), limits.max_connections_per_address.max(1))
        else {
            tracing::debug!(%peer, "connection refused: its address has the most connections allowed");
            continue;
        };
        // A place: at the limit, the connection idle longest (no request under way; one
        // that never sent a request counts as idle since it was opened) is asked to close
        // and makes way for this one, which waits (and the next ones in the kernel's
        // backlog) until a place is free. Connections that hold places without using them
        // cannot keep new clients out.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(tokio::sync::TryAcquireError::Closed) => None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                wait_for_place(&permits, &connections, shutdown.as_mut()).await
            }
        };
        let Some(permit) = permit else {
            break;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = limits.clone();
        let mut stopping = stopping_rx.clone();
        let activity = Activity::new();
        let requests = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_STREAMS as usize));
        let registered = connections.register(activity.clone(), requests.clone());
        tokio::spawn(async move {
            let places = Arc::new(ConnectionPlaces {
                registered,
                _permit: permit,
                _place: place,
            });
            let registered = &places.registered;
            let evicted = registered.evicted();
            // A handshake under way when the server stops (or the connection is asked to
            // make way) is given up at once.
            let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
            let tls = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                _ = stopping.wait_for(|s| *s) => return,
                () = evicted.notified() => return,
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let app = tower::service_fn({
                let activity = activity.clone();
                let (requests, places) = (requests.clone(), places.clone());
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let under_way = InFlight::begin(&activity);
                    req.extensions_mut().insert(PeerAddr(peer));
                    let app = app.clone();
                    let activity = activity.clone();
                    let (requests, places) = (requests.clone(), places.clone());
                    async move {
                        // One of the connection's request places, in the request's
                        // extensions: a request other than GET/HEAD keeps it until it
                        // ends, also when it goes on after its stream was reset.
                        // (The semaphore is never closed.)
                        let place = requests.acquire_owned().await.ok();
                        req.extensions_mut()
                            .insert(ConnectionHold(Arc::new((places, place))));
                        let resp = tower::ServiceExt::oneshot(app, req).await;
                        // The body counts as being sent before the request stops counting
                        // as under way: the connection is never idle in between.
                        let resp = resp.map(|r| {
                            r.map(|body| axum::body::Body::new(Progressing::new(body, activity)))
                        });
                        drop(under_way);
                        resp
                    }
                }
            });
            let svc = TowerToHyperService::new(app);
            // The protocol ALPN agreed on, so that no time is spent guessing it from the
            // first bytes (a wait without a timeout).
            let mut builder = Builder::new(TokioExecutor::new());
            builder = if h2 {
                builder.http2_only()
            } else {
                builder.http1_only()
            };
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(MAX_HEADER_BUFFER);
            builder
                .http2()
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.header_read_timeout)
                .keep_alive_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            let first_by = tokio::time::Instant::now() + limits.header_read_timeout;
            let mut closing = false;
            // Once told to close, a connection gets the header timeout to finish what it
            // is sending; a client that does not take its responses (an HTTP/2 window
            // kept at 0, an HTTP/1 client that stops reading) is then cut off.
            let mut cut_at: Option<tokio::time::Instant> = None;
            let ended = loop {
                // The first request must come within the header timeout on either
                // protocol (an HTTP/2 client that stops inside its preface, or sends no
                // stream); later, the connection may stay idle for the idle timeout.
                // Looked at again whenever the last request under way ends.
                let check = if activity.asked() {
                    activity.idle_deadline(limits.idle_timeout)
                } else {
                    Some(first_by)
                };
                tokio::select! {
                    r = &mut conn => break r,
                    () = tokio::time::sleep_until(cut_at.unwrap_or(first_by)), if cut_at.is_some() => {
                        tracing::debug!(%peer, "cutting off a connection that did not finish after it was told to close");
                        return;
                    }
                    _ = stopping.wait_for(|s| *s), if !closing => {
                        registered.closing();
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        cut_at = Some(tokio::time::Instant::now() + limits.header_read_timeout);
                    }
                    () = evicted.notified(), if !closing => {
                        if !activity.asked() {
                            return;
                        }
                        // A request begun since it was picked: it stays, and may be
                        // picked again once idle.
                        if registered.busy() {
                            registered.reopen();
                            continue;
                        }
                        tracing::debug!(%peer, "closing an idle connection to make way for a new one");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        cut_at = Some(tokio::time::Instant::now() + EVICTED_GRACE);
                    }
                    () = activity.quiet.notified(), if !closing => {}
                    _ = tokio::time::sleep_until(check.unwrap_or(first_by)), if !closing && check.is_some() => {
                        if !activity.asked() {
                            return;
                        }
                        if activity
                            .idle_deadline(limits.idle_timeout)
                            .is_some_and(|d| d <= tokio::time::Instant::now())
                        {
                            tracing::debug!(%peer, "closing an idle connection");
                            registered.closing();
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                            cut_at = Some(tokio::time::Instant::now() + limits.header_read_timeout);
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // No new connections while the ones in flight finish.
    drop(listener);
    let _ = stopping_tx.send(true);
    // Every connection has ended once all the places are back.
    let all = u32::try_from(places).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("requests still running at the end of the shutdown grace period");
    }
}

/// The TCP peer of a request.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// How long a response body may go without sending a frame and still keep its connection
/// from being asked to make way.
const SENDING_STALL: Duration = Duration::from_secs(5);

/// How long a connection asked to make way gets to finish closing before it is cut off.
const EVICTED_GRACE: Duration = Duration::from_secs(1);

/// How often a new connection waiting for a place asks another connection to make way.
const EVICT_RETRY: Duration = Duration::from_millis(500);

/// A place for a new connection at the limit: a connection that is not busy is asked to
/// make way, and another every [`EVICT_RETRY`] until a place is free (all busy: the
/// new one waits, asking again as they become idle). `None` once the server stops.
async fn wait_for_place(
    permits: &Arc<tokio::sync::Semaphore>,
    connections: &Connections,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let mut retry = tokio::time::interval(EVICT_RETRY);
    loop {
        tokio::select! {
            () = &mut shutdown => return None,
            p = permits.clone().acquire_owned() => return p.ok(),
            _ = retry.tick() => {
                if connections.evict_idlest() {
                    tracing::debug!("at the connection limit: a connection makes way for a new one");
                }
            }
        }
    }
}

/// The connections being served, so that at the limit the idlest makes way.
#[derive(Default)]
struct Connections {
    next: std::sync::atomic::AtomicU64,
    open: std::sync::Mutex<std::collections::HashMap<u64, Arc<Served>>>,
}

/// One connection being served: its activity, its request places, and how it is asked
/// to make way.
struct Served {
    activity: Arc<Activity>,
    requests: Arc<tokio::sync::Semaphore>,
    evict: tokio::sync::Notify,
    /// Asked to make way, or closing for another reason: not to be picked.
    evicted: std::sync::atomic::AtomicBool,
}

impl Served {
    /// A request under way, a response body still moving (a frame sent within
    /// [`SENDING_STALL`]: one the client stopped taking does not keep the connection), or
    /// a request that went on after its client left (which keeps one of the request
    /// places).
    fn busy(&self) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        let moving = || {
            self.activity.sending.load(Acquire) > 0
                && self
                    .activity
                    .idle_since
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .elapsed()
                    < SENDING_STALL
        };
        self.activity.in_flight.load(Acquire) > 0
            || self.requests.available_permits() < MAX_CONCURRENT_STREAMS as usize
            || moving()
    }
}

/// A connection's entry in [`Connections`], removed when dropped.
struct Registered(Arc<Connections>, u64, Arc<Served>);

impl Registered {
    /// Told once the connection is asked to make way.
    fn evicted(&self) -> &tokio::sync::Notify {
        &self.2.evict
    }

    fn busy(&self) -> bool {
        self.2.busy()
    }

    /// Closing for another reason: not to be picked to make way.
    fn closing(&self) {
        self.2
            .evicted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Asked to make way while busy: may be picked again.
    fn reopen(&self) {
        self.2
            .evicted
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.1);
    }
}

impl Connections {
    fn register(
        self: &Arc<Self>,
        activity: Arc<Activity>,
        requests: Arc<tokio::sync::Semaphore>,
    ) -> Registered {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let served = Arc::new(Served {
            activity,
            requests,
            evict: tokio::sync::Notify::new(),
            evicted: false.into(),
        });
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, served.clone());
        Registered(self.clone(), id, served)
    }

    /// Asks a connection that is not busy to close: first one that never sent a request
    /// (or is still in its handshake), then the one idle longest; `false` when every
    /// connection is busy or already closing.
    fn evict_idlest(&self) -> bool {
        let open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idlest = open
            .values()
            .filter(|c| !c.evicted.load(std::sync::atomic::Ordering::Relaxed) && !c.busy())
            .filter_map(|c| {
                c.activity
                    .idle_deadline(Duration::ZERO)
                    .map(|since| ((c.activity.asked(), since), c))
            })
            .min_by_key(|(order, _)| *order);
        match idlest {
            Some((_, c)) => {
                c.evicted.store(true, std::sync::atomic::Ordering::Relaxed);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// What a request holds of its connection: the connection's places (the server's and
/// its address's) and one of the connection's request places (as many as HTTP/2 streams
/// it may have open). A request that goes on after its client left (see
/// `api::guard::audit`) keeps a clone until it ends, so the connection limits still bound
/// the work under way, and a shutdown waits for it (within its grace period).
#[derive(Clone)]
pub struct ConnectionHold(#[allow(dead_code)] Arc<(Arc<ConnectionPlaces>, Option<RequestPlace>)>);

/// A connection's places: the server's and its address's, and its entry among the
/// connections served, which goes first (fields drop in order): a connection that gave
/// its place back is never picked to make way.
struct ConnectionPlaces {
    registered: Registered,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _place: AddressPlace,
}

/// One of a connection's request places.
type RequestPlace = tokio::sync::OwnedSemaphorePermit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_written_over_an_open_one_becomes_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls-key.pem");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Someone opened it while it was readable by others.
        let mut held = std::fs::File::open(&path).unwrap();
        write_private(&path, b"key").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"key");
        let mut seen = Vec::new();
        std::io::Read::read_to_end(&mut held, &mut seen).unwrap();
        assert_eq!(seen, b"old", "the key reached a file opened before");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_places_are_given_back() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("192.0.2.7")), ip("192.0.2.7"));
        let open = Arc::new(PerAddress::default());
        let a = open.take(ip("2001:db8:1:2::1"), 2).unwrap();
        let _b = open.take(ip("2001:db8:1:2::2"), 2).unwrap();
        assert!(open.take(ip("2001:db8:1:2::3"), 2).is_none(), "same /64");
        assert!(open.take(ip("2001:db8:1:3::1"), 2).is_some(), "another /64");
        drop(a);
        assert!(open.take(ip("2001:db8:1:2::3"), 2).is_some());
    }
}
