//! The `access_key` strategy: a principal's token rotated while an application keeps
//! calling the API with the token it reads from its own secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::json;
use strongbox_client::ErrorCode;
use strongbox_schemas::{
    self as api, RotationStatus, RotationStrategy, STAGE_CURRENT, STAGE_PREVIOUS,
};

use crate::common::*;
use crate::rotation::{fast_config, policy};

const SECRET: &str = "app/strongbox-token";

/// The token held by a stage (read with the root client).
async fn token_at(s: &TestServer, stage: &str) -> (String, String) {
    let v = s
        .client
        .get_secret_value(SECRET, None, Some(stage))
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
    assert_eq!(doc["PrincipalName"], "app");
    (
        doc["TokenId"].as_str().unwrap().to_string(),
        doc["Token"].as_str().unwrap().to_string(),
    )
}

/// An `AccessKey` secret whose first value names only `principal`.
fn access_key_secret(name: &str, principal: &str) -> api::CreateSecretRequest {
    let mut req = text_secret(name, &json!({"PrincipalName": principal}).to_string());
    req.secret_type = api::SecretType::AccessKey;
    req
}

/// Sets up principal `app` (may read its own secret), the policy and the secret, whose
/// first value names only the principal; a first rotation issues the token the
/// application starts with (rotations revoke only tokens they issued themselves).
async fn setup(s: &TestServer) -> String {
    let c = &s.client;
    c.create_policy(&api::CreatePolicyRequest {
        name: "app-reads-its-token".into(),
        description: None,
        document: serde_json::from_value(json!({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": ["kms:GetSecretValue", "kms:DescribeSecret"],
             "Resource": format!("secret/{SECRET}")}]}))
        .unwrap(),
    })
    .await
    .unwrap();
    c.create_principal(&api::CreatePrincipalRequest {
        name: "app".into(),
        description: None,
        policies: Some(vec!["app-reads-its-token".into()]),
    })
    .await
    .unwrap();
    c.create_rotation_policy(&policy(
        "app-tokens",
        "30d",
        RotationStrategy::AccessKey,
        &[("principals", "app, ci-*")],
    ))
    .await
    .unwrap();
    let mut req = access_key_secret(SECRET, "app");
    req.rotation_policy = Some("app-tokens".into());
    c.create_secret(&req).await.unwrap();
    c.rotate_secret(SECRET, None).await.unwrap();
    token_at(s, STAGE_CURRENT).await.1
}

