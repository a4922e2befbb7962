//! Behind a reverse proxy, as in most deployments: a gateway (HTTPS, forwarding every
//! request to the real server) that can lose the server's answer and send its own
//! body-less error page instead, as nginx does when its upstream read times out. The SDK
//! and the CLI must neither do a change twice nor take the gateway's page for the
//! server's verdict.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use strongbox_client::{Client, ClientConfig};
use strongbox_schemas::RotationStrategy;
use strongbox_server::tls;

use crate::common::*;

/// Answers to lose: requests whose path ends with `suffix` get `status` (an HTML page)
/// after the server has answered them, `count` times.
struct Lose {
    suffix: String,
    status: u16,
    count: usize,
    /// A JSON body of the gateway's own instead of the HTML page.
    json: Option<String>,
}

struct Gw {
    upstream: String,
    http: reqwest::Client,
    lose: Mutex<Option<Lose>>,
    /// (method, path) of every request forwarded.
    seen: Mutex<Vec<(String, String)>>,
}

/// Serves `app` over HTTPS on a loopback port, with a certificate of its own; returns
/// the address and the CA to trust.
async fn serve_https(app: axum::Router) -> (std::net::SocketAddr, String) {
    let certs = tls::dev_certificates().unwrap();
    let cfg = tls::server_config(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tls::serve(
        listener,
        cfg,
        app,
        tls::ConnectionLimits::default(),
        std::future::pending(),
    ));
    (addr, certs.ca_pem)
}

struct Gateway {
    state: Arc<Gw>,
    addr: std::net::SocketAddr,
    ca_pem: String,
}

