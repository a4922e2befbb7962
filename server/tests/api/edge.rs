//! The HTTP edge: connection limits and timeouts, URI and record sizes, HEAD, the
//! bearer scheme.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use strongbox_client::AuditQuery;
use strongbox_server::tls::ConnectionLimits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::*;

/// A TLS connection to the server, trusting its CA, with nothing sent yet.
async fn tls_connect(s: &TestServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_connect_alpn(s, &[]).await
}

/// The same, offering these ALPN protocols.
pub(crate) async fn tls_connect_alpn(
    s: &TestServer,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut s.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(strongbox_server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut cfg = cfg;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Reads until the peer closes (or errors); `true` if that happened within `within`.
async fn closed_within(mut io: impl tokio::io::AsyncRead + Unpin, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_cut_off_after_the_handshake_and_header_timeouts() {
    let s = TestServer::start_with_limits(ConnectionLimits {
        // Not shorter: the test's own handshakes must not time out on a busy machine.
        handshake_timeout: Duration::from_secs(3),
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // Connects, never starts TLS.
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert!(closed_within(tcp, Duration::from_secs(5)).await);

    // Completes the handshake, then sends half a request line and nothing more.
    let mut tls = tls_connect(&s).await;
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    assert!(closed_within(tls, Duration::from_secs(5)).await);

    // An idle keep-alive connection, after a complete request, is closed too.
    let mut tls = tls_connect(&s).await;
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut first = [0u8; 12];
    tls.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_within(tls, Duration::from_secs(5)).await);

    // Handshakes, then sends nothing: as HTTP/1.1 and as HTTP/2.
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let tls = tls_connect_alpn(&s, &[alpn]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        assert!(
            closed_within(tls, Duration::from_secs(5)).await,
            "{}",
            String::from_utf8_lossy(alpn)
        );
    }
    // An HTTP/2 client that stops inside its connection preface.
    let mut tls = tls_connect_alpn(&s, &[b"h2"]).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tls.flush().await.unwrap();
    assert!(closed_within(tls, Duration::from_secs(5)).await);

    // Headers on time, then a body that never finishes: refused when its time is up.
    let mut tls = tls_connect(&s).await;
    let head = format!(
        "POST /v1/secrets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\"",
        s.token
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("did not arrive within 1 s"), "{resp}");
    // Nothing of a body is read before the caller is known: without a token the same
    // request is answered 401, not 400 when the body's time is up.
    let mut tls = tls_connect(&s).await;
    tls.write_all(
        b"POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"name\"",
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut first))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 401");

    // A client that does its part is served as before.
    assert_eq!(s.client.health().await.unwrap().status, "ok");
}

/// Two connections that never start TLS, once the server has taken them.
async fn two_idle_connections(s: &TestServer) -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let a = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    (a, b)
}

/// At the connection limit, the connection idle longest makes way for a new one: two
/// connections that never even start TLS hold both places, and a third is served once
/// one of them was closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_an_idle_connection_makes_way_for_a_new_one() {
    let s = TestServer::start_with_limits(ConnectionLimits {
        max_connections: 2,
        handshake_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let (a, b) = two_idle_connections(&s).await;
    let served = tokio::time::timeout(Duration::from_secs(10), s.client.health()).await;
    assert_eq!(served.unwrap().unwrap().status, "ok");
    let (a_closed, b_closed) = tokio::join!(
        closed_within(a, Duration::from_secs(1)),
        closed_within(b, Duration::from_secs(1))
    );
    assert!(a_closed, "the connection idle longest did not make way");
    assert!(!b_closed, "more connections made way than needed");
}

/// A connection with a request under way is not asked to make way: while every place
/// holds one, a new connection waits until one of them ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_while_every_one_is_busy() {
    let s = TestServer::start_with_limits(ConnectionLimits {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    // Two creates whose bodies never finish arriving: under way for the body timeout.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut tls = tls_connect_alpn(&s, &[b"http/1.1"]).await;
        let head = format!(
            "POST /v1/secrets HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\"",
            &*s.token
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        busy.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = tokio::time::timeout(Duration::from_secs(2), s.client.health()).await;
    assert!(
        waiting.is_err(),
        "a busy connection was closed, or the limit passed"
    );
    // Neither was asked to make way: the first, its body finished, is answered and kept
    // open. Idle then, it makes way for the waiting client.
    let rest = r#":"t/busy","secret_data":"x"}"#;
    let body = format!("{rest}{}", " ".repeat(93 - rest.len()));
    busy[0].write_all(body.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), busy[0].read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before answering");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 201"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let served = tokio::time::timeout(Duration::from_secs(10), s.client.health()).await;
    assert_eq!(served.unwrap().unwrap().status, "ok");
}

/// A connection whose response body the client stopped taking (an HTTP/2 window kept
/// at 0) does not count as busy for long: at the limit, two such connections make way
/// for a new client within seconds, not after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_client_stopped_taking_does_not_keep_its_place() {
    let s = TestServer::start_with_limits(ConnectionLimits {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let _stuck = (stuck_h2(&s).await, stuck_h2(&s).await);
    let served = tokio::time::timeout(Duration::from_secs(20), s.client.health()).await;
    assert_eq!(served.unwrap().unwrap().status, "ok");
}

/// One client address holds a bounded share of the connections: past
/// `max_connections_per_address` its new ones are closed at once, and it is served again
/// once one of its own ends. An HTTP/2 connection has at most 32 requests open at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_a_bounded_share_of_the_connections() {
    let s = TestServer::start_with_limits(ConnectionLimits {
        max_connections_per_address: 2,
        handshake_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let (a, b) = two_idle_connections(&s).await;
    let c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert!(
        closed_within(c, Duration::from_secs(2)).await,
        "a third connection from the address was kept"
    );
    drop(a);
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served = tokio::time::timeout(Duration::from_secs(10), s.client.health()).await;
    assert_eq!(served.unwrap().unwrap().status, "ok");

    let (send, _conn) = h2_open(&s).await;
    assert_eq!(send.current_max_send_streams(), 32);
}

type H2Send = h2::client::SendRequest<axum::body::Bytes>;

/// An HTTP/2 connection (window 0) with a `GET /v1/health` whose response body the client
/// never lets come; the response is kept (a dropped body would reset the stream), and
/// the task driving the connection.
async fn stuck_h2(
    s: &TestServer,
) -> (
    H2Send,
    axum::http::Response<h2::RecvStream>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, axum::body::Bytes>(tls_connect_alpn(s, &[b"h2"]).await)
        .await
        .unwrap();
    let ended = tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = axum::http::Request::get(format!("https://{}/v1/health", s.addr))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    (send, resp, ended)
}

/// An HTTP/2 connection that has made one request, and the task driving it (finished
/// when the connection ends).
async fn h2_open(s: &TestServer) -> (H2Send, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let (send, conn) = h2::client::handshake(tls_connect_alpn(s, &[b"h2"]).await)
        .await
        .unwrap();
    let ended = tokio::spawn(conn);
    (h2_health(s, send).await, ended)
}

/// `GET /v1/health` on the connection, which must answer 200.
async fn h2_health(s: &TestServer, send: H2Send) -> H2Send {
    let mut send = send.ready().await.unwrap();
    let req = axum::http::Request::get(format!("https://{}/v1/health", s.addr))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    send
}

/// An HTTP/2 connection (which answers the server's pings, so that they never close it)
/// is closed once no request has been under way for the idle timeout; one that keeps
/// asking stays open, and so does one whose request takes longer than the idle timeout.
/// One that never takes its response's body (a flow-control window of 0) is cut off
/// the header timeout after it was told to close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let s = TestServer::start_with_limits(ConnectionLimits {
        idle_timeout: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let (_idle, idle_ended) = h2_open(&s).await;
    let (stuck, stuck_resp, stuck_ended) = stuck_h2(&s).await;
    let (busy, busy_ended) = h2_open(&s).await;
    let mut busy = busy;
    // A create whose body comes 3 s after its headers, past the idle timeout.
    let (slow, slow_ended) = h2_open(&s).await;
    let slow = tokio::spawn({
        let (addr, token) = (s.addr, s.token.clone());
        async move {
            let mut send = slow.ready().await.unwrap();
            let req = axum::http::Request::post(format!("https://{addr}/v1/secrets"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(())
                .unwrap();
            let (resp, mut body) = send.send_request(req, false).unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            body.send_data(r#"{"name":"slow","secret_data":"v"}"#.into(), true)
                .unwrap();
            assert_eq!(resp.await.unwrap().status(), 201);
            send
        }
    });
    // Four seconds of a request every half second on one, nothing on the other.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        busy = h2_health(&s, busy).await;
    }
    assert!(
        idle_ended.is_finished(),
        "the idle connection is still open"
    );
    assert!(!busy_ended.is_finished(), "the busy connection was closed");
    // The slow request's connection was not told to close while it was under way: it
    // takes another request.
    let slow = h2_health(&s, slow.await.unwrap()).await;
    assert!(!slow_ended.is_finished());
    drop(slow);
    let cut = tokio::time::timeout(Duration::from_secs(6), stuck_ended).await;
    assert!(
        cut.is_ok(),
        "a connection that takes no response stayed open"
    );
    drop((stuck, stuck_resp));
    // Left idle in turn, it is closed too (within the timeout and a recheck).
    let closed = tokio::time::timeout(Duration::from_secs(6), busy_ended).await;
    assert!(closed.is_ok(), "the connection stayed open once idle");
    drop(busy);
}

#[tokio::test]
async fn long_uris_are_refused_and_long_resources_are_cut_in_the_audit_trail() {
    let s = TestServer::start().await;
    let h = s.http();
    let long = "a".repeat(9000);
    let r = h
        .get(format!("{}/v1/secrets/{long}/value", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "InvalidParameter", "{body}");
    assert!(body["message"].as_str().unwrap().contains("URI"), "{body}");

    // Under the URI limit, an anonymous request with a 3,000-character name: refused,
    // and recorded with the resource cut.
    let name = "b".repeat(3000);
    let r = h
        .get(format!("{}/v1/secrets/{name}/value", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let page = s
        .client
        .list_audit(&AuditQuery {
            resource_prefix: Some("secret/bbbb".into()),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1);
    let resource = &page.records[0].resource;
    assert_eq!(resource.chars().count(), 513, "{resource}");
    assert!(resource.ends_with('…'));
}

#[tokio::test]
async fn head_is_answered_as_get_and_the_bearer_scheme_is_case_insensitive() {
    let s = TestServer::start().await;
    let h = s.http();
    let r = h
        .request(Method::HEAD, format!("{}/v1/health", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Authorized as the GET it is: no token, 401 (not a 403 for a route without a rule).
    let r = h
        .request(Method::HEAD, format!("{}/v1/secrets/x/value", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = h
            .get(format!("{}/v1/keys", s.base()))
            .header("Authorization", format!("{scheme} {}", s.token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{scheme}");
    }
    let r = h
        .get(format!("{}/v1/keys", s.base()))
        .header("Authorization", format!("Basic {}", s.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let s = TestServer::start().await;
    let mut tls = tls_connect(&s).await;
    // A create whose body has not arrived yet when the server is told to stop.
    let body = br#"{"name":"in-flight","secret_data":"v"}"#;
    let head = format!(
        "POST /v1/secrets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.token,
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let TestServer {
        running, client, ..
    } = s;
    running.stop.send(()).unwrap();
    let mut task = running.task;
    // The server waits for the request instead of ending under it.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut task)
            .await
            .is_err(),
        "the server stopped with a request in flight"
    );
    tls.write_all(body).await.unwrap();
    tls.flush().await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    drop(client);
}

/// A token revoked while its request's body is still arriving does not act: the request
/// is answered 401 and changes nothing (the body may take up to its timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_while_the_body_arrives_does_not_act() {
    let s = TestServer::start().await;
    let token = s
        .principal_token(
            "writer",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:CreateSecret"], "Resource": ["secret/*"]}]}),
        )
        .await;
    let token_id = s.client.list_tokens("writer").await.unwrap().tokens[0]
        .token_id
        .clone();
    let body = r#"{"name":"late","secret_data":"v"}"#;
    let (first, rest) = body.split_at(10);
    let mut tls = tls_connect(&s).await;
    let head = format!(
        "POST /v1/secrets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    // The guard has authenticated the token and waits for the rest of the body.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.client.delete_token("writer", &token_id).await.unwrap();
    tls.write_all(rest.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut status = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut status))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(&status, b"HTTP/1.1 401");
    assert_code(
        s.client.describe_secret("late").await,
        strongbox_client::ErrorCode::SecretNotFound,
        "late",
    );

    // The same with an empty chunked body held open (a request that needs no body), and
    // with the right taken away (the policy detached) rather than the token revoked.
    let key = s
        .client
        .create_key(&Default::default())
        .await
        .unwrap()
        .key_id;
    for revoke in [true, false] {
        let name = if revoke { "disabler" } else { "detached" };
        let token = s
            .principal_token(
                name,
                serde_json::json!({"Version": "1", "Statement": [
                    {"Effect": "Allow", "Action": ["kms:DisableKey"], "Resource": ["key/*"]}]}),
            )
            .await;
        let mut tls = tls_connect(&s).await;
        let head = format!(
            "POST /v1/keys/{key}/disable HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if revoke {
            let id = s.client.list_tokens(name).await.unwrap().tokens[0]
                .token_id
                .clone();
            s.client.delete_token(name, &id).await.unwrap();
        } else {
            s.client
                .update_principal(
                    name,
                    &strongbox_schemas::UpdatePrincipalRequest {
                        policies: Some(Vec::new()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        tls.write_all(b"0\r\n\r\n").await.unwrap();
        tls.flush().await.unwrap();
        let mut status = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut status))
            .await
            .expect("answered")
            .unwrap();
        let want: &[u8; 12] = if revoke {
            b"HTTP/1.1 401"
        } else {
            b"HTTP/1.1 403"
        };
        assert_eq!(&status, want, "{name}");
        assert_eq!(
            s.client.describe_key(&key).await.unwrap().state,
            strongbox_schemas::KeyState::Enabled,
            "{name}"
        );
    }
}

/// A download that keeps moving (a backup read slowly, long after its handler returned
/// the head of the answer) is not taken for an idle connection: it is not cut off an
/// idle timeout later, and the file is complete. (One the client stops taking still is:
/// `an_idle_http2_connection_is_closed_and_a_busy_one_is_not`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_download_that_keeps_moving_is_not_cut_off_as_idle() {
    use strongbox_server::storage::{StorageError, Table};
    let s = TestServer::start_with_limits(ConnectionLimits {
        idle_timeout: Duration::from_secs(3),
        header_read_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    // Far more than the sockets' buffers hold, so the stream lasts as long as it is read.
    s.service
        .store()
        .write(|t| {
            for i in 0..48u8 {
                t.put(
                    Table::Meta,
                    format!("test-filler-{i}").as_bytes(),
                    vec![i; 1 << 20],
                );
            }
            Ok::<_, StorageError>(())
        })
        .await
        .unwrap();
    let mut resp = s
        .http()
        .get(format!("{}/v1/backup", s.base()))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup");
    let mut file = Vec::new();
    // At most 6 MiB/s: 48 MiB take at least 8 s, past the idle timeout and the header
    // timeout that follows it (3 s each: a busy machine may pause a task for a second).
    while let Some(chunk) = resp.chunk().await.expect("the download was cut off") {
        file.extend_from_slice(&chunk);
        tokio::time::sleep(Duration::from_micros(chunk.len() as u64 * 1000 / 6144)).await;
    }
    std::fs::write(&path, &file).unwrap();
    strongbox_server::backup::check_complete(&path).expect("a complete backup");
    assert!(file.len() > 48 << 20);
}