#[tokio::test]
async fn an_application_reading_its_own_token_keeps_working_across_ten_rotations() {
    let s = Arc::new(TestServer::start_with(fast_config()).await);
    let first = setup(&s).await;

    // The application: calls the API with the token it holds; every answer is its
    // secret's ACSCurrent value, so each call re-reads the token it uses next.
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let app = {
        let (s, stop, calls, failures) = (s.clone(), stop.clone(), calls.clone(), failures.clone());
        let mut held = first.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let r = s
                    .client_with_token(&held)
                    .get_secret_value(SECRET, None, None)
                    .await;
                calls.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(v) => {
                        let doc: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
                        held = doc["Token"].as_str().unwrap().to_string();
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        panic!("the application's call failed after a re-read: {e}");
                    }
                }
            }
        })
    };

    // Tokens by age: history[0] is the first one.
    let mut history = vec![first];
    for round in 1..=10 {
        let r = s.client.rotate_secret(SECRET, None).await.unwrap();
        let (id, new) = token_at(&s, STAGE_CURRENT).await;
        let cur = s.client.get_secret_value(SECRET, None, None).await.unwrap();
        assert_eq!(cur.version_id, r.version_id);
        assert!(
            new.starts_with("sbx_") && !history.contains(&new),
            "round {round}"
        );
        history.push(new.clone());

        // The new token works through the API, as principal app.
        let as_new = s.client_with_token(&new);
        as_new.describe_secret(SECRET).await.unwrap();
        // The previous one (what applications held until now) still works.
        let (_, prev) = token_at(&s, STAGE_PREVIOUS).await;
        assert_eq!(prev, history[history.len() - 2], "round {round}");
        s.client_with_token(&prev)
            .get_secret_value(SECRET, None, None)
            .await
            .unwrap();
        // The one two versions old is refused.
        if history.len() >= 3 {
            let old = &history[history.len() - 3];
            let e = s
                .client_with_token(old)
                .get_secret_value(SECRET, None, None)
                .await
                .unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::Unauthenticated), "round {round}");
        }
        // Only the current and previous tokens exist.
        let tokens = s.client.list_tokens("app").await.unwrap().tokens;
        let ids: Vec<_> = tokens.iter().map(|t| t.token_id.as_str()).collect();
        assert!(ids.contains(&id.as_str()), "round {round}: {ids:?}");
        assert_eq!(tokens.len(), 2, "round {round}: {ids:?}");

        // Let the application make calls with the new token before the next rotation
        // (the first call counted may have started before the swap).
        let before = calls.load(Ordering::Relaxed);
        while calls.load(Ordering::Relaxed) < before + 5 {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    stop.store(true, Ordering::Release);
    app.await.unwrap();
    let (calls, failures) = (
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    eprintln!("access_key: {calls} application calls across 10 rotations, {failures} failed");
    assert_eq!(failures, 0);
    assert!(calls >= 50, "{calls} calls");
    let d = s.client.describe_secret(SECRET).await.unwrap();
    assert_eq!(d.rotation_status, Some(RotationStatus::Succeeded));
    // The audit trail and the versions' metadata never hold a token.
    let audit = s
        .client
        .list_audit(&strongbox_client::AuditQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let text = serde_json::to_string(&audit).unwrap();
    for t in &history {
        assert!(!text.contains(t.as_str()));
    }
}

#[tokio::test]
async fn a_rotation_interrupted_after_each_step_resumes_without_stray_tokens() {
    let s = TestServer::start_with(fast_config()).await;
    let first = setup(&s).await;
    let mut held = vec![first];
    for step in ["create", "set", "test", "finish"] {
        s.service.set_rotation_halt(Some(step));
        let e = s.client.rotate_secret(SECRET, None).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{step}");
        s.service.set_rotation_halt(None);
        // The first tick (as after a restart) resumes the rotation.
        let report = s.service.tick().await.unwrap();
        if step != "finish" {
            assert_eq!(report.rotated_secrets, 1, "{step}");
        }
        let (_, t) = token_at(&s, STAGE_CURRENT).await;
        s.client_with_token(&t)
            .get_secret_value(SECRET, None, None)
            .await
            .unwrap();
        held.push(t);
        let tokens = s.client.list_tokens("app").await.unwrap().tokens;
        assert_eq!(tokens.len(), 2, "after a halt at {step}: {tokens:?}");
    }
    for old in &held[..held.len() - 2] {
        let e = s
            .client_with_token(old)
            .describe_secret(SECRET)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unauthenticated));
    }
}

#[tokio::test]
async fn access_key_policies_never_issue_tokens_for_root_or_unlisted_principals() {
    let s = TestServer::start_with(fast_config()).await;
    let c = &s.client;
    for bad in ["root", "*", "app,root"] {
        assert_code(
            c.create_rotation_policy(&policy(
                "bad",
                "30d",
                RotationStrategy::AccessKey,
                &[("principals", bad)],
            ))
            .await,
            ErrorCode::InvalidParameter,
            "settings.principals",
        );
    }
    assert_code(
        c.create_rotation_policy(&policy("bad", "30d", RotationStrategy::AccessKey, &[]))
            .await,
        ErrorCode::InvalidParameter,
        "settings.principals",
    );
    c.create_rotation_policy(&policy(
        "only-app",
        "30d",
        RotationStrategy::AccessKey,
        &[("principals", "app")],
    ))
    .await
    .unwrap();
    // The strategy rotates AccessKey secrets only.
    let mut generic = text_secret("generic", &json!({"PrincipalName": "app"}).to_string());
    generic.rotation_policy = Some("only-app".into());
    c.create_secret(&generic).await.unwrap();
    assert_code(
        c.rotate_secret("generic", None).await,
        ErrorCode::RotationFailed,
        "secret_type AccessKey",
    );
    let mut req = access_key_secret("steal-root", "root");
    req.rotation_policy = Some("only-app".into());
    c.create_secret(&req).await.unwrap();
    assert_code(
        c.rotate_secret("steal-root", None).await,
        ErrorCode::RotationFailed,
        "does not allow issuing tokens for the principal the value names",
    );
    let root_tokens = c.list_tokens("root").await.unwrap().tokens;
    assert_eq!(root_tokens.len(), 1);
}

