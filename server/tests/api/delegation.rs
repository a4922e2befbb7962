//! Writes that make the rotation act later need the rights the rotation will use:
//! tokens of the principal an `AccessKey` secret or an `access_key` policy names, and
//! reading the value of a secret whose `extended_config` (where the rotation sends the
//! current value) changes. Each attack is refused to a non-root caller with a narrow
//! policy; a caller holding the rights succeeds.

use serde_json::json;
use strongbox_client::{Client, ErrorCode};
use strongbox_schemas::{self as api, RotationStrategy};

use crate::common::*;
use crate::rotation::{fast_config, policy};

fn access_key_secret(
    name: &str,
    principal: &str,
    policy: Option<&str>,
) -> api::CreateSecretRequest {
    let mut r = text_secret(name, &json!({ "PrincipalName": principal }).to_string());
    r.secret_type = api::SecretType::AccessKey;
    r.rotation_policy = policy.map(str::to_string);
    r
}

fn principal_of(v: &api::SecretValue) -> String {
    let doc: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
    doc["PrincipalName"].as_str().unwrap().to_string()
}

/// A caller owning `secret/team/*` and holding token rights on `token_rights`.
async fn team_member(s: &TestServer, name: &str, token_rights: &[&str]) -> Client {
    let mut statements = vec![
        json!({"Effect": "Allow", "Action": [
        "kms:CreateSecret", "kms:UpdateSecret", "kms:PutSecretValue", "kms:GetSecretValue",
        "kms:DescribeSecret", "kms:RotateSecret"], "Resource": "secret/team/*"}),
        // Attaching a rotation policy needs the right to see it.
        json!({"Effect": "Allow", "Action": "kms:DescribeRotationPolicy",
            "Resource": "rotation-policy/*"}),
    ];
    if !token_rights.is_empty() {
        statements.push(json!({"Effect": "Allow",
            "Action": ["ram:CreateToken", "ram:DeleteToken"], "Resource": token_rights}));
    }
    s.principal_with(name, json!({"Version": "1", "Statement": statements}))
        .await
}

