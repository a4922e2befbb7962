use strongbox_client::ErrorCode;
use strongbox_schemas::{self as api, Interval, KeyState};

use crate::common::*;

#[tokio::test]
async fn key_lifecycle_and_aliases() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = c
        .create_key(&api::CreateKeyRequest {
            description: Some("orders".into()),
            tags: Some([("team".to_string(), "pay".to_string())].into()),
            automatic_rotation: true,
            rotation_interval: Some(Interval::parse("30d").unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(k.state, KeyState::Enabled);
    assert_eq!(k.primary_key_version, 1);
    assert_eq!(k.arn, format!("strongbox:kms:key/{}", k.key_id));
    assert_eq!(k.creation_date.unix(), T0);
    assert_eq!(k.next_rotation_date.unwrap().unix(), T0 + 30 * 86_400);
    assert_eq!(c.describe_key(&k.key_id).await.unwrap(), k);

    let upd = c
        .update_key(
            &k.key_id,
            &api::UpdateKeyRequest {
                description: Some("orders v2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(upd.description, "orders v2");
    assert_eq!(upd.tags, k.tags, "absent fields stay");

    // Aliases: created, used wherever a key id is, moved, deleted.
    let a = c.put_alias("alias/app/orders", &k.key_id).await.unwrap();
    assert_eq!(a.key_id, k.key_id);
    assert_eq!(
        c.describe_key("alias/app/orders").await.unwrap().key_id,
        k.key_id
    );
    assert_eq!(c.get_alias("alias/app/orders").await.unwrap(), a);
    assert!(
        c.list_aliases()
            .await
            .unwrap()
            .aliases
            .iter()
            .any(|x| x.alias_name == "alias/app/orders")
    );
    let mut req = text_secret("uses-alias", "v");
    req.encryption_key_id = Some("alias/app/orders".into());
    let sec = c.create_secret(&req).await.unwrap();
    assert_eq!(sec.encryption_key_id, "alias/app/orders", "kept as written");
    assert_eq!(
        c.get_secret_value("uses-alias", None, None)
            .await
            .unwrap()
            .secret_data,
        "v"
    );
    assert_code(
        c.put_alias("alias/strongbox/mine", &k.key_id).await,
        ErrorCode::InvalidParameter,
        "reserved",
    );
    assert_code(
        c.put_alias("nope", &k.key_id).await,
        ErrorCode::InvalidParameter,
        "alias",
    );
    assert_code(
        c.put_alias("alias/x", "no-such-key").await,
        ErrorCode::KeyNotFound,
        "no-such-key",
    );
    c.delete_alias("alias/app/orders").await.unwrap();
    assert_code(
        c.get_alias("alias/app/orders").await,
        ErrorCode::AliasNotFound,
        "alias/app/orders",
    );
    assert_code(
        c.describe_key("alias/app/orders").await,
        ErrorCode::AliasNotFound,
        "alias/app/orders",
    );
    assert_code(
        c.delete_alias("alias/app/orders").await,
        ErrorCode::AliasNotFound,
        "alias/app/orders",
    );
    assert_code(
        c.describe_key("missing").await,
        ErrorCode::KeyNotFound,
        "missing",
    );

    // Validation names the field.
    assert_code(
        c.create_key(&api::CreateKeyRequest {
            rotation_interval: Some(Interval::parse("1d").unwrap()),
            ..Default::default()
        })
        .await,
        ErrorCode::InvalidParameter,
        "rotation_interval",
    );
    assert_code(
        c.schedule_key_deletion(&k.key_id, Some(3)).await,
        ErrorCode::InvalidParameter,
        "pending_window_in_days",
    );
}

#[tokio::test]
async fn disabled_pending_and_destroyed_keys_guard_secrets() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = c.create_key(&Default::default()).await.unwrap();
    let mut req = text_secret("guarded", "v1");
    req.encryption_key_id = Some(k.key_id.clone());
    c.create_secret(&req).await.unwrap();

    assert_eq!(
        c.disable_key(&k.key_id).await.unwrap().state,
        KeyState::Disabled
    );
    assert_code(
        c.get_secret_value("guarded", None, None).await,
        ErrorCode::KeyDisabled,
        &k.key_id,
    );
    assert_code(
        c.put_secret_value("guarded", &put("v2")).await,
        ErrorCode::KeyDisabled,
        &k.key_id,
    );
    assert_code(
        c.rotate_key(&k.key_id).await,
        ErrorCode::KeyDisabled,
        &k.key_id,
    );
    assert_eq!(
        c.enable_key(&k.key_id).await.unwrap().state,
        KeyState::Enabled
    );
    assert_eq!(
        c.get_secret_value("guarded", None, None)
            .await
            .unwrap()
            .secret_data,
        "v1"
    );

    let pending = c.schedule_key_deletion(&k.key_id, None).await.unwrap();
    assert_eq!(pending.state, KeyState::PendingDeletion);
    assert_eq!(pending.delete_date.unwrap().unix(), T0 + 30 * 86_400);
    assert_code(
        c.get_secret_value("guarded", None, None).await,
        ErrorCode::KeyPendingDeletion,
        &k.key_id,
    );
    assert_code(
        c.enable_key(&k.key_id).await,
        ErrorCode::KeyPendingDeletion,
        "cancel",
    );
    let back = c.cancel_key_deletion(&k.key_id).await.unwrap();
    assert_eq!(back.state, KeyState::Enabled);
    assert!(back.delete_date.is_none());
    assert_code(
        c.cancel_key_deletion(&k.key_id).await,
        ErrorCode::InvalidState,
        "not scheduled",
    );

    // A disabled key stays disabled after a cancelled deletion.
    c.disable_key(&k.key_id).await.unwrap();
    c.schedule_key_deletion(&k.key_id, Some(7)).await.unwrap();
    assert_eq!(
        c.cancel_key_deletion(&k.key_id).await.unwrap().state,
        KeyState::Disabled
    );
    c.enable_key(&k.key_id).await.unwrap();

    // Not yet due: nothing happens; due: material destroyed (crypto-shredding). No new
    // alias may point at a key pending deletion; one made before goes with the key.
    c.put_alias("alias/doomed", &k.key_id).await.unwrap();
    let mut by_alias = text_secret("guarded-by-alias", "a1");
    by_alias.encryption_key_id = Some("alias/doomed".into());
    c.create_secret(&by_alias).await.unwrap();
    c.schedule_key_deletion(&k.key_id, Some(7)).await.unwrap();
    assert_code(
        c.put_alias("alias/late", &k.key_id).await,
        ErrorCode::KeyPendingDeletion,
        "an alias cannot point at it",
    );
    assert_eq!(s.advance_and_tick(6 * 86_400).await.destroyed_keys, 0);
    assert_eq!(s.advance_and_tick(86_400).await.destroyed_keys, 1);
    assert_code(
        c.get_secret_value("guarded", None, None).await,
        ErrorCode::KeyDeleted,
        &k.key_id,
    );
    // A new version cannot be sealed under it either, and says why: also for a secret
    // that names it by an alias, which went with the key.
    assert_code(
        c.put_secret_value("guarded", &put("v2")).await,
        ErrorCode::KeyDeleted,
        &k.key_id,
    );
    assert_code(
        c.put_secret_value("guarded-by-alias", &put("a2")).await,
        ErrorCode::KeyDeleted,
        "the key alias/doomed named has been deleted",
    );
    assert_code(
        c.describe_key(&k.key_id).await,
        ErrorCode::KeyNotFound,
        &k.key_id,
    );
    assert_code(
        c.get_alias("alias/doomed").await,
        ErrorCode::AliasNotFound,
        "doomed",
    );
    assert!(
        !c.list_keys(None, None)
            .await
            .unwrap()
            .keys
            .iter()
            .any(|x| x.key_id == k.key_id)
    );
    // The secret's metadata is still there and says which key it needs.
    assert_eq!(
        c.describe_secret("guarded")
            .await
            .unwrap()
            .encryption_key_id,
        k.key_id
    );
    // It can move to another key and take new values there; the version under the
    // destroyed key stays under it (it cannot be opened to be sealed again).
    let k2 = c.create_key(&Default::default()).await.unwrap();
    let moved = c
        .update_secret(
            "guarded",
            &api::UpdateSecretRequest {
                encryption_key_id: Some(k2.key_id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.encryption_key_id, k2.key_id);
    c.put_secret_value("guarded", &put("v2")).await.unwrap();
    assert_eq!(
        c.get_secret_value("guarded", None, None)
            .await
            .unwrap()
            .secret_data,
        "v2"
    );
    let versions = c.list_secret_versions("guarded").await.unwrap().versions;
    let old = versions
        .iter()
        .find(|v| v.version_stages == ["ACSPrevious"])
        .unwrap();
    assert_eq!(old.key_id.as_deref(), Some(k.key_id.as_str()));
    assert_code(
        c.get_secret_value("guarded", None, Some("ACSPrevious"))
            .await,
        ErrorCode::KeyDeleted,
        &k.key_id,
    );
}

#[tokio::test]
async fn rotation_keeps_old_versions_readable_and_automatic_rotation_runs() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = c.create_key(&Default::default()).await.unwrap();
    let mut req = text_secret("rot", "under-v1");
    req.encryption_key_id = Some(k.key_id.clone());
    c.create_secret(&req).await.unwrap();
    let r = c.rotate_key(&k.key_id).await.unwrap();
    assert_eq!(r.primary_key_version, 2);
    assert_eq!(r.last_rotation_date.unwrap().unix(), T0);
    c.put_secret_value("rot", &put("under-v2")).await.unwrap();
    assert_eq!(
        c.get_secret_value("rot", None, Some("ACSPrevious"))
            .await
            .unwrap()
            .secret_data,
        "under-v1"
    );
    assert_eq!(
        c.get_secret_value("rot", None, None)
            .await
            .unwrap()
            .secret_data,
        "under-v2"
    );

    // Automatic rotation, default period 365d, driven by the injected clock.
    let auto = c
        .update_key(
            &k.key_id,
            &api::UpdateKeyRequest {
                automatic_rotation: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(auto.next_rotation_date.unwrap().unix(), T0 + 365 * 86_400);
    assert_eq!(s.advance_and_tick(364 * 86_400).await.rotated_keys, 0);
    assert_eq!(s.advance_and_tick(86_400).await.rotated_keys, 1);
    let after = c.describe_key(&k.key_id).await.unwrap();
    assert_eq!(after.primary_key_version, 3);
    assert_eq!(
        after.next_rotation_date.unwrap().unix(),
        T0 + 2 * 365 * 86_400
    );
    assert_eq!(
        s.advance_and_tick(60).await.rotated_keys,
        0,
        "rotates once, not every tick"
    );
    assert_eq!(
        c.get_secret_value("rot", None, Some("ACSPrevious"))
            .await
            .unwrap()
            .secret_data,
        "under-v1"
    );
}

/// The period of automatic rotation starts when rotation is turned on (as in KMS), not
/// when the key was created: an old key does not rotate the moment it is enabled, and
/// turning rotation off and on again starts a new period.
#[tokio::test]
async fn automatic_rotation_counts_from_when_it_is_turned_on() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = c.create_key(&Default::default()).await.unwrap();
    assert_eq!(k.next_rotation_date, None);
    s.advance_and_tick(400 * 86_400).await;
    let on = |on: bool| api::UpdateKeyRequest {
        automatic_rotation: Some(on),
        rotation_interval: Some(Interval::parse("30d").unwrap()),
        ..Default::default()
    };
    let enabled = c.update_key(&k.key_id, &on(true)).await.unwrap();
    let t1 = T0 + 400 * 86_400;
    assert_eq!(enabled.next_rotation_date.unwrap().unix(), t1 + 30 * 86_400);
    assert_eq!(s.advance_and_tick(0).await.rotated_keys, 0);
    // Updating it while on (here the same settings again) keeps the period running.
    s.advance_and_tick(10 * 86_400).await;
    let again = c.update_key(&k.key_id, &on(true)).await.unwrap();
    assert_eq!(again.next_rotation_date, enabled.next_rotation_date);
    assert_eq!(s.advance_and_tick(20 * 86_400).await.rotated_keys, 1);
    let rotated = c.describe_key(&k.key_id).await.unwrap();
    assert_eq!(rotated.primary_key_version, 2);
    assert_eq!(rotated.next_rotation_date.unwrap().unix(), t1 + 60 * 86_400);
    // Off for 90 days, then on: a new period from then, no catch-up rotation.
    c.update_key(&k.key_id, &on(false)).await.unwrap();
    assert_eq!(s.advance_and_tick(90 * 86_400).await.rotated_keys, 0);
    let back = c.update_key(&k.key_id, &on(true)).await.unwrap();
    assert_eq!(
        back.next_rotation_date.unwrap().unix(),
        t1 + 120 * 86_400 + 30 * 86_400
    );
    assert_eq!(s.advance_and_tick(0).await.rotated_keys, 0);
}

#[tokio::test]
async fn key_listing_pages() {
    let s = TestServer::start().await;
    let c = &s.client;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(c.create_key(&Default::default()).await.unwrap().key_id);
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = c.list_keys(Some(2), token.as_deref()).await.unwrap();
        assert!(page.keys.len() <= 2);
        seen.extend(page.keys.into_iter().map(|k| k.key_id));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_code(
        c.list_keys(Some(0), None).await,
        ErrorCode::InvalidParameter,
        "limit",
    );
    assert_code(
        c.list_keys(None, Some("!!")).await,
        ErrorCode::InvalidParameter,
        "page_token",
    );
}

#[tokio::test]
async fn a_deny_on_a_key_id_holds_through_its_alias() {
    let s = TestServer::start().await;
    let k = s.client.create_key(&Default::default()).await.unwrap();
    let other = s.client.create_key(&Default::default()).await.unwrap();
    s.client
        .put_alias("alias/app/payments", &k.key_id)
        .await
        .unwrap();
    s.client
        .put_alias("alias/app/other", &other.key_id)
        .await
        .unwrap();
    // Everything on keys, except the payments key, named by id.
    let ops = s
        .principal_with(
            "ops",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:*", "Resource": "key/*"},
                {"Effect": "Deny", "Action": "kms:*", "Resource": format!("key/{}", k.key_id)}]}),
        )
        .await;
    assert_code(
        ops.describe_key(&k.key_id).await,
        ErrorCode::Forbidden,
        &format!("kms:DescribeKey on key/{}", k.key_id),
    );
    // Through the alias: refused too, naming the alias (not the key id it hides).
    let refused = |r: Result<api::Key, strongbox_client::Error>, action: &str| {
        assert_code(
            r,
            ErrorCode::Forbidden,
            &format!("principal ops is not allowed {action} on key/alias/app/payments"),
        );
    };
    let alias = "alias/app/payments";
    refused(ops.describe_key(alias).await, "kms:DescribeKey");
    refused(ops.disable_key(alias).await, "kms:DisableKey");
    refused(ops.rotate_key(alias).await, "kms:RotateKey");
    refused(
        ops.update_key(
            alias,
            &api::UpdateKeyRequest {
                description: Some("mine".into()),
                ..Default::default()
            },
        )
        .await,
        "kms:UpdateKey",
    );
    refused(
        ops.schedule_key_deletion(alias, None).await,
        "kms:ScheduleKeyDeletion",
    );
    // Nothing changed.
    assert_eq!(s.client.describe_key(&k.key_id).await.unwrap(), k);
    assert_denied(
        &s,
        "ops",
        &[
            "kms:DescribeKey",
            "kms:DisableKey",
            "kms:RotateKey",
            "kms:UpdateKey",
            "kms:ScheduleKeyDeletion",
        ],
    )
    .await;
    // Another key through its alias: allowed.
    assert_eq!(
        ops.describe_key("alias/app/other").await.unwrap().key_id,
        other.key_id
    );
    ops.disable_key("alias/app/other").await.unwrap();
}

#[tokio::test]
async fn an_alias_cannot_point_at_a_key_the_caller_has_no_rights_on() {
    let s = TestServer::start().await;
    let theirs = s.client.create_key(&Default::default()).await.unwrap();
    let mine = s.client.create_key(&Default::default()).await.unwrap();
    let team = s
        .principal_with(
            "team",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:CreateAlias", "kms:DescribeAlias"],
                    "Resource": ["alias/team/*", format!("key/{}", mine.key_id)]}]}),
        )
        .await;
    team.put_alias("alias/team/moved", &mine.key_id)
        .await
        .unwrap();
    for alias in ["alias/team/k", "alias/team/moved"] {
        // Create or move: refused, and the alias stays where it was.
        assert_code(
            team.put_alias(alias, &theirs.key_id).await,
            ErrorCode::Forbidden,
            &format!(
                "principal team is not allowed kms:CreateAlias on key/{}",
                theirs.key_id
            ),
        );
    }
    assert_code(
        s.client.get_alias("alias/team/k").await,
        ErrorCode::AliasNotFound,
        "alias/team/k",
    );
    assert_eq!(
        s.client.get_alias("alias/team/moved").await.unwrap().key_id,
        mine.key_id
    );
    // A key that does not exist gets the same answer (no existence oracle).
    assert_code(
        team.put_alias("alias/team/k", "no-such-key").await,
        ErrorCode::Forbidden,
        "kms:CreateAlias on key/no-such-key",
    );
    assert_denied(&s, "team", &["kms:CreateAlias"]).await;
    // Taking an alias away from a key the caller has no rights on is refused too, and the
    // refusal names the alias, not that key.
    s.client
        .put_alias("alias/team/theirs", &theirs.key_id)
        .await
        .unwrap();
    let e = team
        .put_alias("alias/team/theirs", &mine.key_id)
        .await
        .unwrap_err();
    assert!(!e.to_string().contains(&theirs.key_id), "{e}");
    assert_code(
        team.put_alias("alias/team/theirs", &mine.key_id).await,
        ErrorCode::Forbidden,
        "kms:CreateAlias on key/alias/team/theirs",
    );
    assert_eq!(
        s.client
            .get_alias("alias/team/theirs")
            .await
            .unwrap()
            .key_id,
        theirs.key_id
    );
    // Nor by deleting it and creating it again: deleting needs the right on the key too.
    let team_deletes = s
        .principal_with(
            "team-deletes",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:CreateAlias", "kms:DeleteAlias"],
                    "Resource": ["alias/team/*", format!("key/{}", mine.key_id)]}]}),
        )
        .await;
    assert_code(
        team_deletes.delete_alias("alias/team/theirs").await,
        ErrorCode::Forbidden,
        "kms:DeleteAlias on key/alias/team/theirs",
    );
    assert_eq!(
        s.client
            .get_alias("alias/team/theirs")
            .await
            .unwrap()
            .key_id,
        theirs.key_id
    );
    team_deletes.delete_alias("alias/team/moved").await.unwrap();
}

/// Changing a secret's key seals its versions in use (those with a stage) again under the
/// new key, in the same write: the old key can then be disabled without losing them.
/// A version with no stage stays under the key it was written with.
#[tokio::test]
async fn changing_a_secrets_key_reseals_the_versions_in_use() {
    let s = TestServer::start().await;
    let c = &s.client;
    let a = c.create_key(&Default::default()).await.unwrap();
    let b = c.create_key(&Default::default()).await.unwrap();
    let mut req = text_secret("moving", "v1");
    req.encryption_key_id = Some(a.key_id.clone());
    let first = c.create_secret(&req).await.unwrap();
    c.put_secret_value("moving", &put("v2")).await.unwrap();
    c.put_secret_value("moving", &put("v3")).await.unwrap();
    // v1 now has no stage; v2 is ACSPrevious, v3 ACSCurrent.
    let upd = c
        .update_secret(
            "moving",
            &api::UpdateSecretRequest {
                encryption_key_id: Some(b.key_id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(upd.encryption_key_id, b.key_id);
    c.disable_key(&a.key_id).await.unwrap();
    assert_eq!(
        c.get_secret_value("moving", None, None)
            .await
            .unwrap()
            .secret_data,
        "v3"
    );
    assert_eq!(
        c.get_secret_value("moving", None, Some("ACSPrevious"))
            .await
            .unwrap()
            .secret_data,
        "v2"
    );
    assert_code(
        c.get_secret_value("moving", Some(&first.version_id), None)
            .await,
        ErrorCode::KeyDisabled,
        &a.key_id,
    );
    // ACSCurrent cannot move to that version while it cannot be opened: the secret
    // would be left without a readable current value.
    let back = api::UpdateSecretStageRequest {
        version_stage: "ACSCurrent".into(),
        move_to_version: Some(first.version_id.clone()),
        remove_from_version: None,
    };
    assert_code(
        c.update_secret_stage("moving", &back).await,
        ErrorCode::KeyDisabled,
        "cannot move",
    );
    assert_eq!(
        c.get_secret_value("moving", None, None)
            .await
            .unwrap()
            .secret_data,
        "v3"
    );
    c.enable_key(&a.key_id).await.unwrap();
    c.update_secret_stage("moving", &back).await.unwrap();
    assert_eq!(
        c.get_secret_value("moving", None, None)
            .await
            .unwrap()
            .secret_data,
        "v1"
    );
    c.disable_key(&a.key_id).await.unwrap();
    // Under a disabled old key the versions cannot be opened, so the change is refused
    // and nothing changes.
    c.enable_key(&a.key_id).await.unwrap();
    let mut req = text_secret("stuck", "s1");
    req.encryption_key_id = Some(a.key_id.clone());
    c.create_secret(&req).await.unwrap();
    c.disable_key(&a.key_id).await.unwrap();
    assert_code(
        c.update_secret(
            "stuck",
            &api::UpdateSecretRequest {
                encryption_key_id: Some(b.key_id.clone()),
                ..Default::default()
            },
        )
        .await,
        ErrorCode::KeyDisabled,
        &a.key_id,
    );
    assert_eq!(
        c.describe_secret("stuck").await.unwrap().encryption_key_id,
        a.key_id
    );
}

/// The default key (made for secrets that name none) is the server's: it cannot be
/// disabled or scheduled for deletion, which would make those secrets unreadable and
/// then destroy them. Its description and tags may still change.
#[tokio::test]
async fn the_default_key_cannot_be_disabled_or_deleted() {
    let s = TestServer::start().await;
    let c = &s.client;
    let secret = c.create_secret(&text_secret("keyless", "v")).await.unwrap();
    let default = secret.encryption_key_id;
    assert_code(
        c.disable_key(&default).await,
        ErrorCode::InvalidState,
        "default key",
    );
    assert_code(
        c.schedule_key_deletion(&default, Some(7)).await,
        ErrorCode::InvalidState,
        "default key",
    );
    let k = c.describe_key(&default).await.unwrap();
    assert_eq!(k.state, KeyState::Enabled);
    c.update_key(
        &default,
        &api::UpdateKeyRequest {
            description: Some("ours".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        c.get_secret_value("keyless", None, None)
            .await
            .unwrap()
            .secret_data,
        "v"
    );
}

/// On-demand rotation, as in KMS: it does not move the automatic schedule, and a key
/// takes at most 25 of them (each version stays in the key's record).
#[tokio::test]
async fn on_demand_rotation_keeps_the_schedule_and_is_limited() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = c
        .create_key(&api::CreateKeyRequest {
            automatic_rotation: true,
            rotation_interval: Some(Interval::parse("30d").unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(k.next_rotation_date.unwrap().unix(), T0 + 30 * 86_400);
    s.advance_and_tick(29 * 86_400).await;
    let r = c.rotate_key(&k.key_id).await.unwrap();
    assert_eq!(r.primary_key_version, 2);
    assert_eq!(r.next_rotation_date.unwrap().unix(), T0 + 30 * 86_400);
    assert_eq!(s.advance_and_tick(86_400).await.rotated_keys, 1);
    let after = c.describe_key(&k.key_id).await.unwrap();
    assert_eq!(after.primary_key_version, 3);
    assert_eq!(after.next_rotation_date.unwrap().unix(), T0 + 60 * 86_400);
    // 24 more on demand (25 in all), then no more; automatic rotation goes on.
    for _ in 0..24 {
        c.rotate_key(&k.key_id).await.unwrap();
    }
    assert_code(
        c.rotate_key(&k.key_id).await,
        ErrorCode::InvalidState,
        "25 times",
    );
    assert_eq!(s.advance_and_tick(30 * 86_400).await.rotated_keys, 1);
    assert_eq!(
        c.describe_key(&k.key_id).await.unwrap().primary_key_version,
        3 + 24 + 1
    );
}

/// Scheduling the deletion of a key already scheduled: the same window (or none) is
/// answered as before; another window is refused, not silently ignored.
#[tokio::test]
async fn a_second_deletion_window_is_refused() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = c.create_key(&Default::default()).await.unwrap();
    let first = c.schedule_key_deletion(&k.key_id, Some(30)).await.unwrap();
    let again = c.schedule_key_deletion(&k.key_id, Some(30)).await.unwrap();
    assert_eq!(again.delete_date, first.delete_date);
    c.schedule_key_deletion(&k.key_id, None).await.unwrap();
    assert_code(
        c.schedule_key_deletion(&k.key_id, Some(7)).await,
        ErrorCode::InvalidState,
        "30 days",
    );
    assert_eq!(
        c.describe_key(&k.key_id).await.unwrap().delete_date,
        first.delete_date
    );
    c.cancel_key_deletion(&k.key_id).await.unwrap();
    let seven = c.schedule_key_deletion(&k.key_id, Some(7)).await.unwrap();
    assert_eq!(seven.delete_date.unwrap().unix(), T0 + 7 * 86_400);
}

/// `GET /v1/secrets?key_id=` lists the secrets that use a key: those that name it, by id
/// or through an alias that points at it now, and those with a version still sealed under
/// it (a version without a stage after the secret moved to another key; the versions of
/// a secret whose alias moved on). Each listed version names the key that seals it.
#[tokio::test]
async fn secrets_are_listed_by_the_key_they_use() {
    let s = TestServer::start().await;
    let c = &s.client;
    let a = c.create_key(&Default::default()).await.unwrap();
    let b = c.create_key(&Default::default()).await.unwrap();
    c.put_alias("alias/via-a", &a.key_id).await.unwrap();
    c.put_alias("alias/moves", &a.key_id).await.unwrap();
    for (name, key) in [
        ("by-id", a.key_id.as_str()),
        ("by-alias", "alias/via-a"),
        ("alias-moved", "alias/moves"),
        ("elsewhere", b.key_id.as_str()),
        ("moved", a.key_id.as_str()),
    ] {
        let mut req = text_secret(name, "v1");
        req.encryption_key_id = Some(key.into());
        c.create_secret(&req).await.unwrap();
    }
    // "moved": v1 loses its stages under A, then the secret moves to B, which reseals
    // v2 and v3 only.
    c.put_secret_value("moved", &put("v2")).await.unwrap();
    c.put_secret_value("moved", &put("v3")).await.unwrap();
    c.update_secret(
        "moved",
        &api::UpdateSecretRequest {
            encryption_key_id: Some(b.key_id.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.put_alias("alias/moves", &b.key_id).await.unwrap();

    let using = |key: String| async move { secrets_using(c, &key).await };
    assert_eq!(
        using(a.key_id.clone()).await,
        ["alias-moved", "by-alias", "by-id", "moved"]
    );
    assert_eq!(
        using(b.key_id.clone()).await,
        ["alias-moved", "elsewhere", "moved"]
    );
    let c2 = c.create_key(&Default::default()).await.unwrap();
    assert!(using(c2.key_id).await.is_empty());

    let keys = version_keys(c, "moved").await;
    assert_eq!(
        keys,
        [
            Some(b.key_id.clone()),
            Some(b.key_id.clone()),
            Some(a.key_id.clone())
        ],
        "newest first: v3 and v2 resealed, v1 still under A"
    );

    // A record written before versions kept their key (no key_id) gives the same
    // answers, from the ciphertexts' headers.
    s.service
        .store()
        .write(|t| {
            use strongbox_server::storage::{Reader as _, Table};
            let raw = t.get(Table::Secrets, b"moved")?.unwrap();
            let mut rec: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            for v in rec["versions"].as_array_mut().unwrap() {
                assert!(v.as_object_mut().unwrap().remove("key_id").is_some());
            }
            t.put(Table::Secrets, b"moved", serde_json::to_vec(&rec).unwrap());
            Ok::<_, strongbox_server::storage::StorageError>(())
        })
        .await
        .unwrap();
    let again = version_keys(c, "moved").await;
    assert_eq!(again, keys);
    assert_eq!(
        using(a.key_id.clone()).await,
        ["alias-moved", "by-alias", "by-id", "moved"]
    );

    // By alias as by the key it names (now: alias/moves points at B); an alias that
    // does not exist is named.
    assert_eq!(
        using("alias/via-a".into()).await,
        ["alias-moved", "by-alias", "by-id", "moved"]
    );
    assert_eq!(
        using("alias/moves".into()).await,
        ["alias-moved", "elsewhere", "moved"]
    );
    assert_code(
        c.list_secrets_using_key("alias/nowhere").await,
        ErrorCode::AliasNotFound,
        "alias/nowhere",
    );
    // Only for a caller that may describe the key, and the alias as written.
    let token = s
        .principal_token(
            "lister",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:ListSecrets", "kms:DescribeSecret",
                    "kms:ListSecretVersionIds"],
                 "Resource": ["*"]},
                {"Effect": "Allow", "Action": ["kms:DescribeKey"],
                 "Resource": [format!("key/{}", b.key_id)]}]}),
        )
        .await;
    let lister = s.client_with_token(&token);
    assert_code(
        lister.list_secrets_using_key(&a.key_id).await,
        ErrorCode::Forbidden,
        &format!("kms:DescribeKey on key/{}", a.key_id),
    );
    for alias in ["alias/moves", "alias/nowhere"] {
        assert_code(
            lister.list_secrets_using_key(alias).await,
            ErrorCode::Forbidden,
            &format!("kms:DescribeKey on key/{alias}"),
        );
    }
    // Allowed the alias but not the key it names: refused too.
    let by_alias = s
        .principal_with(
            "alias-lister",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:ListSecrets", "kms:DescribeSecret"],
                 "Resource": ["*"]},
                {"Effect": "Allow", "Action": ["kms:DescribeKey"],
                 "Resource": ["key/alias/*"]}]}),
        )
        .await;
    assert_code(
        by_alias.list_secrets_using_key("alias/via-a").await,
        ErrorCode::Forbidden,
        "kms:DescribeKey",
    );
    // What the filter and the versions show stays within what the caller may see: an
    // alias it may not describe does not count (alias-moved names alias/moves, which
    // points at B), and a version under a key it may not describe does not name it.
    assert_eq!(
        secrets_using(&lister, &b.key_id).await,
        ["elsewhere", "moved"]
    );
    let keys = version_keys(&lister, "moved").await;
    assert_eq!(keys, [Some(b.key_id.clone()), Some(b.key_id.clone()), None]);
}

/// A secret's errors about the key that seals it do not name that key to a caller that
/// may not describe it (the versions list does not either): the secret names its key by
/// an alias, and the caller has rights on the secret only.
#[tokio::test]
async fn key_errors_of_a_secret_do_not_name_a_hidden_key() {
    let s = TestServer::start().await;
    let c = &s.client;
    let k = c.create_key(&Default::default()).await.unwrap();
    c.put_alias("alias/pay", &k.key_id).await.unwrap();
    let mut req = text_secret("app/x", "v1");
    req.encryption_key_id = Some("alias/pay".into());
    let first = c.create_secret(&req).await.unwrap().version_id;
    let app = s
        .principal_with(
            "app",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:GetSecretValue", "kms:PutSecretValue",
                    "kms:DescribeSecret", "kms:ListSecretVersionIds",
                    "kms:UpdateSecretVersionStage"],
                 "Resource": ["secret/app/*"]}]}),
        )
        .await;
    app.put_secret_value("app/x", &put("v2")).await.unwrap();
    assert_eq!(version_keys(&app, "app/x").await, [None, None]);

    let hidden = |what: &str, r: Result<(), strongbox_client::Error>, code: ErrorCode| match r {
        Err(strongbox_client::Error::Api {
            code: c, message, ..
        }) => {
            assert_eq!(c, code, "{what}: {message}");
            assert!(
                !message.contains(&k.key_id),
                "{what}: {message:?} names the key"
            );
        }
        other => panic!("{what}: expected {code}, got {other:?}"),
    };
    for (state, code) in [
        ("disabled", ErrorCode::KeyDisabled),
        ("pending deletion", ErrorCode::KeyPendingDeletion),
    ] {
        if code == ErrorCode::KeyDisabled {
            c.disable_key(&k.key_id).await.unwrap();
        } else {
            c.enable_key(&k.key_id).await.unwrap();
            c.schedule_key_deletion(&k.key_id, Some(7)).await.unwrap();
        }
        hidden(
            &format!("{state}: read"),
            app.get_secret_value("app/x", None, None).await.map(drop),
            code,
        );
        hidden(
            &format!("{state}: read ACSPrevious"),
            app.get_secret_value("app/x", None, Some("ACSPrevious"))
                .await
                .map(drop),
            code,
        );
        hidden(
            &format!("{state}: put"),
            app.put_secret_value("app/x", &put("v3")).await.map(drop),
            code,
        );
        hidden(
            &format!("{state}: ACSCurrent back to the first version"),
            app.update_secret_stage(
                "app/x",
                &api::UpdateSecretStageRequest {
                    version_stage: "ACSCurrent".into(),
                    move_to_version: Some(first.clone()),
                    remove_from_version: None,
                },
            )
            .await
            .map(drop),
            code,
        );
    }
    // Nor when the secret is moved to a key named by an alias: a caller that may use
    // the key (kms:GenerateDataKey) but not describe it is told the alias, not the id.
    let k2 = c.create_key(&Default::default()).await.unwrap();
    c.put_alias("alias/other", &k2.key_id).await.unwrap();
    c.disable_key(&k2.key_id).await.unwrap();
    let mover = s
        .principal_with(
            "mover",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:UpdateSecret", "Resource": "secret/app/*"},
                {"Effect": "Allow", "Action": "kms:GenerateDataKey",
                 "Resource": ["key/*", "alias/*"]}]}),
        )
        .await;
    let r = mover
        .update_secret(
            "app/x",
            &api::UpdateSecretRequest {
                encryption_key_id: Some("alias/other".into()),
                ..Default::default()
            },
        )
        .await;
    match &r {
        Err(strongbox_client::Error::Api { message, .. }) => {
            assert!(!message.contains(&k2.key_id), "{message}");
            assert!(message.contains("alias/other"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_code(
        r,
        ErrorCode::KeyDisabled,
        "the key alias/other points at is disabled",
    );

    // The administrator, who may describe the key, is told its id on a read, and on a
    // write the name the secret gives it.
    assert_code(
        c.get_secret_value("app/x", None, None).await,
        ErrorCode::KeyPendingDeletion,
        &format!("key {}, which seals version", k.key_id),
    );
    assert_code(
        c.put_secret_value("app/x", &put("v3")).await,
        ErrorCode::KeyPendingDeletion,
        "the key alias/pay points at is scheduled for deletion",
    );
}

/// The key each version of secret `name` names, newest first.
async fn version_keys(c: &strongbox_client::Client, name: &str) -> Vec<Option<String>> {
    c.list_secret_versions(name)
        .await
        .unwrap()
        .versions
        .into_iter()
        .map(|v| v.key_id)
        .collect()
}

/// The names of the secrets `c` lists as using `key`, sorted.
async fn secrets_using(c: &strongbox_client::Client, key: &str) -> Vec<String> {
    let mut names: Vec<String> = c
        .list_secrets_using_key(key)
        .await
        .unwrap()
        .secrets
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

/// A secret may name the default key by its alias before any secret made it (the
/// provider documents `alias/strongbox/default`): on create and on update, and the key
/// made so is the one later secrets that name no key get.
#[tokio::test]
async fn the_default_keys_alias_works_before_the_default_key_exists() {
    let s = TestServer::start().await;
    let c = &s.client;
    assert_code(
        c.get_alias("alias/strongbox/default").await,
        ErrorCode::AliasNotFound,
        "alias/strongbox/default",
    );
    let k = c.create_key(&Default::default()).await.unwrap();
    let mut req = text_secret("moves-to-default", "v1");
    req.encryption_key_id = Some(k.key_id.clone());
    c.create_secret(&req).await.unwrap();
    let moved = c
        .update_secret(
            "moves-to-default",
            &api::UpdateSecretRequest {
                encryption_key_id: Some("alias/strongbox/default".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.encryption_key_id, "alias/strongbox/default");
    let default = c.get_alias("alias/strongbox/default").await.unwrap().key_id;
    assert_ne!(default, k.key_id);
    assert_eq!(
        version_keys(c, "moves-to-default").await,
        [Some(default.clone())]
    );
    let mut req = text_secret("names-default", "v1");
    req.encryption_key_id = Some("alias/strongbox/default".into());
    c.create_secret(&req).await.unwrap();
    c.create_secret(&text_secret("names-none", "v1"))
        .await
        .unwrap();
    for name in ["names-default", "names-none"] {
        assert_eq!(
            version_keys(c, name).await,
            [Some(default.clone())],
            "{name}"
        );
    }
    // Still one default key: k and it.
    let keys = c.list_keys(None, None).await.unwrap().keys;
    assert_eq!(keys.len(), 2, "{keys:?}");

    // Were the alias lost while the default key stays, naming it brings it back, to
    // the same key.
    s.service
        .store()
        .write(|t| {
            t.delete(
                strongbox_server::storage::Table::Aliases,
                b"alias/strongbox/default",
            );
            Ok::<_, strongbox_server::storage::StorageError>(())
        })
        .await
        .unwrap();
    let mut req = text_secret("names-default-again", "v1");
    req.encryption_key_id = Some("alias/strongbox/default".into());
    c.create_secret(&req).await.unwrap();
    c.put_secret_value("names-default-again", &put("v2"))
        .await
        .unwrap();
    assert_eq!(
        c.get_alias("alias/strongbox/default").await.unwrap().key_id,
        default
    );

    // On a fresh server, a create naming the alias makes it too.
    let s = TestServer::start().await;
    let mut req = text_secret("first", "v1");
    req.encryption_key_id = Some("alias/strongbox/default".into());
    s.client.create_secret(&req).await.unwrap();
    let default = s
        .client
        .get_alias("alias/strongbox/default")
        .await
        .unwrap()
        .key_id;
    assert_eq!(version_keys(&s.client, "first").await, [Some(default)]);
}

/// A clock that, once armed, gives the manual clock's time at its first read and a
/// minute earlier at every later one: a wall clock stepped back (NTP) in the middle of
/// a tick.
struct SteppingBack {
    inner: strongbox_server::clock::ManualClock,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reads: std::sync::atomic::AtomicU64,
}

impl strongbox_server::clock::Clock for SteppingBack {
    fn now(&self) -> i64 {
        use std::sync::atomic::Ordering::SeqCst;
        let t = strongbox_server::clock::Clock::now(&self.inner);
        if self.armed.load(SeqCst) && self.reads.fetch_add(1, SeqCst) > 0 {
            t - 60
        } else {
            t
        }
    }
}

/// A deletion the tick finds due is carried out with the tick's own instant: a clock
/// read again later (and stepped back meanwhile) neither spares the key nor drops its
/// schedule entry, which would have left it pending deletion for ever.
#[tokio::test]
async fn a_due_deletion_survives_a_clock_stepped_back_during_the_tick() {
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = TestServer::start_clocked(
        strongbox_server::service::ServiceConfig::default(),
        |b| b,
        strongbox_server::tls::ConnectionLimits::default(),
        |manual| {
            std::sync::Arc::new(SteppingBack {
                inner: manual,
                armed: armed.clone(),
                reads: 0.into(),
            })
        },
    )
    .await;
    let c = &s.client;
    let k = c
        .create_key(&api::CreateKeyRequest::default())
        .await
        .unwrap();
    c.schedule_key_deletion(&k.key_id, Some(7)).await.unwrap();
    s.service.tick().await.unwrap();
    s.clock.advance(7 * 86_400);
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let destroyed = s.service.tick().await.unwrap().destroyed_keys;
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    let later = s.advance_and_tick(86_400).await.destroyed_keys;
    assert_eq!(
        (destroyed, later),
        (1, 0),
        "destroyed in the tick that found it due"
    );
    assert_code(
        c.describe_key(&k.key_id).await,
        ErrorCode::KeyNotFound,
        &k.key_id,
    );
}

/// `PUT /v1/aliases/{alias}` with `If-None-Match: *` creates an alias and never moves
/// one: an alias that exists is `AlreadyExists` and left where it points; another
/// `If-None-Match` value is refused; without the header a PUT still moves it.
#[tokio::test]
async fn a_create_only_alias_put_never_moves_an_alias() {
    let s = TestServer::start().await;
    let c = &s.client;
    let first = c.create_key(&Default::default()).await.unwrap();
    let second = c.create_key(&Default::default()).await.unwrap();
    let made = c.create_alias("alias/app", &first.key_id).await.unwrap();
    assert_eq!(made.key_id, first.key_id);
    for key in [&second.key_id, &first.key_id] {
        assert_code(
            c.create_alias("alias/app", key).await,
            ErrorCode::AlreadyExists,
            "alias/app exists already",
        );
    }
    assert_eq!(c.get_alias("alias/app").await.unwrap().key_id, first.key_id);
    // A creator with rights on its own key only is told the alias exists (nothing is
    // moved, so the key it points at is not its business), not refused.
    let mine = c.create_key(&Default::default()).await.unwrap();
    let team = s
        .principal_with(
            "team",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:CreateAlias"],
                    "Resource": ["alias/app", format!("key/{}", mine.key_id)]}]}),
        )
        .await;
    assert_code(
        team.create_alias("alias/app", &mine.key_id).await,
        ErrorCode::AlreadyExists,
        "alias/app exists already",
    );
    assert_code(
        team.put_alias("alias/app", &mine.key_id).await,
        ErrorCode::Forbidden,
        "alias/app",
    );
    assert_eq!(c.get_alias("alias/app").await.unwrap().key_id, first.key_id);
    let r = s
        .http()
        .put(format!(
            "https://127.0.0.1:{}/v1/aliases/alias%2Fapp",
            s.addr.port()
        ))
        .bearer_auth(&s.token)
        .header("If-None-Match", "\"v1\"")
        .json(&serde_json::json!({"key_id": second.key_id}))
        .send()
        .await
        .unwrap();
    invalid_parameter(r, "If-None-Match").await;
    assert_eq!(c.get_alias("alias/app").await.unwrap().key_id, first.key_id);
    c.put_alias("alias/app", &second.key_id).await.unwrap();
    assert_eq!(
        c.get_alias("alias/app").await.unwrap().key_id,
        second.key_id
    );
}
