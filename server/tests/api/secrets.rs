use std::collections::BTreeSet;

use strongbox_client::{DeleteSecretOptions, ErrorCode, ListSecretsOptions};
use strongbox_schemas::{self as api, SecretDataType};

use crate::common::*;

#[tokio::test]
async fn create_read_put_stages_and_versions() {
    let s = TestServer::start().await;
    let c = &s.client;
    let mut req = text_secret("app/db", "first");
    req.version_id = Some("v1".into());
    req.description = Some("db creds".into());
    req.tags = Some([("env".to_string(), "prod".to_string())].into());
    req.extended_config = Some(serde_json::from_str(r#"{"Host":"db"}"#).unwrap());
    let sec = c.create_secret(&req).await.unwrap();
    assert_eq!(sec.name, "app/db");
    assert_eq!(sec.arn, "strongbox:kms:secret/app/db");
    assert_eq!(sec.version_id, "v1");
    assert_eq!(sec.secret_type, api::SecretType::Generic);
    assert_eq!(sec.creation_date.unix(), T0);
    assert_eq!(c.describe_secret("app/db").await.unwrap(), sec);

    let v = c.get_secret_value("app/db", None, None).await.unwrap();
    assert_eq!(
        (v.secret_data.as_str(), v.version_id.as_str()),
        ("first", "v1")
    );
    assert_eq!(v.version_stages, vec!["ACSCurrent"]);

    // A new version becomes current; the old one previous.
    s.clock.advance(10);
    let r = c
        .put_secret_value(
            "app/db",
            &api::PutSecretValueRequest {
                version_id: Some("v2".into()),
                ..put("second")
            },
        )
        .await
        .unwrap();
    assert_eq!(r.version_stages, vec!["ACSCurrent"]);
    assert_eq!(
        c.get_secret_value("app/db", None, None)
            .await
            .unwrap()
            .secret_data,
        "second"
    );
    let prev = c
        .get_secret_value("app/db", None, Some("ACSPrevious"))
        .await
        .unwrap();
    assert_eq!(
        (prev.secret_data.as_str(), prev.version_id.as_str()),
        ("first", "v1")
    );
    assert_eq!(
        c.get_secret_value("app/db", Some("v1"), None)
            .await
            .unwrap()
            .secret_data,
        "first"
    );
    assert_code(
        c.get_secret_value("app/db", Some("v1"), Some("ACSCurrent"))
            .await,
        ErrorCode::VersionNotFound,
        "app/db",
    );
    assert_code(
        c.get_secret_value("app/db", Some("v9"), None).await,
        ErrorCode::VersionNotFound,
        "app/db",
    );
    assert_eq!(
        c.describe_secret("app/db")
            .await
            .unwrap()
            .update_date
            .unix(),
        T0 + 10
    );

    // Idempotent retry; conflicting retry.
    let again = c
        .put_secret_value(
            "app/db",
            &api::PutSecretValueRequest {
                version_id: Some("v2".into()),
                ..put("second")
            },
        )
        .await
        .unwrap();
    assert_eq!(again.version_id, "v2");
    assert_eq!(
        c.list_secret_versions("app/db")
            .await
            .unwrap()
            .versions
            .len(),
        2,
        "no-op"
    );
    assert_code(
        c.put_secret_value(
            "app/db",
            &api::PutSecretValueRequest {
                version_id: Some("v2".into()),
                ..put("other")
            },
        )
        .await,
        ErrorCode::VersionConflict,
        "v2",
    );

    // A version with custom stages only does not move ACSCurrent.
    c.put_secret_value(
        "app/db",
        &api::PutSecretValueRequest {
            version_id: Some("v3".into()),
            version_stages: Some(vec!["Canary".into()]),
            ..put("third")
        },
    )
    .await
    .unwrap();
    assert_eq!(
        c.get_secret_value("app/db", None, None)
            .await
            .unwrap()
            .version_id,
        "v2"
    );
    assert_eq!(
        c.get_secret_value("app/db", None, Some("Canary"))
            .await
            .unwrap()
            .secret_data,
        "third"
    );

    // Stage moves: ACSCurrent to v3 makes v2 ACSPrevious.
    let vs = c
        .update_secret_stage(
            "app/db",
            &api::UpdateSecretStageRequest {
                version_stage: "ACSCurrent".into(),
                move_to_version: Some("v3".into()),
                remove_from_version: Some("v2".into()),
            },
        )
        .await
        .unwrap();
    let stages = |id: &str| {
        vs.versions
            .iter()
            .find(|v| v.version_id == id)
            .unwrap()
            .version_stages
            .clone()
    };
    assert_eq!(stages("v3"), vec!["Canary", "ACSCurrent"]);
    assert_eq!(stages("v2"), vec!["ACSPrevious"]);
    assert!(stages("v1").is_empty());
    assert_code(
        c.update_secret_stage(
            "app/db",
            &api::UpdateSecretStageRequest {
                version_stage: "ACSCurrent".into(),
                move_to_version: None,
                remove_from_version: Some("v3".into()),
            },
        )
        .await,
        ErrorCode::InvalidParameter,
        "only be moved",
    );
    assert_code(
        c.update_secret_stage(
            "app/db",
            &api::UpdateSecretStageRequest {
                version_stage: "Canary".into(),
                move_to_version: None,
                remove_from_version: Some("v1".into()),
            },
        )
        .await,
        ErrorCode::InvalidParameter,
        "remove_from_version",
    );
    assert_code(
        c.update_secret_stage(
            "app/db",
            &api::UpdateSecretStageRequest {
                version_stage: "Canary".into(),
                move_to_version: Some("nope".into()),
                remove_from_version: None,
            },
        )
        .await,
        ErrorCode::VersionNotFound,
        "move_to_version",
    );
    c.update_secret_stage(
        "app/db",
        &api::UpdateSecretStageRequest {
            version_stage: "Canary".into(),
            move_to_version: None,
            remove_from_version: Some("v3".into()),
        },
    )
    .await
    .unwrap();
    let listed = c.list_secret_versions("app/db").await.unwrap().versions;
    assert_eq!(
        listed
            .iter()
            .map(|v| v.version_id.as_str())
            .collect::<Vec<_>>(),
        ["v3", "v2", "v1"],
        "newest first"
    );
    assert!(listed.iter().all(|v| v.created_by == "principal/root"));

    // Metadata update.
    let u = c
        .update_secret(
            "app/db",
            &api::UpdateSecretRequest {
                description: Some("new".into()),
                tags: Some(Default::default()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((u.description.as_str(), u.tags.len()), ("new", 0));
    assert_eq!(u.extended_config, sec.extended_config, "untouched");
}

#[tokio::test]
async fn validation_and_not_found() {
    let s = TestServer::start().await;
    let c = &s.client;
    for bad in ["", ".", "..", "has space", "ü"] {
        assert_code(
            c.create_secret(&text_secret(bad, "x")).await,
            ErrorCode::InvalidParameter,
            "name",
        );
    }
    assert_code(
        c.create_secret(&text_secret(&"n".repeat(193), "x")).await,
        ErrorCode::InvalidParameter,
        "192",
    );
    let mut long_version = text_secret("ok", "x");
    long_version.version_id = Some("v".repeat(65));
    assert_code(
        c.create_secret(&long_version).await,
        ErrorCode::InvalidParameter,
        "version_id",
    );
    assert_code(
        c.create_secret(&text_secret("ok", &"x".repeat(30_721)))
            .await,
        ErrorCode::PayloadTooLarge,
        "30720",
    );
    c.create_secret(&text_secret("max", &"x".repeat(30_720)))
        .await
        .unwrap();
    // The largest value still fits when JSON escapes every byte of it (6 bytes each).
    let escaped = "\u{1}".repeat(30_720);
    c.create_secret(&text_secret("max-escaped", &escaped))
        .await
        .unwrap();
    let v = c.get_secret_value("max-escaped", None, None).await.unwrap();
    assert!(v.secret_data == escaped);
    let mut bad_bin = text_secret("bin", "not base64!");
    bad_bin.secret_data_type = SecretDataType::Binary;
    assert_code(
        c.create_secret(&bad_bin).await,
        ErrorCode::InvalidParameter,
        "base64",
    );
    let mut tags = text_secret("tags", "x");
    tags.tags = Some([(String::new(), "v".to_string())].into());
    assert_code(
        c.create_secret(&tags).await,
        ErrorCode::InvalidParameter,
        "tags",
    );
    let mut missing_key = text_secret("k", "x");
    missing_key.encryption_key_id = Some("no-such-key".into());
    assert_code(
        c.create_secret(&missing_key).await,
        ErrorCode::KeyNotFound,
        "no-such-key",
    );
    let mut missing_policy = text_secret("p", "x");
    missing_policy.rotation_policy = Some("nope".into());
    assert_code(
        c.create_secret(&missing_policy).await,
        ErrorCode::RotationPolicyNotFound,
        "rotation_policy",
    );
    assert_code(
        c.describe_secret("ghost").await,
        ErrorCode::SecretNotFound,
        "ghost",
    );
    assert_code(
        c.get_secret_value("ghost", None, None).await,
        ErrorCode::SecretNotFound,
        "ghost",
    );
    assert_code(
        c.put_secret_value("ghost", &put("x")).await,
        ErrorCode::SecretNotFound,
        "ghost",
    );
    assert_code(
        c.delete_secret("ghost", Default::default()).await,
        ErrorCode::SecretNotFound,
        "ghost",
    );
    c.create_secret(&text_secret("dup", "x")).await.unwrap();
    assert_code(
        c.create_secret(&text_secret("dup", "y")).await,
        ErrorCode::AlreadyExists,
        "dup",
    );
    // Nothing stored changed on the rejected requests.
    assert_eq!(
        c.get_secret_value("dup", None, None)
            .await
            .unwrap()
            .secret_data,
        "x"
    );
    let names: BTreeSet<_> = c
        .list_secrets(&Default::default())
        .await
        .unwrap()
        .secrets
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        names,
        ["dup", "max", "max-escaped"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

#[tokio::test]
async fn binary_values_round_trip() {
    let s = TestServer::start().await;
    let c = &s.client;
    let mut req = text_secret("bin", "AAECA/8=");
    req.secret_data_type = SecretDataType::Binary;
    c.create_secret(&req).await.unwrap();
    let v = c.get_secret_value("bin", None, None).await.unwrap();
    assert_eq!(
        (v.secret_data.as_str(), v.secret_data_type),
        ("AAECA/8=", SecretDataType::Binary)
    );
}

#[tokio::test]
async fn deletion_recovery_and_purge() {
    let s = TestServer::start().await;
    let c = &s.client;
    c.create_secret(&text_secret("gone", "x")).await.unwrap();
    assert_code(
        c.delete_secret(
            "gone",
            DeleteSecretOptions {
                recovery_window_in_days: Some(3),
                ..Default::default()
            },
        )
        .await,
        ErrorCode::InvalidParameter,
        "recovery_window_in_days",
    );
    assert_code(
        c.delete_secret(
            "gone",
            DeleteSecretOptions {
                recovery_window_in_days: Some(7),
                force_delete_without_recovery: true,
            },
        )
        .await,
        ErrorCode::InvalidParameter,
        "force_delete_without_recovery",
    );
    let d = c
        .delete_secret(
            "gone",
            DeleteSecretOptions {
                recovery_window_in_days: Some(7),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(d.planned_delete_time.unwrap().unix(), T0 + 7 * 86_400);
    // Asking again with the same window (or none) answers as before; another window is
    // refused, not silently ignored.
    s.clock.advance(60);
    for window in [Some(7), None] {
        let again = c
            .delete_secret(
                "gone",
                DeleteSecretOptions {
                    recovery_window_in_days: window,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(again.planned_delete_time, d.planned_delete_time);
    }
    assert_code(
        c.delete_secret(
            "gone",
            DeleteSecretOptions {
                recovery_window_in_days: Some(30),
                ..Default::default()
            },
        )
        .await,
        ErrorCode::InvalidState,
        "recovery window of 7 days",
    );
    // Describable, not readable or writable, name not reusable.
    assert_eq!(
        c.describe_secret("gone").await.unwrap().planned_delete_time,
        d.planned_delete_time
    );
    assert_code(
        c.get_secret_value("gone", None, None).await,
        ErrorCode::SecretPendingDeletion,
        "restore",
    );
    assert_code(
        c.put_secret_value("gone", &put("y")).await,
        ErrorCode::SecretPendingDeletion,
        "gone",
    );
    assert_code(
        c.create_secret(&text_secret("gone", "y")).await,
        ErrorCode::SecretPendingDeletion,
        "gone",
    );
    let r = c.restore_secret("gone").await.unwrap();
    assert!(r.planned_delete_time.is_none());
    assert_eq!(
        c.get_secret_value("gone", None, None)
            .await
            .unwrap()
            .secret_data,
        "x"
    );

    // Purged when the window has passed.
    c.delete_secret(
        "gone",
        DeleteSecretOptions {
            recovery_window_in_days: Some(7),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.advance_and_tick(7 * 86_400 - 1).await.purged_secrets, 0);
    assert_eq!(s.advance_and_tick(1).await.purged_secrets, 1);
    assert_code(
        c.describe_secret("gone").await,
        ErrorCode::SecretNotFound,
        "gone",
    );
    c.create_secret(&text_secret("gone", "reborn"))
        .await
        .unwrap();

    // Forced deletion: at once.
    let f = c
        .delete_secret(
            "gone",
            DeleteSecretOptions {
                force_delete_without_recovery: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(f.planned_delete_time.is_none());
    assert_code(
        c.describe_secret("gone").await,
        ErrorCode::SecretNotFound,
        "gone",
    );
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let s = TestServer::start().await;
    let c = &s.client;
    for i in 0..7 {
        let mut r = text_secret(&format!("app/s{i}"), "x");
        r.tags = Some(
            [(
                "parity".to_string(),
                (if i % 2 == 0 { "even" } else { "odd" }).to_string(),
            )]
            .into(),
        );
        c.create_secret(&r).await.unwrap();
    }
    c.create_secret(&text_secret("other", "x")).await.unwrap();
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_secrets(&ListSecretsOptions {
                limit: Some(3),
                page_token: token.clone(),
                name_prefix: Some("app/".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        names.extend(page.secrets.into_iter().map(|s| s.name));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(
        names,
        (0..7).map(|i| format!("app/s{i}")).collect::<Vec<_>>()
    );
    let even = c
        .list_secrets(&ListSecretsOptions {
            tags: vec![("parity".into(), "even".into())],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(even.secrets.len(), 4);
    assert_code(
        c.list_secrets(&ListSecretsOptions {
            limit: Some(101),
            ..Default::default()
        })
        .await,
        ErrorCode::InvalidParameter,
        "limit",
    );
    let (status, body) = c
        .raw(reqwest::Method::GET, &["v1", "secrets"], None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn concurrent_puts_leave_one_current_and_default_key_is_created_once() {
    let s = TestServer::start().await;
    // Concurrent first use of the default key.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let c = s.client.clone();
        tasks.push(tokio::spawn(async move {
            c.create_secret(&text_secret(&format!("c{i}"), "x"))
                .await
                .unwrap()
        }));
    }
    let mut keys = BTreeSet::new();
    for t in tasks {
        keys.insert(t.await.unwrap().encryption_key_id);
    }
    assert_eq!(keys.len(), 1, "one default key");
    assert_eq!(s.client.list_keys(None, None).await.unwrap().keys.len(), 1);
    assert_eq!(
        s.client
            .get_alias("alias/strongbox/default")
            .await
            .unwrap()
            .key_id,
        *keys.iter().next().unwrap()
    );

    let mut tasks = Vec::new();
    for i in 0..24 {
        let c = s.client.clone();
        tasks.push(tokio::spawn(async move {
            c.put_secret_value("c0", &put(&format!("val{i}")))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let versions = s.client.list_secret_versions("c0").await.unwrap().versions;
    let count = |st: &str| {
        versions
            .iter()
            .filter(|v| v.version_stages.iter().any(|x| x == st))
            .count()
    };
    assert_eq!((count("ACSCurrent"), count("ACSPrevious")), (1, 1));
    assert_eq!(versions.len(), 10, "pruned to the default of 10");
}

#[tokio::test]
async fn pruning_keeps_labelled_versions() {
    let s = TestServer::start_with(strongbox_server::service::ServiceConfig {
        max_versions: 3,
        ..Default::default()
    })
    .await;
    let c = &s.client;
    let mut r = text_secret("p", "0");
    r.version_id = Some("v0".into());
    c.create_secret(&r).await.unwrap();
    c.put_secret_value(
        "p",
        &api::PutSecretValueRequest {
            version_id: Some("keep".into()),
            version_stages: Some(vec!["Pinned".into()]),
            ..put("k")
        },
    )
    .await
    .unwrap();
    for i in 1..6 {
        c.put_secret_value(
            "p",
            &api::PutSecretValueRequest {
                version_id: Some(format!("v{i}")),
                ..put(&i.to_string())
            },
        )
        .await
        .unwrap();
    }
    let ids: Vec<_> = c
        .list_secret_versions("p")
        .await
        .unwrap()
        .versions
        .into_iter()
        .map(|v| v.version_id)
        .collect();
    assert_eq!(ids, ["v5", "v4", "keep"]);
    assert_code(
        c.get_secret_value("p", Some("v0"), None).await,
        ErrorCode::VersionNotFound,
        "p",
    );
    // Every kept version labelled: a new unlabelled one would be pruned as it is
    // written, so it is refused and nothing changes.
    c.put_secret_value(
        "p",
        &api::PutSecretValueRequest {
            version_id: Some("v6".into()),
            version_stages: Some(vec!["Pinned2".into()]),
            ..put("6")
        },
    )
    .await
    .unwrap();
    assert_code(
        c.put_secret_value(
            "p",
            &api::PutSecretValueRequest {
                version_id: Some("lost".into()),
                version_stages: Some(vec![]),
                ..put("7")
            },
        )
        .await,
        ErrorCode::InvalidParameter,
        "would be pruned at once",
    );
    let ids: Vec<_> = c
        .list_secret_versions("p")
        .await
        .unwrap()
        .versions
        .into_iter()
        .map(|v| v.version_id)
        .collect();
    assert_eq!(ids, ["v6", "v5", "v4", "keep"]);
}

/// Labelled versions are never pruned, so a secret carries at most 20 distinct labels
/// (as in AWS Secrets Manager); a change that would make more is refused and nothing
/// changes.
#[tokio::test]
async fn a_secret_carries_at_most_twenty_stage_labels() {
    let s = TestServer::start().await;
    let c = &s.client;
    c.create_secret(&text_secret("l", "0")).await.unwrap();
    let labelled = |label: &str, id: &str| api::PutSecretValueRequest {
        version_id: Some(id.into()),
        version_stages: Some(vec![label.into()]),
        ..put(id)
    };
    // ACSCurrent, ACSPrevious (after the first put) and 18 labels of its own.
    c.put_secret_value("l", &put("1")).await.unwrap();
    for i in 0..18 {
        c.put_secret_value("l", &labelled(&format!("L{i}"), &format!("v{i}")))
            .await
            .unwrap();
    }
    assert_code(
        c.put_secret_value("l", &labelled("L18", "v18")).await,
        ErrorCode::InvalidParameter,
        "at most 20 distinct stage labels",
    );
    let too_many = api::PutSecretValueRequest {
        version_stages: Some((0..21).map(|i| format!("M{i}")).collect()),
        ..put("x")
    };
    assert_code(
        c.put_secret_value("l", &too_many).await,
        ErrorCode::InvalidParameter,
        "version_stages",
    );
    let stage = |label: &str, to: Option<&str>, from: Option<&str>| api::UpdateSecretStageRequest {
        version_stage: label.into(),
        move_to_version: to.map(Into::into),
        remove_from_version: from.map(Into::into),
    };
    assert_code(
        c.update_secret_stage("l", &stage("L18", Some("v0"), None))
            .await,
        ErrorCode::InvalidParameter,
        "version_stage",
    );
    let versions = c.list_secret_versions("l").await.unwrap().versions;
    assert_eq!(versions.len(), 20, "nothing was added");
    assert!(versions.iter().all(|v| v.version_id != "v18"));
    // Moving a label it has, or taking one off, is fine; then a new one fits again.
    c.update_secret_stage("l", &stage("L0", Some("v1"), Some("v0")))
        .await
        .unwrap();
    c.update_secret_stage("l", &stage("L0", None, Some("v1")))
        .await
        .unwrap();
    c.put_secret_value("l", &labelled("L18", "v18"))
        .await
        .unwrap();
}

/// A name or id that is empty, `.` or `..` would make the SDK's URL name another route
/// (`GET /v1/secrets/./value` is `GET /v1/secrets/value`, a describe of `value`): the SDK
/// refuses it, and nothing reaches the server.
#[tokio::test]
async fn the_sdk_refuses_path_segments_that_would_name_another_resource() {
    let s = TestServer::start().await;
    let c = &s.client;
    let before = c.list_audit(&Default::default()).await.unwrap().count;
    for bad in [".", "..", ""] {
        let e = c.get_secret_value(bad, None, None).await.unwrap_err();
        assert!(
            matches!(e, strongbox_client::Error::InvalidArgument(_)),
            "{bad:?}: {e}"
        );
        let e = c.delete_token("p", bad).await.unwrap_err();
        assert!(
            matches!(e, strongbox_client::Error::InvalidArgument(_)),
            "{bad:?}: {e}"
        );
    }
    // Only the listing itself was recorded since.
    let after = c.list_audit(&Default::default()).await.unwrap().count;
    assert_eq!(after, before + 1);
}

/// What a secret's record carries besides its values stays small: `extended_config` at
/// most 16 KiB as JSON besides a CA bundle of up to 160 KiB, and 8 levels deep; a
/// rotation policy's settings at most 8 KiB
/// each (64 KiB for a CA bundle). Refused with the field named, and a refused update
/// leaves what was stored.
#[tokio::test]
async fn extended_config_and_policy_settings_are_bounded() {
    let s = TestServer::start().await;
    let c = &s.client;
    let config = |json: String| -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&json).unwrap()
    };
    let big = config(format!(r#"{{"note": "{}"}}"#, "x".repeat(16 * 1024)));
    let fits = config(format!(r#"{{"note": "{}"}}"#, "x".repeat(16 * 1024 - 20)));
    let nested = |arrays: usize| {
        config(format!(
            r#"{{"a": {}1{}}}"#,
            "[".repeat(arrays),
            "]".repeat(arrays)
        ))
    };
    // The object is level 1: seven arrays in it make 8 levels, eight make 9.
    let (deepest, deep) = (nested(7), nested(8));
    // A CA bundle is counted apart from the rest.
    let mut with_ca = fits.clone();
    with_ca.insert("CaCert".into(), "c".repeat(100 * 1024).into());
    let mut req = text_secret("cfg/big", "v");
    req.extended_config = Some(big.clone());
    assert_code(
        c.create_secret(&req).await,
        ErrorCode::InvalidParameter,
        "extended_config",
    );
    req.extended_config = Some(deep);
    assert_code(
        c.create_secret(&req).await,
        ErrorCode::InvalidParameter,
        "8 levels",
    );
    req.extended_config = Some(deepest);
    req.name = "cfg/deepest".into();
    c.create_secret(&req).await.unwrap();
    let mut too_much_ca = fits.clone();
    too_much_ca.insert("CaCert".into(), "c".repeat(161 * 1024).into());
    req.extended_config = Some(too_much_ca);
    assert_code(
        c.create_secret(&req).await,
        ErrorCode::InvalidParameter,
        "extended_config.CaCert",
    );
    req.extended_config = Some(with_ca);
    req.name = "cfg/ca".into();
    c.create_secret(&req).await.unwrap();
    // The largest of each in one body: the largest value as JSON escapes it at its
    // longest (6 bytes a byte), a CA bundle of 160 KiB in PEM lines (each line end
    // escaped), and the rest of the configuration at its limit.
    const MAX_CA_CERT_BYTES: usize = 160 * 1024;
    let mut largest = fits.clone();
    let pem_line = format!("{}\n", "c".repeat(63));
    let mut pem = pem_line.repeat(MAX_CA_CERT_BYTES / pem_line.len());
    pem.push_str(&"c".repeat(MAX_CA_CERT_BYTES - pem.len()));
    largest.insert("CaCert".into(), pem.into());
    let mut req = text_secret("cfg/largest", &"\u{1}".repeat(30_720));
    req.extended_config = Some(largest);
    c.create_secret(&req).await.unwrap();
    req.extended_config = Some(fits.clone());
    req.name = "cfg/big".into();
    c.create_secret(&req).await.unwrap();
    let update = api::UpdateSecretRequest {
        extended_config: Some(big),
        ..Default::default()
    };
    assert_code(
        c.update_secret("cfg/big", &update).await,
        ErrorCode::InvalidParameter,
        "extended_config",
    );
    let kept = c.describe_secret("cfg/big").await.unwrap();
    assert_eq!(kept.extended_config, Some(fits));

    let long = "y".repeat(8 * 1024 + 1);
    let p = crate::rotation::policy(
        "long",
        "30d",
        api::RotationStrategy::Random,
        &[("json_field", &long)],
    );
    assert_code(
        c.create_rotation_policy(&p).await,
        ErrorCode::InvalidParameter,
        "settings.json_field",
    );
}