async fn plain_principal(s: &TestServer, name: &str) {
    s.client
        .create_principal(&api::CreatePrincipalRequest {
            name: name.into(),
            description: None,
            policies: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn an_access_key_secret_needs_token_rights_on_the_principal_its_value_names() {
    let s = TestServer::start_with(fast_config()).await;
    plain_principal(&s, "app").await;
    plain_principal(&s, "ci-deploy").await;
    // A policy an administrator made for app and the CI principals.
    s.client
        .create_rotation_policy(&policy(
            "app-tokens",
            "30d",
            RotationStrategy::AccessKey,
            &[("principals", "app, ci-*")],
        ))
        .await
        .unwrap();
    let team = team_member(&s, "team", &["principal/app"]).await;

    // The attack: a secret of its own naming ci-deploy, with the policy attached (or
    // without, to attach it later).
    for p in [Some("app-tokens"), None] {
        assert_code(
            team.create_secret(&access_key_secret("team/steal", "ci-deploy", p))
                .await,
            ErrorCode::Forbidden,
            "principal team is not allowed ram:CreateToken on principal/ci-deploy",
        );
    }
    // CreateToken alone is not enough: the rotation also revokes.
    let half = s
        .principal_with(
            "half",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:CreateSecret"], "Resource": "secret/team/*"},
                {"Effect": "Allow", "Action": ["ram:CreateToken"], "Resource": "principal/ci-deploy"}]}),
        )
        .await;
    assert_code(
        half.create_secret(&access_key_secret("team/steal", "ci-deploy", None))
            .await,
        ErrorCode::Forbidden,
        "ram:DeleteToken on principal/ci-deploy",
    );

    // Its own principal: allowed, and the rotation issues app's token.
    team.create_secret(&access_key_secret("team/app", "app", Some("app-tokens")))
        .await
        .unwrap();
    team.rotate_secret("team/app", None).await.unwrap();
    let v = team.get_secret_value("team/app", None, None).await.unwrap();
    assert_eq!(principal_of(&v), "app");

    // Switching the principal with a new value between rotations is refused too.
    assert_code(
        team.put_secret_value(
            "team/app",
            &put(&json!({"PrincipalName": "ci-deploy"}).to_string()),
        )
        .await,
        ErrorCode::Forbidden,
        "ram:CreateToken on principal/ci-deploy",
    );
    let v = team.get_secret_value("team/app", None, None).await.unwrap();
    assert_eq!(principal_of(&v), "app");
    team.put_secret_value(
        "team/app",
        &put(&json!({"PrincipalName": "app"}).to_string()),
    )
    .await
    .unwrap();

    // Attaching the policy to an AccessKey secret naming ci-deploy (made by an
    // administrator) is refused; any change of that secret is.
    s.client
        .create_secret(&access_key_secret("team/ci", "ci-deploy", None))
        .await
        .unwrap();
    let attach = api::UpdateSecretRequest {
        rotation_policy: Some("app-tokens".into()),
        ..Default::default()
    };
    assert_code(
        team.update_secret("team/ci", &attach).await,
        ErrorCode::Forbidden,
        "ram:CreateToken on principal/ci-deploy",
    );
    let d = s.client.describe_secret("team/ci").await.unwrap();
    assert_eq!(d.rotation_policy, None);
    // A caller who may change or delete the secret but not read its value is refused
    // without learning which principal the value names.
    let editor = s
        .principal_with(
            "editor",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:UpdateSecret", "kms:DeleteSecret", "kms:DescribeSecret"],
                "Resource": "secret/team/*"}]}),
        )
        .await;
    let describe = api::UpdateSecretRequest {
        description: Some("x".into()),
        ..Default::default()
    };
    for refused in [
        editor.update_secret("team/ci", &describe).await.map(|_| ()),
        editor
            .delete_secret("team/ci", Default::default())
            .await
            .map(|_| ()),
    ] {
        assert_code(
            refused.map_err(|e| {
                assert!(!e.to_string().contains("ci-deploy"), "{e}");
                e
            }),
            ErrorCode::Forbidden,
            "on a principal that the values of secret/team/ci name",
        );
    }

    // The refusals are in the audit trail as denials, whether the check ran before
    // the write (create) or inside it (put, update).
    assert_denied(
        &s,
        "team",
        &["kms:CreateSecret", "kms:PutSecretValue", "kms:UpdateSecret"],
    )
    .await;

    // No token was ever issued for ci-deploy.
    assert!(
        s.client
            .list_tokens("ci-deploy")
            .await
            .unwrap()
            .tokens
            .is_empty()
    );

    // A caller with token rights on ci-* does all of it.
    let ci = team_member(&s, "ci-admin", &["principal/ci-*"]).await;
    ci.update_secret("team/ci", &attach).await.unwrap();
    ci.rotate_secret("team/ci", None).await.unwrap();
    let tokens = s.client.list_tokens("ci-deploy").await.unwrap().tokens;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    ci.create_secret(&access_key_secret(
        "team/ci2",
        "ci-deploy",
        Some("app-tokens"),
    ))
    .await
    .unwrap();

    // A value the strategy cannot read names nobody: nothing to check, and the
    // rotation issues nothing.
    team.create_secret(&{
        let mut r = text_secret("team/odd", "not json");
        r.secret_type = api::SecretType::AccessKey;
        r.rotation_policy = Some("app-tokens".into());
        r
    })
    .await
    .unwrap();
    assert_code(
        team.rotate_secret("team/odd", None).await,
        ErrorCode::RotationFailed,
        "PrincipalName",
    );
}

#[tokio::test]
async fn an_access_key_policy_needs_token_rights_on_every_principal_it_names() {
    let s = TestServer::start().await;
    let doc = |tokens: serde_json::Value| {
        json!({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": ["kms:CreateRotationPolicy", "kms:UpdateRotationPolicy",
             "kms:DescribeRotationPolicy"], "Resource": "rotation-policy/*"},
            {"Effect": "Allow", "Action": ["ram:CreateToken", "ram:DeleteToken"], "Resource": tokens}]})
    };
    let ops = s
        .principal_with("ops", doc(json!(["principal/app", "principal/ci-*"])))
        .await;
    let ak = |name: &str, principals: &str| {
        policy(
            name,
            "30d",
            RotationStrategy::AccessKey,
            &[("principals", principals)],
        )
    };
    for (principals, refused) in [
        ("admin", "principal/admin"),
        ("app, admin", "principal/admin"),
        // A prefix needs the rights on every principal under it: rights on app do not
        // cover a*.
        ("a*", "every principal matching principal/a*"),
    ] {
        assert_code(
            ops.create_rotation_policy(&ak("p", principals)).await,
            ErrorCode::Forbidden,
            &format!("principal ops is not allowed ram:CreateToken on {refused}"),
        );
    }
    ops.create_rotation_policy(&ak("p", "app, ci-*"))
        .await
        .unwrap();
    // Rights on one CI principal do not cover the whole prefix.
    let one = s
        .principal_with("one-ci", doc(json!("principal/ci-deploy")))
        .await;
    assert_code(
        one.create_rotation_policy(&ak("q", "ci-*")).await,
        ErrorCode::Forbidden,
        "ram:CreateToken on every principal matching principal/ci-*",
    );
    // An explicit Deny on one principal holds against every prefix that takes it in,
    // and `?` covers one character, not a whole prefix.
    let denied = s
        .principal_with(
            "all-but-admin",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:CreateRotationPolicy"], "Resource": "rotation-policy/*"},
                {"Effect": "Allow", "Action": ["ram:CreateToken", "ram:DeleteToken"], "Resource": "principal/*"},
                {"Effect": "Deny", "Action": ["ram:DeleteToken"], "Resource": "principal/ci-admin"}]}),
        )
        .await;
    for principals in ["ci-admin", "ci-adm*", "ci-*", "c*"] {
        let e = denied
            .create_rotation_policy(&ak("d", principals))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{principals}: {e}");
        assert!(
            e.to_string().contains("ram:DeleteToken"),
            "{principals}: {e}"
        );
    }
    denied
        .create_rotation_policy(&ak("d", "ci-deploy, ci-b*, app"))
        .await
        .unwrap();
    let one_char = s
        .principal_with("one-char", doc(json!(["principal/?", "principal/ci-?"])))
        .await;
    for principals in ["c*", "ci-*"] {
        assert_code(
            one_char.create_rotation_policy(&ak("o", principals)).await,
            ErrorCode::Forbidden,
            "every principal matching",
        );
    }
    one.create_rotation_policy(&ak("q", "ci-deploy"))
        .await
        .unwrap();
    // Other strategies need nothing more.
    one.create_rotation_policy(&policy("r", "30d", RotationStrategy::Random, &[]))
        .await
        .unwrap();

    // Updates: widening to a principal the caller has no rights on is refused, and
    // the policy stays as it was.
    let widen = api::UpdateRotationPolicyRequest {
        settings: Some([("principals".to_string(), "app, admin".to_string())].into()),
        ..Default::default()
    };
    assert_code(
        ops.update_rotation_policy("p", &widen).await,
        ErrorCode::Forbidden,
        "ram:CreateToken on principal/admin",
    );
    let p = ops.describe_rotation_policy("p").await.unwrap();
    assert_eq!(p.settings["principals"], "app, ci-*");
    // Turning a random policy into an access_key one is checked the same way.
    let to_ak = api::UpdateRotationPolicyRequest {
        strategy: Some(RotationStrategy::AccessKey),
        settings: Some([("principals".to_string(), "ci-*".to_string())].into()),
        ..Default::default()
    };
    assert_code(
        one.update_rotation_policy("r", &to_ak).await,
        ErrorCode::Forbidden,
        "principal/ci-*",
    );
    // Another principal's policy, even for an interval change (how long its tokens
    // live), needs the rights too.
    let interval = api::UpdateRotationPolicyRequest {
        interval: Some(api::Interval::parse("14d").unwrap()),
        ..Default::default()
    };
    assert_code(
        one.update_rotation_policy("p", &interval).await,
        ErrorCode::Forbidden,
        "principal/app",
    );
    ops.update_rotation_policy("p", &interval).await.unwrap();
    ops.update_rotation_policy("r", &to_ak).await.unwrap();
    // An administrator may name anyone but root.
    let admin_widen = api::UpdateRotationPolicyRequest {
        settings: Some([("principals".to_string(), "app, admin".to_string())].into()),
        ..Default::default()
    };
    s.client
        .update_rotation_policy("p", &admin_widen)
        .await
        .unwrap();
}

#[tokio::test]
async fn changing_where_the_rotation_sends_a_value_needs_the_right_to_read_it() {
    let s = TestServer::start().await;
    let config = |host: &str| {
        json!({"SubType": "Password", "Host": host, "Port": 22})
            .as_object()
            .unwrap()
            .clone()
    };
    let meta = s
        .principal_with(
            "meta",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:CreateSecret", "kms:UpdateSecret", "kms:DescribeSecret"],
                "Resource": "secret/team/*"}]}),
        )
        .await;
    // Creating with extended_config needs nothing more (the caller wrote the value).
    let mut req = text_secret(
        "team/box",
        &json!({"UserName": "svc", "Password": "pw-0123456789"}).to_string(),
    );
    req.extended_config = Some(config("10.0.0.5"));
    meta.create_secret(&req).await.unwrap();

    let redirect = api::UpdateSecretRequest {
        extended_config: Some(config("attacker.example")),
        ..Default::default()
    };
    assert_code(
        meta.update_secret("team/box", &redirect).await,
        ErrorCode::Forbidden,
        "principal meta is not allowed kms:GetSecretValue on secret/team/box",
    );
    let d = s.client.describe_secret("team/box").await.unwrap();
    assert_eq!(d.extended_config, Some(config("10.0.0.5")));
    // Other metadata, and the same extended_config again, need nothing more.
    meta.update_secret(
        "team/box",
        &api::UpdateSecretRequest {
            description: Some("the box".into()),
            extended_config: Some(config("10.0.0.5")),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A caller who may read the value may redirect the rotation.
    let reader = s
        .principal_with(
            "reader",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:UpdateSecret", "kms:GetSecretValue"],
                "Resource": "secret/team/*"}]}),
        )
        .await;
    reader.update_secret("team/box", &redirect).await.unwrap();
    let d = s.client.describe_secret("team/box").await.unwrap();
    assert_eq!(d.extended_config, Some(config("attacker.example")));
}

#[tokio::test]
async fn an_access_key_secret_whose_value_cannot_be_read_needs_rights_on_every_principal() {
    let s = TestServer::start().await;
    plain_principal(&s, "app").await;
    let k = s.client.create_key(&Default::default()).await.unwrap();
    let mut req = access_key_secret("team/app", "app", None);
    req.encryption_key_id = Some(k.key_id.clone());
    s.client.create_secret(&req).await.unwrap();
    s.client.disable_key(&k.key_id).await.unwrap();
    // With the key disabled the principal the value names cannot be checked.
    let team = team_member(&s, "team", &["principal/app"]).await;
    let update = api::UpdateSecretRequest {
        description: Some("moved".into()),
        ..Default::default()
    };
    assert_code(
        team.update_secret("team/app", &update).await,
        ErrorCode::Forbidden,
        "ram:CreateToken on every principal matching principal/*",
    );
    let all = team_member(&s, "all", &["principal/*"]).await;
    all.update_secret("team/app", &update).await.unwrap();
    // Readable again: rights on the principal it names are enough.
    s.client.enable_key(&k.key_id).await.unwrap();
    team.update_secret("team/app", &update).await.unwrap();
}

fn rds_secret(name: &str, admin_secret: &str, host: &str) -> api::CreateSecretRequest {
    let mut r = text_secret(
        name,
        &json!({"AccountName": "app", "AccountPassword": "pw-0123456789"}).to_string(),
    );
    r.secret_type = api::SecretType::Rds;
    r.extended_config = Some(rds_config(admin_secret, host));
    r
}

fn rds_config(admin_secret: &str, host: &str) -> serde_json::Map<String, serde_json::Value> {
    json!({"SecretSubType": "SingleUser", "Host": host, "Port": 5432, "Database": "app",
        "TlsMode": "verify-full", "AdminSecret": admin_secret})
    .as_object()
    .unwrap()
    .clone()
}

#[tokio::test]
async fn an_rds_secret_needs_the_right_to_read_the_admin_secret_it_names() {
    let s = TestServer::start().await;
    let admin_value =
        json!({"AccountName": "postgres", "AccountPassword": "admin-pw-1"}).to_string();
    s.client
        .create_secret(&text_secret("ops/db-admin", &admin_value))
        .await
        .unwrap();
    let team = team_member(&s, "team", &[]).await;
    team.create_secret(&text_secret("team/db-admin", &admin_value))
        .await
        .unwrap();

    // The attack: an Rds secret of its own naming another team's admin secret (the
    // rotation would log in with it at a Host the caller chose).
    assert_code(
        team.create_secret(&rds_secret("team/db", "ops/db-admin", "attacker.example"))
            .await,
        ErrorCode::Forbidden,
        "principal team is not allowed kms:GetSecretValue on secret/ops/db-admin",
    );
    assert_code(
        s.client.describe_secret("team/db").await,
        ErrorCode::SecretNotFound,
        "team/db",
    );
    // Its own admin secret: allowed.
    team.create_secret(&rds_secret("team/db", "team/db-admin", "db.internal"))
        .await
        .unwrap();
    // Pointing an existing secret at the other admin secret is refused too, and
    // nothing changes.
    let steal = api::UpdateSecretRequest {
        extended_config: Some(rds_config("ops/db-admin", "attacker.example")),
        ..Default::default()
    };
    assert_code(
        team.update_secret("team/db", &steal).await,
        ErrorCode::Forbidden,
        "principal team is not allowed kms:GetSecretValue on secret/ops/db-admin",
    );
    let d = s.client.describe_secret("team/db").await.unwrap();
    assert_eq!(
        d.extended_config,
        Some(rds_config("team/db-admin", "db.internal"))
    );
    // Moving the host with its own admin secret is its own business.
    team.update_secret(
        "team/db",
        &api::UpdateSecretRequest {
            extended_config: Some(rds_config("team/db-admin", "db2.internal")),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // A caller who may read the admin secret may name it, at create and update.
    let dba = s
        .principal_with(
            "dba",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:CreateSecret", "kms:UpdateSecret",
                    "kms:GetSecretValue", "kms:DescribeSecret"], "Resource": "secret/team/*"},
                {"Effect": "Allow", "Action": ["kms:GetSecretValue"],
                    "Resource": "secret/ops/db-admin"}]}),
        )
        .await;
    dba.create_secret(&rds_secret("team/db3", "ops/db-admin", "db.internal"))
        .await
        .unwrap();
    dba.update_secret("team/db", &steal).await.unwrap();
    let d = s.client.describe_secret("team/db").await.unwrap();
    assert_eq!(
        d.extended_config,
        Some(rds_config("ops/db-admin", "attacker.example"))
    );

    // team/db3 rotates with ops/db-admin, which team may not read. A new password for
    // its account is team's business; another account is not (the rotation would reset
    // that account's password with the admin's rights and hand it to team).
    team.put_secret_value(
        "team/db3",
        &put(&json!({"AccountName": "app", "AccountPassword": "pw-new-0123"}).to_string()),
    )
    .await
    .unwrap();
    let other = json!({"AccountName": "billing_app", "AccountPassword": "x-0123456789"});
    assert_code(
        team.put_secret_value("team/db3", &put(&other.to_string()))
            .await,
        ErrorCode::Forbidden,
        "principal team is not allowed kms:GetSecretValue on secret/ops/db-admin",
    );
    // Guessing the admin account's name gets the same refusal as any other account, so
    // that team cannot learn it from a different answer.
    assert_code(
        team.put_secret_value(
            "team/db3",
            &put(
                &json!({"AccountName": "postgres", "AccountPassword": "x-0123456789"}).to_string(),
            ),
        )
        .await,
        ErrorCode::Forbidden,
        "principal team is not allowed kms:GetSecretValue on secret/ops/db-admin",
    );
    let mut as_previous = put(&other.to_string());
    as_previous.version_stages = Some(vec![api::STAGE_PREVIOUS.into()]);
    assert_code(
        team.put_secret_value("team/db3", &as_previous).await,
        ErrorCode::Forbidden,
        "kms:GetSecretValue on secret/ops/db-admin",
    );
    let v = s
        .client
        .get_secret_value("team/db3", None, None)
        .await
        .unwrap();
    assert!(
        v.secret_data.contains("pw-new-0123"),
        "unchanged by the refusals"
    );
    let versions = s
        .client
        .list_secret_versions("team/db3")
        .await
        .unwrap()
        .versions;
    assert_eq!(versions.len(), 2, "no version was added");
    // Whoever may read the admin secret may move the secret to another account, and
    // then back to an account the secret held needs nothing more.
    s.client
        .put_secret_value("team/db3", &put(&other.to_string()))
        .await
        .unwrap();
    team.put_secret_value(
        "team/db3",
        &put(&json!({"AccountName": "app", "AccountPassword": "pw-again-0123"}).to_string()),
    )
    .await
    .unwrap();
}

/// A write's answer does not show what only describing shows: `PATCH {}` (and a
/// restore) by a caller that may update but not describe answers without the secret's
/// description, tags, `extended_config` and `last_rotation_error`, or the rotation
/// policy's settings; one that may describe too gets them.
#[tokio::test]
async fn an_update_does_not_read_what_the_caller_may_not_describe() {
    let s = with_webhook_policy().await;
    let mut req = rds_secret("app/rds", "ops/signing", "db.internal");
    req.description = Some("the billing database".into());
    req.tags = Some([("team".to_string(), "billing".to_string())].into());
    s.client.create_secret(&req).await.unwrap();
    // A principal allowed `writes` on each resource pattern, and with `describe` the
    // describing action after each.
    let writer =
        |name: &'static str,
         describe: bool,
         grants: [(&'static str, &'static [&'static str], &'static str); 2]| {
            let statements: Vec<serde_json::Value> = grants
                .iter()
                .map(|(resource, writes, describing)| {
                    let mut actions = writes.to_vec();
                    if describe {
                        actions.push(describing);
                    }
                    json!({"Effect": "Allow", "Action": actions, "Resource": resource})
                })
                .collect();
            s.principal_with(name, json!({"Version": "1", "Statement": statements}))
        };
    let updates = [
        (
            "secret/app/*",
            &["kms:UpdateSecret", "kms:RestoreSecret"][..],
            "kms:DescribeSecret",
        ),
        (
            "rotation-policy/*",
            &["kms:UpdateRotationPolicy"][..],
            "kms:DescribeRotationPolicy",
        ),
    ];
    let updater = |name: &'static str, describe: bool| writer(name, describe, updates);
    let blind = updater("blind", false).await;
    let sighted = updater("sighted", true).await;
    let nothing = api::UpdateSecretRequest::default();
    let b = blind.update_secret("app/rds", &nothing).await.unwrap();
    assert_eq!(b.name, "app/rds");
    assert_eq!(
        (
            b.description.as_str(),
            b.tags.len(),
            b.extended_config.is_none()
        ),
        ("", 0, true),
        "{b:?}"
    );
    let full = sighted.update_secret("app/rds", &nothing).await.unwrap();
    assert_eq!(full.description, "the billing database");
    assert!(full.extended_config.is_some() && full.tags.len() == 1);
    let no_change = api::UpdateRotationPolicyRequest::default();
    let p = blind
        .update_rotation_policy("hook", &no_change)
        .await
        .unwrap();
    assert!(p.settings.is_empty(), "{p:?}");
    let p = sighted
        .update_rotation_policy("hook", &no_change)
        .await
        .unwrap();
    assert_eq!(
        p.settings.get("url").map(String::as_str),
        Some("https://hooks.example/rotate")
    );
    s.client
        .delete_secret("app/rds", Default::default())
        .await
        .unwrap();
    let r = blind.restore_secret("app/rds").await.unwrap();
    assert_eq!(
        (r.description.as_str(), r.extended_config.is_none()),
        ("", true)
    );

    // A key's description and tags, and a secret's versions after a stage move.
    let key = s
        .client
        .create_key(&api::CreateKeyRequest {
            description: Some("payments key".into()),
            tags: Some([("team".to_string(), "payments".to_string())].into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let keyed = |name: &'static str, describe: bool| {
        writer(
            name,
            describe,
            [
                (
                    "key/*",
                    &["kms:UpdateKey", "kms:DisableKey", "kms:EnableKey"][..],
                    "kms:DescribeKey",
                ),
                (
                    "secret/app/*",
                    &["kms:UpdateSecretVersionStage"][..],
                    "kms:ListSecretVersionIds",
                ),
            ],
        )
    };
    let (blind, sighted) = (
        keyed("blind-k", false).await,
        keyed("sighted-k", true).await,
    );
    let k = blind
        .update_key(&key.key_id, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        (k.key_id.as_str(), k.description.as_str(), k.tags.len()),
        (key.key_id.as_str(), "", 0)
    );
    let k = blind.disable_key(&key.key_id).await.unwrap();
    assert_eq!(
        (k.state, k.description.as_str()),
        (api::KeyState::Disabled, "")
    );
    let k = sighted.enable_key(&key.key_id).await.unwrap();
    assert_eq!((k.description.as_str(), k.tags.len()), ("payments key", 1));
    let current = s
        .client
        .describe_secret("app/rds")
        .await
        .unwrap()
        .version_id;
    let label = api::UpdateSecretStageRequest {
        version_stage: "Reviewed".into(),
        move_to_version: Some(current),
        remove_from_version: None,
    };
    let moved = blind.update_secret_stage("app/rds", &label).await.unwrap();
    assert!(moved.versions.is_empty(), "{moved:?}");
    let moved = sighted
        .update_secret_stage("app/rds", &label)
        .await
        .unwrap();
    assert_eq!(moved.versions.len(), 1);

    // A principal's description and policies, a policy's description and document.
    s.client
        .create_policy(&api::CreatePolicyRequest {
            name: "trail-readers".into(),
            description: Some("who reads the trail".into()),
            document: serde_json::from_value(json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "audit:Read", "Resource": "*"}]}))
            .unwrap(),
        })
        .await
        .unwrap();
    s.client
        .create_principal(&api::CreatePrincipalRequest {
            name: "auditor".into(),
            description: Some("the external auditor".into()),
            policies: Some(vec!["trail-readers".into()]),
        })
        .await
        .unwrap();
    let ram = |name: &'static str, describe: bool| {
        writer(
            name,
            describe,
            [
                (
                    "principal/auditor",
                    &["ram:UpdatePrincipal"][..],
                    "ram:GetPrincipal",
                ),
                (
                    "policy/trail-readers",
                    &["ram:UpdatePolicy"][..],
                    "ram:GetPolicy",
                ),
            ],
        )
    };
    let (blind, sighted) = (ram("blind-r", false).await, ram("sighted-r", true).await);
    let unchanged = api::UpdatePrincipalRequest {
        description: None,
        policies: None,
    };
    let p = blind.update_principal("auditor", &unchanged).await.unwrap();
    assert_eq!(
        (
            p.name.as_str(),
            p.description.as_str(),
            p.policies.len(),
            p.principal_id.as_str()
        ),
        ("auditor", "", 0, "")
    );
    let p = sighted
        .update_principal("auditor", &unchanged)
        .await
        .unwrap();
    assert_eq!(
        (p.description.as_str(), p.policies.as_slice()),
        ("the external auditor", &["trail-readers".to_string()][..])
    );
    let unchanged = api::UpdatePolicyRequest {
        description: None,
        document: None,
    };
    let p = blind
        .update_policy("trail-readers", &unchanged)
        .await
        .unwrap();
    assert_eq!(
        (
            p.name.as_str(),
            p.description.as_str(),
            p.document.is_none()
        ),
        ("trail-readers", "", true)
    );
    let p = sighted
        .update_policy("trail-readers", &unchanged)
        .await
        .unwrap();
    assert_eq!(p.description, "who reads the trail");
    assert_eq!(p.document.map(|d| d.statements().len()), Some(1));
}

/// A server with secret `ops/signing` and the webhook policy `hook` signing with it.
async fn with_webhook_policy() -> TestServer {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("ops/signing", "value-0123456789"))
        .await
        .unwrap();
    s.client
        .create_rotation_policy(&webhook("hook", "ops/signing"))
        .await
        .unwrap();
    s
}

fn webhook(name: &str, signing: &str) -> api::CreateRotationPolicyRequest {
    policy(
        name,
        "30d",
        RotationStrategy::Webhook,
        &[
            ("url", "https://hooks.example/rotate"),
            ("signing_secret", signing),
        ],
    )
}

#[tokio::test]
async fn a_webhook_policy_needs_the_right_to_read_what_it_signs_with_and_sends() {
    let s = TestServer::start().await;
    for name in ["ops/signing", "ops/db", "team/signing"] {
        s.client
            .create_secret(&text_secret(name, "value-0123456789"))
            .await
            .unwrap();
    }
    // May manage rotation policies and any secret's metadata and rotation, but read
    // only team/*.
    let team = s
        .principal_with(
            "team",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:CreateRotationPolicy",
                    "kms:UpdateRotationPolicy", "kms:DescribeRotationPolicy"],
                    "Resource": "rotation-policy/*"},
                {"Effect": "Allow", "Action": ["kms:CreateSecret", "kms:UpdateSecret",
                    "kms:DescribeSecret", "kms:RotateSecret"], "Resource": "secret/*"},
                {"Effect": "Allow", "Action": "kms:GetSecretValue", "Resource": "secret/team/*"}]}),
        )
        .await;

    // Signing with a secret the caller cannot read is refused.
    assert_code(
        team.create_rotation_policy(&webhook("hook", "ops/signing"))
            .await,
        ErrorCode::Forbidden,
        "principal team is not allowed kms:GetSecretValue on secret/ops/signing",
    );
    team.create_rotation_policy(&webhook("hook", "team/signing"))
        .await
        .unwrap();

    // Attaching the webhook policy to a secret the caller cannot read: at create and
    // at update, and nothing changes.
    let mut req = text_secret("other/new", "value-0123456789");
    req.rotation_policy = Some("hook".into());
    assert_code(
        team.create_secret(&req).await,
        ErrorCode::Forbidden,
        "principal team is not allowed kms:GetSecretValue on secret/other/new",
    );
    assert_code(
        s.client.describe_secret("other/new").await,
        ErrorCode::SecretNotFound,
        "other/new",
    );
    let attach = api::UpdateSecretRequest {
        rotation_policy: Some("hook".into()),
        ..Default::default()
    };
    assert_code(
        team.update_secret("ops/db", &attach).await,
        ErrorCode::Forbidden,
        "principal team is not allowed kms:GetSecretValue on secret/ops/db",
    );
    assert_eq!(
        s.client
            .describe_secret("ops/db")
            .await
            .unwrap()
            .rotation_policy,
        None
    );
    // Its own secrets: allowed.
    let mut own = text_secret("team/app", "value-0123456789");
    own.rotation_policy = Some("hook".into());
    team.create_secret(&own).await.unwrap();

    // Turning a policy attached to a secret the caller cannot read into a webhook one
    // is refused, and the policy stays as it was.
    s.client
        .create_rotation_policy(&policy("rnd", "30d", RotationStrategy::Random, &[]))
        .await
        .unwrap();
    s.client
        .update_secret(
            "ops/db",
            &api::UpdateSecretRequest {
                rotation_policy: Some("rnd".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let to_webhook = api::UpdateRotationPolicyRequest {
        strategy: Some(RotationStrategy::Webhook),
        settings: webhook("rnd", "team/signing").settings,
        ..Default::default()
    };
    // The refusal does not name the attached secret, which team may not know of.
    let e = team
        .update_rotation_policy("rnd", &to_webhook)
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("ops/db"), "{e}");
    assert_code(
        team.update_rotation_policy("rnd", &to_webhook).await,
        ErrorCode::Forbidden,
        "principal team is not allowed kms:GetSecretValue on a secret attached to rotation-policy/rnd",
    );
    let p = s.client.describe_rotation_policy("rnd").await.unwrap();
    assert_eq!(p.strategy, RotationStrategy::Random);
    // Updating its own webhook policy (attached to team/app) is allowed; switching its
    // signing secret to one it cannot read is not.
    team.update_rotation_policy(
        "hook",
        &api::UpdateRotationPolicyRequest {
            settings: webhook("hook", "team/signing").settings.map(|mut m| {
                m.insert("url".into(), "https://hooks2.example/rotate".into());
                m
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_code(
        team.update_rotation_policy(
            "hook",
            &api::UpdateRotationPolicyRequest {
                settings: webhook("hook", "ops/signing").settings,
                ..Default::default()
            },
        )
        .await,
        ErrorCode::Forbidden,
        "kms:GetSecretValue on secret/ops/signing",
    );
    // Once ops/db is attached, an update of the webhook policy needs to read it too;
    // only switching it off (or on) sends nothing new, so it needs no such right: a
    // compromised hook can be stopped at once.
    s.client.update_secret("ops/db", &attach).await.unwrap();
    assert_code(
        team.update_rotation_policy(
            "hook",
            &api::UpdateRotationPolicyRequest {
                settings: webhook("hook", "team/signing").settings.map(|mut m| {
                    m.insert("url".into(), "https://hooks3.example/rotate".into());
                    m
                }),
                ..Default::default()
            },
        )
        .await,
        ErrorCode::Forbidden,
        "kms:GetSecretValue on a secret attached to rotation-policy/hook",
    );
    let off = team
        .update_rotation_policy(
            "hook",
            &api::UpdateRotationPolicyRequest {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!off.enabled);
    assert_ne!(
        s.client
            .describe_rotation_policy("hook")
            .await
            .unwrap()
            .settings
            .get("url")
            .map(String::as_str),
        Some("https://hooks3.example/rotate")
    );

    // Every refusal is in the audit trail as a denial.
    assert_denied(
        &s,
        "team",
        &[
            "kms:CreateRotationPolicy",
            "kms:UpdateRotationPolicy",
            "kms:CreateSecret",
            "kms:UpdateSecret",
        ],
    )
    .await;
    // An administrator does all of it.
    s.client
        .update_rotation_policy("rnd", &to_webhook)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_webhook_rotation_says_only_that_its_signing_secret_cannot_be_read() {
    let s = TestServer::start_with(fast_config()).await;
    let k = s.client.create_key(&Default::default()).await.unwrap();
    let mut locked = text_secret("hooks/locked", "signing-key-0123456789");
    locked.encryption_key_id = Some(k.key_id.clone());
    s.client.create_secret(&locked).await.unwrap();
    s.client.disable_key(&k.key_id).await.unwrap();
    s.client
        .create_secret(&text_secret("hooks/deleted", "signing-key-0123456789"))
        .await
        .unwrap();
    s.client
        .delete_secret("hooks/deleted", Default::default())
        .await
        .unwrap();
    let mut errors = Vec::new();
    for signing in ["hooks/locked", "hooks/deleted", "hooks/missing"] {
        let name = signing.replace("hooks/", "app/");
        s.client
            .create_rotation_policy(&webhook(&name.replace('/', "-"), signing))
            .await
            .unwrap();
        let mut req = text_secret(&name, "value-0123456789");
        req.rotation_policy = Some(name.replace('/', "-"));
        s.client.create_secret(&req).await.unwrap();
        assert_code(
            s.client.rotate_secret(&name, None).await,
            ErrorCode::RotationFailed,
            "cannot be read",
        );
        let e = s
            .client
            .describe_secret(&name)
            .await
            .unwrap()
            .last_rotation_error
            .unwrap();
        errors.push(e.replace(signing, "NAME"));
    }
    // Disabled key, pending deletion or absent: the same words.
    assert!(
        errors.iter().all(|e| *e == errors[0]),
        "the error tells the cases apart: {errors:?}"
    );
    assert!(
        errors[0].contains("signing secret NAME cannot be read"),
        "{errors:?}"
    );
}

fn narrow_policy(name: &str) -> api::CreatePolicyRequest {
    api::CreatePolicyRequest {
        name: name.into(),
        description: None,
        document: serde_json::from_value(json!({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]}))
        .unwrap(),
    }
}

#[tokio::test]
async fn attaching_a_policy_to_a_principal_needs_ram_attach_policy_on_it() {
    let s = TestServer::start().await;
    for p in ["ci-deploy", "ci-extra", "ops"] {
        s.client.create_policy(&narrow_policy(p)).await.unwrap();
    }
    // Manages the CI principals and may attach the CI policies (ram:AttachPolicy is
    // accepted in a policy document).
    let ci = s
        .principal_with(
            "ci-admin",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["ram:CreatePrincipal", "ram:UpdatePrincipal",
                    "ram:GetPrincipal", "ram:CreateToken"], "Resource": "principal/ci-*"},
                {"Effect": "Allow", "Action": ["ram:AttachPolicy", "ram:DetachPolicy"],
                    "Resource": "policy/ci-*"}]}),
        )
        .await;
    let create = |policies: &[&str]| api::CreatePrincipalRequest {
        name: "ci-x".into(),
        description: None,
        policies: Some(policies.iter().map(|p| p.to_string()).collect()),
    };

    // The attack: a principal of its own with AdministratorAccess, then an admin token.
    assert_code(
        ci.create_principal(&create(&["ci-deploy", "AdministratorAccess"]))
            .await,
        ErrorCode::Forbidden,
        "principal ci-admin is not allowed ram:AttachPolicy on policy/AdministratorAccess",
    );
    assert_code(
        s.client.get_principal("ci-x").await,
        ErrorCode::PrincipalNotFound,
        "ci-x",
    );
    // A policy that does not exist gets the same answer unless the caller may attach it.
    assert_code(
        ci.create_principal(&create(&["no-such-policy"])).await,
        ErrorCode::Forbidden,
        "ram:AttachPolicy on policy/no-such-policy",
    );
    assert_code(
        ci.create_principal(&create(&["ci-missing"])).await,
        ErrorCode::PolicyNotFound,
        "ci-missing",
    );
    ci.create_principal(&create(&["ci-deploy"])).await.unwrap();

    // Adding one by update is refused too; the principal keeps its policies.
    let set = |policies: &[&str]| api::UpdatePrincipalRequest {
        description: None,
        policies: Some(policies.iter().map(|p| p.to_string()).collect()),
    };
    assert_code(
        ci.update_principal("ci-x", &set(&["ci-deploy", "AdministratorAccess"]))
            .await,
        ErrorCode::Forbidden,
        "principal ci-admin is not allowed ram:AttachPolicy on policy/AdministratorAccess",
    );
    assert_eq!(
        s.client.get_principal("ci-x").await.unwrap().policies,
        vec!["ci-deploy".to_string()]
    );
    // A policy already attached (by an administrator) is not checked again: the
    // caller may keep it and add its own; detaching needs ram:DetachPolicy on it, so a
    // guardrail the caller may not detach stays (its Deny statements with it).
    s.client
        .update_principal("ci-x", &set(&["ci-deploy", "ops"]))
        .await
        .unwrap();
    ci.update_principal("ci-x", &set(&["ci-deploy", "ops", "ci-extra"]))
        .await
        .unwrap();
    assert_code(
        ci.update_principal("ci-x", &set(&["ci-deploy", "ci-extra"]))
            .await,
        ErrorCode::Forbidden,
        "principal ci-admin is not allowed ram:DetachPolicy on policy/ops",
    );
    assert_eq!(
        s.client.get_principal("ci-x").await.unwrap().policies,
        vec!["ci-deploy", "ops", "ci-extra"]
    );
    ci.update_principal("ci-x", &set(&["ops", "ci-extra"]))
        .await
        .unwrap();
    s.client
        .update_principal("ci-x", &set(&["ci-extra"]))
        .await
        .unwrap();
    // Detached, it cannot be given back.
    assert_code(
        ci.update_principal("ci-x", &set(&["ci-extra", "ops"]))
            .await,
        ErrorCode::Forbidden,
        "ram:AttachPolicy on policy/ops",
    );
    assert_denied(
        &s,
        "ci-admin",
        &["ram:CreatePrincipal", "ram:UpdatePrincipal"],
    )
    .await;
}

/// Attaching a rotation policy needs the right to describe it, checked before the
/// policy is loaded: a caller who may not see a policy learns from the refusal neither
/// whether it exists nor what it does (a webhook policy would otherwise also ask for
/// the right to read the secret, and say so).
#[tokio::test]
async fn attaching_a_rotation_policy_needs_the_right_to_see_it_and_tells_nothing_else() {
    let s = with_webhook_policy().await;
    s.client
        .create_rotation_policy(&policy("rnd", "30d", RotationStrategy::Random, &[]))
        .await
        .unwrap();
    let blind = s
        .principal_with(
            "blind",
            json!({"Version": "1", "Statement": [{"Effect": "Allow", "Action": [
                "kms:CreateSecret", "kms:UpdateSecret", "kms:DescribeSecret"],
                "Resource": "secret/blind/*"}]}),
        )
        .await;
    blind
        .create_secret(&text_secret("blind/existing", "v"))
        .await
        .unwrap();
    for p in ["hook", "rnd", "nothing-by-this-name"] {
        let mut req = text_secret("blind/new", "v");
        req.rotation_policy = Some(p.into());
        let want = format!(
            "principal blind is not allowed kms:DescribeRotationPolicy on rotation-policy/{p}"
        );
        assert_code(blind.create_secret(&req).await, ErrorCode::Forbidden, &want);
        let attach = api::UpdateSecretRequest {
            rotation_policy: Some(p.into()),
            ..Default::default()
        };
        match blind.update_secret("blind/existing", &attach).await {
            Err(strongbox_client::Error::Api { code, message, .. }) => {
                assert_eq!(code, ErrorCode::Forbidden, "{message}");
                assert!(message.contains(&want), "{message}");
                assert!(
                    !message.contains("webhook") && !message.contains("url"),
                    "{message}"
                );
            }
            other => panic!("{p}: {other:?}"),
        }
    }
    let d = s.client.describe_secret("blind/existing").await.unwrap();
    assert_eq!(d.rotation_policy, None, "nothing was attached");
}

/// Attaching a rotation policy turns rotation on: the policy will replace the secret's
/// value, so it needs `kms:RotateSecret` on the secret (AWS asks for that right to turn
/// rotation on), on create and on update alike. Without it nothing is attached and the
/// value stays; detaching needs only `kms:UpdateSecret`.
#[tokio::test]
async fn attaching_a_rotation_policy_needs_the_right_to_rotate_the_secret() {
    let s = TestServer::start_with(fast_config()).await;
    s.client
        .create_rotation_policy(&policy("rnd", "30d", RotationStrategy::Random, &[]))
        .await
        .unwrap();
    let statement = |actions: &[&str]| {
        json!({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": actions, "Resource": "secret/team/*"},
            {"Effect": "Allow", "Action": ["kms:DescribeRotationPolicy"],
             "Resource": "rotation-policy/rnd"}]})
    };
    let writer = s
        .principal_with(
            "writer",
            statement(&["kms:CreateSecret", "kms:UpdateSecret", "kms:DescribeSecret"]),
        )
        .await;
    s.client
        .create_secret(&text_secret("team/api-key", "the-credential"))
        .await
        .unwrap();
    let want = "principal writer is not allowed kms:RotateSecret on secret/team/api-key";
    let attach = api::UpdateSecretRequest {
        rotation_policy: Some("rnd".into()),
        ..Default::default()
    };
    assert_code(
        writer.update_secret("team/api-key", &attach).await,
        ErrorCode::Forbidden,
        want,
    );
    let mut req = text_secret("team/new", "v");
    req.rotation_policy = Some("rnd".into());
    assert_code(
        writer.create_secret(&req).await,
        ErrorCode::Forbidden,
        "principal writer is not allowed kms:RotateSecret on secret/team/new",
    );
    // Nothing attached: a tick long after the interval leaves the value as it was.
    s.advance_and_tick(40 * 86_400).await;
    let d = s.client.describe_secret("team/api-key").await.unwrap();
    assert_eq!(d.rotation_policy, None);
    let v = s
        .client
        .get_secret_value("team/api-key", None, None)
        .await
        .unwrap();
    assert_eq!(v.secret_data, "the-credential");
    // With the right to rotate, both work; detaching needs no more than the update.
    let rotator = s
        .principal_with(
            "rotator",
            statement(&[
                "kms:CreateSecret",
                "kms:UpdateSecret",
                "kms:DescribeSecret",
                "kms:RotateSecret",
            ]),
        )
        .await;
    rotator
        .update_secret("team/api-key", &attach)
        .await
        .unwrap();
    rotator.create_secret(&req).await.unwrap();
    let detach = api::UpdateSecretRequest {
        rotation_policy: Some(String::new()),
        ..Default::default()
    };
    writer.update_secret("team/api-key", &detach).await.unwrap();
}

/// A server where AccessKey secret `team/ci` names principal `ci-deploy`, with policy
/// `ci-tokens` (principals `ci-*`) attached, and has rotated once.
async fn rotated_ci_secret() -> TestServer {
    let s = TestServer::start_with(fast_config()).await;
    plain_principal(&s, "ci-deploy").await;
    s.client
        .create_rotation_policy(&policy(
            "ci-tokens",
            "30d",
            RotationStrategy::AccessKey,
            &[("principals", "ci-*")],
        ))
        .await
        .unwrap();
    s.client
        .create_secret(&access_key_secret(
            "team/ci",
            "ci-deploy",
            Some("ci-tokens"),
        ))
        .await
        .unwrap();
    s.client.rotate_secret("team/ci", None).await.unwrap();
    s
}

/// Deleting an AccessKey secret revokes the tokens its rotations issued (at once when
/// forced, at the purge otherwise), so it needs the same token rights as naming the
/// principal does.
#[tokio::test]
async fn deleting_an_access_key_secret_needs_token_rights_on_its_principal() {
    let s = rotated_ci_secret().await;
    let deleter = s
        .principal_with(
            "deleter",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:DeleteSecret", "kms:DescribeSecret"], "Resource": "secret/team/*"}]}),
        )
        .await;
    for force in [true, false] {
        assert_code(
            deleter
                .delete_secret(
                    "team/ci",
                    strongbox_client::DeleteSecretOptions {
                        recovery_window_in_days: None,
                        force_delete_without_recovery: force,
                    },
                )
                .await,
            ErrorCode::Forbidden,
            // The deleter may not read the value: the principal stays unnamed.
            "on a principal that the values of secret/team/ci name",
        );
    }
    let d = s.client.describe_secret("team/ci").await.unwrap();
    assert!(d.planned_delete_time.is_none(), "nothing changed");
    // Rights on the principal the value names now are not enough: the deletion also
    // revokes the tokens the rotations issued to ci-deploy.
    plain_principal(&s, "ci-low").await;
    s.client
        .put_secret_value(
            "team/ci",
            &put(&json!({"PrincipalName": "ci-low"}).to_string()),
        )
        .await
        .unwrap();
    let low = s
        .principal_with(
            "low",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:DeleteSecret"], "Resource": "secret/team/*"},
                {"Effect": "Allow", "Action": ["ram:CreateToken", "ram:DeleteToken"],
                 "Resource": "principal/ci-low"}]}),
        )
        .await;
    assert_code(
        low.delete_secret(
            "team/ci",
            strongbox_client::DeleteSecretOptions {
                recovery_window_in_days: None,
                force_delete_without_recovery: true,
            },
        )
        .await,
        ErrorCode::Forbidden,
        "on a principal that the values of secret/team/ci name",
    );
    // With the token rights on both, it may.
    let full = s
        .principal_with(
            "full",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:DeleteSecret"], "Resource": "secret/team/*"},
                {"Effect": "Allow", "Action": ["ram:CreateToken", "ram:DeleteToken"],
                 "Resource": ["principal/ci-deploy", "principal/ci-low"]}]}),
        )
        .await;
    full.delete_secret(
        "team/ci",
        strongbox_client::DeleteSecretOptions {
            recovery_window_in_days: None,
            force_delete_without_recovery: true,
        },
    )
    .await
    .unwrap();
}

/// Choosing the key a secret is sealed under needs `kms:GenerateDataKey` on it, by id
/// and, for an alias, also on the key it names; otherwise a caller allowed to update a
/// secret could seal it under a key it controls, then disable or delete that key (the
/// values gone, with no right to delete the secret). The refusal comes before the key
/// is looked up: the same for a key that does not exist. A secret that names no key
/// (the default key) needs nothing more.
#[tokio::test]
async fn choosing_the_key_a_secret_is_sealed_under_needs_the_right_to_use_it() {
    let s = TestServer::start().await;
    let key = |d: &str| api::CreateKeyRequest {
        description: Some(d.into()),
        ..Default::default()
    };
    let theirs = s.client.create_key(&key("theirs")).await.unwrap().key_id;
    let mine = s.client.create_key(&key("mine")).await.unwrap().key_id;
    s.client.put_alias("alias/theirs", &theirs).await.unwrap();
    let team = s
        .principal_with(
            "team",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:CreateSecret", "kms:UpdateSecret",
                    "kms:DescribeSecret", "kms:GetSecretValue"], "Resource": "secret/team/*"},
                {"Effect": "Allow", "Action": "kms:GenerateDataKey",
                    "Resource": [format!("key/{mine}"), "key/alias/theirs".to_string()]}]}),
        )
        .await;
    let sealed_under = |k: &str| {
        let mut r = text_secret("team/a", "v1");
        r.encryption_key_id = Some(k.to_string());
        r
    };
    for k in [theirs.as_str(), "no-such-key", "alias/theirs"] {
        let shown = format!("kms:GenerateDataKey on key/{k}");
        let who = if k == "alias/theirs" {
            // Allowed on the alias as written, not on the key it names.
            "alias/theirs"
        } else {
            k
        };
        assert_code(
            team.create_secret(&sealed_under(k)).await,
            ErrorCode::Forbidden,
            &shown,
        );
        assert!(shown.ends_with(who));
    }
    assert_code(
        s.client.describe_secret("team/a").await,
        ErrorCode::SecretNotFound,
        "team/a",
    );
    team.create_secret(&sealed_under(&mine)).await.unwrap();
    team.create_secret(&text_secret("team/default", "v1"))
        .await
        .unwrap();
    let to = |k: &str| api::UpdateSecretRequest {
        encryption_key_id: Some(k.to_string()),
        ..Default::default()
    };
    assert_code(
        team.update_secret("team/a", &to(&theirs)).await,
        ErrorCode::Forbidden,
        &format!("kms:GenerateDataKey on key/{theirs}"),
    );
    assert_eq!(
        s.client
            .describe_secret("team/a")
            .await
            .unwrap()
            .encryption_key_id,
        mine
    );
    // Given the right, the same update goes through.
    s.client
        .update_secret("team/a", &to(&theirs))
        .await
        .unwrap();
    assert_eq!(
        team.get_secret_value("team/a", None, None)
            .await
            .unwrap()
            .secret_data
            .as_str(),
        "v1"
    );
}

/// A caller shown a secret's metadata or a principal's tokens, but not the secret's
/// value, learns from neither which principal the value names nor that the secret
/// exists: a failed rotation's error does not name the principal (the create step
/// refused by the policy, the set step after the principal was deleted), and a token the
/// rotation issued names its secret only to callers that may describe it.
#[tokio::test]
async fn rotation_tokens_and_errors_do_not_name_what_the_caller_may_not_see() {
    let s = rotated_ci_secret().await;
    s.client
        .create_rotation_policy(&policy(
            "app-tokens",
            "30d",
            RotationStrategy::AccessKey,
            &[("principals", "app-*")],
        ))
        .await
        .unwrap();
    let watcher = s
        .principal_with(
            "watcher",
            json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:DescribeSecret", "kms:RotateSecret"],
                    "Resource": "secret/team/*"},
                {"Effect": "Allow", "Action": "kms:ListSecrets", "Resource": "*"},
                {"Effect": "Allow", "Action": "ram:ListTokens",
                    "Resource": "principal/ci-deploy"}]}),
        )
        .await;
    let token_lister = s
        .principal_with(
            "token-lister",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": "ram:ListTokens", "Resource": "principal/ci-deploy"}]}),
        )
        .await;
    let descriptions = |c: Client| async move {
        let tokens = c.list_tokens("ci-deploy").await.unwrap().tokens;
        tokens
            .into_iter()
            .map(|t| t.description)
            .collect::<Vec<_>>()
    };
    let shown = descriptions(watcher.clone()).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].starts_with("Issued by the rotation of secret team/ci, version "));
    assert_eq!(
        descriptions(token_lister.clone()).await,
        ["Issued by the rotation of a secret"]
    );
    // A description someone wrote in those words, on a token no rotation issued, is
    // shown as written (the token's id tells them apart).
    let forged = "Issued by the rotation of secret team/ci, version by-hand";
    s.client
        .create_token(
            "ci-deploy",
            &api::CreateTokenRequest {
                description: Some(forged.into()),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let mut listed = descriptions(token_lister).await;
    listed.sort();
    assert_eq!(listed, ["Issued by the rotation of a secret", forged]);
    s.client
        .delete_token(
            "ci-deploy",
            &s.client
                .list_tokens("ci-deploy")
                .await
                .unwrap()
                .tokens
                .into_iter()
                .find(|t| t.description == forged)
                .unwrap()
                .token_id,
        )
        .await
        .unwrap();
    // The rotation still finds (and keeps) its own token by that description.
    assert_eq!(descriptions(s.client.clone()).await, shown);

    // The create step, refused by the policy attached now.
    s.client
        .update_secret(
            "team/ci",
            &api::UpdateSecretRequest {
                rotation_policy: Some("app-tokens".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let no_principal = |what: &str, text: &str| {
        assert!(!text.contains("ci-deploy"), "{what}: {text:?}");
    };
    let e = watcher.rotate_secret("team/ci", None).await.unwrap_err();
    no_principal("create: the answer", &e.to_string());
    assert_code(
        Err::<(), _>(e),
        ErrorCode::RotationFailed,
        "does not allow issuing tokens for the principal the value names",
    );
    let error = |c: Client| async move {
        let described = c.describe_secret("team/ci").await.unwrap();
        let listed = c.list_all_secrets().await.unwrap().secrets;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_rotation_error, described.last_rotation_error);
        described.last_rotation_error.unwrap_or_default()
    };
    let kept = error(watcher.clone()).await;
    assert!(kept.contains("principals setting"), "{kept}");
    no_principal("create: last_rotation_error", &kept);

    // A principal deleted since (create finds it gone; set, after a create that found
    // it, would say the same).
    s.client
        .update_secret(
            "team/ci",
            &api::UpdateSecretRequest {
                rotation_policy: Some("ci-tokens".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    s.client.delete_principal("ci-deploy").await.unwrap();
    let e = watcher.rotate_secret("team/ci", None).await.unwrap_err();
    no_principal("set: the answer", &e.to_string());
    let kept = error(watcher).await;
    assert!(kept.contains("access_key create"), "{kept}");
    assert!(kept.contains("PrincipalNotFound"), "{kept}");
    no_principal("set: last_rotation_error", &kept);
}

/// A caller that may put values but not read them cannot test a guess of a version's
/// value by repeating its id: right and wrong guesses get the same answer. The
/// principal that made the version, and one that may read, keep idempotent retries.
#[tokio::test]
async fn a_writer_that_may_not_read_cannot_test_a_guess_of_a_value() {
    let s = TestServer::start().await;
    let writer = s
        .principal_with(
            "writer",
            json!({"Version": "1", "Statement": [{"Effect": "Allow",
                "Action": ["kms:PutSecretValue", "kms:DescribeSecret"],
                "Resource": "secret/app/*"}]}),
        )
        .await;
    let mut req = text_secret("app/db", "hunter2");
    req.version_id = Some("v1".into());
    s.client.create_secret(&req).await.unwrap();
    let guess = |data: &str| api::PutSecretValueRequest {
        version_id: Some("v1".into()),
        ..put(data)
    };
    let right = writer.put_secret_value("app/db", &guess("hunter2")).await;
    let wrong = writer.put_secret_value("app/db", &guess("hunter3")).await;
    let answer = |r: Result<api::SecretVersionRef, strongbox_client::Error>| match r {
        Err(strongbox_client::Error::Api { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (right, wrong) = (answer(right), answer(wrong));
    assert_eq!(right.0, ErrorCode::VersionConflict);
    assert_eq!(right, wrong, "a right and a wrong guess are told apart");
    assert!(!right.1.contains("different"), "{}", right.1);

    // Its own version: a retry is a no-op, and different data a conflict that says so.
    let mine = api::PutSecretValueRequest {
        version_id: Some("w1".into()),
        ..put("s3cret")
    };
    let first = writer.put_secret_value("app/db", &mine).await.unwrap();
    let again = writer.put_secret_value("app/db", &mine).await.unwrap();
    assert_eq!(first.version_id, again.version_id);
    assert_code(
        writer
            .put_secret_value(
                "app/db",
                &api::PutSecretValueRequest {
                    version_id: Some("w1".into()),
                    ..put("other")
                },
            )
            .await,
        ErrorCode::VersionConflict,
        "exists with different data",
    );
    // A principal created again under its name did not make it: a right guess gets the
    // answer of a wrong one.
    s.client.delete_principal("writer").await.unwrap();
    s.client
        .create_principal(&api::CreatePrincipalRequest {
            name: "writer".into(),
            description: None,
            policies: Some(vec!["writer-policy".into()]),
        })
        .await
        .unwrap();
    let successor = s.client_with_token(
        &s.client
            .create_token("writer", &Default::default())
            .await
            .unwrap()
            .token,
    );
    let right = successor.put_secret_value("app/db", &mine).await;
    let wrong = successor
        .put_secret_value(
            "app/db",
            &api::PutSecretValueRequest {
                version_id: Some("w1".into()),
                ..put("other")
            },
        )
        .await;
    let (right, wrong) = (answer(right), answer(wrong));
    assert_eq!(right.0, ErrorCode::VersionConflict);
    assert_eq!(
        right, wrong,
        "the successor tells a right and a wrong guess apart"
    );
    // The old token went with the principal: the checks below are the successor's.
    let writer = successor;
    // One that may read: a retry of another's version is a no-op.
    s.client
        .put_secret_value("app/db", &guess("hunter2"))
        .await
        .unwrap();
    let versions = s.client.list_secret_versions("app/db").await.unwrap();
    assert_eq!(
        versions.versions.len(),
        2,
        "no version was added by a repeat"
    );
    // Nor a guess of an Rds secret's account: whether the account is one the secret
    // holds is checked only for a new version.
    s.client
        .create_secret(&text_secret(
            "app/db-admin",
            &json!({"AccountName": "postgres", "AccountPassword": "admin-pw-1"}).to_string(),
        ))
        .await
        .unwrap();
    let mut rds = rds_secret("app/rds", "app/db-admin", "db.internal");
    rds.version_id = Some("r1".into());
    s.client.create_secret(&rds).await.unwrap();
    let account = |name: &str| api::PutSecretValueRequest {
        version_id: Some("r1".into()),
        ..put(&json!({"AccountName": name, "AccountPassword": "guess-0123456789"}).to_string())
    };
    let held = answer(writer.put_secret_value("app/rds", &account("app")).await);
    let other = answer(writer.put_secret_value("app/rds", &account("other")).await);
    assert_eq!(held.0, ErrorCode::VersionConflict);
    assert_eq!(held, other, "a held and another account are told apart");
    // Nor through a new version refused for another reason (too many stage labels,
    // checked before the account), nor by naming the admin account (checked after it).
    let labelled = |name: &str| api::PutSecretValueRequest {
        version_stages: Some((0..20).map(|i| format!("L{i}")).collect()),
        ..put(&json!({"AccountName": name, "AccountPassword": "guess-0123456789"}).to_string())
    };
    let held = answer(writer.put_secret_value("app/rds", &labelled("app")).await);
    let other = answer(writer.put_secret_value("app/rds", &labelled("other")).await);
    assert_eq!(held.0, ErrorCode::InvalidParameter, "{}", held.1);
    assert_eq!(held, other, "a held and another account are told apart");
    let unlabelled = |name: &str| api::PutSecretValueRequest {
        version_stages: Some(Vec::new()),
        ..put(&json!({"AccountName": name, "AccountPassword": "guess-0123456789"}).to_string())
    };
    let admin = answer(
        writer
            .put_secret_value("app/rds", &unlabelled("postgres"))
            .await,
    );
    let other = answer(
        writer
            .put_secret_value("app/rds", &unlabelled("other"))
            .await,
    );
    assert_eq!(admin.0, ErrorCode::Forbidden, "{}", admin.1);
    assert_eq!(admin, other, "the admin account and another are told apart");
    assert_eq!(
        s.client
            .list_secret_versions("app/rds")
            .await
            .unwrap()
            .versions
            .len(),
        1,
        "nothing was written"
    );
}
