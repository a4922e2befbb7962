//! Rotation is not drift: after the attached policy rotates a secret, `terraform plan` is
//! empty; a change by anyone else still shows, and apply puts the configured value back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use strongbox_acceptance_tests::strongbox_schemas as api;
use strongbox_acceptance_tests::{DevServer, Terraform, Variant, config, for_each_variant};

const BODY: &str = r#"
resource "strongbox_rotation_policy" "weekly" {
  name     = "weekly"
  interval = "7d"
  strategy = "random"
  settings = { length = "32" }
}

resource "strongbox_secret" "db" {
  name            = "app/db-password"
  secret_data     = "initial-password"
  rotation_policy = strongbox_rotation_policy.weekly.name
}
"#;

/// A server, and a work dir where `BODY` is applied.
fn applied(v: &Variant) -> (DevServer, Terraform) {
    applied_with(v, BODY)
}

/// A server, and a work dir where `body` is applied.
fn applied_with(v: &Variant, body: &str) -> (DevServer, Terraform) {
    let (srv, tf) = v.start();
    tf.write_config(&config(body));
    tf.init();
    tf.apply();
    (srv, tf)
}

/// `BODY` with the custom label `blue` beside `ACSCurrent`.
fn with_blue() -> String {
    BODY.replace(
        "rotation_policy = strongbox_rotation_policy.weekly.name",
        "rotation_policy = strongbox_rotation_policy.weekly.name\n  version_stages  = [\"ACSCurrent\", \"blue\"]",
    )
}

