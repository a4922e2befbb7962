use strongbox_client::ErrorCode;
use strongbox_schemas::{self as api, Interval, RotationStrategy};

use crate::common::*;

fn policy(name: &str) -> api::CreateRotationPolicyRequest {
    api::CreateRotationPolicyRequest {
        name: name.into(),
        interval: Interval::parse("7d").unwrap(),
        window: None,
        strategy: RotationStrategy::Random,
        settings: Some([("length".to_string(), "32".to_string())].into()),
        enabled: None,
    }
}

#[tokio::test]
async fn rotation_policy_records() {
    let s = TestServer::start().await;
    let c = &s.client;
    let p = c.create_rotation_policy(&policy("weekly")).await.unwrap();
    assert_eq!(p.interval.as_str(), "7d");
    assert_eq!(p.window.as_str(), "1h");
    assert!(p.enabled);
    assert_eq!(c.describe_rotation_policy("weekly").await.unwrap(), p);
    assert_code(
        c.create_rotation_policy(&policy("weekly")).await,
        ErrorCode::AlreadyExists,
        "weekly",
    );

    // The secondsform is the same duration type.
    let mut secs = policy("secs");
    secs.interval = Interval::parse("604800s").unwrap();
    assert_eq!(
        c.create_rotation_policy(&secs)
            .await
            .unwrap()
            .interval
            .seconds(),
        604_800
    );

    let mut short = policy("short");
    short.interval = Interval::parse("1h").unwrap();
    assert_code(
        c.create_rotation_policy(&short).await,
        ErrorCode::InvalidParameter,
        "interval",
    );
    let mut typo = policy("typo");
    typo.settings = Some([("lenght".to_string(), "32".to_string())].into());
    assert_code(
        c.create_rotation_policy(&typo).await,
        ErrorCode::InvalidParameter,
        "settings.lenght",
    );
    let mut hook = policy("hook");
    hook.strategy = RotationStrategy::Webhook;
    hook.settings = Some([("url".to_string(), "http://plain".to_string())].into());
    assert_code(
        c.create_rotation_policy(&hook).await,
        ErrorCode::InvalidParameter,
        "settings.url",
    );
    let mut wide = policy("wide");
    wide.window = Some(Interval::parse("8d").unwrap());
    assert_code(
        c.create_rotation_policy(&wide).await,
        ErrorCode::InvalidParameter,
        "window",
    );
    let (status, body) = c
        .raw(
            reqwest::Method::POST,
            &["v1", "rotation-policies"],
            Some(&serde_json::json!({"name": "x", "interval": "7w", "strategy": "random"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // Attached to a secret: next rotation follows; deletion refused while in use.
    let mut sec = text_secret("rotated", "x");
    sec.rotation_policy = Some("weekly".into());
    let created = c.create_secret(&sec).await.unwrap();
    assert_eq!(created.next_rotation_date.unwrap().unix(), T0 + 7 * 86_400);
    assert_code(
        c.delete_rotation_policy("weekly").await,
        ErrorCode::RotationPolicyInUse,
        "attached to 1 secret;",
    );

    let upd = c
        .update_rotation_policy(
            "weekly",
            &api::UpdateRotationPolicyRequest {
                interval: Some(Interval::parse("14d").unwrap()),
                enabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(upd.interval.as_str(), "14d");
    assert_eq!(
        c.describe_secret("rotated")
            .await
            .unwrap()
            .next_rotation_date
            .unwrap()
            .unix(),
        T0 + 14 * 86_400
    );
    c.update_rotation_policy(
        "weekly",
        &api::UpdateRotationPolicyRequest {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        c.describe_secret("rotated")
            .await
            .unwrap()
            .next_rotation_date
            .is_none(),
        "disabled policy schedules nothing"
    );

    c.update_secret(
        "rotated",
        &api::UpdateSecretRequest {
            rotation_policy: Some(String::new()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.delete_rotation_policy("weekly").await.unwrap();
    assert_code(
        c.describe_rotation_policy("weekly").await,
        ErrorCode::RotationPolicyNotFound,
        "weekly",
    );
    assert_code(
        c.delete_rotation_policy("weekly").await,
        ErrorCode::RotationPolicyNotFound,
        "weekly",
    );
    let names: Vec<_> = c
        .list_rotation_policies()
        .await
        .unwrap()
        .rotation_policies
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["secs"]);

    // A secret waiting out its recovery window keeps its policy from being deleted, and
    // may have it detached (nothing else changed) so that it can be.
    let mut doomed = text_secret("doomed", "x");
    doomed.rotation_policy = Some("secs".into());
    c.create_secret(&doomed).await.unwrap();
    c.delete_secret("doomed", Default::default()).await.unwrap();
    assert_code(
        c.delete_rotation_policy("secs").await,
        ErrorCode::RotationPolicyInUse,
        "attached to 1 secret;",
    );
    let detach = api::UpdateSecretRequest {
        rotation_policy: Some(String::new()),
        ..Default::default()
    };
    let mut more = detach.clone();
    more.description = Some("d".into());
    assert_code(
        c.update_secret("doomed", &more).await,
        ErrorCode::SecretPendingDeletion,
        "doomed",
    );
    let attach = api::UpdateSecretRequest {
        rotation_policy: Some("secs".into()),
        ..Default::default()
    };
    assert_code(
        c.update_secret("doomed", &attach).await,
        ErrorCode::SecretPendingDeletion,
        "doomed",
    );
    let detached = c.update_secret("doomed", &detach).await.unwrap();
    assert!(detached.rotation_policy.is_none());
    assert!(detached.planned_delete_time.is_some(), "still pending");
    c.delete_rotation_policy("secs").await.unwrap();
    let restored = c.restore_secret("doomed").await.unwrap();
    assert!(restored.rotation_policy.is_none());
    assert_eq!(
        c.get_secret_value("doomed", None, None)
            .await
            .unwrap()
            .secret_data,
        "x"
    );
}
