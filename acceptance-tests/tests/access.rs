//! Access-control resources with the real terraform CLI: `strongbox_policy`,
//! `strongbox_principal`, `strongbox_principal_token` — basic, update in place, import,
//! drift, destroy, and the token really working (and really revoked).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use serde_json::Value;
use strongbox_acceptance_tests::strongbox_client::{Client, ClientConfig, ErrorCode};
use strongbox_acceptance_tests::strongbox_schemas as api;
use strongbox_acceptance_tests::{
    DevServer, Terraform, actions, assert_same_attributes, config, for_each_variant,
    resource_values,
};

fn apply(tf: &Terraform, body: &str) {
    tf.write_config(&config(body));
    if !tf.work_dir().join(".terraform.lock.hcl").exists() {
        tf.init();
    }
    tf.apply();
    tf.assert_no_changes();
}

fn access(doc_action: &str) -> String {
    format!(
        r#"
resource "strongbox_secret" "app" {{
  name        = "app/db"
  secret_data = "app-password"
}}

resource "strongbox_secret" "other" {{
  name        = "other/db"
  secret_data = "other-password"
}}

resource "strongbox_policy" "read_app" {{
  name        = "read-app"
  description = "read app secrets"
  document = jsonencode({{
    Version = "1"
    Statement = [
      {{ Effect = "Allow", Action = [{doc_action}], Resource = ["secret/app/*"] }}
    ]
  }})
}}

resource "strongbox_principal" "app" {{
  name     = "my-app"
  policies = [strongbox_policy.read_app.name]
}}

resource "strongbox_principal_token" "app" {{
  principal   = strongbox_principal.app.name
  description = "deploy"
}}

output "token" {{
  value     = strongbox_principal_token.app.token
  sensitive = true
}}
"#
    )
}

fn client_with(srv: &DevServer, token: &str) -> Client {
    Client::new(ClientConfig {
        address: srv.addr().to_string(),
        token: token.to_string(),
        ca_cert_pem: Some(std::fs::read(srv.ca_cert()).unwrap()),
        timeout: None,
    })
    .unwrap()
}