#[tokio::test]
async fn the_access_key_strategy_passes_the_conformance_suite() {
    let s = TestServer::start_with(fast_config()).await;
    let first = setup(&s).await;
    // Every step twice: one new token, registered once, that authenticates as app.
    let value = s.service.rotation_conformance(SECRET).await.unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(doc["PrincipalName"], "app");
    let (id, token) = (
        doc["TokenId"].as_str().unwrap(),
        doc["Token"].as_str().unwrap(),
    );
    s.client_with_token(token)
        .get_secret_value(SECRET, None, None)
        .await
        .unwrap();
    s.client_with_token(&first)
        .get_secret_value(SECRET, None, None)
        .await
        .unwrap();
    let tokens = s.client.list_tokens("app").await.unwrap().tokens;
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert_eq!(tokens.iter().filter(|t| t.token_id == id).count(), 1);
}

#[tokio::test]
async fn finish_revokes_only_tokens_the_rotation_issued() {
    let s = TestServer::start_with(fast_config()).await;
    let first = setup(&s).await;
    let c = &s.client;
    // A token whose description copies the rotation's marker for a real version: its
    // id was not derived from that version, so the rotation does not own it.
    let version = c
        .get_secret_value(SECRET, None, None)
        .await
        .unwrap()
        .version_id;
    let lookalike = c
        .create_token(
            "app",
            &api::CreateTokenRequest {
                expires_at: None,
                description: Some(format!(
                    "Issued by the rotation of secret {SECRET}, version {version}"
                )),
            },
        )
        .await
        .unwrap();
    // Another of app's tokens, named in a value put by a caller with the rights to put
    // it: two rotations later it is ACSPrevious before the swap, yet not revoked.
    let other = c.create_token("app", &Default::default()).await.unwrap();
    let owner = s
        .principal_with(
            "owner",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:PutSecretValue"], "Resource": format!("secret/{SECRET}")},
                {"Effect": "Allow", "Action": ["ram:CreateToken", "ram:DeleteToken"], "Resource": "principal/app"}]}),
        )
        .await;
    owner
        .put_secret_value(
            SECRET,
            &put(
                &json!({"PrincipalName": "app", "TokenId": other.token_id, "Token": other.token})
                    .to_string(),
            ),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        c.rotate_secret(SECRET, None).await.unwrap();
    }
    for (what, t) in [("look-alike", &lookalike.token), ("put", &other.token)] {
        s.client_with_token(t)
            .describe_secret(SECRET)
            .await
            .unwrap_or_else(|e| panic!("the {what} token was revoked: {e}"));
    }
    // The rotation's own tokens are still revoked on schedule.
    let e = s
        .client_with_token(&first)
        .describe_secret(SECRET)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthenticated));
    let ids: Vec<String> = c
        .list_tokens("app")
        .await
        .unwrap()
        .tokens
        .into_iter()
        .map(|t| t.token_id)
        .collect();
    assert_eq!(ids.len(), 4, "current, previous, look-alike, put: {ids:?}");
}

