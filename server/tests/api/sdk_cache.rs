//! The SDK's cache of secret values against a real server: reads served from memory
//! until the TTL, one request for concurrent misses, refresh after a change, bounded
//! size, errors never cached. The server's audit trail counts the reads that reached it.

use std::time::Duration;

use strongbox_client::{CacheConfig, SecretCache};

use crate::common::*;

/// Reads of `secret/NAME` the server has recorded.
async fn server_reads(s: &TestServer, name: &str) -> usize {
    s.service
        .list_audit(&strongbox_server::service::AuditQuery {
            action: Some("kms:GetSecretValue".into()),
            resource_prefix: Some(format!("secret/{name}")),
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .records
        .iter()
        .filter(|r| r.resource == format!("secret/{name}"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_stay_in_memory_until_the_ttl_and_refresh_reads_again() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("cached", "v1"))
        .await
        .unwrap();
    let cache = SecretCache::new(
        s.client.clone(),
        CacheConfig {
            ttl: Duration::from_millis(400),
            max_entries: 16,
            ..CacheConfig::default()
        },
    );
    for _ in 0..10 {
        assert_eq!(cache.get("cached").await.unwrap().secret_data, "v1");
    }
    assert_eq!(cache.fetches(), 1);
    assert_eq!(
        server_reads(&s, "cached").await,
        1,
        "one read reached the server"
    );

    // A new value is not seen before the TTL (that is the cache's contract) ...
    s.client
        .put_secret_value("cached", &put("v2"))
        .await
        .unwrap();
    assert_eq!(cache.get("cached").await.unwrap().secret_data, "v1");
    // ... and is after it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cache.get("cached").await.unwrap().secret_data, "v2");
    assert_eq!(server_reads(&s, "cached").await, 2);
    // refresh reads at once (after a refused login, say).
    s.client
        .put_secret_value("cached", &put("v3"))
        .await
        .unwrap();
    assert_eq!(cache.refresh("cached").await.unwrap().secret_data, "v3");
    // Other versions are cached apart.
    let prev = cache
        .get_version("cached", None, Some("ACSPrevious"))
        .await
        .unwrap();
    assert_eq!(prev.secret_data, "v2");
    assert_eq!(cache.get("cached").await.unwrap().secret_data, "v3");
    assert_eq!(server_reads(&s, "cached").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_request_and_errors_are_not_cached() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("popular", "hot"))
        .await
        .unwrap();
    let cache = SecretCache::new(s.client.clone(), CacheConfig::default());
    let reads: Vec<_> = (0..32)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.get("popular").await.unwrap().secret_data.clone() })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap(), "hot");
    }
    assert_eq!(cache.fetches(), 1);
    assert_eq!(server_reads(&s, "popular").await, 1);

    // A secret that does not exist yet: the error is not kept.
    assert!(cache.get("later").await.is_err());
    s.client
        .create_secret(&text_secret("later", "here now"))
        .await
        .unwrap();
    assert_eq!(cache.get("later").await.unwrap().secret_data, "here now");
}

