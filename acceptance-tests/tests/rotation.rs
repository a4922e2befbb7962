//! Rotation is not drift: after the attached policy rotates a secret, `terraform plan` is
//! empty; a change by anyone else still shows, and apply puts the configured value back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use strongbox_acceptance_tests::strongbox_schemas as api;
use strongbox_acceptance_tests::{config, for_each_variant};

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

#[test]
fn a_rotation_is_not_drift_but_a_manual_change_is() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        tf.write_config(&config(BODY));
        tf.init();
        tf.apply();
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