/// Tokens the rotations of a secret issued go when the secret goes for good (purged
/// after its window, or forced): nobody could read, rotate or find them by it any more.
/// Within the recovery window they keep working (the secret can be restored); tokens
/// made by hand for the same principal are never touched.
#[tokio::test]
async fn tokens_a_secret_issued_are_revoked_when_the_secret_is_purged_or_forced_out() {
    let s = TestServer::start_with(fast_config()).await;
    setup(&s).await;
    s.client.rotate_secret(SECRET, None).await.unwrap();
    let (_, current) = token_at(&s, STAGE_CURRENT).await;
    let (_, previous) = token_at(&s, STAGE_PREVIOUS).await;
    let by_hand = s
        .client
        .create_token("app", &api::CreateTokenRequest::default())
        .await
        .unwrap()
        .token;
    let works = |token: String| {
        let c = s.client_with_token(&token);
        async move { c.describe_secret(SECRET).await.map(|_| ()) }
    };
    works(current.clone()).await.unwrap();
    works(previous.clone()).await.unwrap();

    // Scheduled for deletion: the tokens still work (restore is possible).
    s.client
        .delete_secret(
            SECRET,
            strongbox_client::DeleteSecretOptions {
                recovery_window_in_days: Some(7),
                force_delete_without_recovery: false,
            },
        )
        .await
        .unwrap();
    works(current.clone()).await.unwrap();
    // Purged when the window has passed: the tokens it issued stop at once.
    s.advance_and_tick(7 * 86_400 + 1).await;
    for t in [&current, &previous] {
        assert_code(
            s.client_with_token(t)
                .list_secrets(&Default::default())
                .await,
            ErrorCode::Unauthenticated,
            "",
        );
    }
    let left: Vec<String> = s
        .client
        .list_tokens("app")
        .await
        .unwrap()
        .tokens
        .into_iter()
        .map(|t| t.description)
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // Still authenticated (then refused: app may not list).
    assert_code(
        s.client_with_token(&by_hand)
            .list_secrets(&Default::default())
            .await,
        ErrorCode::Forbidden,
        "principal app",
    );

    // The same with a forced delete.
    let s = TestServer::start_with(fast_config()).await;
    setup(&s).await;
    let (_, current) = token_at(&s, STAGE_CURRENT).await;
    s.client
        .delete_secret(
            SECRET,
            strongbox_client::DeleteSecretOptions {
                recovery_window_in_days: None,
                force_delete_without_recovery: true,
            },
        )
        .await
        .unwrap();
    assert_code(
        s.client_with_token(&current)
            .list_secrets(&Default::default())
            .await,
        ErrorCode::Unauthenticated,
        "",
    );
}

/// Moving ACSCurrent of an AccessKey secret to a version that names another principal
/// needs the caller's token rights on that principal, as putting that value does: the
/// next rotation makes a token for whatever principal ACSCurrent names.
#[tokio::test]
async fn moving_acscurrent_to_another_principal_needs_token_rights_on_it() {
    let s = TestServer::start_with(fast_config()).await;
    setup(&s).await;
    let c = &s.client;
    c.create_principal(&api::CreatePrincipalRequest {
        name: "ci-admin".into(),
        description: None,
        policies: None,
    })
    .await
    .unwrap();
    let admin_version = c
        .put_secret_value(
            SECRET,
            &api::PutSecretValueRequest {
                secret_data: json!({"PrincipalName": "ci-admin"}).to_string(),
                version_stages: Some(vec!["Parked".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .version_id;
    // May move labels and rotate the secret, but has no token rights on ci-admin.
    let mover = s
        .principal_with(
            "mover",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:UpdateSecretVersionStage",
                    "kms:RotateSecret", "kms:GetSecretValue"],
                 "Resource": format!("secret/{SECRET}")}]}),
        )
        .await;
    let current = token_at(&s, STAGE_CURRENT).await.0;
    let to_admin = api::UpdateSecretStageRequest {
        version_stage: STAGE_CURRENT.into(),
        move_to_version: Some(admin_version.clone()),
        remove_from_version: None,
    };
    assert_code(
        mover.update_secret_stage(SECRET, &to_admin).await,
        ErrorCode::Forbidden,
        "ci-admin",
    );
    assert_eq!(
        token_at(&s, STAGE_CURRENT).await.0,
        current,
        "nothing moved"
    );
    // Other labels still move.
    mover
        .update_secret_stage(
            SECRET,
            &api::UpdateSecretStageRequest {
                version_stage: "Parked".into(),
                move_to_version: Some(admin_version.clone()),
                remove_from_version: None,
            },
        )
        .await
        .unwrap();
    // A rollback to ACSPrevious (the same principal) needs no token rights.
    let previous = c
        .get_secret_value(SECRET, None, Some("ACSPrevious"))
        .await
        .unwrap()
        .version_id;
    mover
        .update_secret_stage(
            SECRET,
            &api::UpdateSecretStageRequest {
                version_stage: STAGE_CURRENT.into(),
                move_to_version: Some(previous),
                remove_from_version: None,
            },
        )
        .await
        .unwrap();
    // The root token may move it to ci-admin's version.
    c.update_secret_stage(SECRET, &to_admin).await.unwrap();
}

