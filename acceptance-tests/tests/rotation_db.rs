//! Database rotation with Terraform: an `Rds` secret with a `postgresql` dual-account
//! policy, applied with Terraform against a real PostgreSQL (a throwaway cluster with
//! SCRAM authentication), rotated by the engine: the database accepts the new
//! `ACSCurrent` and the previous account, and `terraform plan` stays empty.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../../server/tests/api/pg_cluster.rs"]
mod pg_cluster;

use pg_cluster::PgCluster;
use strongbox_acceptance_tests::{config, for_each_variant};

struct Creds {
    name: String,
    password: String,
}

fn body(pg: &PgCluster, role: &str) -> String {
    format!(
        r#"
resource "strongbox_secret" "admin" {{
  name        = "db/admin"
  secret_data = jsonencode({{ AccountName = "postgres", AccountPassword = "{admin_pw}" }})
}}

resource "strongbox_rotation_policy" "db" {{
  name     = "db-monthly"
  interval = "30d"
  strategy = "postgresql"
}}

resource "strongbox_secret" "app" {{
  name        = "MyDbCreds"
  secret_type = "Rds"
  secret_data = jsonencode({{ AccountName = "{role}", AccountPassword = "first-password" }})
  extended_config = jsonencode({{
    SecretSubType = "DoubleUsers"
    Host          = "127.0.0.1"
    Port          = {port}
    Database      = "postgres"
    TlsMode       = "disable"
    AdminSecret   = strongbox_secret.admin.name
  }})
  rotation_policy = strongbox_rotation_policy.db.name
}}
"#,
        admin_pw = pg.admin_password,
        port = pg.port,
    )
}

#[test]
fn an_rds_secret_with_a_dual_postgres_policy_rotates_without_drift() {
    let pg = PgCluster::start();
    let e = pg
        .psql("postgres", "not-the-password", "SELECT 1")
        .expect_err("a wrong password must be refused");
    assert!(e.contains("password authentication failed"), "{e}");
    let mut n = 0;
    for_each_variant(|v| {
        n += 1;
        let role = format!("app{n}");
        pg.psql(
            "postgres",
            &pg.admin_password,
            &format!("CREATE ROLE {role} LOGIN PASSWORD 'first-password'"),
        )
        .unwrap();
        let (srv, tf) = v.start();
        tf.write_config(&config(&body(&pg, &role)));
        tf.init();
        tf.apply();
        tf.assert_no_changes();
        let c = srv.client();
        let read = |stage: Option<&str>| {
            let v = srv
                .block_on(c.get_secret_value("MyDbCreds", None, stage))
                .unwrap();
            let j: serde_json::Value = serde_json::from_str(&v.secret_data).unwrap();
            Creds {
                name: j["AccountName"].as_str().unwrap().to_string(),
                password: j["AccountPassword"].as_str().unwrap().to_string(),
            }
        };
        for i in 0..2 {
            srv.block_on(c.rotate_secret("MyDbCreds", None)).unwrap();
            let cur = read(None);
            let expected = if i == 0 {
                format!("{role}_clone")
            } else {
                role.clone()
            };
            assert_eq!(cur.name, expected);
            assert_eq!(
                pg.psql(&cur.name, &cur.password, "SELECT current_user"),
                Ok(cur.name.clone())
            );
            let prev = read(Some("ACSPrevious"));
            assert_eq!(
                pg.psql(&prev.name, &prev.password, "SELECT current_user"),
                Ok(prev.name.clone()),
                "the previous account stays valid for a full cycle"
            );
        }
        let e = pg
            .psql(&role, "first-password", "SELECT 1")
            .expect_err("the first password was rotated away");
        assert!(e.contains("password authentication failed"), "{e}");
        // Rotation is not drift.
        tf.assert_no_changes();
        tf.apply();
        assert_eq!(
            read(None).name,
            role,
            "apply leaves the rotated value alone"
        );
    });
}