#[test]
fn a_rotation_is_not_drift_but_a_manual_change_is() {
    for_each_variant(|v| {
        let (srv, tf) = applied(v);
        tf.assert_no_changes();
        let c = srv.client();
        let read = |stage: Option<&str>| {
            srv.block_on(c.get_secret_value("app/db-password", None, stage))
                .unwrap()
        };

        // Two rotations by the engine: new random values, made by `rotation`.
        for _ in 0..2 {
            let r = srv
                .block_on(c.rotate_secret("app/db-password", None))
                .unwrap();
            let cur = read(None);
            assert_eq!(cur.version_id, r.version_id);
            assert_ne!(cur.secret_data, "initial-password");
            assert_eq!(cur.secret_data.len(), 32);
        }
        let versions = srv
            .block_on(c.list_secret_versions("app/db-password"))
            .unwrap()
            .versions;
        assert_eq!(versions[0].created_by, "rotation");
        // Each rotation names the version it replaced.
        assert_eq!(
            versions[0].rotated_from.as_deref(),
            Some(versions[1].version_id.as_str())
        );
        assert_eq!(
            versions[1].rotated_from.as_deref(),
            Some(versions[2].version_id.as_str())
        );
        assert_eq!(versions[2].created_by, "principal/root");
        let described = srv.block_on(c.describe_secret("app/db-password")).unwrap();
        assert!(described.last_rotation_date.is_some());

        // Not drift: both plans are empty, and the rotated value stays in place.
        tf.assert_no_changes();
        let rotated = read(None).secret_data;
        tf.apply();
        assert_eq!(
            read(None).secret_data,
            rotated,
            "apply leaves the rotated value alone"
        );

        // A change by someone else is drift: plan shows it, apply restores the configuration.
        srv.block_on(c.put_secret_value(
            "app/db-password",
            &api::PutSecretValueRequest {
                secret_data: "typed-by-hand".into(),
                ..Default::default()
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(read(None).secret_data, "initial-password");
    });
}

/// A value someone else put is drift also after a rotation replaced it: the rotation's
/// chain of replaced versions leads to their version, not Terraform's.
#[test]
fn a_change_by_hand_is_drift_also_after_a_rotation_replaced_it() {
    for_each_variant(|v| {
        let (srv, tf) = applied(v);
        let c = srv.client();
        let by_hand = srv
            .block_on(c.put_secret_value(
                "app/db-password",
                &api::PutSecretValueRequest {
                    secret_data: "typed-by-hand".into(),
                    ..Default::default()
                },
            ))
            .unwrap();
        let r = srv
            .block_on(c.rotate_secret("app/db-password", None))
            .unwrap();
        let versions = srv
            .block_on(c.list_secret_versions("app/db-password"))
            .unwrap()
            .versions;
        assert_eq!(versions[0].version_id, r.version_id);
        assert_eq!(versions[0].rotated_from, Some(by_hand.version_id));
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        let cur = srv
            .block_on(c.get_secret_value("app/db-password", None, None))
            .unwrap();
        assert_eq!(cur.secret_data, "initial-password");
    });
}

/// After a rotation, a change of `version_stages` alone labels the rotated (current)
/// version: the value Terraform wrote before the rotation is not written back.
#[test]
fn a_stage_change_after_a_rotation_keeps_the_rotated_value() {
    let with_stages = with_blue();
    for_each_variant(|v| {
        let (srv, tf) = applied(v);
        let c = srv.client();
        let rotated = srv
            .block_on(c.rotate_secret("app/db-password", None))
            .unwrap();
        tf.assert_no_changes();

        tf.write_config(&config(&with_stages));
        tf.apply();
        tf.assert_no_changes();
        let cur = srv
            .block_on(c.get_secret_value("app/db-password", None, None))
            .unwrap();
        assert_eq!(cur.version_id, rotated.version_id, "the rotation stands");
        assert_ne!(cur.secret_data, "initial-password");
        let blue = srv
            .block_on(c.get_secret_value("app/db-password", None, Some("blue")))
            .unwrap();
        assert_eq!(blue.version_id, rotated.version_id);

        // Taking the label away again removes it, and still writes no value.
        tf.write_config(&config(BODY));
        tf.apply();
        tf.assert_no_changes();
        let versions = srv
            .block_on(c.list_secret_versions("app/db-password"))
            .unwrap()
            .versions;
        assert!(
            versions
                .iter()
                .all(|v| !v.version_stages.contains(&"blue".to_string())),
            "{versions:?}"
        );
        let cur = srv
            .block_on(c.get_secret_value("app/db-password", None, None))
            .unwrap();
        assert_eq!(cur.version_id, rotated.version_id);
    });
}

/// After a rotation the state keeps the labels Terraform put, but a custom label taken
/// away or added by someone else is still drift: the plan shows it, and apply puts the
/// configured labels back without writing a value.
#[test]
fn a_label_changed_by_hand_after_a_rotation_is_drift() {
    let with_stages = with_blue();
    for_each_variant(|v| {
        let (srv, tf) = applied_with(v, &with_stages);
        let c = srv.client();
        let name = "app/db-password";
        let written = srv.block_on(c.describe_secret(name)).unwrap().version_id;
        let rotated = srv.block_on(c.rotate_secret(name, None)).unwrap();
        tf.assert_no_changes();
        let stage = |label: &str, to: Option<&str>, from: Option<&str>| {
            srv.block_on(c.update_secret_stage(
                name,
                &api::UpdateSecretStageRequest {
                    version_stage: label.into(),
                    move_to_version: to.map(Into::into),
                    remove_from_version: from.map(Into::into),
                },
            ))
            .unwrap();
        };
        let holder = |label: &str| {
            srv.block_on(c.list_secret_versions(name))
                .unwrap()
                .versions
                .into_iter()
                .find(|v| v.version_stages.iter().any(|s| s == label))
                .map(|v| v.version_id)
        };
        assert_eq!(holder("blue").as_deref(), Some(written.as_str()));

        // Taken away by hand: drift, and apply labels the rotated version.
        stage("blue", None, Some(&written));
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(holder("blue").as_deref(), Some(rotated.version_id.as_str()));

        // Added by hand, on the rotated version or on the one Terraform wrote: drift, and
        // apply takes it away.
        for on in [&rotated.version_id, &written] {
            stage("green", Some(on), None);
            tf.assert_changes();
            tf.apply();
            tf.assert_no_changes();
            assert_eq!(holder("green"), None);
        }
        let cur = srv.block_on(c.get_secret_value(name, None, None)).unwrap();
        assert_eq!(cur.version_id, rotated.version_id, "the rotation stands");
    });
}

/// The policy's interval and the secret change in one apply: the secret's rotation dates,
/// which the server derives from the policy, are planned unknown, so the result is
/// consistent with the plan.
#[test]
fn a_policy_change_and_a_secret_change_in_one_apply() {
    for_each_variant(|v| {
        let (srv, tf) = applied(v);
        let before = srv
            .block_on(srv.client().describe_secret("app/db-password"))
            .unwrap()
            .next_rotation_date;
        let changed = BODY
            .replace("interval = \"7d\"", "interval = \"14d\"")
            .replace(
                "secret_data     = \"initial-password\"",
                "secret_data     = \"initial-password\"\n  description     = \"now described\"",
            );
        tf.write_config(&config(&changed));
        tf.apply();
        tf.assert_no_changes();
        let after = srv
            .block_on(srv.client().describe_secret("app/db-password"))
            .unwrap();
        assert_eq!(after.description, "now described");
        assert_ne!(after.next_rotation_date, before, "follows the new interval");
    });
}

/// Renaming a policy that a secret uses: destroy-then-create is refused by the server (a
/// policy in use cannot be deleted), and `create_before_destroy`, as the attribute's
/// description says, goes through: the new policy is made, the secret moves to it, and
/// the old one is deleted.
#[test]
fn renaming_a_policy_in_use_needs_create_before_destroy() {
    let renamed = BODY.replace("name     = \"weekly\"", "name     = \"weekly2\"");
    let with_cbd = renamed.replace(
        "  settings = { length = \"32\" }\n",
        "  settings = { length = \"32\" }\n  lifecycle {\n    create_before_destroy = true\n  }\n",
    );
    for_each_variant(|v| {
        let (srv, tf) = applied(v);
        tf.write_config(&config(&renamed));
        tf.expect_error(
            &["apply", "-auto-approve", "-no-color", "-input=false"],
            &["RotationPolicyInUse"],
        );
        tf.write_config(&config(&with_cbd));
        tf.apply();
        tf.assert_no_changes();
        let c = srv.client();
        let s = srv.block_on(c.describe_secret("app/db-password")).unwrap();
        assert_eq!(s.rotation_policy.as_deref(), Some("weekly2"));
        assert!(srv.block_on(c.describe_rotation_policy("weekly")).is_err());
    });
}

/// A secret imported after its policy rotated it plans empty against the configuration
/// it was created with, and an apply leaves the rotated value in place: the state takes
/// the version a principal last wrote, not the rotated one, whose value the configuration
/// does not hold.
#[test]
fn an_imported_secret_that_rotated_keeps_its_rotated_value() {
    for_each_variant(|v| {
        let (srv, tf) = applied(v);
        let c = srv.client();
        // A version put since with a label of its own (never current): newer than the
        // one Terraform wrote, but not what the rotations replaced.
        srv.block_on(c.put_secret_value(
            "app/db-password",
            &api::PutSecretValueRequest {
                secret_data: "canary-password".into(),
                secret_data_type: Default::default(),
                version_id: None,
                version_stages: Some(vec!["canary".into()]),
            },
        ))
        .unwrap();
        for _ in 0..2 {
            srv.block_on(c.rotate_secret("app/db-password", None))
                .unwrap();
        }
        let rotated = srv
            .block_on(c.get_secret_value("app/db-password", None, None))
            .unwrap();
        assert_ne!(rotated.secret_data, "initial-password");

        let fresh = tf.sibling();
        fresh.write_config(&config(BODY));
        fresh.init();
        fresh.import("strongbox_rotation_policy.weekly", "weekly");
        fresh.import("strongbox_secret.db", "app/db-password");
        fresh.assert_no_changes();
        fresh.apply();
        let cur = srv
            .block_on(c.get_secret_value("app/db-password", None, None))
            .unwrap();
        assert_eq!(cur.version_id, rotated.version_id, "the rotation stands");
        assert_eq!(cur.secret_data, rotated.secret_data);
        fresh.assert_no_changes();
    });
}

/// Once rotations have pruned every version a principal wrote, a plain import cannot
/// tell the configured value from drift: it fails, naming the write-only import, instead
/// of planning the configured value over the rotated one; and the write-only import
/// adopts the secret without writing anything.
#[test]
fn an_import_after_the_written_version_was_pruned_fails_and_says_what_to_do() {
    for_each_variant(|v| {
        let (srv, tf) = applied(v);
        let c = srv.client();
        // The version Terraform wrote loses its labels after two rotations and is the
        // oldest unlabelled one once more than ten are kept.
        for _ in 0..12 {
            srv.block_on(c.rotate_secret("app/db-password", None))
                .unwrap();
        }
        let versions = srv
            .block_on(c.list_secret_versions("app/db-password"))
            .unwrap()
            .versions;
        assert!(versions.iter().all(|x| x.created_by == "rotation"));
        let rotated = srv
            .block_on(c.get_secret_value("app/db-password", None, None))
            .unwrap();

        let fresh = tf.sibling();
        fresh.write_config(&config(BODY));
        fresh.init();
        fresh.import("strongbox_rotation_policy.weekly", "weekly");
        fresh.expect_error(
            &[
                "import",
                "-input=false",
                "-no-color",
                "strongbox_secret.db",
                "app/db-password",
            ],
            &[
                "the value its rotations started from is gone",
                "app/db-password:write_only",
                "older terraform",
            ],
        );
        let state = String::from_utf8_lossy(&fresh.run_ok(&["state", "list"]).stdout).into_owned();
        assert!(!state.contains("strongbox_secret.db"), "{state}");

        if v.terraform.supports_write_only() {
            fresh.write_config(&config(&BODY.replace(
                "secret_data     = \"initial-password\"",
                "secret_data_wo         = \"initial-password\"\n  secret_data_wo_version = 1",
            )));
            fresh.import("strongbox_secret.db", "app/db-password:write_only");
            fresh.apply();
            fresh.assert_no_changes();
        }
        let cur = srv
            .block_on(c.get_secret_value("app/db-password", None, None))
            .unwrap();
        assert_eq!(cur.version_id, rotated.version_id, "the rotation stands");
        assert_eq!(cur.secret_data, rotated.secret_data);
    });
}

/// The same with a custom label: the import reads the labels as the next refresh does,
/// so a configuration that has them plans empty.
#[test]
fn an_imported_secret_that_rotated_keeps_its_labels() {
    let with_stages = with_blue();
    for_each_variant(|v| {
        let (srv, tf) = applied_with(v, &with_stages);
        let c = srv.client();
        for _ in 0..2 {
            srv.block_on(c.rotate_secret("app/db-password", None))
                .unwrap();
        }
        let fresh = tf.sibling();
        fresh.write_config(&config(&with_stages));
        fresh.init();
        fresh.import("strongbox_rotation_policy.weekly", "weekly");
        fresh.import("strongbox_secret.db", "app/db-password");
        fresh.assert_no_changes();
    });
}

/// A label someone else put on a version the engine made before Terraform last wrote
/// the value is not Terraform's: it stays out of the plan after later rotations.
#[test]
fn a_label_on_an_older_rotated_version_is_not_drift() {
    for_each_variant(|v| {
        let (srv, tf) = applied(v);
        let c = srv.client();
        let older = srv
            .block_on(c.rotate_secret("app/db-password", None))
            .unwrap();
        tf.write_config(&config(
            &BODY.replace("initial-password", "second-password"),
        ));
        tf.apply();
        srv.block_on(c.update_secret_stage(
            "app/db-password",
            &api::UpdateSecretStageRequest {
                version_stage: "last-known-good".into(),
                move_to_version: Some(older.version_id.clone()),
                remove_from_version: None,
            },
        ))
        .unwrap();
        srv.block_on(c.rotate_secret("app/db-password", None))
            .unwrap();
        tf.assert_no_changes();
        tf.apply();
        let held = srv
            .block_on(c.get_secret_value("app/db-password", None, Some("last-known-good")))
            .unwrap();
        assert_eq!(held.version_id, older.version_id, "left where it was put");
    });
}

/// A secret deleted outside Terraform (waiting out its recovery window, its rotation
/// policy still attached) is dropped from state by a destroy without a refresh, as a
/// refresh would have read it; its policy is detached on the way (the server allows
/// that much of a secret pending deletion), so that destroying the policy then works.
#[test]
fn destroying_a_secret_deleted_outside_terraform_drops_it() {
    for_each_variant(|v| {
        let (srv, tf) = applied(v);
        let c = srv.client();
        srv.block_on(c.delete_secret("app/db-password", Default::default()))
            .unwrap();
        tf.run_ok(&[
            "destroy",
            "-auto-approve",
            "-refresh=false",
            "-no-color",
            "-input=false",
            "-target=strongbox_secret.db",
        ]);
        let listed = tf.run_ok(&["state", "list"]);
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(!listed.contains("strongbox_secret.db"), "{listed}");
        assert!(
            listed.contains("strongbox_rotation_policy.weekly"),
            "{listed}"
        );
        // Still waiting out its window on the server, without its policy.
        let d = srv.block_on(c.describe_secret("app/db-password")).unwrap();
        assert!(d.planned_delete_time.is_some());
        assert_eq!(d.rotation_policy, None);
        tf.destroy();
        assert!(
            srv.block_on(c.describe_rotation_policy("weekly")).is_err(),
            "the policy was destroyed"
        );
    });
}