#[tokio::test]
async fn the_cache_keeps_at_most_max_entries_dropping_the_least_recently_used() {
    let s = TestServer::start().await;
    for n in ["a", "b", "c"] {
        s.client.create_secret(&text_secret(n, n)).await.unwrap();
    }
    let cache = SecretCache::new(
        s.client.clone(),
        CacheConfig {
            ttl: Duration::from_secs(3600),
            max_entries: 2,
            ..CacheConfig::default()
        },
    );
    cache.get("a").await.unwrap();
    cache.get("b").await.unwrap();
    cache.get("a").await.unwrap(); // a is now more recent than b
    cache.get("c").await.unwrap(); // b goes
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.fetches(), 3);
    cache.get("a").await.unwrap();
    cache.get("c").await.unwrap();
    assert_eq!(cache.fetches(), 3, "a and c are held");
    cache.get("b").await.unwrap();
    assert_eq!(cache.fetches(), 4, "b was dropped");
    cache.invalidate("b");
    assert_eq!(cache.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_a_failure_and_concurrent_refreshes_share_one_request() {
    let s = TestServer::start().await;
    let cache = SecretCache::new(s.client.clone(), CacheConfig::default());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let all = |refresh: bool, name: &'static str| {
        (0..16)
            .map(|_| {
                let (c, b) = (cache.clone(), barrier.clone());
                tokio::spawn(async move {
                    b.wait().await;
                    let r = if refresh {
                        c.refresh(name).await
                    } else {
                        c.get(name).await
                    };
                    r.map(|v| v.secret_data.clone())
                })
            })
            .collect::<Vec<_>>()
    };
    // 16 callers of a secret that does not exist: the ones that waited for the failed
    // request get its error (a few may come after it and ask again, not one each).
    for r in all(false, "missing") {
        assert!(r.await.unwrap().is_err());
    }
    let after_misses = cache.fetches();
    assert!(after_misses <= 8, "{after_misses} requests for 16 callers");
    assert!(cache.is_empty(), "failed lookups take no place");

    s.client
        .create_secret(&text_secret("rotated", "old"))
        .await
        .unwrap();
    assert_eq!(cache.get("rotated").await.unwrap().secret_data, "old");
    s.client
        .put_secret_value("rotated", &put("new"))
        .await
        .unwrap();
    let before = cache.fetches();
    for r in all(true, "rotated") {
        assert_eq!(r.await.unwrap().unwrap(), "new");
    }
    let refreshes = cache.fetches() - before;
    assert!(refreshes <= 8, "{refreshes} requests for 16 refreshes");

    // Callers that name the version that failed share one read, however they arrive.
    let failed = cache.get("rotated").await.unwrap().version_id.clone();
    s.client
        .put_secret_value("rotated", &put("newer"))
        .await
        .unwrap();
    let before = cache.fetches();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (c, b, f) = (cache.clone(), barrier.clone(), failed.clone());
            tokio::spawn(async move {
                b.wait().await;
                c.refresh_unless_replaced("rotated", &f)
                    .await
                    .map(|v| v.secret_data.clone())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "newer");
    }
    assert_eq!(cache.fetches() - before, 1, "one read for 16 callers");
}

/// Callers that arrive while a request is under way and then fails get its error: one
/// request for all of them, not one each after the other (each waiting out a timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_arrive_while_a_request_fails_share_its_error() {
    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let client = strongbox_client::Client::new(strongbox_client::ClientConfig {
        address: format!("https://{addr}"),
        token: "unused".into(),
        ca_cert_pem: None,
        timeout: Some(Duration::from_secs(1)),
    })
    .unwrap();
    let cache = SecretCache::new(client, CacheConfig::default());
    let first = tokio::spawn({
        let c = cache.clone();
        async move { c.get("x").await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late: Vec<_> = (0..8)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.get("x").await.map(|_| ()) })
        })
        .collect();
    assert!(first.await.unwrap().is_err());
    for l in late {
        assert!(l.await.unwrap().is_err());
    }
    assert_eq!(cache.fetches(), 1, "one request for the nine callers");
    // A caller after the failure asks again.
    assert!(cache.get("x").await.is_err());
    assert_eq!(cache.fetches(), 2);
    held.abort();
}

