//! Principals, tokens and access policies: documents checked naming statement and
//! field, expiry and immediate revocation, policy changes taking effect at once,
//! explicit deny, filtered lists, 403s that say nothing about existence, built-ins.

use serde_json::json;
use strongbox_client::{ErrorCode, ListSecretsOptions};
use strongbox_schemas as api;

use crate::common::*;

fn doc(v: serde_json::Value) -> api::PolicyDocument {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn policy_documents_are_checked_naming_statement_and_field() {
    let s = TestServer::start().await;
    let post = |document: serde_json::Value| {
        let body = json!({"name": "p", "document": document});
        let s = &s;
        async move {
            let r = call(s, Some(&s.token), "POST", &["v1", "policies"], Some(&body)).await;
            assert_eq!(r.status, 400, "{}", r.body);
            assert_eq!(r.body["code"], "InvalidParameter");
            r.body["message"].as_str().unwrap().to_string()
        }
    };
    let m = post(json!({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "kms:GetSecretValue", "Resource": "secret/a"},
        {"Effect": "Permit", "Action": "kms:*", "Resource": "*"}]}))
    .await;
    assert!(m.contains("Statement[1].Effect"), "{m}");
    let m = post(json!({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "kms:GetSecretValue", "Resource": ["secret/a", "secrets/b"]}]}))
    .await;
    assert!(m.contains("Statement[0].Resource[1]"), "{m}");
    let m = post(json!({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": ["kms:GetSecretValeu"], "Resource": "*"}]}))
    .await;
    assert!(
        m.contains("Statement[0].Action[0]") && m.contains("matches no action"),
        "{m}"
    );
    let m = post(json!({"Version": "2", "Statement": []})).await;
    assert!(m.contains("Version"), "{m}");
    // Wildcards that name known actions are fine; so is a single string.
    s.client
        .create_policy(&api::CreatePolicyRequest {
            name: "ok".into(),
            description: Some("fine".into()),
            document: doc(json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:*Secret*", "Resource": "secret/?/*"}]})),
        })
        .await
        .unwrap();
    let p = s.client.get_policy("ok").await.unwrap();
    assert_eq!(
        serde_json::to_value(&p.document).unwrap()["Statement"][0]["Action"],
        json!(["kms:*Secret*"]),
        "canonical form"
    );
}

#[tokio::test]
async fn tokens_expire_and_revocation_takes_effect_at_once() {
    let s = TestServer::start().await;
    let c = &s.client;
    let read_keys = json!({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]});
    let first = s.principal_token("svc", read_keys).await;
    let expiring = c
        .create_token(
            "svc",
            &api::CreateTokenRequest {
                expires_at: Some(api::Timestamp::from_unix(T0 + 100)),
                description: Some("ci".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(expiring.principal, "svc");
    assert!(expiring.token.starts_with("sbx_") && expiring.token.len() == 47);
    assert!(
        !format!("{expiring:?}").contains(&expiring.token),
        "Debug redacts"
    );
    let e = s.client_with_token(&expiring.token);
    e.list_keys(None, None).await.unwrap();
    s.clock.advance(100);
    assert_code(
        e.list_keys(None, None).await,
        ErrorCode::Unauthenticated,
        "expired",
    );
    let tokens = c.list_tokens("svc").await.unwrap().tokens;
    assert_eq!(tokens.len(), 2);
    let listed = serde_json::to_string(&tokens).unwrap();
    assert!(!listed.contains(&expiring.token[4..]) && !listed.contains(&first[4..]));
    let exp = tokens
        .iter()
        .find(|t| t.token_id == expiring.token_id)
        .unwrap();
    assert!(exp.expired && exp.description == "ci");
    assert_code(
        c.create_token(
            "svc",
            &api::CreateTokenRequest {
                expires_at: Some(api::Timestamp::from_unix(T0)),
                description: None,
            },
        )
        .await,
        ErrorCode::InvalidParameter,
        "expires_at",
    );

    // Revocation: the very next request is refused, though the identity was cached.
    let f = s.client_with_token(&first);
    f.list_keys(None, None).await.unwrap();
    let first_id = tokens
        .iter()
        .find(|t| t.token_id != expiring.token_id)
        .unwrap()
        .token_id
        .clone();
    c.delete_token("svc", &first_id).await.unwrap();
    assert_code(
        f.list_keys(None, None).await,
        ErrorCode::Unauthenticated,
        "not valid",
    );
    assert_code(
        c.delete_token("svc", &first_id).await,
        ErrorCode::TokenNotFound,
        &first_id,
    );
    // Deleting the principal revokes all its tokens.
    let another = c.create_token("svc", &Default::default()).await.unwrap();
    let a = s.client_with_token(&another.token);
    a.list_keys(None, None).await.unwrap();
    c.delete_principal("svc").await.unwrap();
    assert_code(
        a.list_keys(None, None).await,
        ErrorCode::Unauthenticated,
        "token",
    );
    assert_code(
        c.list_tokens("svc").await,
        ErrorCode::PrincipalNotFound,
        "svc",
    );
}

/// A principal holds at most 100 tokens (its token list comes whole): at the limit its
/// expired tokens make room, and with none expired the next token is refused.
#[tokio::test]
async fn a_principal_holds_at_most_100_tokens() {
    let s = TestServer::start().await;
    let c = &s.client;
    c.create_principal(&api::CreatePrincipalRequest {
        name: "ci".into(),
        description: None,
        policies: None,
    })
    .await
    .unwrap();
    let expiring = |secs: i64| api::CreateTokenRequest {
        expires_at: Some(api::Timestamp::from_unix(T0 + secs)),
        description: None,
    };
    let mut valid = Vec::new();
    for i in 0..100 {
        let req = if i < 10 {
            expiring(60)
        } else {
            Default::default()
        };
        let t = c.create_token("ci", &req).await.unwrap();
        if i >= 10 {
            valid.push(t);
        }
    }
    assert_code(
        c.create_token("ci", &Default::default()).await,
        ErrorCode::InvalidState,
        "the most one principal may hold is 100",
    );
    assert_eq!(c.list_tokens("ci").await.unwrap().tokens.len(), 100);
    // Ten of them expire: the next token deletes them and is made.
    s.clock.advance(60);
    let made = c.create_token("ci", &Default::default()).await.unwrap();
    let listed = c.list_tokens("ci").await.unwrap().tokens;
    assert_eq!(listed.len(), 91);
    assert!(listed.iter().all(|t| !t.expired));
    assert!(listed.iter().any(|t| t.token_id == made.token_id));
    // The valid ones all still work.
    for t in valid.iter().take(3).chain(std::iter::once(&made)) {
        assert_code(
            s.client_with_token(&t.token).list_keys(None, None).await,
            ErrorCode::Forbidden,
            "kms:ListKeys",
        );
    }
    // Below the limit, an expired token stays listed until room is needed.
    c.create_token("ci", &expiring(120)).await.unwrap();
    s.clock.advance(60);
    let listed = c.list_tokens("ci").await.unwrap().tokens;
    assert_eq!(listed.len(), 92);
    assert_eq!(listed.iter().filter(|t| t.expired).count(), 1);
}

#[tokio::test]
async fn policy_and_attachment_changes_take_effect_at_once() {
    let s = TestServer::start().await;
    let c = &s.client;
    c.create_secret(&text_secret("a", "v")).await.unwrap();
    let app = s
        .principal_with(
            "app",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:GetSecretValue", "Resource": "secret/a"}]}),
        )
        .await;
    app.get_secret_value("a", None, None).await.unwrap();
    c.update_policy(
        "app-policy",
        &api::UpdatePolicyRequest {
            description: None,
            document: Some(doc(json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:GetSecretValue", "Resource": "secret/a"},
                {"Effect": "Deny", "Action": "kms:Get*", "Resource": "*"}]}))),
        },
    )
    .await
    .unwrap();
    assert_code(
        app.get_secret_value("a", None, None).await,
        ErrorCode::Forbidden,
        "kms:GetSecretValue on secret/a",
    );
    c.update_principal(
        "app",
        &api::UpdatePrincipalRequest {
            description: Some("now admin".into()),
            policies: Some(vec![api::ADMINISTRATOR_ACCESS.into()]),
        },
    )
    .await
    .unwrap();
    app.get_secret_value("a", None, None).await.unwrap();
    app.create_key(&Default::default()).await.unwrap();
    // The detached policy can go now.
    c.delete_policy("app-policy").await.unwrap();
    c.update_principal(
        "app",
        &api::UpdatePrincipalRequest {
            description: None,
            policies: Some(vec![]),
        },
    )
    .await
    .unwrap();
    assert_code(
        app.get_secret_value("a", None, None).await,
        ErrorCode::Forbidden,
        "principal app",
    );
}

#[tokio::test]
async fn explicit_deny_wins_lists_are_filtered_and_403_reveals_nothing() {
    let s = TestServer::start().await;
    let c = &s.client;
    for n in ["app/db", "app/root", "app/cache", "billing/db"] {
        c.create_secret(&text_secret(n, "v")).await.unwrap();
    }
    let app = s
        .principal_with(
            "app",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:GetSecretValue", "kms:DescribeSecret"], "Resource": ["secret/app/*"]},
                {"Effect": "Deny", "Action": ["kms:*"], "Resource": ["secret/app/root"]},
                {"Effect": "Allow", "Action": ["kms:ListSecrets", "kms:ListKeys", "kms:ListAliases", "ram:ListPrincipals", "ram:ListPolicies"], "Resource": "*"}]}),
        )
        .await;
    app.get_secret_value("app/db", None, None).await.unwrap();
    assert_code(
        app.get_secret_value("app/root", None, None).await,
        ErrorCode::Forbidden,
        "kms:GetSecretValue on secret/app/root",
    );
    // Allowed but absent: 404. Not allowed: 403 whether or not it exists, alike.
    assert_code(
        app.get_secret_value("app/none", None, None).await,
        ErrorCode::SecretNotFound,
        "app/none",
    );
    let existing = app.describe_secret("billing/db").await.unwrap_err();
    let absent = app.describe_secret("billing/none").await.unwrap_err();
    let msg = |e: &strongbox_client::Error| match e {
        strongbox_client::Error::Api { code, message, .. } => (*code, message.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        msg(&existing),
        (
            ErrorCode::Forbidden,
            "principal app is not allowed kms:DescribeSecret on secret/billing/db".into()
        )
    );
    assert_eq!(
        msg(&absent).1.replace("none", "db"),
        msg(&existing).1,
        "same answer"
    );

    let names: Vec<String> = app
        .list_secrets(&ListSecretsOptions {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .secrets
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["app/cache"], "a page is filled with visible ones");
    let mut all = Vec::new();
    let mut o = ListSecretsOptions::default();
    loop {
        let page = app.list_secrets(&o).await.unwrap();
        all.extend(page.secrets.into_iter().map(|s| s.name));
        match page.next_page_token {
            Some(t) => o.page_token = Some(t),
            None => break,
        }
    }
    assert_eq!(all, ["app/cache", "app/db"]);
    // A full page with only hidden secrets after it has no next page: a token would say
    // that they exist.
    let page = app
        .list_secrets(&ListSecretsOptions {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.secrets.len(), 2);
    assert_eq!(page.next_page_token, None);
    assert!(app.list_keys(None, None).await.unwrap().keys.is_empty());
    assert!(
        c.list_keys(None, None).await.unwrap().keys.len() == 1,
        "root sees the default key"
    );
    assert!(app.list_aliases().await.unwrap().aliases.is_empty());
    assert!(app.list_principals().await.unwrap().principals.is_empty());
    assert!(app.list_policies().await.unwrap().policies.is_empty());
    let everyone: Vec<String> = c
        .list_principals()
        .await
        .unwrap()
        .principals
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(everyone, ["app", "root"]);
}

#[tokio::test]
async fn keys_named_by_alias_are_authorized_as_written_and_as_their_key_id() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = c.create_key(&Default::default()).await.unwrap();
    c.put_alias("alias/payments", &k.key_id).await.unwrap();
    let ops = s
        .principal_with(
            "ops",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "key/alias/payments"},
                {"Effect": "Allow", "Action": "kms:DescribeAlias", "Resource": "alias/pay*"}]}),
        )
        .await;
    // The guard allows key/alias/payments; the key it names is not allowed.
    assert_code(
        ops.describe_key("alias/payments").await,
        ErrorCode::Forbidden,
        "principal ops is not allowed kms:DescribeKey on key/alias/payments",
    );
    assert_code(
        ops.describe_key(&k.key_id).await,
        ErrorCode::Forbidden,
        &format!("key/{}", k.key_id),
    );
    ops.get_alias("alias/payments").await.unwrap();
    // Allowed on both, through the alias.
    let both = s
        .principal_with(
            "both",
            json!({"Version": "1", "Statement": [{"Effect": "Allow", "Action": "kms:DescribeKey",
                "Resource": ["key/alias/payments", format!("key/{}", k.key_id)]}]}),
        )
        .await;
    assert_eq!(
        both.describe_key("alias/payments").await.unwrap().key_id,
        k.key_id
    );
    assert_code(
        ops.put_alias("alias/payments", &k.key_id).await,
        ErrorCode::Forbidden,
        "kms:CreateAlias on alias/payments",
    );
}

#[tokio::test]
async fn built_ins_and_references_are_protected() {
    let s = TestServer::start().await;
    let c = &s.client;
    let root = c.get_principal("root").await.unwrap();
    assert!(root.builtin);
    assert_eq!(root.policies, [api::ADMINISTRATOR_ACCESS]);
    let tokens = c.list_tokens("root").await.unwrap().tokens;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].token_id, "root");
    assert_code(
        c.delete_principal("root").await,
        ErrorCode::InvalidState,
        "built in",
    );
    assert_code(
        c.update_principal("root", &Default::default()).await,
        ErrorCode::InvalidState,
        "built in",
    );
    // Root's one token comes only from init or the root key, not the API.
    assert_code(
        c.create_token("root", &Default::default()).await,
        ErrorCode::InvalidState,
        "replaced only with the root key",
    );
    assert_eq!(c.list_tokens("root").await.unwrap().tokens.len(), 1);
    assert_code(
        c.delete_policy(api::ADMINISTRATOR_ACCESS).await,
        ErrorCode::InvalidState,
        "built in",
    );
    let admin = c.get_policy(api::ADMINISTRATOR_ACCESS).await.unwrap();
    assert!(admin.builtin);
    let d = doc(json!({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]}));
    assert_code(
        c.create_policy(&api::CreatePolicyRequest {
            name: api::ADMINISTRATOR_ACCESS.into(),
            description: None,
            document: d.clone(),
        })
        .await,
        ErrorCode::AlreadyExists,
        "AdministratorAccess",
    );
    // The names the audit trail gives requests made by no principal are reserved.
    for name in ["anonymous", "rotation"] {
        assert_code(
            c.create_principal(&api::CreatePrincipalRequest {
                name: name.into(),
                description: None,
                policies: None,
            })
            .await,
            ErrorCode::InvalidParameter,
            &format!("name: {name} is reserved"),
        );
    }
    assert_code(
        c.create_principal(&api::CreatePrincipalRequest {
            name: "p".into(),
            description: None,
            policies: Some(vec!["nope".into()]),
        })
        .await,
        ErrorCode::PolicyNotFound,
        "policies[0]",
    );
    c.create_policy(&api::CreatePolicyRequest {
        name: "keys".into(),
        description: None,
        document: d,
    })
    .await
    .unwrap();
    assert_code(
        c.create_principal(&api::CreatePrincipalRequest {
            name: "p".into(),
            description: None,
            policies: Some(vec!["keys".into(), "keys".into()]),
        })
        .await,
        ErrorCode::InvalidParameter,
        "policies[1]",
    );
    assert_code(
        c.create_principal(&api::CreatePrincipalRequest {
            name: "bad name".into(),
            ..Default::default()
        })
        .await,
        ErrorCode::InvalidParameter,
        "name",
    );
    c.create_principal(&api::CreatePrincipalRequest {
        name: "p".into(),
        description: None,
        policies: Some(vec!["keys".into()]),
    })
    .await
    .unwrap();
    assert_code(
        c.create_principal(&api::CreatePrincipalRequest {
            name: "p".into(),
            ..Default::default()
        })
        .await,
        ErrorCode::AlreadyExists,
        "p",
    );
    assert_code(
        c.delete_policy("keys").await,
        ErrorCode::PolicyInUse,
        "attached to 1 principal;",
    );
    c.delete_principal("p").await.unwrap();
    c.delete_policy("keys").await.unwrap();
    assert_code(
        c.get_policy("keys").await,
        ErrorCode::PolicyNotFound,
        "keys",
    );
}

/// Root's token is revoked only by root itself (Vault's advice: revoke the root token
/// once other administrators exist; the root key makes a new one): another
/// administrator's right to revoke tokens does not reach it.
#[tokio::test]
async fn only_root_revokes_the_root_token() {
    let s = TestServer::start().await;
    let admin = s
        .principal_with(
            "second-admin",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["ram:*", "kms:*"], "Resource": "*"}]}),
        )
        .await;
    assert_code(
        admin.delete_token("root", "root").await,
        ErrorCode::InvalidState,
        "only by root itself",
    );
    s.client.list_keys(None, None).await.unwrap();
    assert_eq!(admin.list_tokens("root").await.unwrap().tokens.len(), 1);
    s.client.delete_token("root", "root").await.unwrap();
    assert_code(
        s.client.list_keys(None, None).await,
        ErrorCode::Unauthenticated,
        "",
    );
    assert!(admin.list_tokens("root").await.unwrap().tokens.is_empty());
}

#[tokio::test]
async fn databases_from_before_principals_are_upgraded() {
    use std::sync::Arc;
    use strongbox_server::barrier::{RootKey, sha256};
    use strongbox_server::clock::ManualClock;
    use strongbox_server::server;
    use strongbox_server::service::ServiceConfig;
    use strongbox_server::storage::{Backend, MemoryBackend, Mutation, Table};
    let key = RootKey::random();
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    server::initialize(b.as_ref(), &key).unwrap();
    // What `init` wrote before principals: the root token's hash in `meta`.
    let mut m: Vec<Mutation> = Vec::new();
    for t in [
        Table::Principals,
        Table::Tokens,
        Table::PrincipalTokens,
        Table::PolicyPrincipals,
    ] {
        for (k, _) in b.scan(t, b"", None, usize::MAX).unwrap() {
            m.push(Mutation::Delete(t, k));
        }
    }
    let old_token = "sbx_from-an-older-release";
    m.push(Mutation::Put(
        Table::Meta,
        b"root_token_sha256".to_vec(),
        sha256(old_token.as_bytes()).to_vec(),
    ));
    b.commit(&m).unwrap();
    let svc = server::unseal(
        b.clone(),
        &key,
        Arc::new(ManualClock::new(T0)),
        ServiceConfig::default(),
    )
    .unwrap()
    .service;
    let id = svc.authenticate(old_token).unwrap();
    assert_eq!(id.principal(), "root");
    assert!(id.allows("kms:DeleteSecret", "secret/anything"));
    assert!(b.get(Table::Meta, b"root_token_sha256").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_whose_request_is_dropped_still_takes_effect() {
    let s = TestServer::start().await;
    let token = s
        .principal_token(
            "app",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:ListAliases", "Resource": "*"}]}),
        )
        .await;
    let app = s.client_with_token(&token);
    // Authenticated once: the identity is cached.
    app.list_aliases().await.unwrap();
    let id = s.client.list_tokens("app").await.unwrap().tokens[0]
        .token_id
        .clone();
    {
        // Polled once (the job is queued), then dropped, as when the client goes away.
        let mut revoke = std::pin::pin!(s.service.delete_token("app", &id, "root"));
        tokio::select! {
            biased;
            _ = &mut revoke => {}
            _ = std::future::ready(()) => {}
        }
    }
    let start = std::time::Instant::now();
    while !s.client.list_tokens("app").await.unwrap().tokens.is_empty() {
        assert!(
            start.elapsed().as_secs() < 10,
            "the revocation never committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Committed: the token is refused (the invalidation follows the commit at once).
    loop {
        match app.list_aliases().await {
            Err(strongbox_client::Error::Api { code, .. }) => {
                assert_eq!(code, ErrorCode::Unauthenticated);
                break;
            }
            other => {
                assert!(
                    start.elapsed().as_secs() < 3,
                    "a revoked token still authenticates from the cache: {other:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn in_use_errors_count_the_users_without_naming_them() {
    let s = TestServer::start().await;
    let c = &s.client;
    c.create_policy(&api::CreatePolicyRequest {
        name: "shared".into(),
        description: None,
        document: serde_json::from_value(json!({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]}))
        .unwrap(),
    })
    .await
    .unwrap();
    for p in ["hidden-one", "hidden-two"] {
        c.create_principal(&api::CreatePrincipalRequest {
            name: p.into(),
            description: None,
            policies: Some(vec!["shared".into()]),
        })
        .await
        .unwrap();
    }
    c.create_rotation_policy(&crate::rotation::policy(
        "rp",
        "30d",
        api::RotationStrategy::Random,
        &[],
    ))
    .await
    .unwrap();
    let mut sec = text_secret("hidden/db", "value");
    sec.rotation_policy = Some("rp".into());
    c.create_secret(&sec).await.unwrap();
    // May delete policies, and see nothing else.
    let deleter = s
        .principal_with(
            "deleter",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["ram:DeletePolicy", "kms:DeleteRotationPolicy"], "Resource": "*"}]}),
        )
        .await;
    for (r, code, count) in [
        (
            deleter.delete_policy("shared").await,
            ErrorCode::PolicyInUse,
            "attached to 2 principals;",
        ),
        (
            deleter.delete_rotation_policy("rp").await,
            ErrorCode::RotationPolicyInUse,
            "attached to 1 secret;",
        ),
    ] {
        let Err(strongbox_client::Error::Api { message, .. }) = &r else {
            panic!("expected {code}, got {r:?}");
        };
        assert!(!message.contains("hidden"), "names a user: {message}");
        assert_code(r, code, count);
    }
}

/// The names of each page of the list at `path`, `limit` at a time, following
/// `next_page_token`; `name` is the field that names an item.
async fn names_by_page(
    s: &TestServer,
    token: &str,
    path: &str,
    items: &str,
    name: &str,
    limit: usize,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut url = format!("{}{path}?limit={limit}", s.base());
        if let Some(t) = &next {
            url.push_str(&format!("&page_token={t}"));
        }
        let r = s.http().get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        pages.push(
            v[items]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i[name].as_str().unwrap().to_string())
                .collect(),
        );
        match v.get("next_page_token").and_then(|t| t.as_str()) {
            Some(t) => next = Some(t.to_string()),
            None => return pages,
        }
        assert!(pages.len() < 10, "{path}: no end");
    }
}

/// The lists of aliases, rotation policies, principals and access policies come a page
/// at a time (`limit` 1–100, default 50, and `page_token`), each page filled with items
/// the caller may see; a full page followed only by hidden items has no next page. The
/// SDK follows every page.
#[tokio::test]
async fn lists_come_in_pages_of_what_the_caller_may_see() {
    let s = TestServer::start().await;
    let c = &s.client;
    let key = c
        .create_key(&api::CreateKeyRequest::default())
        .await
        .unwrap();
    let names = ["a-pub", "b-sec", "c-pub", "d-sec", "e-pub"];
    for n in names {
        c.put_alias(&format!("alias/{n}"), &key.key_id)
            .await
            .unwrap();
        c.create_rotation_policy(&api::CreateRotationPolicyRequest {
            name: n.into(),
            interval: api::Interval::parse("7d").unwrap(),
            window: None,
            strategy: api::RotationStrategy::Random,
            settings: None,
            enabled: None,
        })
        .await
        .unwrap();
        c.create_principal(&api::CreatePrincipalRequest {
            name: n.into(),
            description: None,
            policies: None,
        })
        .await
        .unwrap();
        c.create_policy(&api::CreatePolicyRequest {
            name: n.into(),
            description: None,
            document: serde_json::from_value(json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:DescribeKey"], "Resource": ["key/x"]}]}))
            .unwrap(),
        })
        .await
        .unwrap();
    }
    let viewer = s
        .principal_token(
            "viewer",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:ListAliases", "kms:ListRotationPolicies",
                    "ram:ListPrincipals", "ram:ListPolicies"], "Resource": ["*"]},
                {"Effect": "Allow", "Action": ["kms:DescribeAlias", "kms:DescribeRotationPolicy",
                    "ram:GetPrincipal", "ram:GetPolicy"],
                 "Resource": ["alias/*-pub", "rotation-policy/*-pub", "principal/*-pub",
                    "policy/*-pub", "policy/AdministratorAccess"]}]}),
        )
        .await;
    let visible = ["a-pub", "c-pub", "e-pub"].map(String::from);
    for (path, items, name, prefix) in [
        ("/v1/aliases", "aliases", "alias_name", "alias/"),
        ("/v1/rotation-policies", "rotation_policies", "name", ""),
        ("/v1/principals", "principals", "name", ""),
    ] {
        let want = |ns: &[String]| {
            ns.iter()
                .map(|n| format!("{prefix}{n}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names_by_page(&s, &viewer, path, items, name, 2).await,
            [want(&visible[..2]), want(&visible[2..])],
            "{path}"
        );
        // Hidden ones (and the root principal, the viewer itself) after the last: no
        // next page.
        assert_eq!(
            names_by_page(&s, &viewer, path, items, name, 3).await,
            [want(&visible)],
            "{path}"
        );
    }
    // The built-in policy sorts among the stored ones.
    assert_eq!(
        names_by_page(&s, &viewer, "/v1/policies", "policies", "name", 2).await,
        [
            vec!["AdministratorAccess".to_string(), "a-pub".into()],
            vec!["c-pub".into(), "e-pub".into()]
        ]
    );
    let all = names_by_page(&s, &s.token, "/v1/policies", "policies", "name", 50).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].len(), 7, "{all:?}");
    for limit in ["0", "101", "x"] {
        let r = s
            .http()
            .get(format!("{}/v1/principals?limit={limit}", s.base()))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{limit}");
    }
    // The SDK follows the pages (of 100) to the end.
    for i in 0..100 {
        c.create_principal(&api::CreatePrincipalRequest {
            name: format!("many-{i:03}"),
            description: None,
            policies: None,
        })
        .await
        .unwrap();
    }
    let everyone = c.list_principals().await.unwrap();
    assert_eq!(everyone.principals.len(), 107);
    assert_eq!(everyone.next_page_token, None);
}
