use reqwest::Method;
use strongbox_client::ErrorCode;

use crate::common::*;

#[tokio::test]
async fn authentication_and_error_format() {
    let s = TestServer::start().await;
    let base = format!("https://127.0.0.1:{}", s.addr.port());
    let h = s.http();

    // Health needs no token; everything else does.
    assert_eq!(
        h.get(format!("{base}/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for path in [
        "/v1/secrets",
        "/v1/keys",
        "/v1/openapi.json",
        "/metrics",
        "/v1/rotation-policies",
    ] {
        let r = h.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let header_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "Unauthenticated");
        assert_eq!(body["request_id"], header_id.as_str());
    }
    assert_code(
        s.client_with_token("sbx_wrong").describe_secret("x").await,
        ErrorCode::Unauthenticated,
        "token",
    );

    let auth = format!("Bearer {}", s.token);
    // Framework rejections in the API's format.
    let r = h
        .post(format!("{base}/v1/secrets"))
        .header("authorization", &auth)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "UnsupportedMediaType"
    );
    let r = h
        .post(format!("{base}/v1/secrets"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(r#"{"name": "x", "secret_data": "y", "colour": "red"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "InvalidParameter");
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );
    let r = h
        .post(format!("{base}/v1/secrets"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(r#"{"name": "x""#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = h
        .post(format!("{base}/v1/secrets"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(vec![b' '; strongbox_server::api::MAX_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "PayloadTooLarge"
    );
    let r = h
        .get(format!("{base}/v1/nothing"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "NotFound"
    );
    let r = h
        .put(format!("{base}/v1/secrets"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "MethodNotAllowed"
    );
    let r = h
        .get(format!("{base}/v1/secrets/x/value?colour=red"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "InvalidParameter"
    );
    let (status, _) = s
        .client
        .raw(Method::GET, &["v1", "secrets"], None)
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn plain_http_is_not_served() {
    let s = TestServer::start().await;
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v1/health", s.addr.port()))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
}

#[tokio::test]
async fn openapi_matches_the_checked_in_document_and_metrics_count_routes() {
    let s = TestServer::start().await;
    let served = s.client.openapi().await.unwrap();
    let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/openapi.json");
    let generated =
        serde_json::to_string_pretty(&strongbox_server::api::openapi_document()).unwrap() + "\n";
    if std::env::var_os("STRONGBOX_BLESS").is_some() {
        std::fs::write(golden_path, &generated).unwrap();
    }
    let golden = std::fs::read_to_string(golden_path)
        .expect("schemas/openapi.json (STRONGBOX_BLESS=1 cargo test writes it)");
    assert_eq!(
        generated, golden,
        "the API changed: review, then run STRONGBOX_BLESS=1 cargo test"
    );
    assert_eq!(
        served,
        serde_json::from_str::<serde_json::Value>(&golden).unwrap()
    );
    // Every route is in the document with its action.
    let paths = served["paths"].as_object().unwrap();
    assert_eq!(
        paths["/v1/secrets/{name}/value"]["get"]["x-strongbox-action"],
        "kms:GetSecretValue"
    );
    assert!(served["components"]["schemas"]["Secret"].is_object());
    // A body that may be left out is not required; the others are.
    let required = |path: &str| paths[path]["post"]["requestBody"]["required"].clone();
    for optional in [
        "/v1/keys/{key_id}/schedule-deletion",
        "/v1/secrets/{name}/rotate",
        "/v1/principals/{name}/tokens",
    ] {
        assert_eq!(required(optional), false, "{optional}");
    }
    assert_eq!(required("/v1/secrets"), true);
    // Every operation has an id of its own.
    let mut ids = std::collections::BTreeSet::new();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path}");
            assert!(ids.insert(id.to_string()), "{method} {path}: {id} twice");
        }
    }

    s.client.health().await.unwrap();
    // Limits as the document gives them are the ones the server takes, and the alias
    // route names the header it acts on.
    let limit = |path: &str| {
        paths[path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap()["schema"]
            .clone()
    };
    for (path, max) in [("/v1/secrets", 100), ("/v1/keys", 100), ("/v1/audit", 1000)] {
        let l = limit(path);
        assert_eq!(
            (l["minimum"].clone(), l["maximum"].clone()),
            (1.into(), max.into()),
            "{path}: {l}"
        );
    }
    assert!(
        paths["/v1/aliases/{alias}"]["put"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "If-None-Match" && p["in"] == "header")
    );
    // The metrics are OpenMetrics text, and say so.
    let r = s
        .http()
        .get(format!("{}/metrics", s.base()))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    let m = s.client.metrics().await.unwrap();
    assert!(
        m.contains(
            r#"strongbox_http_requests_total{method="GET",route="/v1/openapi.json",status="200"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains("strongbox_http_request_duration_seconds_bucket"),
        "{m}"
    );
}

/// A value sent in the wrong shape is refused naming the field and what was expected,
/// without repeating the value (it may be the secret: a PIN sent as a number).
#[tokio::test]
async fn a_value_of_the_wrong_type_is_not_repeated_in_the_error() {
    let s = TestServer::start().await;
    let h = s.http();
    let auth = format!("Bearer {}", s.token);
    for (path, body) in [
        ("/v1/secrets", r#"{"name": "pin", "secret_data": 48151623}"#),
        (
            "/v1/secrets",
            r#"{"name": "pin", "secret_data": "x", "secret_data_type": "pin-48151623"}"#,
        ),
    ] {
        let r = h
            .post(format!("{}{path}", s.base()))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "InvalidParameter", "{v}");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains("secret_data"), "{message}");
        assert!(message.contains("expected"), "{message}");
        assert!(!message.contains("48151623"), "{message}");
    }
}

/// The count of `route` / `status` in the metrics text (0 when the series is absent).
fn requests_counted(metrics: &str, method: &str, route: &str, status: u16) -> u64 {
    let series = format!(
        r#"strongbox_http_requests_total{{method="{method}",route="{route}",status="{status}"}} "#
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.parse().unwrap())
}

/// Every request is counted once with the status its client got: also a request that
/// matched no route, and a read whose answer the audit trail replaced with an error.
#[tokio::test]
async fn metrics_count_every_request_with_the_status_it_was_answered_with() {
    let s = TestServer::start().await;
    let c = &s.client;
    let h = s.http();
    let auth = format!("Bearer {}", s.token);
    c.create_secret(&text_secret("m", "v")).await.unwrap();
    c.get_secret_value("m", None, None).await.unwrap();
    let status = |r: reqwest::Response| r.status().as_u16();
    let nope = h
        .get(format!("{}/v1/nope", s.base()))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(status(nope), 404);
    let wrong = h
        .delete(format!("{}/v1/health", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(status(wrong), 405);
    let odd = h
        .request(
            Method::from_bytes(b"BREW").unwrap(),
            format!("{}/v1/health", s.base()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(status(odd), 405);
    // A read whose record cannot be written is answered 503, not with its value.
    s.service.set_audit_failpoint(true);
    assert_code(
        c.get_secret_value("m", None, None).await,
        ErrorCode::Unavailable,
        "audit",
    );
    s.service.set_audit_failpoint(false);

    let m = c.metrics().await.unwrap();
    let value = "/v1/secrets/{name}/value";
    assert_eq!(requests_counted(&m, "GET", value, 200), 1, "{m}");
    assert_eq!(requests_counted(&m, "GET", value, 503), 1, "{m}");
    assert_eq!(requests_counted(&m, "POST", "/v1/secrets", 201), 1, "{m}");
    assert_eq!(requests_counted(&m, "GET", "unmatched", 404), 1, "{m}");
    assert_eq!(requests_counted(&m, "DELETE", "unmatched", 405), 1, "{m}");
    // A method outside the standard ones does not become a label of its own.
    assert_eq!(requests_counted(&m, "OTHER", "unmatched", 405), 1, "{m}");
    assert!(!m.contains("BREW"), "{m}");
    // Both reads are in the route's latency histogram.
    let count = format!(
        r#"strongbox_http_request_duration_seconds_count{{method="GET",route="{value}"}} 2"#
    );
    assert!(m.lines().any(|l| l == count), "{m}");
}

#[tokio::test]
async fn an_optional_body_without_a_json_content_type_is_refused_not_ignored() {
    let s = TestServer::start().await;
    let base = s.base();
    let h = s.http();
    let auth = format!("Bearer {}", s.token);
    s.client
        .create_principal(&strongbox_schemas::CreatePrincipalRequest {
            name: "app".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let k = s.client.create_key(&Default::default()).await.unwrap();
    let send = |path: &str, content_type: Option<&str>, body: &'static str| {
        let mut rb = h
            .post(format!("{base}{path}"))
            .header("authorization", &auth)
            .body(body);
        if let Some(t) = content_type {
            rb = rb.header("content-type", t);
        }
        rb.send()
    };
    let tokens = "/v1/principals/app/tokens";
    let expiring = r#"{"expires_at": "2026-01-02T00:00:00Z"}"#;
    let schedule = format!("/v1/keys/{}/schedule-deletion", k.key_id);
    // A token meant to expire, a deletion window: sent without saying JSON.
    for (path, body) in [
        (tokens, expiring),
        (schedule.as_str(), r#"{"pending_window_in_days": 7}"#),
    ] {
        for t in [None, Some("text/plain")] {
            let r = send(path, t, body).await.unwrap();
            assert_eq!(r.status(), 415, "{path} {t:?}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["code"], "UnsupportedMediaType", "{body}");
        }
    }
    // Nothing happened.
    assert!(s.client.list_tokens("app").await.unwrap().tokens.is_empty());
    assert_eq!(
        s.client.describe_key(&k.key_id).await.unwrap().state,
        strongbox_schemas::KeyState::Enabled
    );
    // An empty body is still allowed, with or without a content type; JSON is read.
    let r = send(tokens, None, "").await.unwrap();
    assert_eq!(r.status(), 201);
    let r = send(tokens, Some("application/json"), expiring)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["expires_at"], "2026-01-02T00:00:00Z", "{created}");
    let r = send(&schedule, None, "").await.unwrap();
    assert_eq!(r.status(), 200);
    // Media types are case-insensitive: a create (whose body is read to authorize it)
    // and an optional body take them as a typed body does.
    let r = send(
        "/v1/secrets",
        Some("Application/JSON; charset=UTF-8"),
        r#"{"name": "cased", "secret_data": "v"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = send(tokens, Some("APPLICATION/JSON"), expiring)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// A body on a route that takes none, or a query string on a route without query
/// parameters, is refused naming what was misplaced (the parameter names, never their
/// values), and nothing is done: not done with the defaults instead.
#[tokio::test]
async fn misplaced_parameters_are_refused_not_ignored() {
    let s = TestServer::start().await;
    let base = s.base();
    let h = s.http();
    let auth = format!("Bearer {}", s.token);
    s.client
        .create_secret(&text_secret("db", "v1"))
        .await
        .unwrap();
    let k = s.client.create_key(&Default::default()).await.unwrap();
    // AWS-style parameters in a DELETE's JSON body.
    let r = h
        .delete(format!("{base}/v1/secrets/db"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"force_delete_without_recovery": true}))
        .send()
        .await
        .unwrap();
    invalid_parameter(r, "takes no request body").await;
    let d = s.client.describe_secret("db").await.unwrap();
    assert!(d.planned_delete_time.is_none(), "not deleted");
    // A deletion window in the query of a route that takes it in the body.
    let r = h
        .post(format!(
            "{base}/v1/keys/{}/schedule-deletion?pending_window_in_days=7&secret=hunter2",
            k.key_id
        ))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    let m = invalid_parameter(r, "pending_window_in_days, secret").await;
    assert!(!m.contains("hunter2"), "{m}");
    let r = h
        .post(format!(
            "{base}/v1/keys/{}/schedule-deletion?hunter2",
            k.key_id
        ))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    let m = invalid_parameter(r, "a parameter without a value").await;
    assert!(!m.contains("hunter2"), "{m}");
    assert_eq!(
        s.client.describe_key(&k.key_id).await.unwrap().state,
        strongbox_schemas::KeyState::Enabled
    );
    let r = h
        .get(format!("{base}/v1/secrets/db/versions?limit=5"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    invalid_parameter(r, "takes no query parameters").await;
    // Routes with query parameters take them; an empty query is no query.
    for path in [
        "/v1/secrets/db/value?version_stage=ACSCurrent",
        "/v1/secrets/db/versions?",
    ] {
        let r = h
            .get(format!("{base}{path}"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // An unknown parameter of a route with parameters: its name is repeated only when
    // it was given a value (a bare one may be a value or a token pasted in).
    for (path, named) in [
        ("/v1/secrets/db/value?sbx_hunter2", false),
        ("/v1/secrets?sbx_hunter2", false),
        ("/v1/audit?sbx_hunter2", false),
        ("/v1/secrets?colour=hunter2", true),
    ] {
        let r = h
            .get(format!("{base}{path}"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        let m = invalid_parameter(r, "unknown parameter").await;
        assert!(!m.contains("hunter2"), "{path}: {m}");
        assert_eq!(m.contains("colour"), named, "{path}: {m}");
    }
}

/// An empty `encryption_key_id` in an update is refused as such (at create it means
/// the default key), not answered as a forbidden or missing key named "".
#[tokio::test]
async fn an_empty_key_in_an_update_is_invalid() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("keyed", "v1"))
        .await
        .unwrap();
    let before = s.client.describe_secret("keyed").await.unwrap();
    assert_code(
        s.client
            .update_secret(
                "keyed",
                &strongbox_schemas::UpdateSecretRequest {
                    encryption_key_id: Some(String::new()),
                    ..Default::default()
                },
            )
            .await,
        strongbox_client::ErrorCode::InvalidParameter,
        "encryption_key_id",
    );
    let after = s.client.describe_secret("keyed").await.unwrap();
    assert_eq!(after.encryption_key_id, before.encryption_key_id);
}

/// The SDK sends its token only where it was told: a redirect is not followed, not
/// even to another path of the same server (where reqwest would keep the
/// Authorization header), let alone to plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_does_not_follow_redirects_with_its_token() {
    use std::sync::{Arc, Mutex};
    let certs = strongbox_server::tls::dev_certificates().unwrap();
    let cfg =
        strongbox_server::tls::server_config(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
            .unwrap();
    // `/landing` records any Authorization header it is sent; everything else
    // redirects there.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new()
        .route(
            "/landing",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let record = record.clone();
                async move {
                    if let Some(v) = headers.get("authorization") {
                        record.lock().unwrap().push(v.to_str().unwrap().to_string());
                    }
                    "{}"
                }
            }),
        )
        .fallback(|| async {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [("location", "/landing")],
            )
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(strongbox_server::tls::serve(
        listener,
        cfg,
        app,
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = strongbox_client::Client::new(strongbox_client::ClientConfig {
        address: format!("https://127.0.0.1:{port}"),
        token: "sbx_the-token-that-must-stay".into(),
        ca_cert_pem: Some(certs.ca_pem.into_bytes()),
        timeout: Some(std::time::Duration::from_secs(5)),
    })
    .unwrap();
    let e = client.describe_secret("x").await.unwrap_err();
    assert!(e.to_string().contains("307"), "{e}");
    assert!(seen.lock().unwrap().is_empty(), "the redirect was followed");
}

/// Commits fail while `fail` is set (a full disk, an I/O error).
struct FailingCommits {
    inner: std::sync::Arc<dyn strongbox_server::storage::Backend>,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl strongbox_server::storage::Backend for FailingCommits {
    fn get(
        &self,
        table: strongbox_server::storage::Table,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, strongbox_server::storage::StorageError> {
        self.inner.get(table, key)
    }
    fn scan(
        &self,
        table: strongbox_server::storage::Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<strongbox_server::storage::Entries, strongbox_server::storage::StorageError> {
        self.inner.scan(table, prefix, after, limit)
    }
    fn snapshot(
        &self,
    ) -> Result<
        Box<dyn strongbox_server::storage::Reader + '_>,
        strongbox_server::storage::StorageError,
    > {
        self.inner.snapshot()
    }
    fn commit(
        &self,
        mutations: &[strongbox_server::storage::Mutation],
    ) -> Result<(), strongbox_server::storage::StorageError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(strongbox_server::storage::StorageError(
                "No space left on device".into(),
            ));
        }
        self.inner.commit(mutations)
    }
}

/// While commits fail, requests fail (reads too: their audit records are writes),
/// nothing is half-written, and /v1/health says so with 503, until a commit succeeds.
#[tokio::test]
async fn health_reports_failing_storage_until_it_recovers() {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fail.clone();
    let s = TestServer::start_wrapped(Default::default(), move |inner| {
        std::sync::Arc::new(FailingCommits { inner, fail: f })
    })
    .await;
    s.client
        .create_secret(&text_secret("before", "v"))
        .await
        .unwrap();
    let base = format!("https://127.0.0.1:{}", s.addr.port());
    let health = || {
        let h = s.http();
        let url = format!("{base}/v1/health");
        async move {
            let r = h.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body["status"].as_str().unwrap().to_string())
        }
    };
    assert_eq!(health().await, (200, "ok".into()));
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        s.client
            .create_secret(&text_secret("during", "v"))
            .await
            .is_err()
    );
    assert!(
        s.client
            .get_secret_value("before", None, None)
            .await
            .is_err()
    );
    assert_eq!(health().await, (503, "storage_failing".into()));
    // The SDK: `Unavailable` (transient), naming the status; the OpenAPI document gives
    // the 503 the health body, not the error format.
    let e = s.client.health().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e:?}");
    assert!(
        e.is_transient() && e.to_string().contains("storage_failing"),
        "{e}"
    );
    let doc = strongbox_server::api::openapi_document();
    assert_eq!(
        doc["paths"]["/v1/health"]["get"]["responses"]["503"]["content"],
        doc["paths"]["/v1/health"]["get"]["responses"]["200"]["content"]
    );
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    s.client
        .create_secret(&text_secret("after", "v"))
        .await
        .unwrap();
    assert_eq!(health().await, (200, "ok".into()));
    assert_code(
        s.client.describe_secret("during").await,
        ErrorCode::SecretNotFound,
        "during",
    );
}

/// A certificate that does not verify is a configuration error, not worth retrying
/// (`strongbox secret rotate` and `audit tail` would otherwise ask again until their
/// deadline); a closed port is transient.
#[tokio::test]
async fn a_certificate_that_does_not_verify_is_not_retried_as_transient() {
    let s = TestServer::start().await;
    let client_trusting = |address: String, ca: &str| {
        strongbox_client::Client::new(strongbox_client::ClientConfig {
            address,
            token: "unused".into(),
            ca_cert_pem: Some(ca.as_bytes().to_vec()),
            timeout: Some(std::time::Duration::from_secs(5)),
        })
        .unwrap()
    };
    let other_ca = strongbox_server::tls::dev_certificates().unwrap().ca_pem;
    let e = client_trusting(format!("https://{}", s.addr), &other_ca)
        .health()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, strongbox_client::Error::Config(m) if m.contains("STRONGBOX_CACERT")),
        "{e:?}"
    );
    assert!(!e.is_transient());
    client_trusting(format!("https://{}", s.addr), &s.ca_pem)
        .health()
        .await
        .unwrap();
    // Nothing listens on a port just freed: transient.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = client_trusting(format!("https://{closed}"), &s.ca_pem)
        .health()
        .await
        .unwrap_err();
    assert!(matches!(&e, strongbox_client::Error::Transport(_)), "{e:?}");
    assert!(e.is_transient());
}