impl Gateway {
    async fn start(s: &TestServer) -> Self {
        let state = Arc::new(Gw {
            upstream: s.base(),
            http: s.http(),
            lose: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let (addr, ca_pem) = serve_https(app).await;
        Self {
            state,
            addr,
            ca_pem,
        }
    }

    fn lose(&self, suffix: &str, status: u16, count: usize) {
        self.lose_with(suffix, status, count, None);
    }

    /// As [`Self::lose`], answering `json` (with its content type) instead of a page.
    fn lose_with(&self, suffix: &str, status: u16, count: usize, json: Option<&str>) {
        *self.state.lose.lock().unwrap() = Some(Lose {
            suffix: suffix.into(),
            status,
            count,
            json: json.map(str::to_string),
        });
    }

    /// Requests forwarded whose path ends with `suffix`.
    fn forwarded(&self, suffix: &str) -> usize {
        let seen = self.state.seen.lock().unwrap();
        seen.iter().filter(|(_, p)| p.ends_with(suffix)).count()
    }

    fn client(&self, token: &str) -> Client {
        Client::new(ClientConfig {
            address: self.base(),
            token: token.into(),
            ca_cert_pem: Some(self.ca_pem.as_bytes().to_vec()),
            timeout: None,
        })
        .unwrap()
    }

    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The `strongbox` binary, talking to the server through the gateway.
    fn cli(&self, s: &TestServer, token: &str) -> std::process::Command {
        let mut c = s.cli(token);
        let ca = s.ca_file().with_file_name("gateway-ca.pem");
        std::fs::write(&ca, &self.ca_pem).unwrap();
        c.env("STRONGBOX_ADDR", self.base())
            .env("STRONGBOX_CACERT", ca);
        c
    }
}

async fn forward(State(g): State<Arc<Gw>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts.uri.path().to_string();
    g.seen
        .lock()
        .unwrap()
        .push((parts.method.to_string(), path.clone()));
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    let answer = g
        .http
        .request(parts.method.clone(), format!("{}{pq}", g.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let lost = {
        let mut lose = g.lose.lock().unwrap();
        match lose.as_mut() {
            Some(l) if l.count > 0 && path.ends_with(&l.suffix) => {
                l.count -= 1;
                Some((l.status, l.json.clone()))
            }
            _ => None,
        }
    };
    if let Some((status, json)) = lost {
        let status = StatusCode::from_u16(status).unwrap();
        if let Some(json) = json {
            return (status, [(header::CONTENT_TYPE, "application/json")], json).into_response();
        }
        let page = Html("<html><body><h1>upstream timed out</h1></body></html>");
        return (status, page).into_response();
    }
    match answer {
        Ok(r) => {
            let status = r.status();
            let ct = r.headers().get(header::CONTENT_TYPE).cloned();
            let bytes = r.bytes().await.unwrap();
            let mut resp = (status, bytes).into_response();
            if let Some(ct) = ct {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            resp
        }
        Err(_) => (StatusCode::BAD_GATEWAY, Html("<html>bad gateway</html>")).into_response(),
    }
}

async fn run(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// A put whose answer the gateway lost was committed; the SDK sends it again with the
/// version id it chose, and the server takes the repeat as the same version.
#[tokio::test]
async fn a_put_whose_answer_was_lost_is_sent_again_as_the_same_version() {
    let s = TestServer::start().await;
    let g = Gateway::start(&s).await;
    let c = g.client(&s.token);
    c.create_secret(&text_secret("gw/put", "one"))
        .await
        .unwrap();
    g.lose("/versions", 504, 1);
    let r = c.put_secret_value("gw/put", &put("two")).await.unwrap();
    assert_eq!(g.forwarded("/versions"), 2, "sent twice");
    let versions = s.client.list_secret_versions("gw/put").await.unwrap();
    assert_eq!(versions.versions.len(), 2, "one version added, not two");
    let current = s
        .client
        .get_secret_value("gw/put", None, None)
        .await
        .unwrap();
    assert_eq!(current.secret_data, "two");
    assert_eq!(current.version_id, r.version_id);
    let previous = s
        .client
        .get_secret_value("gw/put", None, Some("ACSPrevious"))
        .await
        .unwrap();
    assert_eq!(
        previous.secret_data, "one",
        "ACSPrevious stays the value before"
    );

    // A gateway that keeps failing: the SDK gives up after three attempts, with the
    // gateway's status, and the server still holds one version for all of them.
    g.lose("/versions", 502, 10);
    let e = c
        .put_secret_value("gw/put", &put("three"))
        .await
        .expect_err("the gateway lost every answer");
    assert_eq!(e.status(), Some(502), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(g.forwarded("/versions"), 5);
    let versions = s.client.list_secret_versions("gw/put").await.unwrap();
    assert_eq!(
        versions.versions.len(),
        3,
        "the three attempts made one version"
    );

    // A version id the caller chose is sent once: retrying is the caller's to decide.
    g.lose("/versions", 503, 1);
    let mut own = put("four");
    own.version_id = Some("v-four".into());
    let e = c.put_secret_value("gw/put", &own).await.expect_err("lost");
    assert_eq!(e.status(), Some(503));
    assert_eq!(g.forwarded("/versions"), 6);
}

/// `secret rotate` through a gateway that times out while the server rotates: the CLI
/// asks again for the same rotation and reports it done, not failed, and the secret
/// rotated once.
#[tokio::test]
async fn secret_rotate_asks_again_when_the_gateway_loses_the_answer() {
    let s = TestServer::start().await;
    let g = Gateway::start(&s).await;
    s.client
        .create_rotation_policy(&crate::rotation::policy(
            "gw-weekly",
            "7d",
            RotationStrategy::Random,
            &[],
        ))
        .await
        .unwrap();
    let mut req = text_secret("gw/rot", "initial");
    req.rotation_policy = Some("gw-weekly".into());
    s.client.create_secret(&req).await.unwrap();
    g.lose("/rotate", 504, 1);
    let mut cmd = g.cli(&s, &s.token);
    cmd.args(["secret", "rotate", "gw/rot", "--wait", "60"]);
    let out = run(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("asking again"), "{err}");
    assert_eq!(g.forwarded("/rotate"), 2);
    let versions = s.client.list_secret_versions("gw/rot").await.unwrap();
    assert_eq!(versions.versions.len(), 2, "rotated once");
    let current = s
        .client
        .get_secret_value("gw/rot", None, None)
        .await
        .unwrap();
    assert_ne!(current.secret_data, "initial");
    // A bare 502 may be the server's RotationFailed with its body dropped by the
    // gateway: not asked again (that would run a failed rotation again). Here the
    // rotation went through, which a read of the versions tells.
    g.lose("/rotate", 502, 1);
    let mut cmd = g.cli(&s, &s.token);
    cmd.args(["secret", "rotate", "gw/rot", "--wait", "60"]);
    let out = run(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(g.forwarded("/rotate"), 3, "sent once");
    let versions = s.client.list_secret_versions("gw/rot").await.unwrap();
    assert_eq!(versions.versions.len(), 3, "rotated once more");
    // One that did not go through (here refused: the secret has no policy), its answer
    // replaced by a bare 502: the read finds no new current version, so it fails.
    s.client
        .create_secret(&text_secret("gw/plain", "x"))
        .await
        .unwrap();
    g.lose("/rotate", 502, 1);
    let mut cmd = g.cli(&s, &s.token);
    cmd.args(["secret", "rotate", "gw/plain", "--wait", "5"]);
    let out = run(cmd).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("502"));
    assert_eq!(g.forwarded("/rotate"), 4, "sent once");
    // A gateway's own JSON error (a code this client does not know, a 503: asked again)
    // whose message holds a terminal escape (here one that would set the clipboard):
    // shown escaped, never sent to the terminal as it is.
    g.lose_with(
        "/rotate",
        503,
        1,
        Some(r#"{"code": "GatewayBusy", "message": "\u001b]52;c;cm0gLXJmIC8=\u0007"}"#),
    );
    let mut cmd = g.cli(&s, &s.token);
    cmd.args(["secret", "rotate", "gw/rot", "--wait", "60"]);
    let out = run(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("asking again") && err.contains("GatewayBusy"),
        "{err}"
    );
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07),
        "{err}"
    );
    assert!(err.contains("\\u{1b}]52"), "{err}");
}

/// `audit verify` through a gateway's error page, or with no way to connect at all: no
/// verdict (exit 2), never "broken" (exit 1).
#[tokio::test]
async fn audit_verify_gives_no_verdict_on_a_gateway_page_or_a_bad_setup() {
    let s = TestServer::start().await;
    let g = Gateway::start(&s).await;
    g.lose("/v1/audit/verify", 502, 1);
    let mut cmd = g.cli(&s, &s.token);
    cmd.args(["audit", "verify"]);
    let out = run(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("could not verify"), "{err}");
    // Through the same gateway, answered: intact.
    let mut cmd = g.cli(&s, &s.token);
    cmd.args(["audit", "verify"]);
    let out = run(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A CA file that is not there: the client cannot be set up.
    let mut cmd = s.cli(&s.token);
    cmd.env("STRONGBOX_CACERT", "/nonexistent/ca.pem")
        .args(["audit", "verify"]);
    let out = run(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("could not verify"), "{err}");
}

/// `audit verify --since` against a server that does not know anchors (an older release,
/// which ignores the query and reports no anchor): no verdict (exit 2), never "intact".
#[tokio::test]
async fn audit_verify_since_gives_no_verdict_on_a_server_without_anchors() {
    use axum::routing::get;
    let s = TestServer::start().await;
    let app = axum::Router::new().route(
        "/v1/audit/verify",
        get(|| async {
            axum::Json(serde_json::json!({"intact": true, "count": 5, "verified": 5}))
        }),
    );
    let (addr, ca_pem) = serve_https(app).await;
    let ca = s.ca_file().with_file_name("older-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let mut cmd = s.cli(&s.token);
    cmd.env(
        "STRONGBOX_ADDR",
        format!("https://127.0.0.1:{}", addr.port()),
    )
    .env("STRONGBOX_CACERT", &ca)
    .args([
        "audit",
        "verify",
        "--since",
        &format!("3:{}", "ab".repeat(32)),
    ]);
    let out = run(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("does not check anchors"), "{err}");
}

/// Something between the client and the server (a misbehaving proxy) that answers with
/// far more than any answer of the API: the SDK stops reading at its limit with a clear
/// error instead of holding it all, for answers and for error pages alike.
#[tokio::test]
async fn an_oversized_answer_is_refused_not_held() {
    use axum::routing::get;
    // A JSON document with a 40 MiB string, in 1 MiB chunks: more than the 32 MiB the SDK
    // reads.
    fn flood(status: StatusCode, prefix: &'static str) -> Response {
        let chunks = std::iter::once(Ok::<_, std::io::Error>(Bytes::from_static(
            prefix.as_bytes(),
        )))
        .chain((0..40).map(|_| Ok(Bytes::from(vec![b'a'; 1 << 20]))))
        // Read whole, it would be JSON that parses (the error page a real error).
        .chain(std::iter::once(Ok(Bytes::from_static(b"\"}"))));
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
        )
            .into_response()
    }
    let app = axum::Router::new()
        .route(
            "/v1/secrets/{name}/value",
            get(|| async { flood(StatusCode::OK, r#"{"secret_data": ""#) }),
        )
        .route(
            "/v1/secrets/{name}",
            get(|| async {
                flood(
                    StatusCode::NOT_FOUND,
                    r#"{"code": "SecretNotFound", "request_id": "r", "message": ""#,
                )
            }),
        );
    let (addr, ca_pem) = serve_https(app).await;
    let c = Client::new(ClientConfig {
        address: format!("https://127.0.0.1:{}", addr.port()),
        token: "sbx_any".into(),
        ca_cert_pem: Some(ca_pem.as_bytes().to_vec()),
        timeout: None,
    })
    .unwrap();
    match c.get_secret_value("big", None, None).await {
        Err(strongbox_client::Error::Decode(m)) => {
            assert!(m.contains("larger than"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // An error answer too long to read is reported by its status alone (read whole, it
    // would be a SecretNotFound).
    match c.describe_secret("big").await {
        Err(strongbox_client::Error::Status { status: 404 }) => {}
        other => panic!("{other:?}"),
    }
}