/// A value whose reading again failed is not served again: after the secret is deleted
/// (or the token loses the right to read it), a refresh fails and so does every later
/// read, within the TTL too.
#[tokio::test]
async fn a_value_the_server_no_longer_gives_is_not_served_from_the_cache() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("gone", "v1"))
        .await
        .unwrap();
    let cache = SecretCache::new(s.client.clone(), CacheConfig::default());
    assert_eq!(cache.get("gone").await.unwrap().secret_data, "v1");
    s.client
        .delete_secret(
            "gone",
            strongbox_client::DeleteSecretOptions {
                force_delete_without_recovery: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(cache.refresh("gone").await.is_err());
    assert!(cache.get("gone").await.is_err(), "not the old value");
    assert!(cache.is_empty());
}

/// Another version in the cache is taken as "already refreshed" only while it is within
/// the TTL: past it, a caller whose version failed gets a new read, not a value that
/// may itself have been replaced since.
#[tokio::test]
async fn a_failed_version_is_read_again_once_the_other_entry_is_past_its_ttl() {
    let s = TestServer::start().await;
    let cache = SecretCache::new(
        s.client.clone(),
        CacheConfig {
            ttl: Duration::from_secs(2),
            ..CacheConfig::default()
        },
    );
    s.client
        .create_secret(&text_secret("ttl/s", "a"))
        .await
        .unwrap();
    let a = cache.get("ttl/s").await.unwrap().version_id.clone();
    s.client.put_secret_value("ttl/s", &put("b")).await.unwrap();
    assert_eq!(cache.refresh("ttl/s").await.unwrap().secret_data, "b");
    s.client.put_secret_value("ttl/s", &put("c")).await.unwrap();
    // Within the TTL: b was read after a failed, so a worker still holding a gets b.
    let before = cache.fetches();
    let got = cache.refresh_unless_replaced("ttl/s", &a).await.unwrap();
    assert_eq!(got.secret_data, "b");
    assert_eq!(cache.fetches(), before);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Past it: read again, and the value is c.
    let got = cache.refresh_unless_replaced("ttl/s", &a).await.unwrap();
    assert_eq!(got.secret_data, "c");
    assert_eq!(cache.fetches(), before + 1);
}

/// A version the cache holds is taken as "already refreshed" only when it replaced the
/// one that failed: an older version, read earlier under the plain key, is not served
/// to a caller whose newer version (read by stage) stopped working.
#[tokio::test]
async fn an_older_version_is_not_taken_for_the_refresh_of_a_newer_one() {
    let s = TestServer::start().await;
    let cache = SecretCache::new(s.client.clone(), CacheConfig::default());
    s.client
        .create_secret(&text_secret("mixed", "one"))
        .await
        .unwrap();
    let one = cache.get("mixed").await.unwrap();
    assert_eq!(one.secret_data, "one");
    s.client
        .put_secret_value("mixed", &put("two"))
        .await
        .unwrap();
    let two = cache
        .get_version("mixed", None, Some("ACSCurrent"))
        .await
        .unwrap();
    assert_eq!(two.secret_data, "two");
    s.client
        .put_secret_value("mixed", &put("three"))
        .await
        .unwrap();
    let before = cache.fetches();
    let got = cache
        .refresh_unless_replaced("mixed", &two.version_id)
        .await
        .unwrap();
    assert_eq!(
        got.secret_data, "three",
        "not the older value the cache held"
    );
    assert_eq!(cache.fetches(), before + 1);
    // Another caller whose "two" failed shares that read.
    let got = cache
        .refresh_unless_replaced("mixed", &two.version_id)
        .await
        .unwrap();
    assert_eq!(got.secret_data, "three");
    assert_eq!(cache.fetches(), before + 1, "one read for both");
    // A caller whose "one" failed now takes "three" (it replaced "one" in the slot).
    let got = cache
        .refresh_unless_replaced("mixed", &one.version_id)
        .await
        .unwrap();
    assert_eq!(got.secret_data, "three");
    assert_eq!(cache.fetches(), before + 1, "shared the read");
}

/// When the server refuses a read again because the secret is gone, no other cached
/// version of it is served either, even one still within its TTL; a refusal of one
/// version (no `ACSPrevious` yet) drops nothing else.
#[tokio::test]
async fn a_refused_read_again_drops_the_secrets_other_versions() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("gone2", "v1"))
        .await
        .unwrap();
    let cache = SecretCache::new(
        s.client.clone(),
        CacheConfig {
            ttl: Duration::from_secs(3),
            ..Default::default()
        },
    );
    assert_eq!(cache.get("gone2").await.unwrap().secret_data, "v1");
    assert!(
        cache
            .get_version("gone2", None, Some("ACSPrevious"))
            .await
            .is_err()
    );
    let reads = server_reads(&s, "gone2").await;
    assert_eq!(cache.get("gone2").await.unwrap().secret_data, "v1");
    assert_eq!(
        server_reads(&s, "gone2").await,
        reads,
        "ACSCurrent was read again after another version was refused"
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let by_stage = |c: &SecretCache| {
        let c = c.clone();
        async move { c.get_version("gone2", None, Some("ACSCurrent")).await }
    };
    assert_eq!(by_stage(&cache).await.unwrap().secret_data, "v1");
    s.client
        .delete_secret(
            "gone2",
            strongbox_client::DeleteSecretOptions {
                force_delete_without_recovery: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Past the first entry's TTL, within the second's.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(cache.get("gone2").await.is_err());
    assert!(
        by_stage(&cache).await.is_err(),
        "the other version was served from the cache"
    );
}

/// When the server says the cache's token is no longer valid (revoked here), nothing
/// read with it is served again: not the secret whose read failed, nor any other, even
/// within the TTL.
#[tokio::test]
async fn a_revoked_token_empties_the_cache() {
    let s = TestServer::start().await;
    for name in ["tok/a", "tok/b"] {
        s.client
            .create_secret(&text_secret(name, "v1"))
            .await
            .unwrap();
    }
    let token = s
        .principal_token(
            "cache-reader",
            serde_json::json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:GetSecretValue"], "Resource": ["secret/tok/*"]}]}),
        )
        .await;
    let cache = SecretCache::new(s.client_with_token(&token), CacheConfig::default());
    assert_eq!(cache.get("tok/a").await.unwrap().secret_data, "v1");
    assert_eq!(cache.get("tok/b").await.unwrap().secret_data, "v1");
    assert_eq!(cache.len(), 2);
    let tokens = s.client.list_tokens("cache-reader").await.unwrap().tokens;
    assert_eq!(tokens.len(), 1);
    s.client
        .delete_token("cache-reader", &tokens[0].token_id)
        .await
        .unwrap();
    assert_code(
        cache.refresh("tok/a").await,
        strongbox_client::ErrorCode::Unauthenticated,
        "",
    );
    assert!(
        cache.is_empty(),
        "values read with a revoked token were kept"
    );
    let before = cache.fetches();
    assert_code(
        cache.get("tok/b").await,
        strongbox_client::ErrorCode::Unauthenticated,
        "",
    );
    assert_eq!(cache.fetches(), before + 1, "tok/b was served from memory");
}

/// A refresh its caller gives up on (the future dropped before the answer) does not
/// leave the value it was to replace in the cache: the next read asks the server.
#[tokio::test]
async fn a_refresh_given_up_on_does_not_leave_the_old_value_served() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("cancel/s", "old"))
        .await
        .unwrap();
    let cache = SecretCache::new(s.client.clone(), CacheConfig::default());
    assert_eq!(cache.get("cancel/s").await.unwrap().secret_data, "old");
    s.client
        .put_secret_value("cancel/s", &put("new"))
        .await
        .unwrap();
    // Polled once (the read begins), then dropped before any answer could come.
    let gave_up = futures_util::FutureExt::now_or_never(cache.refresh("cancel/s"));
    assert!(gave_up.is_none(), "the refresh came back at once");
    assert_eq!(cache.get("cancel/s").await.unwrap().secret_data, "new");
}

/// A client of `s` through `relay`, giving up on a request after 2 s.
fn through(s: &TestServer, relay: &Relay) -> strongbox_client::Client {
    strongbox_client::Client::new(strongbox_client::ClientConfig {
        address: format!("https://localhost:{}", relay.addr.port()),
        token: s.token.clone(),
        ca_cert_pem: Some(s.ca_pem.clone().into_bytes()),
        timeout: Some(Duration::from_secs(2)),
    })
    .unwrap()
}

/// A key whose read is under way is not evicted to make room for another: a caller of
/// it arriving then shares that read instead of sending a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_under_way_is_not_evicted() {
    let s = TestServer::start().await;
    let relay = Relay::to(s.addr).await;
    let client = through(&s, &relay);
    let cache = SecretCache::new(
        client,
        CacheConfig {
            max_entries: 1,
            ..CacheConfig::default()
        },
    );
    relay.set_mode(RelayMode::Hang);
    let get = |name: &'static str| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(name).await.map(|_| ()) })
    };
    let a = get("evict/a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = get("evict/b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_again = get("evict/a");
    for t in [a, b, a_again] {
        assert!(t.await.unwrap().is_err(), "nothing answers");
    }
    assert_eq!(cache.fetches(), 2, "the second caller of a shared its read");
}

/// While the server cannot be reached, a value past its TTL is still served, up to
/// `stale_if_error` past it, and read again at most once a second meanwhile; never by
/// a refresh (a value that stopped working), and never past the bound. Once the server
/// is back, the next read past the retry time gets the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_is_served_past_its_ttl_while_the_server_cannot_be_reached() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("outage/db", "v1"))
        .await
        .unwrap();
    let relay = Relay::to(s.addr).await;
    let client = through(&s, &relay);
    let config = |stale_ms| CacheConfig {
        ttl: Duration::from_millis(300),
        stale_if_error: Duration::from_millis(stale_ms),
        ..CacheConfig::default()
    };
    let cache = SecretCache::new(client.clone(), config(20_000));
    let bounded = SecretCache::new(client, config(300));
    assert_eq!(cache.get("outage/db").await.unwrap().secret_data, "v1");
    assert_eq!(bounded.get("outage/db").await.unwrap().secret_data, "v1");

    relay.set(false);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stale = cache
        .get("outage/db")
        .await
        .expect("served through the outage");
    assert_eq!(stale.secret_data, "v1");
    assert_eq!(cache.fetches(), 2, "it tried the server");
    for _ in 0..5 {
        assert_eq!(cache.get("outage/db").await.unwrap().secret_data, "v1");
    }
    assert_eq!(cache.fetches(), 2, "not again within the second");
    let past = bounded.get("outage/db").await.map(|_| ());
    assert!(
        past.unwrap_err().is_transient(),
        "past ttl + stale_if_error"
    );
    assert!(
        cache.refresh("outage/db").await.is_err(),
        "a refresh never takes the stale value"
    );

    // A network that drops everything: the read again hangs until the client's
    // timeout, and meanwhile other callers are served the value rather than made to
    // wait (a value read anew, then served past its TTL once the relay hangs).
    relay.set(true);
    let mut warm = cache.get("outage/db").await;
    for _ in 0..30 {
        if warm.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        warm = cache.get("outage/db").await;
    }
    assert_eq!(warm.unwrap().secret_data, "v1");
    relay.set_mode(RelayMode::Hang);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past the TTL: the first caller reads again (hanging), stale mode comes only after
    // that read fails; so one read fails into stale mode first.
    let first = cache.get("outage/db").await;
    assert_eq!(
        first.unwrap().secret_data,
        "v1",
        "served once the read timed out"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let hanging = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get("outage/db").await.map(|v| v.secret_data.clone()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let meanwhile = cache.get("outage/db").await.unwrap();
    assert_eq!(meanwhile.secret_data, "v1");
    assert!(
        !hanging.is_finished(),
        "served while the read again still hangs"
    );
    assert_eq!(hanging.await.unwrap().unwrap(), "v1");

    // Back, with a new value: the next read after the retry time gets it.
    s.client
        .put_secret_value("outage/db", &put("v2"))
        .await
        .unwrap();
    relay.set(true);
    let mut got = cache.get("outage/db").await;
    for _ in 0..30 {
        if got.as_ref().is_ok_and(|v| v.secret_data == "v2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = cache.get("outage/db").await;
    }
    assert_eq!(got.unwrap().secret_data, "v2");
}