fn token_of(tf: &Terraform) -> String {
    let out = tf.run_ok(&["output", "-json", "token"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn principals_policies_and_tokens() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        apply(&tf, &access(r#""kms:GetSecretValue""#));

        // The token from state works for exactly what the policy allows.
        let app = client_with(&srv, &token_of(&tf));
        assert_eq!(
            srv.block_on(app.get_secret_value("app/db", None, None))
                .unwrap()
                .secret_data,
            "app-password"
        );
        let denied = srv
            .block_on(app.get_secret_value("other/db", None, None))
            .unwrap_err();
        assert_eq!(denied.code(), Some(ErrorCode::Forbidden));
        let no_describe = srv.block_on(app.describe_secret("app/db")).unwrap_err();
        assert_eq!(no_describe.code(), Some(ErrorCode::Forbidden));

        // Update in place: the document gains an action.
        tf.write_config(&config(&access(
            r#""kms:GetSecretValue", "kms:DescribeSecret""#,
        )));
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_policy.read_app"), ["update"]);
        assert_eq!(actions(&plan, "strongbox_principal_token.app"), ["no-op"]);
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(
            srv.block_on(app.describe_secret("app/db")).unwrap().name,
            "app/db"
        );

        // Drift: the principal loses its policy outside Terraform; apply restores it.
        let root = srv.client();
        srv.block_on(root.update_principal(
            "my-app",
            &api::UpdatePrincipalRequest {
                description: None,
                policies: Some(vec![]),
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(
            srv.block_on(root.get_principal("my-app")).unwrap().policies,
            ["read-app"]
        );

        // Import policy and principal into a fresh directory: same attributes, empty plan.
        let state = tf.state_json();
        let fresh = tf.sibling();
        fresh.write_config(&config(
            r#"
resource "strongbox_policy" "read_app" {
  name        = "read-app"
  description = "read app secrets"
  document = jsonencode({
    Version = "1"
    Statement = [
      { Effect = "Allow", Action = ["kms:GetSecretValue", "kms:DescribeSecret"], Resource = ["secret/app/*"] }
    ]
  })
}
resource "strongbox_principal" "app" {
  name     = "my-app"
  policies = [strongbox_policy.read_app.name]
}
"#,
        ));
        fresh.init();
        fresh.import("strongbox_policy.read_app", "read-app");
        fresh.import("strongbox_principal.app", "my-app");
        let imported = fresh.state_json();
        for addr in ["strongbox_policy.read_app", "strongbox_principal.app"] {
            assert_same_attributes(
                &resource_values(&state, addr),
                &resource_values(&imported, addr),
                &[],
            );
        }
        fresh.assert_no_changes();

        // Built-ins cannot be changed or deleted, so they cannot be imported either.
        let builtins = tf.sibling();
        builtins.write_config(&config(
            r#"
resource "strongbox_policy" "admin" {
  name     = "AdministratorAccess"
  document = jsonencode({ Version = "1", Statement = [{ Effect = "Allow", Action = ["kms:*"], Resource = ["*"] }] })
}
resource "strongbox_principal" "root" {
  name = "root"
}
"#,
        ));
        builtins.init();
        builtins.expect_error(
            &[
                "import",
                "-input=false",
                "-no-color",
                "strongbox_policy.admin",
                "AdministratorAccess",
            ],
            &["Cannot import a built-in policy"],
        );
        builtins.expect_error(
            &[
                "import",
                "-input=false",
                "-no-color",
                "strongbox_principal.root",
                "root",
            ],
            &["Cannot import a built-in principal"],
        );

        // Destroy: the token is revoked at once, principal and policy are gone.
        tf.destroy();
        let revoked = srv
            .block_on(app.get_secret_value("app/db", None, None))
            .unwrap_err();
        assert_eq!(revoked.code(), Some(ErrorCode::Unauthenticated));
        assert_eq!(
            srv.block_on(root.get_principal("my-app"))
                .unwrap_err()
                .code(),
            Some(ErrorCode::PrincipalNotFound)
        );
        assert_eq!(
            srv.block_on(root.get_policy("read-app"))
                .unwrap_err()
                .code(),
            Some(ErrorCode::PolicyNotFound)
        );
    });
}

#[test]
fn malformed_policy_document_is_refused_with_the_statement_named() {
    for_each_variant(|v| {
        let (_srv, tf) = v.start();
        tf.write_config(&config(
            r#"
resource "strongbox_policy" "bad" {
  name     = "bad"
  document = jsonencode({ Version = "1", Statement = [{ Effect = "Maybe", Action = ["kms:*"], Resource = ["*"] }] })
}
"#,
        ));
        tf.init();
        tf.expect_error(
            &["plan", "-no-color"],
            &["Invalid policy document", "Effect"],
        );
    });
}

#[test]
fn principal_rename_replaces_and_out_of_band_delete_plans_a_create() {
    let body = |name: &str| {
        format!(
            r#"
resource "strongbox_policy" "p" {{
  name     = "p"
  document = jsonencode({{ Version = "1", Statement = [{{ Effect = "Allow", Action = ["kms:ListSecrets"], Resource = ["*"] }}] }})
}}
resource "strongbox_principal" "a" {{
  name     = "{name}"
  policies = [strongbox_policy.p.name]
}}
"#
        )
    };
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        apply(&tf, &body("svc-a"));
        tf.write_config(&config(&body("svc-b")));
        let plan = tf.plan_json();
        assert_eq!(
            actions(&plan, "strongbox_principal.a"),
            ["delete", "create"]
        );
        tf.apply();
        tf.assert_no_changes();
        let c = srv.client();
        assert_eq!(
            srv.block_on(c.get_principal("svc-a")).unwrap_err().code(),
            Some(ErrorCode::PrincipalNotFound)
        );
        // The state holds the principal's own id (a new one for the replacement).
        let id_in_state = |tf: &Terraform| {
            resource_values(&tf.state_json(), "strongbox_principal.a")["principal_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let first = id_in_state(&tf);
        assert_eq!(
            first,
            srv.block_on(c.get_principal("svc-b")).unwrap().principal_id
        );

        // Deleted outside Terraform: planned for creation, and created again, under a
        // new id.
        srv.block_on(c.delete_principal("svc-b")).unwrap();
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_principal.a"), ["create"]);
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(
            srv.block_on(c.get_principal("svc-b")).unwrap().policies,
            ["p"]
        );
        let again = id_in_state(&tf);
        assert_ne!(again, first);
        assert_eq!(
            again,
            srv.block_on(c.get_principal("svc-b")).unwrap().principal_id
        );
    });
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Two tokens of principal `ci` that expire at `expires_at`.
fn tokens_expiring(expires_at: &str) -> String {
    format!(
        r#"
resource "strongbox_principal_token" "kept" {{
  principal  = "ci"
  expires_at = "{expires_at}"
}}
resource "strongbox_principal_token" "revoked" {{
  principal  = "ci"
  expires_at = "{expires_at}"
}}
"#
    )
}

#[test]
fn an_expired_token_stays_planned_as_it_is_and_destroy_deletes_it() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        let c = srv.client();
        srv.block_on(c.create_principal(&api::CreatePrincipalRequest {
            name: "ci".into(),
            description: None,
            policies: None,
        }))
        .unwrap();
        // Tokens that expire while the configuration stands (time enough for the apply
        // on a loaded machine); one of them is revoked outside Terraform meanwhile. Once
        // their time has come, both are as configured: no plan to make either again,
        // which their expiry would not allow (and which would stop `terraform destroy`,
        // whose first step plans the configuration), and destroy deletes what is left.
        let at = api::Timestamp::from_unix(unix_now() + 45).to_string();
        apply(&tf, &tokens_expiring(&at));
        let revoked =
            resource_values(&tf.state_json(), "strongbox_principal_token.revoked")["token_id"]
                .as_str()
                .unwrap()
                .to_string();
        srv.block_on(c.delete_token("ci", &revoked)).unwrap();
        while unix_now() <= at_unix(&at) {
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let listed = srv.block_on(c.list_tokens("ci")).unwrap().tokens;
        assert_eq!(listed.len(), 1);
        assert!(listed[0].expired);
        tf.assert_no_changes();
        tf.destroy();
        assert!(srv.block_on(c.list_tokens("ci")).unwrap().tokens.is_empty());
    });
}

fn at_unix(rfc3339: &str) -> i64 {
    serde_json::from_value::<api::Timestamp>(Value::String(rfc3339.into()))
        .unwrap()
        .unix()
}

#[test]
fn a_refused_create_points_at_the_attribute_it_is_about() {
    for_each_variant(|v| {
        let (_srv, tf) = v.start();
        tf.write_config(&config(
            r#"
resource "strongbox_policy" "p" {
  name     = "p"
  document = jsonencode({ Version = "1", Statement = [{ Effect = "Allow", Action = ["kms:ListSecrets"], Resource = ["*"] }] })
}
resource "strongbox_principal" "a" {
  description = "reserved name"
  name        = "anonymous"
  policies    = [strongbox_policy.p.name]
}
"#,
        ));
        tf.init();
        // The server refuses the name: the diagnostic shows the `name` line, not the
        // `policies` one (or the block).
        let out = tf.expect_error(
            &["apply", "-auto-approve", "-no-color", "-input=false"],
            &["Creating the principal failed", "reserved"],
        );
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(text.contains(r#"name        = "anonymous""#), "{text}");
        assert!(!text.contains("policies    ="), "{text}");
    });
}

#[test]
fn a_token_replaced_with_its_principal_works_after_one_apply() {
    let body = r#"
resource "strongbox_principal" "app" {
  name = "app"
}
resource "strongbox_principal_token" "app" {
  principal = strongbox_principal.app.name
  lifecycle {
    replace_triggered_by = [strongbox_principal.app]
  }
}
output "token" {
  value     = strongbox_principal_token.app.token
  sensitive = true
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        // `replace_triggered_by` (README.md) came with Terraform 1.2.
        if !tf.bin().at_least(1, 2) {
            return;
        }
        // The principal has no policy: a token that works is refused as `Forbidden`, one
        // that does not as `Unauthenticated`.
        let answer = |token: &str| {
            srv.block_on(client_with(&srv, token).list_secrets(&Default::default()))
                .unwrap_err()
                .code()
        };
        apply(&tf, body);
        let first = token_of(&tf);
        assert_eq!(answer(&first), Some(ErrorCode::Forbidden));
        // The principal is replaced, which deletes its tokens on the server: the token
        // is replaced in the same apply, and the new one works.
        tf.apply_args(&["-replace=strongbox_principal.app"]);
        tf.assert_no_changes();
        let second = token_of(&tf);
        assert_ne!(second, first);
        assert_eq!(answer(&first), Some(ErrorCode::Unauthenticated));
        assert_eq!(answer(&second), Some(ErrorCode::Forbidden));
    });
}