/// Tokens a secret's rotations issued go at the end of their cycle also after the
/// secret names another principal and the policy no longer lists the first one.
#[tokio::test]
async fn tokens_of_a_principal_the_secret_no_longer_names_are_revoked() {
    let s = TestServer::start_with(fast_config()).await;
    let first = setup(&s).await;
    let c = &s.client;
    let app = s.client_with_token(&first);
    app.get_secret_value(SECRET, None, None).await.unwrap();
    c.create_principal(&api::CreatePrincipalRequest {
        name: "ci-x".into(),
        description: None,
        policies: None,
    })
    .await
    .unwrap();
    c.put_secret_value(
        SECRET,
        &api::PutSecretValueRequest {
            secret_data: json!({"PrincipalName": "ci-x"}).to_string(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut settings = std::collections::BTreeMap::new();
    settings.insert("principals".to_string(), "ci-*".to_string());
    c.update_rotation_policy(
        "app-tokens",
        &api::UpdateRotationPolicyRequest {
            settings: Some(settings),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The app token is ACSPrevious now; this rotation's finish ends its cycle.
    c.rotate_secret(SECRET, None).await.unwrap();
    assert_code(
        app.get_secret_value(SECRET, None, None).await,
        ErrorCode::Unauthenticated,
        "",
    );
    let left = c.list_tokens("app").await.unwrap().tokens;
    assert!(left.is_empty(), "{left:?}");
}

/// A principal deleted and created again under the same name is another principal: the
/// secret's rotations issue it no token (neither one resumed after the replacement nor a
/// new one) until a value naming it anew is put.
#[tokio::test]
async fn a_principal_created_again_under_the_name_gets_no_token() {
    let s = TestServer::start_with(fast_config()).await;
    let c = &s.client;
    setup(&s).await;
    let first_id = c.get_principal("app").await.unwrap().principal_id;
    assert!(
        first_id.starts_with("p-") && first_id.len() == 34,
        "{first_id}"
    );
    let recorded = |v: &api::SecretValue| -> String {
        let doc: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
        doc["PrincipalId"].as_str().unwrap_or_default().to_string()
    };
    let current = c.get_secret_value(SECRET, None, None).await.unwrap();
    assert_eq!(recorded(&current), first_id);

    // A rotation halted after create: its pending value records the principal's id.
    s.service.set_rotation_halt(Some("create"));
    let e = c.rotate_secret(SECRET, None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unavailable));
    s.service.set_rotation_halt(None);

    // Meanwhile (in the same second: no clock is compared), the principal is deleted
    // (its tokens go with it) and created again.
    c.delete_principal("app").await.unwrap();
    let again = c
        .create_principal(&api::CreatePrincipalRequest {
            name: "app".into(),
            description: None,
            policies: Some(vec!["app-reads-its-token".into()]),
        })
        .await
        .unwrap();
    assert_ne!(again.principal_id, first_id);
    assert_eq!(
        c.get_principal("app").await.unwrap().principal_id,
        again.principal_id
    );

    // The resumed rotation's set refuses it.
    s.service.tick().await.unwrap();
    let kept = c
        .describe_secret(SECRET)
        .await
        .unwrap()
        .last_rotation_error
        .unwrap_or_default();
    assert!(kept.contains("access_key set"), "{kept}");
    assert!(kept.contains("created again"), "{kept}");
    assert!(c.list_tokens("app").await.unwrap().tokens.is_empty());

    // A rotation asked for now resumes it, and is refused the same way.
    assert_code(
        c.rotate_secret(SECRET, None).await,
        ErrorCode::RotationFailed,
        "created again",
    );
    // Abandoned, a new rotation is refused at create: the current value records the
    // old principal's id.
    let pending = c
        .get_secret_value(SECRET, None, Some(api::STAGE_PENDING))
        .await
        .unwrap()
        .version_id;
    c.update_secret_stage(
        SECRET,
        &api::UpdateSecretStageRequest {
            version_stage: api::STAGE_PENDING.into(),
            move_to_version: None,
            remove_from_version: Some(pending),
        },
    )
    .await
    .unwrap();
    let e = c.rotate_secret(SECRET, None).await.unwrap_err();
    assert!(e.to_string().contains("access_key create"), "{e}");
    assert_code(Err::<(), _>(e), ErrorCode::RotationFailed, "created again");
    assert!(c.list_tokens("app").await.unwrap().tokens.is_empty());

    // The first value, which names the principal without an id, is no way around it.
    // Moving ACSCurrent back to it is a move to another principal: it needs the token
    // rights on it, which a caller allowed only to move stages lacks.
    let mut first_version = None;
    for v in c.list_secret_versions(SECRET).await.unwrap().versions {
        let value = c
            .get_secret_value(SECRET, Some(&v.version_id), None)
            .await
            .unwrap();
        if recorded(&value).is_empty() {
            first_version = Some(v.version_id);
        }
    }
    let first_version = first_version.expect("the first value, without PrincipalId");
    let mover = s
        .principal_with(
            "mover",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:UpdateSecretVersionStage"], "Resource": format!("secret/{SECRET}")}]}),
        )
        .await;
    let back = api::UpdateSecretStageRequest {
        version_stage: STAGE_CURRENT.into(),
        move_to_version: Some(first_version.clone()),
        remove_from_version: None,
    };
    assert_code(
        mover.update_secret_stage(SECRET, &back).await,
        ErrorCode::Forbidden,
        "ram:CreateToken",
    );
    // Moved by one that may, its rotation is refused: the value was written for the
    // principal that had the name then.
    c.update_secret_stage(SECRET, &back).await.unwrap();
    assert_code(
        c.rotate_secret(SECRET, None).await,
        ErrorCode::RotationFailed,
        "created again",
    );
    assert!(c.list_tokens("app").await.unwrap().tokens.is_empty());

    // A value naming the principal anew binds the next rotation to the new one.
    c.put_secret_value(
        SECRET,
        &api::PutSecretValueRequest {
            secret_data: json!({"PrincipalName": "app"}).to_string(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.rotate_secret(SECRET, None).await.unwrap();
    let current = c.get_secret_value(SECRET, None, None).await.unwrap();
    assert_eq!(recorded(&current), again.principal_id);
    let (_, token) = token_at(&s, STAGE_CURRENT).await;
    s.client_with_token(&token)
        .describe_secret(SECRET)
        .await
        .unwrap();
    assert_eq!(c.list_tokens("app").await.unwrap().tokens.len(), 1);
}

/// A value may name a principal before it exists (a literal name in a configuration
/// applied in any order): the first rotation after the principal is created issues its
/// token. Moving ACSCurrent back to such a value still counts as a move to another
/// principal.
#[tokio::test]
async fn a_value_may_name_a_principal_created_after_it() {
    let s = TestServer::start_with(fast_config()).await;
    let c = &s.client;
    c.create_rotation_policy(&policy(
        "early-tokens",
        "30d",
        RotationStrategy::AccessKey,
        &[("principals", "early")],
    ))
    .await
    .unwrap();
    let mut req = access_key_secret("early/token", "early");
    req.rotation_policy = Some("early-tokens".into());
    let first = c.create_secret(&req).await.unwrap().version_id;
    assert_code(
        c.rotate_secret("early/token", None).await,
        ErrorCode::RotationFailed,
        "does not exist",
    );
    s.clock.advance(5);
    c.create_principal(&api::CreatePrincipalRequest {
        name: "early".into(),
        description: None,
        policies: None,
    })
    .await
    .unwrap();
    c.rotate_secret("early/token", None).await.unwrap();
    let v = c.get_secret_value("early/token", None, None).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
    let id = c.get_principal("early").await.unwrap().principal_id;
    assert_eq!(doc["PrincipalId"], id.as_str());
    // The token authenticates (the principal has no policy, so it may do nothing).
    let e = s
        .client_with_token(doc["Token"].as_str().unwrap())
        .describe_secret("early/token")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    assert_eq!(c.list_tokens("early").await.unwrap().tokens.len(), 1);

    let mover = s
        .principal_with(
            "mover",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:UpdateSecretVersionStage"], "Resource": "secret/early/token"}]}),
        )
        .await;
    assert_code(
        mover
            .update_secret_stage(
                "early/token",
                &api::UpdateSecretStageRequest {
                    version_stage: STAGE_CURRENT.into(),
                    move_to_version: Some(first),
                    remove_from_version: None,
                },
            )
            .await,
        ErrorCode::Forbidden,
        "ram:CreateToken",
    );
}

/// A value written while no principal had the name stands for the next one created
/// under it, not for a later one: created, deleted and created again before a rotation,
/// the name's principal gets no token. And a rotation by another strategy (here a
/// `random` one writing one field) does not move the value to whoever has the name.
#[tokio::test]
async fn a_value_stands_for_the_principal_it_was_written_for_across_strategies() {
    let s = TestServer::start_with(fast_config()).await;
    let c = &s.client;
    c.create_rotation_policy(&policy(
        "late-tokens",
        "30d",
        RotationStrategy::AccessKey,
        &[("principals", "late, other")],
    ))
    .await
    .unwrap();
    let principal = |name: &'static str| api::CreatePrincipalRequest {
        name: name.into(),
        description: None,
        policies: None,
    };
    let mut req = access_key_secret("late/token", "late");
    req.rotation_policy = Some("late-tokens".into());
    c.create_secret(&req).await.unwrap();
    c.create_principal(&principal("late")).await.unwrap();
    c.delete_principal("late").await.unwrap();
    c.create_principal(&principal("late")).await.unwrap();
    assert_code(
        c.rotate_secret("late/token", None).await,
        ErrorCode::RotationFailed,
        "created again",
    );
    assert!(c.list_tokens("late").await.unwrap().tokens.is_empty());

    // Written for `other`, which is then replaced; a random rotation of one field
    // writes a value without PrincipalId after the replacement.
    c.create_principal(&principal("other")).await.unwrap();
    c.create_secret(&access_key_secret("other/token", "other"))
        .await
        .unwrap();
    c.delete_principal("other").await.unwrap();
    c.create_principal(&principal("other")).await.unwrap();
    c.create_rotation_policy(&policy(
        "one-field",
        "30d",
        RotationStrategy::Random,
        &[("json_field", "Note")],
    ))
    .await
    .unwrap();
    let attach = |p: &str| api::UpdateSecretRequest {
        rotation_policy: Some(p.into()),
        ..Default::default()
    };
    c.update_secret("other/token", &attach("one-field"))
        .await
        .unwrap();
    c.rotate_secret("other/token", None).await.unwrap();
    let v = c.get_secret_value("other/token", None, None).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
    assert!(
        doc["Note"].is_string() && doc["PrincipalId"].is_null(),
        "{doc}"
    );
    c.update_secret("other/token", &attach("late-tokens"))
        .await
        .unwrap();
    assert_code(
        c.rotate_secret("other/token", None).await,
        ErrorCode::RotationFailed,
        "created again",
    );
    assert!(c.list_tokens("other").await.unwrap().tokens.is_empty());
}
