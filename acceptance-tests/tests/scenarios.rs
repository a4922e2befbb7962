//! Scenario tests of terraform-provider-strongbox with the real `terraform` CLI (issue 3,
//! "Acceptance tests" and "Semantics"), in the terraform-plugin-testing style.
//!
//! Every test runs once per [`matrix`](strongbox_acceptance_tests::matrix) variant:
//! Terraform 1.0.3, the Terraform on `PATH` (1.11.x), and that one again with protocol 5
//! forced; each variant gets a fresh dev server and work dir. Tests of features newer than
//! 1.0.3 (write-only attributes, ephemeral resources) check on 1.0.3 that the provider
//! refuses them clearly, or skip it.
//!
//! Run: `cargo build --workspace --bins && cargo test -p strongbox-acceptance-tests`
//! (`STRONGBOX_TF_VERSIONS=1.11` runs one version only).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use strongbox_acceptance_tests::strongbox_client::{DeleteSecretOptions, ErrorCode};
use strongbox_acceptance_tests::strongbox_schemas as api;
use strongbox_acceptance_tests::{
    DevServer, Terraform, Variant, actions, assert_same_attributes, config, for_each_variant,
    resource_change, resource_values, workspace_dir,
};

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// Writes `main.tf` (preamble + body), runs `init` the first time, and applies.
fn apply(tf: &Terraform, body: &str) {
    tf.write_config(&config(body));
    if !tf.work_dir().join(".terraform.lock.hcl").exists() {
        tf.init();
    }
    tf.apply();
}

/// Writes `main.tf` (preamble + body) and runs `init` if needed, without applying.
fn configure(tf: &Terraform, body: &str) {
    tf.write_config(&config(body));
    if !tf.work_dir().join(".terraform.lock.hcl").exists() {
        tf.init();
    }
}

/// One step of terraform-plugin-testing: apply, then both empty-plan checks.
fn step(tf: &Terraform, body: &str) {
    apply(tf, body);
    tf.assert_no_changes();
}

/// The state's attributes of `address`.
fn state_of(tf: &Terraform, address: &str) -> Value {
    resource_values(&tf.state_json(), address)
}

/// A string attribute that must be set.
fn attr(values: &Value, key: &str) -> String {
    values[key]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("attribute {key} is not a non-empty string in {values:#}"))
        .to_string()
}

/// The `ACSCurrent` value of a secret on the server.
fn server_value(srv: &DevServer, name: &str) -> String {
    server_value_at(srv, name, None)
}

/// The value at `stage` (default `ACSCurrent`) of a secret on the server.
fn server_value_at(srv: &DevServer, name: &str, stage: Option<&str>) -> String {
    srv.block_on(srv.client().get_secret_value(name, None, stage))
        .unwrap_or_else(|e| panic!("read {name} at {stage:?}: {e}"))
        .secret_data
}

/// The API error code of a failed call, panicking when the call succeeded.
fn error_code<T: std::fmt::Debug>(
    r: Result<T, strongbox_acceptance_tests::strongbox_client::Error>,
) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an API error, got {v:?}"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("expected an API error code, got {e}")),
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `when` is `days` days from now, give or take an hour.
fn assert_days_from_now(when: i64, days: i64, what: &str) {
    let expected = now_unix() + days * 86_400;
    assert!(
        (when - expected).abs() < 3_600,
        "{what}: {when} is not {days} days from now ({expected})"
    );
}

/// The provider negotiated the protocol the variant asked for.
fn assert_protocol(tf: &Terraform, v: &Variant) {
    assert_eq!(
        tf.negotiated_protocol(),
        Some(v.expected_protocol()),
        "negotiated protocol for {v} (see tf.log in {})",
        tf.work_dir().display()
    );
}

/// `after_unknown[key]` of a planned change is `true`.
fn assert_planned_unknown(plan: &Value, address: &str, key: &str) {
    let rc = resource_change(plan, address);
    assert_eq!(
        rc["change"]["after_unknown"][key],
        json!(true),
        "{address}.{key} should be planned unknown: {:#}",
        rc["change"]
    );
}

/// The import step: a fresh work dir with the same config imports every `(address, id)`,
/// then each imported object equals the original attribute by attribute, and the plan is
/// empty. `body` must declare no outputs (they are not imported, so they would show as
/// changes).
fn assert_import_round_trips(tf: &Terraform, body: &str, imports: &[(&str, String)]) {
    let original = tf.state_json();
    let fresh = tf.sibling();
    configure(&fresh, body);
    for (address, id) in imports {
        fresh.import(address, id);
    }
    let imported = fresh.state_json();
    for (address, _) in imports {
        eprintln!("import verify {address}");
        assert_same_attributes(
            &resource_values(&original, address),
            &resource_values(&imported, address),
            &[],
        );
    }
    fresh.assert_no_changes();
}

// ---------------------------------------------------------------------------------------
// Basic: apply, then `plan -refresh=false` and `plan` are both empty
// ---------------------------------------------------------------------------------------

const SECRET_BASIC: &str = r#"
resource "strongbox_secret" "s" {
  name        = "app-token"
  secret_data = "s3cret-value-1"
  description = "API token"
  tags        = { team = "payments" }
}
"#;

#[test]
fn secret_basic() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, SECRET_BASIC);
        assert_protocol(&tf, v);

        let s = state_of(&tf, "strongbox_secret.s");
        assert_eq!(s["id"], "app-token");
        assert_eq!(s["name"], "app-token");
        assert_eq!(s["secret_data"], "s3cret-value-1");
        assert_eq!(s["secret_data_type"], "text");
        assert_eq!(s["secret_type"], "Generic");
        assert_eq!(s["description"], "API token");
        assert_eq!(s["tags"], json!({"team": "payments"}));
        assert_eq!(s["recovery_window_in_days"], 30);
        assert_eq!(s["force_delete_without_recovery"], false);
        assert_eq!(s["version_stages"], json!(["ACSCurrent"]));
        assert_eq!(s["planned_delete_time"], Value::Null);
        attr(&s, "arn");
        attr(&s, "creation_date");
        let version_id = attr(&s, "version_id");

        let meta = srv
            .block_on(srv.client().describe_secret("app-token"))
            .unwrap();
        assert_eq!(meta.description, "API token");
        assert_eq!(meta.tags.get("team").map(String::as_str), Some("payments"));
        assert_eq!(meta.version_id, version_id);
        assert_eq!(meta.arn, attr(&s, "arn"));
        assert_eq!(server_value(&srv, "app-token"), "s3cret-value-1");

        tf.destroy();
    });
}

/// Terraform run with TF_DISABLE_PLUGIN_TLS sends the provider no client certificate:
/// the provider then serves on a Unix socket in a directory only its user may enter (as
/// go-plugin does), and every Terraform reaches it there.
#[test]
fn without_plugin_tls_terraform_reaches_the_provider_on_its_private_socket() {
    for_each_variant(|v| {
        let srv = DevServer::start();
        let tf = Terraform::builder(&v.terraform)
            .server(&srv)
            .protocols(v.protocols)
            .env("TF_DISABLE_PLUGIN_TLS", "1")
            .env("STRONGBOX_PROVIDER_LOG", "info")
            .build();
        step(&tf, SECRET_BASIC);
        assert_protocol(&tf, v);
        let log = std::fs::read_to_string(tf.work_dir().join("tf.log")).unwrap();
        // The provider's own log line, which Terraform keeps in its log.
        let serving: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("terraform_provider_strongbox: serving "))
            .collect();
        assert!(
            !serving.is_empty(),
            "no address logged in {}",
            tf.work_dir().display()
        );
        for l in serving {
            assert!(l.contains("unix") && l.contains("strongbox-plugin-"), "{l}");
        }
        assert_eq!(server_value(&srv, "app-token"), "s3cret-value-1");
        tf.destroy();
    });
}

/// Destroying a key that secrets use (by id or by alias) warns in the plan and names
/// them: after the key's window its material is gone and so are their values. A key no
/// secret uses plans its destroy without a warning. (Terraform before 1.3 does not ask
/// the provider to plan destroys.)
#[test]
fn destroying_a_key_in_use_warns_in_the_plan() {
    const BODY: &str = r#"
resource "strongbox_cmk" "used" {
  description            = "used"
  pending_window_in_days = 7
}

resource "strongbox_cmk_alias" "a" {
  name   = "alias/used"
  key_id = strongbox_cmk.used.id
}

resource "strongbox_cmk" "idle" {
  description = "idle"
}

resource "strongbox_secret" "by_id" {
  name              = "uses/by-id"
  secret_data       = "v"
  encryption_key_id = strongbox_cmk.used.id
}

resource "strongbox_secret" "by_alias" {
  name              = "uses/by-alias"
  secret_data       = "v"
  encryption_key_id = strongbox_cmk_alias.a.name
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, BODY);
        let used = attr(&state_of(&tf, "strongbox_cmk.used"), "id");
        let idle = attr(&state_of(&tf, "strongbox_cmk.idle"), "id");
        // A secret outside Terraform that moved to another key, keeping an old version
        // (without a stage) sealed under the one being destroyed.
        let c = srv.client();
        let other = srv.block_on(c.create_key(&Default::default())).unwrap();
        srv.block_on(c.create_secret(&api::CreateSecretRequest {
            name: "uses/moved-away".into(),
            secret_data: "v1".into(),
            encryption_key_id: Some(used.clone()),
            ..Default::default()
        }))
        .unwrap();
        for data in ["v2", "v3"] {
            srv.block_on(c.put_secret_value(
                "uses/moved-away",
                &api::PutSecretValueRequest {
                    secret_data: data.into(),
                    ..Default::default()
                },
            ))
            .unwrap();
        }
        srv.block_on(c.update_secret(
            "uses/moved-away",
            &api::UpdateSecretRequest {
                encryption_key_id: Some(other.key_id),
                ..Default::default()
            },
        ))
        .unwrap();
        let out = tf.run_ok(&["plan", "-destroy", "-no-color", "-input=false"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if !v.terraform.at_least(1, 3) {
            assert!(!text.contains("Secrets still use key"), "{text}");
            return;
        }
        assert!(
            text.contains(&format!("Secrets still use key {used}")),
            "{text}"
        );
        assert!(
            text.contains("uses/by-id")
                && text.contains("uses/by-alias")
                && text.contains("uses/moved-away"),
            "{text}"
        );
        assert!(text.contains("7 days"), "{text}");
        assert!(!text.contains(&format!("use key {idle}")), "{text}");
        // The warning does not stop the destroy.
        tf.destroy();
    });
}

#[test]
fn cmk_basic() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(
            &tf,
            r#"
resource "strongbox_cmk" "k" {
  description = "payments"
}

resource "strongbox_cmk" "rotating" {
  description        = "rotating"
  automatic_rotation = true
  rotation_interval  = "90d"
}
"#,
        );
        assert_protocol(&tf, v);
        let k = state_of(&tf, "strongbox_cmk.k");
        let id = attr(&k, "id");
        assert_eq!(k["description"], "payments");
        assert_eq!(k["key_spec"], "AES_256");
        assert_eq!(k["enabled"], true);
        assert_eq!(k["state"], "Enabled");
        assert_eq!(k["automatic_rotation"], false);
        assert_eq!(k["pending_window_in_days"], 30);
        assert_eq!(k["primary_key_version"], 1);
        attr(&k, "arn");
        attr(&k, "creation_date");

        let key = srv.block_on(srv.client().describe_key(&id)).unwrap();
        assert_eq!(key.description, "payments");
        assert_eq!(key.state, api::KeyState::Enabled);
        assert_eq!(key.arn, attr(&k, "arn"));

        let r = state_of(&tf, "strongbox_cmk.rotating");
        assert_eq!(r["automatic_rotation"], true);
        assert_eq!(r["rotation_interval"], "90d");
        let key = srv
            .block_on(srv.client().describe_key(&attr(&r, "id")))
            .unwrap();
        assert!(key.automatic_rotation);
        assert_eq!(
            key.rotation_interval.as_ref().map(api::Interval::as_str),
            Some("90d")
        );

        tf.destroy();
    });
}

const ALIAS_TWO_KEYS: &str = r#"
resource "strongbox_cmk" "a" {
  description = "a"
}

resource "strongbox_cmk" "b" {
  description = "b"
}
"#;

fn alias_config(target: &str) -> String {
    format!(
        r#"{ALIAS_TWO_KEYS}
resource "strongbox_cmk_alias" "x" {{
  name   = "alias/payments"
  key_id = strongbox_cmk.{target}.id
}}
"#
    )
}

#[test]
fn cmk_alias_basic_and_update_in_place() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &alias_config("a"));
        let a_id = attr(&state_of(&tf, "strongbox_cmk.a"), "id");
        let b_id = attr(&state_of(&tf, "strongbox_cmk.b"), "id");
        let x = state_of(&tf, "strongbox_cmk_alias.x");
        assert_eq!(x["id"], "alias/payments");
        assert_eq!(x["name"], "alias/payments");
        assert_eq!(x["key_id"], a_id.as_str());
        attr(&x, "arn");
        let alias = srv
            .block_on(srv.client().get_alias("alias/payments"))
            .unwrap();
        assert_eq!(alias.key_id, a_id);

        // key_id updates in place.
        tf.write_config(&config(&alias_config("b")));
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_cmk_alias.x"), ["update"]);
        step(&tf, &alias_config("b"));
        let alias = srv
            .block_on(srv.client().get_alias("alias/payments"))
            .unwrap();
        assert_eq!(alias.key_id, b_id);

        tf.destroy();
        // An alias made outside Terraform meanwhile is not taken over by a create: the
        // apply fails saying to import it, and the alias stays where it points.
        srv.block_on(srv.client().create_key(&Default::default()))
            .and_then(|k| srv.block_on(srv.client().create_alias("alias/payments", &k.key_id)))
            .unwrap();
        tf.write_config(&config(&alias_config("a")));
        let out = tf.run(&["apply", "-auto-approve", "-no-color", "-input=false"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Alias already exists"),
            "{err}"
        );
        let alias = srv
            .block_on(srv.client().get_alias("alias/payments"))
            .unwrap();
        let a_id = attr(&state_of(&tf, "strongbox_cmk.a"), "id");
        assert_ne!(alias.key_id, a_id, "not moved to Terraform's key");
    });
}

const POLICY_BASIC: &str = r#"
resource "strongbox_rotation_policy" "p" {
  name     = "db-weekly"
  interval = "7d"
  strategy = "random"
  settings = { length = "32" }
}
"#;

#[test]
fn rotation_policy_basic() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, POLICY_BASIC);
        let p = state_of(&tf, "strongbox_rotation_policy.p");
        assert_eq!(p["id"], "db-weekly");
        assert_eq!(p["interval"], "7d");
        assert_eq!(p["strategy"], "random");
        assert_eq!(p["settings"], json!({"length": "32"}));
        assert_eq!(p["enabled"], true);
        attr(&p, "window");

        let policy = srv
            .block_on(srv.client().describe_rotation_policy("db-weekly"))
            .unwrap();
        assert_eq!(policy.interval.as_str(), "7d");
        assert_eq!(policy.strategy, api::RotationStrategy::Random);
        assert_eq!(
            policy.settings.get("length").map(String::as_str),
            Some("32")
        );
        assert!(policy.enabled);

        tf.destroy();
    });
}

// ---------------------------------------------------------------------------------------
// Update in place
// ---------------------------------------------------------------------------------------

#[test]
fn secret_update_in_place() {
    let v2 = r#"
resource "strongbox_secret" "s" {
  name        = "app-token"
  secret_data = "s3cret-value-2"
  description = "API token, rotated"
  tags        = { team = "payments", tier = "1" }
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, SECRET_BASIC);
        let before = attr(&state_of(&tf, "strongbox_secret.s"), "version_id");

        tf.write_config(&config(v2));
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.s"), ["update"]);
        // A new value means a new version, whose id is not known before apply.
        assert_planned_unknown(&plan, "strongbox_secret.s", "version_id");

        step(&tf, v2);
        let s = state_of(&tf, "strongbox_secret.s");
        let after = attr(&s, "version_id");
        assert_ne!(before, after);
        assert_eq!(server_value(&srv, "app-token"), "s3cret-value-2");
        assert_eq!(
            server_value_at(&srv, "app-token", Some("ACSPrevious")),
            "s3cret-value-1"
        );
        let meta = srv
            .block_on(srv.client().describe_secret("app-token"))
            .unwrap();
        assert_eq!(meta.version_id, after);
        assert_eq!(meta.description, "API token, rotated");
        assert_eq!(meta.tags.len(), 2);

        // Metadata alone: update in place, and no new version.
        let v3 = v2.replace("API token, rotated", "API token (v3)");
        tf.write_config(&config(&v3));
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.s"), ["update"]);
        step(&tf, &v3);
        assert_eq!(
            attr(&state_of(&tf, "strongbox_secret.s"), "version_id"),
            after
        );
    });
}

#[test]
fn cmk_update_in_place() {
    let v1 = r#"
resource "strongbox_cmk" "k" {
  description = "payments"
}
"#;
    let v2 = r#"
resource "strongbox_cmk" "k" {
  description        = "payments (disabled)"
  enabled            = false
  automatic_rotation = true
  rotation_interval  = "180d"
  tags               = { owner = "team-a" }
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, v1);
        let id = attr(&state_of(&tf, "strongbox_cmk.k"), "id");

        tf.write_config(&config(v2));
        assert_eq!(actions(&tf.plan_json(), "strongbox_cmk.k"), ["update"]);
        step(&tf, v2);
        let k = state_of(&tf, "strongbox_cmk.k");
        assert_eq!(k["id"], id.as_str(), "an update must keep the key");
        assert_eq!(k["state"], "Disabled");
        let key = srv.block_on(srv.client().describe_key(&id)).unwrap();
        assert_eq!(key.state, api::KeyState::Disabled);
        assert_eq!(key.description, "payments (disabled)");
        assert!(key.automatic_rotation);
        assert_eq!(key.tags.get("owner").map(String::as_str), Some("team-a"));

        // And back.
        tf.write_config(&config(v1));
        assert_eq!(actions(&tf.plan_json(), "strongbox_cmk.k"), ["update"]);
        step(&tf, v1);
        let key = srv.block_on(srv.client().describe_key(&id)).unwrap();
        assert_eq!(key.state, api::KeyState::Enabled);
    });
}

#[test]
fn rotation_policy_update_in_place() {
    let v2 = r#"
resource "strongbox_rotation_policy" "p" {
  name     = "db-weekly"
  interval = "14d"
  window   = "3h"
  strategy = "random"
  settings = { length = "48" }
  enabled  = false
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, POLICY_BASIC);
        tf.write_config(&config(v2));
        assert_eq!(
            actions(&tf.plan_json(), "strongbox_rotation_policy.p"),
            ["update"]
        );
        step(&tf, v2);
        let policy = srv
            .block_on(srv.client().describe_rotation_policy("db-weekly"))
            .unwrap();
        assert_eq!(policy.interval.as_str(), "14d");
        assert_eq!(policy.window.as_str(), "3h");
        assert_eq!(
            policy.settings.get("length").map(String::as_str),
            Some("48")
        );
        assert!(!policy.enabled);
    });
}

// ---------------------------------------------------------------------------------------
// Replace: ["delete", "create"] in the plan
// ---------------------------------------------------------------------------------------

fn secret_named(name: &str, data_type: &str, data: &str) -> String {
    format!(
        r#"
resource "strongbox_secret" "s" {{
  name                          = "{name}"
  secret_data                   = "{data}"
  secret_data_type              = "{data_type}"
  force_delete_without_recovery = true
}}
"#
    )
}

#[test]
fn secret_replace() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &secret_named("rep/old", "text", "one"));

        // name forces replacement.
        let renamed = secret_named("rep/new", "text", "one");
        tf.write_config(&config(&renamed));
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.s"), ["delete", "create"]);
        let rc = resource_change(&plan, "strongbox_secret.s");
        assert!(
            rc["change"]["replace_paths"]
                .to_string()
                .contains("\"name\""),
            "replace_paths should name `name`: {:#}",
            rc["change"]
        );
        step(&tf, &renamed);
        assert_eq!(
            error_code(srv.block_on(srv.client().describe_secret("rep/old"))),
            ErrorCode::SecretNotFound
        );
        assert_eq!(server_value(&srv, "rep/new"), "one");

        // secret_data_type changes in place: a new version of the other type.
        let before = attr(&state_of(&tf, "strongbox_secret.s"), "version_id");
        let binary = secret_named("rep/new", "binary", "aGVsbG8=");
        tf.write_config(&config(&binary));
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.s"), ["update"]);
        assert_planned_unknown(&plan, "strongbox_secret.s", "version_id");
        step(&tf, &binary);
        assert_eq!(server_value(&srv, "rep/new"), "aGVsbG8=");
        let cur = srv
            .block_on(srv.client().get_secret_value("rep/new", None, None))
            .unwrap();
        assert_eq!(cur.secret_data_type, api::SecretDataType::Binary);
        assert_ne!(cur.version_id, before);
    });
}

/// Replacing a secret under the same name while its recovery window applies would leave
/// the old one pending deletion and the new one uncreatable: the plan refuses it and says
/// what to do; with `force_delete_without_recovery` applied first it goes through.
#[test]
fn secret_type_change_is_refused_under_a_recovery_window() {
    let body = |ty: &str, force: bool| {
        format!(
            r#"
resource "strongbox_secret" "s" {{
  name                          = "typed"
  secret_data                   = "one"
  secret_type                   = "{ty}"
  force_delete_without_recovery = {force}
}}
"#
        )
    };
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &body("Generic", false));
        tf.write_config(&config(&body("Ssh", false)));
        tf.expect_error(
            &["plan"],
            &["secret_type cannot change under a recovery window"],
        );
        // Nothing happened on the server.
        let meta = srv.block_on(srv.client().describe_secret("typed")).unwrap();
        assert!(meta.planned_delete_time.is_none());
        step(&tf, &body("Generic", true));
        tf.write_config(&config(&body("Ssh", true)));
        assert_eq!(
            actions(&tf.plan_json(), "strongbox_secret.s"),
            ["delete", "create"]
        );
        step(&tf, &body("Ssh", true));
        let meta = srv.block_on(srv.client().describe_secret("typed")).unwrap();
        assert_eq!(meta.secret_type, api::SecretType::Ssh);
    });
}

/// Changing the key is an update in place: the secret keeps its name and versions, the
/// versions in use are sealed again under the new key, and new ones are written under it.
#[test]
fn secret_encryption_key_change_is_in_place() {
    let body = |key: &str, data: &str| {
        format!(
            r#"{ALIAS_TWO_KEYS}
resource "strongbox_secret" "s" {{
  name              = "rep/keyed"
  secret_data       = "{data}"
  encryption_key_id = strongbox_cmk.{key}.id
}}
"#
        )
    };
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &body("a", "one"));
        let created = attr(&state_of(&tf, "strongbox_secret.s"), "creation_date");
        tf.write_config(&config(&body("b", "one")));
        assert_eq!(actions(&tf.plan_json(), "strongbox_secret.s"), ["update"]);
        step(&tf, &body("b", "one"));
        let b_id = attr(&state_of(&tf, "strongbox_cmk.b"), "id");
        let c = srv.client();
        let meta = srv.block_on(c.describe_secret("rep/keyed")).unwrap();
        assert_eq!(meta.encryption_key_id, b_id);
        assert_eq!(
            attr(&state_of(&tf, "strongbox_secret.s"), "creation_date"),
            created,
            "the same secret, not a new one"
        );
        // The value in use was sealed again under b: with a disabled, it still reads,
        // and so does a new one.
        let a_id = attr(&state_of(&tf, "strongbox_cmk.a"), "id");
        srv.block_on(c.disable_key(&a_id)).unwrap();
        assert_eq!(server_value(&srv, "rep/keyed"), "one");
        srv.block_on(c.enable_key(&a_id)).unwrap();
        step(&tf, &body("b", "two"));
        srv.block_on(c.disable_key(&a_id)).unwrap();
        assert_eq!(server_value(&srv, "rep/keyed"), "two");
    });
}

#[test]
fn cmk_alias_and_rotation_policy_replace() {
    let body = |alias: &str, policy: &str| {
        format!(
            r#"
resource "strongbox_cmk" "k" {{
  description = "k"
}}

resource "strongbox_cmk_alias" "x" {{
  name   = "{alias}"
  key_id = strongbox_cmk.k.id
}}

resource "strongbox_rotation_policy" "p" {{
  name     = "{policy}"
  interval = "7d"
  strategy = "random"
}}
"#
        )
    };
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &body("alias/one", "policy-one"));
        let next = body("alias/two", "policy-two");
        tf.write_config(&config(&next));
        let plan = tf.plan_json();
        assert_eq!(
            actions(&plan, "strongbox_cmk_alias.x"),
            ["delete", "create"]
        );
        assert_eq!(
            actions(&plan, "strongbox_rotation_policy.p"),
            ["delete", "create"]
        );
        assert_eq!(actions(&plan, "strongbox_cmk.k"), ["no-op"]);
        step(&tf, &next);
        let c = srv.client();
        assert_eq!(
            error_code(srv.block_on(c.get_alias("alias/one"))),
            ErrorCode::AliasNotFound
        );
        srv.block_on(c.get_alias("alias/two")).unwrap();
        assert_eq!(
            error_code(srv.block_on(c.describe_rotation_policy("policy-one"))),
            ErrorCode::RotationPolicyNotFound
        );
        srv.block_on(c.describe_rotation_policy("policy-two"))
            .unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// Import + attribute-by-attribute verify
// ---------------------------------------------------------------------------------------

const ALL_RESOURCES: &str = r#"
resource "strongbox_cmk" "k" {
  description = "imported key"
  tags        = { owner = "team-a" }
}

resource "strongbox_cmk_alias" "x" {
  name   = "alias/imported"
  key_id = strongbox_cmk.k.id
}

resource "strongbox_rotation_policy" "p" {
  name     = "imported-policy"
  interval = "30d"
  strategy = "random"
  settings = { length = "24" }
}

resource "strongbox_secret" "s" {
  name            = "imported/secret"
  secret_data     = "imported-value"
  description     = "imported"
  rotation_policy = strongbox_rotation_policy.p.name
  tags            = { a = "b" }
}
"#;

#[test]
fn import_every_resource() {
    for_each_variant(|v| {
        let (_srv, tf) = v.start();
        step(&tf, ALL_RESOURCES);
        let key_id = attr(&state_of(&tf, "strongbox_cmk.k"), "id");
        assert_import_round_trips(
            &tf,
            ALL_RESOURCES,
            &[
                ("strongbox_cmk.k", key_id),
                ("strongbox_cmk_alias.x", "alias/imported".to_string()),
                ("strongbox_rotation_policy.p", "imported-policy".to_string()),
                ("strongbox_secret.s", "imported/secret".to_string()),
            ],
        );
    });
}

/// A key whose rotation interval the server holds as other text for the default
/// period (`8760h` for `365d`) imports into a configuration that leaves the interval out
/// with an empty plan.
#[test]
fn an_imported_key_with_the_default_period_in_other_words_plans_empty() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        let k = srv
            .block_on(srv.client().create_key(&api::CreateKeyRequest {
                rotation_interval: Some(api::Interval::parse("8760h").unwrap()),
                ..Default::default()
            }))
            .unwrap();
        configure(&tf, r#"resource "strongbox_cmk" "k" {}"#);
        tf.import("strongbox_cmk.k", &k.key_id);
        assert_eq!(
            attr(&state_of(&tf, "strongbox_cmk.k"), "rotation_interval"),
            "8760h"
        );
        tf.assert_no_changes();
    });
}

#[test]
fn import_of_a_missing_object_fails_clearly() {
    for_each_variant(|v| {
        let (_srv, tf) = v.start();
        configure(&tf, SECRET_BASIC);
        tf.expect_error(
            &[
                "import",
                "-input=false",
                "-no-color",
                "strongbox_secret.s",
                "app-token",
            ],
            &["app-token"],
        );
    });
}

// ---------------------------------------------------------------------------------------
// Drift: an out-of-band change shows in `plan` (exit 2), `apply` restores it
// ---------------------------------------------------------------------------------------

#[test]
fn secret_drift_value_and_metadata() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, SECRET_BASIC);
        let c = srv.client();

        // The value.
        srv.block_on(c.put_secret_value(
            "app-token",
            &api::PutSecretValueRequest {
                secret_data: "changed-outside".into(),
                ..Default::default()
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(server_value(&srv, "app-token"), "s3cret-value-1");

        // Description and tags.
        srv.block_on(c.update_secret(
            "app-token",
            &api::UpdateSecretRequest {
                description: Some("edited in the console".into()),
                tags: Some([("team".to_string(), "other".to_string())].into()),
                ..Default::default()
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        let meta = srv.block_on(c.describe_secret("app-token")).unwrap();
        assert_eq!(meta.description, "API token");
        assert_eq!(meta.tags.get("team").map(String::as_str), Some("payments"));
    });
}

#[test]
fn secret_drift_with_pinned_version_and_stages() {
    let body = r#"
resource "strongbox_secret" "s" {
  name           = "pinned"
  secret_data    = "one"
  version_id     = "v1"
  version_stages = ["ACSCurrent", "blue"]
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, body);
        let c = srv.client();

        // A new version made current outside Terraform: apply moves ACSCurrent back.
        srv.block_on(c.put_secret_value(
            "pinned",
            &api::PutSecretValueRequest {
                secret_data: "two".into(),
                version_id: Some("v2".into()),
                ..Default::default()
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        let cur = srv
            .block_on(c.get_secret_value("pinned", None, None))
            .unwrap();
        assert_eq!(cur.version_id, "v1");
        assert_eq!(cur.secret_data, "one");

        // A custom stage removed outside Terraform: apply puts it back.
        srv.block_on(c.update_secret_stage(
            "pinned",
            &api::UpdateSecretStageRequest {
                version_stage: "blue".into(),
                move_to_version: None,
                remove_from_version: Some("v1".into()),
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        let blue = srv
            .block_on(c.get_secret_value("pinned", None, Some("blue")))
            .unwrap();
        assert_eq!(blue.version_id, "v1");
    });
}

/// Removing `extended_config` from the configuration (or clearing it when it was set
/// outside Terraform) is consistent: null before, null after.
#[test]
fn removing_extended_config_is_consistent() {
    let with = r#"
resource "strongbox_secret" "s" {
  name            = "ext"
  secret_data     = "one"
  extended_config = jsonencode({ Team = "payments" })
}
"#;
    let without = r#"
resource "strongbox_secret" "s" {
  name        = "ext"
  secret_data = "one"
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, with);
        step(&tf, without);
        let meta = srv.block_on(srv.client().describe_secret("ext")).unwrap();
        assert!(
            meta.extended_config.is_none_or(|m| m.is_empty()),
            "cleared on the server"
        );
        // Set outside Terraform: plan shows it, apply clears it, then nothing to do.
        let mut m = serde_json::Map::new();
        m.insert("Team".into(), json!("other"));
        srv.block_on(srv.client().update_secret(
            "ext",
            &api::UpdateSecretRequest {
                extended_config: Some(m),
                ..Default::default()
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
    });
}

/// A label put on the current version outside Terraform is drift: plan shows it and apply
/// takes it off again.
#[test]
fn a_stage_added_outside_terraform_is_removed() {
    let body = r#"
resource "strongbox_secret" "s" {
  name        = "labelled"
  secret_data = "one"
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, body);
        let c = srv.client();
        let cur = srv
            .block_on(c.get_secret_value("labelled", None, None))
            .unwrap();
        srv.block_on(c.update_secret_stage(
            "labelled",
            &api::UpdateSecretStageRequest {
                version_stage: "blue".into(),
                move_to_version: Some(cur.version_id.clone()),
                remove_from_version: None,
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        let after = srv
            .block_on(c.get_secret_value("labelled", None, None))
            .unwrap();
        assert_eq!(after.version_id, cur.version_id, "no new version");
        assert_eq!(after.version_stages, vec!["ACSCurrent".to_string()]);
    });
}

/// A label dropped from the configuration together with a new value is taken off the old
/// version too, not left behind on a version Terraform no longer tracks.
#[test]
fn a_label_dropped_with_a_new_value_leaves_no_version() {
    let body = |data: &str, stages: &str| {
        format!(
            r#"
resource "strongbox_secret" "s" {{
  name           = "relabelled"
  secret_data    = "{data}"
  version_stages = [{stages}]
}}
"#
        )
    };
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &body("one", r#""ACSCurrent", "blue""#));
        step(&tf, &body("two", r#""ACSCurrent""#));
        let versions = srv
            .block_on(srv.client().list_secret_versions("relabelled"))
            .unwrap()
            .versions;
        assert!(
            versions
                .iter()
                .all(|v| !v.version_stages.iter().any(|s| s == "blue")),
            "{versions:?}"
        );
        assert_eq!(server_value(&srv, "relabelled"), "two");
    });
}

/// A provider whose address is known only after apply (the server stood up in the same
/// configuration; here `terraform_data`, Terraform ≥ 1.4): the first plan creates
/// without the server, apply configures the provider with the address and creates; a
/// later plan in which the address is unknown again fails clearly where it needs the
/// server (refreshing the secret), never falling back to STRONGBOX_ADDR.
#[test]
fn a_provider_address_known_only_after_apply_plans_creates_without_the_server() {
    for_each_variant(|v| {
        if !v.terraform.at_least(1, 4) {
            eprintln!("skipped: {v} has no terraform_data");
            return;
        }
        let (srv, tf) = v.start();
        let body = |generation: u32| {
            format!(
                r#"terraform {{
  required_providers {{
    strongbox = {{
      source = "strongbox/strongbox"
    }}
  }}
}}

resource "terraform_data" "server" {{
  input            = "{addr}"
  triggers_replace = [{generation}]
}}

provider "strongbox" {{
  address = terraform_data.server.output
}}

resource "strongbox_secret" "s" {{
  name        = "late/config"
  secret_data = "made-once-the-address-was-known"
}}
"#,
                addr = srv.addr()
            )
        };
        tf.write_config(&body(1));
        tf.init();
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.s"), ["create"]);
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(
            server_value(&srv, "late/config"),
            "made-once-the-address-was-known"
        );
        // The address unknown again, with a secret to refresh.
        tf.write_config(&body(2));
        tf.expect_error(
            &["plan"],
            &["Provider configuration not known yet", "address depends on"],
        );
    });
}

/// A CMK disabled outside Terraform does not break the plan of the secrets under it: the
/// plan shows the key's drift, and apply enables it again.
#[test]
fn a_disabled_key_shows_as_drift_without_breaking_the_plan() {
    let body = r#"
resource "strongbox_cmk" "k" {
  description = "k"
}

resource "strongbox_secret" "s" {
  name              = "under-k"
  secret_data       = "one"
  encryption_key_id = strongbox_cmk.k.id
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, body);
        let key = attr(&state_of(&tf, "strongbox_cmk.k"), "id");
        srv.block_on(srv.client().disable_key(&key)).unwrap();
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_cmk.k"), ["update"]);
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(server_value(&srv, "under-k"), "one");
    });
}

/// A null element in a map or list (here from a variable left null) is refused at plan,
/// naming the attribute: the server has no null there, so it would have been dropped
/// (and a whole map of tags sent empty on update). Nothing stored changes.
#[test]
fn null_elements_are_refused_not_dropped() {
    let body = |owner: &str| {
        format!(
            r#"
variable "owner" {{
  type    = string
  default = {owner}
}}

resource "strongbox_secret" "s" {{
  name        = "nulls/s"
  secret_data = "x"
  tags        = {{ env = "prod", owner = var.owner }}
}}

resource "strongbox_cmk" "k" {{
  tags = {{ owner = var.owner }}
}}

resource "strongbox_rotation_policy" "p" {{
  name     = "nulls"
  interval = "7d"
  strategy = "random"
  settings = {{ length = var.owner == null ? null : "20" }}
}}
"#
        )
    };
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &body(r#""ann""#));
        configure(&tf, &body("null"));
        tf.expect_error(
            &["plan"],
            &[
                "Invalid tags",
                "Invalid settings",
                "cannot hold a null element",
            ],
        );
        tf.expect_error(&["apply", "-auto-approve"], &["cannot hold a null element"]);
        let d = srv
            .block_on(srv.client().describe_secret("nulls/s"))
            .unwrap();
        assert_eq!(
            d.tags.get("owner").map(String::as_str),
            Some("ann"),
            "{:?}",
            d.tags
        );
        assert_eq!(d.tags.len(), 2);
    });
}

/// Stage labels are checked before anything is created.
#[test]
fn invalid_stage_labels_are_refused_before_create() {
    let body = r#"
resource "strongbox_secret" "s" {
  name           = "bad-label"
  secret_data    = "one"
  version_stages = ["ACSCurrent", "blue green"]
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        configure(&tf, body);
        tf.expect_error(&["plan"], &["Invalid version_stages"]);
        assert_eq!(
            error_code(srv.block_on(srv.client().describe_secret("bad-label"))),
            ErrorCode::SecretNotFound
        );
        // A repeated label (the server keeps it once, so apply would return a shorter
        // list than planned), and a deletion window that is not a whole number of days.
        configure(
            &tf,
            r#"
resource "strongbox_secret" "s" {
  name           = "bad-label"
  secret_data    = "one"
  version_stages = ["ACSCurrent", "blue", "blue"]
}
resource "strongbox_secret" "previous" {
  name           = "bad-previous"
  secret_data    = "one"
  version_stages = ["ACSCurrent", "ACSPrevious"]
}
resource "strongbox_cmk" "k" {
  pending_window_in_days = 7.5
}
"#,
        );
        tf.expect_error(
            &["plan"],
            &[
                "blue is listed more than once",
                "ACSPrevious is moved by the server",
                "Invalid pending_window_in_days",
            ],
        );
        assert_eq!(
            error_code(srv.block_on(srv.client().describe_secret("bad-label"))),
            ErrorCode::SecretNotFound
        );
    });
}

#[test]
fn cmk_alias_and_policy_drift() {
    let body = format!(
        r#"{ALIAS_TWO_KEYS}
resource "strongbox_cmk_alias" "x" {{
  name   = "alias/payments"
  key_id = strongbox_cmk.a.id
}}
{POLICY_BASIC}"#
    );
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &body);
        let a_id = attr(&state_of(&tf, "strongbox_cmk.a"), "id");
        let b_id = attr(&state_of(&tf, "strongbox_cmk.b"), "id");
        let c = srv.client();

        // Key: disabled and described differently outside Terraform.
        srv.block_on(c.disable_key(&a_id)).unwrap();
        srv.block_on(c.update_key(
            &a_id,
            &api::UpdateKeyRequest {
                description: Some("edited".into()),
                ..Default::default()
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        let key = srv.block_on(c.describe_key(&a_id)).unwrap();
        assert_eq!(key.state, api::KeyState::Enabled);
        assert_eq!(key.description, "a");

        // Alias: moved to the other key.
        srv.block_on(c.put_alias("alias/payments", &b_id)).unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(
            srv.block_on(c.get_alias("alias/payments")).unwrap().key_id,
            a_id
        );

        // Policy: interval and switch changed.
        srv.block_on(c.update_rotation_policy(
            "db-weekly",
            &api::UpdateRotationPolicyRequest {
                interval: Some(api::Interval::parse("14d").unwrap()),
                enabled: Some(false),
                ..Default::default()
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();
        let policy = srv
            .block_on(c.describe_rotation_policy("db-weekly"))
            .unwrap();
        assert_eq!(policy.interval.as_str(), "7d");
        assert!(policy.enabled);
    });
}

// ---------------------------------------------------------------------------------------
// Disappears: deleted out of band → the plan creates it again
// ---------------------------------------------------------------------------------------

#[test]
fn resources_deleted_outside_terraform_are_planned_for_creation() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, ALL_RESOURCES);
        let key_id = attr(&state_of(&tf, "strongbox_cmk.k"), "id");
        let c = srv.client();

        srv.block_on(c.delete_secret(
            "imported/secret",
            DeleteSecretOptions {
                force_delete_without_recovery: true,
                ..Default::default()
            },
        ))
        .unwrap();
        srv.block_on(c.delete_alias("alias/imported")).unwrap();
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.s"), ["create"]);
        assert_eq!(actions(&plan, "strongbox_cmk_alias.x"), ["create"]);
        tf.apply();
        tf.assert_no_changes();
        assert_eq!(server_value(&srv, "imported/secret"), "imported-value");

        // A policy, once the secret using it is gone for good.
        srv.block_on(c.delete_secret(
            "imported/secret",
            DeleteSecretOptions {
                force_delete_without_recovery: true,
                ..Default::default()
            },
        ))
        .unwrap();
        srv.block_on(c.delete_rotation_policy("imported-policy"))
            .unwrap();
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_rotation_policy.p"), ["create"]);
        assert_eq!(actions(&plan, "strongbox_secret.s"), ["create"]);
        tf.apply();
        tf.assert_no_changes();

        // A key scheduled for deletion is gone as far as Terraform is concerned (as
        // aws_kms_key treats PendingDeletion): a new key is planned.
        srv.block_on(c.schedule_key_deletion(&key_id, Some(7)))
            .unwrap();
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_cmk.k"), ["create"]);
    });
}

// ---------------------------------------------------------------------------------------
// Validation errors: exit 1, a clear diagnostic naming the attribute
// ---------------------------------------------------------------------------------------

#[test]
fn validation_errors_are_clear() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"resource "strongbox_secret" "s" {
  name        = "bad name!"
  secret_data = "x"
}"#,
            &["name"],
        ),
        (
            r#"resource "strongbox_secret" "s" {
  name                    = "ok"
  secret_data             = "x"
  recovery_window_in_days = 3
}"#,
            &["recovery_window_in_days"],
        ),
        (
            r#"resource "strongbox_secret" "s" {
  name             = "ok"
  secret_data      = "x"
  secret_data_type = "hex"
}"#,
            &["secret_data_type"],
        ),
        (
            r#"resource "strongbox_secret" "s" {
  name            = "ok"
  secret_data     = "x"
  extended_config = "not json"
}"#,
            &["extended_config"],
        ),
        (
            r#"resource "strongbox_rotation_policy" "p" {
  name     = "p"
  interval = "7x"
  strategy = "random"
}"#,
            &["interval"],
        ),
        (
            r#"resource "strongbox_rotation_policy" "p" {
  name     = "p"
  interval = "7d"
  strategy = "dice"
}"#,
            &["strategy"],
        ),
        (
            r#"resource "strongbox_cmk" "k" {
  key_spec = "RSA_2048"
}"#,
            &["key_spec"],
        ),
        (
            r#"resource "strongbox_cmk" "k" {
  pending_window_in_days = 3
}"#,
            &["pending_window_in_days"],
        ),
        (
            r#"resource "strongbox_cmk" "k" {}
resource "strongbox_cmk_alias" "x" {
  name   = "payments"
  key_id = strongbox_cmk.k.id
}"#,
            &["alias/"],
        ),
        (
            r#"resource "strongbox_secret" "s" {
  name              = "ok"
  secret_data       = "x"
  encryption_key_id = ""
}"#,
            &["encryption_key_id", "default key"],
        ),
        (
            r#"resource "strongbox_secret" "s" {
  name            = "ok"
  secret_data     = "x"
  rotation_policy = ""
}"#,
            &["Invalid rotation_policy", "leave rotation_policy out"],
        ),
        (
            r#"resource "strongbox_principal" "p" { name = "p" }
resource "strongbox_principal_token" "t" {
  principal  = strongbox_principal.p.name
  expires_at = "2099-01-01T00:00:00.5Z"
}"#,
            &["expires_at", "whole seconds"],
        ),
        (
            r#"resource "strongbox_principal" "p" { name = "p" }
resource "strongbox_principal_token" "t" {
  principal  = strongbox_principal.p.name
  expires_at = "2020-01-01T00:00:00Z"
}"#,
            &["expires_at is in the past"],
        ),
    ];
    for_each_variant(|v| {
        let (_srv, tf) = v.start();
        for (body, needles) in cases {
            eprintln!("--- case mentioning {needles:?}");
            configure(&tf, body);
            tf.expect_error(&["plan", "-no-color", "-input=false"], needles);
        }
    });
}

#[test]
fn pinned_version_id_with_new_data_is_refused() {
    let body = |data: &str| {
        format!(
            r#"
resource "strongbox_secret" "s" {{
  name        = "pinned"
  secret_data = "{data}"
  version_id  = "v1"
}}
"#
        )
    };
    for_each_variant(|v| {
        let (_srv, tf) = v.start();
        step(&tf, &body("one"));
        configure(&tf, &body("two"));
        tf.expect_error(&["plan", "-no-color", "-input=false"], &["version_id"]);
    });
}

/// A pinned version_id with a value that is unknown at plan time (it comes from a
/// resource being replaced) is not refused: the value may turn out the same, and here
/// it does, so the apply writes nothing new.
#[test]
fn pinned_version_id_with_a_value_unknown_at_plan_is_planned() {
    let body = |run: &str| {
        format!(
            r#"
resource "terraform_data" "d" {{
  input            = "same"
  triggers_replace = ["{run}"]
}}
resource "strongbox_secret" "s" {{
  name        = "pinned-unknown"
  secret_data = terraform_data.d.output
  version_id  = "v1"
}}
"#
        )
    };
    for_each_variant(|v| {
        // terraform_data is built into Terraform from 1.4 on.
        if !v.terraform.at_least(1, 4) {
            eprintln!("not on {v}: terraform_data needs Terraform 1.4");
            return;
        }
        let (srv, tf) = v.start();
        step(&tf, &body("1"));
        step(&tf, &body("2"));
        let versions = srv
            .block_on(srv.client().list_secret_versions("pinned-unknown"))
            .unwrap()
            .versions;
        assert_eq!(versions.len(), 1, "{versions:?}");
        assert_eq!(server_value(&srv, "pinned-unknown"), "same");
    });
}

/// A create whose read-back fails (here the token may create but not describe) keeps
/// the created object in the state, tainted, for each resource that has no other step:
/// nothing is left on the server that Terraform does not know. (An alias too: its create
/// is one create-only write, which needs no right to describe it.)
#[test]
fn a_create_whose_read_back_fails_keeps_the_object_tainted() {
    for_each_variant(|v| {
        let srv = DevServer::start();
        let root = srv.client();
        let key = srv
            .block_on(root.create_key(&Default::default()))
            .unwrap()
            .key_id;
        let document = serde_json::from_value::<api::PolicyDocument>(json!({
            "Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:*", "ram:*"], "Resource": ["*"]},
                {"Effect": "Deny", "Action": ["ram:GetPrincipal", "ram:GetPolicy",
                    "kms:DescribeRotationPolicy", "kms:DescribeAlias"], "Resource": ["*"]}]}))
        .unwrap();
        let tf = terraform_as_deployer(v, &srv, "no-describe", document);
        configure(
            &tf,
            &format!(
                r#"
resource "strongbox_principal" "p" {{ name = "app" }}
resource "strongbox_policy" "a" {{
  name     = "readers"
  document = jsonencode({{Version = "1", Statement = [{{Effect = "Allow", Action = ["kms:GetSecretValue"], Resource = ["secret/app/*"]}}]}})
}}
resource "strongbox_rotation_policy" "r" {{
  name     = "weekly"
  interval = "7d"
  strategy = "random"
}}
resource "strongbox_cmk_alias" "x" {{
  name   = "alias/deploy"
  key_id = "{key}"
}}
"#
            ),
        );
        tf.expect_error(
            &["apply", "-auto-approve", "-no-color", "-input=false"],
            &["ram:GetPrincipal", "kms:DescribeAlias"],
        );
        // With the right to describe granted, the plan (which reads them) replaces them.
        let all = serde_json::from_value::<api::PolicyDocument>(json!({
            "Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:*", "ram:*"], "Resource": ["*"]}]}))
        .unwrap();
        srv.block_on(root.update_policy(
            "no-describe",
            &api::UpdatePolicyRequest {
                document: Some(all),
                ..Default::default()
            },
        ))
        .unwrap();
        let plan = tf.plan_json();
        for address in [
            "strongbox_principal.p",
            "strongbox_policy.a",
            "strongbox_rotation_policy.r",
            "strongbox_cmk_alias.x",
        ] {
            assert_eq!(
                actions(&plan, address),
                ["delete", "create"],
                "{address} is in the state, tainted"
            );
        }
        assert_eq!(
            srv.block_on(root.get_alias("alias/deploy")).unwrap().key_id,
            key
        );
        assert!(srv.block_on(root.get_principal("app")).is_ok());
        assert!(
            srv.block_on(root.describe_rotation_policy("weekly"))
                .is_ok()
        );
    });
}

#[test]
fn server_errors_are_diagnostics_with_the_error_code() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        // The name is taken outside Terraform: create fails with AlreadyExists.
        srv.block_on(srv.client().create_secret(&api::CreateSecretRequest {
            name: "app-token".into(),
            secret_data: "taken".into(),
            ..Default::default()
        }))
        .unwrap();
        configure(&tf, SECRET_BASIC);
        tf.expect_error(
            &["apply", "-auto-approve", "-no-color", "-input=false"],
            &["AlreadyExists", "app-token"],
        );
    });
}

// ---------------------------------------------------------------------------------------
// Destroy + server check
// ---------------------------------------------------------------------------------------

#[test]
fn destroy_leaves_the_server_as_documented() {
    let body = r#"
resource "strongbox_cmk" "k" {
  description            = "doomed"
  pending_window_in_days = 7
}

resource "strongbox_cmk_alias" "x" {
  name   = "alias/doomed"
  key_id = strongbox_cmk.k.id
}

resource "strongbox_rotation_policy" "p" {
  name     = "doomed"
  interval = "7d"
  strategy = "random"
}

resource "strongbox_secret" "recoverable" {
  name                    = "doomed/recoverable"
  secret_data             = "keep me a week"
  encryption_key_id       = strongbox_cmk_alias.x.name
  recovery_window_in_days = 7
}

resource "strongbox_secret" "gone" {
  name                          = "doomed/gone"
  secret_data                   = "bye"
  force_delete_without_recovery = true
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, body);
        let key_id = attr(&state_of(&tf, "strongbox_cmk.k"), "id");
        tf.destroy();
        assert!(
            tf.state_json()["values"]["root_module"]["resources"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "the state should be empty after destroy"
        );
        let c = srv.client();

        let meta = srv
            .block_on(c.describe_secret("doomed/recoverable"))
            .unwrap();
        let when = meta
            .planned_delete_time
            .expect("a secret deleted with a recovery window has a planned_delete_time");
        assert_days_from_now(when.unix(), 7, "planned_delete_time");
        assert_eq!(
            error_code(srv.block_on(c.get_secret_value("doomed/recoverable", None, None))),
            ErrorCode::SecretPendingDeletion
        );
        assert_eq!(
            error_code(srv.block_on(c.describe_secret("doomed/gone"))),
            ErrorCode::SecretNotFound
        );

        let key = srv.block_on(c.describe_key(&key_id)).unwrap();
        assert_eq!(key.state, api::KeyState::PendingDeletion);
        let when = key
            .delete_date
            .expect("a key scheduled for deletion has a delete_date");
        assert_days_from_now(when.unix(), 7, "delete_date");
        assert_eq!(
            error_code(srv.block_on(c.get_alias("alias/doomed"))),
            ErrorCode::AliasNotFound
        );
        assert_eq!(
            error_code(srv.block_on(c.describe_rotation_policy("doomed"))),
            ErrorCode::RotationPolicyNotFound
        );

        // Applying again must not dead-end: it works, or it says how to get out.
        let args = ["apply", "-auto-approve", "-no-color", "-input=false"];
        let out = tf.run_expect(&args, &[0, 1]);
        if out.status.code() == Some(1) {
            let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
            let names_the_state =
                stderr.contains("secretpendingdeletion") || stderr.contains("pending deletion");
            assert!(
                names_the_state && stderr.contains("restore"),
                "{}",
                tf.report(
                    &args,
                    &out,
                    "re-applying after destroy failed without saying how to restore"
                )
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// Unknown propagation, for_each, names with `/`
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_key_id_propagates_within_one_apply() {
    let body = r#"
resource "strongbox_cmk" "k" {
  description = "created in the same apply"
}

resource "strongbox_cmk_alias" "x" {
  name   = "alias/same-apply"
  key_id = strongbox_cmk.k.id
}

resource "strongbox_secret" "by_id" {
  name              = "unknown/by-id"
  secret_data       = "x"
  encryption_key_id = strongbox_cmk.k.id
}

resource "strongbox_secret" "by_alias" {
  name              = "unknown/by-alias"
  secret_data       = "y"
  encryption_key_id = strongbox_cmk_alias.x.name
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        configure(&tf, body);
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_cmk.k"), ["create"]);
        assert_eq!(actions(&plan, "strongbox_secret.by_id"), ["create"]);
        // Ids are never invented at plan time.
        assert_planned_unknown(&plan, "strongbox_cmk.k", "id");
        assert_planned_unknown(&plan, "strongbox_secret.by_id", "encryption_key_id");
        assert_planned_unknown(&plan, "strongbox_secret.by_id", "version_id");

        step(&tf, body);
        let key_id = attr(&state_of(&tf, "strongbox_cmk.k"), "id");
        let by_id = state_of(&tf, "strongbox_secret.by_id");
        assert_eq!(by_id["encryption_key_id"], key_id.as_str());
        // An alias stays exactly as written.
        let by_alias = state_of(&tf, "strongbox_secret.by_alias");
        assert_eq!(by_alias["encryption_key_id"], "alias/same-apply");
        let c = srv.client();
        assert_eq!(
            srv.block_on(c.describe_secret("unknown/by-id"))
                .unwrap()
                .encryption_key_id,
            key_id
        );
        assert_eq!(
            srv.block_on(c.describe_secret("unknown/by-alias"))
                .unwrap()
                .encryption_key_id,
            "alias/same-apply"
        );
    });
}

#[test]
fn for_each_over_several_secrets() {
    let body = |entries: &str| {
        format!(
            r#"
locals {{
  secrets = {{ {entries} }}
}}

resource "strongbox_secret" "s" {{
  for_each    = local.secrets
  name        = "fe/${{each.key}}"
  secret_data = each.value
}}
"#
        )
    };
    let three = body(r#"a = "alpha", b = "bravo", c = "charlie""#);
    let two = body(r#"a = "alpha", c = "charlie""#);
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &three);
        for (k, val) in [("a", "alpha"), ("b", "bravo"), ("c", "charlie")] {
            assert_eq!(server_value(&srv, &format!("fe/{k}")), val);
            let s = state_of(&tf, &format!("strongbox_secret.s[\"{k}\"]"));
            assert_eq!(s["id"], format!("fe/{k}").as_str());
        }

        tf.write_config(&config(&two));
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.s[\"b\"]"), ["delete"]);
        assert_eq!(actions(&plan, "strongbox_secret.s[\"a\"]"), ["no-op"]);
        assert_eq!(actions(&plan, "strongbox_secret.s[\"c\"]"), ["no-op"]);
        step(&tf, &two);
        let b = srv.block_on(srv.client().describe_secret("fe/b")).unwrap();
        assert!(b.planned_delete_time.is_some(), "{b:?}");
        assert_eq!(server_value(&srv, "fe/a"), "alpha");
    });
}

#[test]
fn names_containing_slashes() {
    let resources = r#"
resource "strongbox_cmk" "k" {}

resource "strongbox_cmk_alias" "x" {
  name   = "alias/team/app"
  key_id = strongbox_cmk.k.id
}

resource "strongbox_secret" "s" {
  name              = "team/app/prod/db"
  secret_data       = "slashed"
  encryption_key_id = strongbox_cmk_alias.x.name
}
"#;
    let body = format!(
        r#"{resources}
data "strongbox_secret" "d" {{
  name = strongbox_secret.s.name
}}

output "read_back" {{
  value     = data.strongbox_secret.d.secret_data
  sensitive = true
}}
"#
    );
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &body);
        assert_eq!(
            state_of(&tf, "strongbox_secret.s")["id"],
            "team/app/prod/db"
        );
        assert_eq!(server_value(&srv, "team/app/prod/db"), "slashed");
        assert_eq!(tf.output_json()["read_back"]["value"], "slashed");
        srv.block_on(srv.client().get_alias("alias/team/app"))
            .unwrap();

        // Drift on a slashed name is read back through the percent-encoded path.
        srv.block_on(srv.client().put_secret_value(
            "team/app/prod/db",
            &api::PutSecretValueRequest {
                secret_data: "changed".into(),
                ..Default::default()
            },
        ))
        .unwrap();
        tf.assert_changes();
        tf.apply();
        tf.assert_no_changes();

        let key_id = attr(&state_of(&tf, "strongbox_cmk.k"), "id");
        // Outputs are not imported: the fresh dir gets the resources only.
        assert_import_round_trips(
            &tf,
            resources,
            &[
                ("strongbox_cmk.k", key_id),
                ("strongbox_cmk_alias.x", "alias/team/app".to_string()),
                ("strongbox_secret.s", "team/app/prod/db".to_string()),
            ],
        );
    });
}

// ---------------------------------------------------------------------------------------
// Sensitive values, data sources, null vs empty, JSON by meaning
// ---------------------------------------------------------------------------------------

#[test]
fn sensitive_values_are_masked() {
    const PLAINTEXT: &str = "do-not-print-me-7f3a";
    let body = format!(
        r#"
resource "strongbox_secret" "s" {{
  name        = "masked"
  secret_data = "{PLAINTEXT}"
}}

data "strongbox_secret" "d" {{
  name = strongbox_secret.s.name
}}

output "value" {{
  value     = data.strongbox_secret.d.secret_data
  sensitive = true
}}
"#
    );
    for_each_variant(|v| {
        let (_srv, tf) = v.start();
        configure(&tf, &body);
        let text = tf.plan_text();
        assert!(
            !text.contains(PLAINTEXT),
            "the plan shows the value:\n{text}"
        );
        assert!(text.contains("(sensitive value)"), "{text}");
        let plan = tf.plan_json();
        let rc = resource_change(&plan, "strongbox_secret.s");
        assert_eq!(
            rc["change"]["after_sensitive"]["secret_data"], true,
            "{rc:#}"
        );

        let out = tf.apply();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains(PLAINTEXT),
            "apply shows the value:\n{stdout}"
        );
        let shown = tf.run_ok(&["output", "-no-color"]);
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(!shown.contains(PLAINTEXT), "{shown}");
        assert!(shown.contains("<sensitive>"), "{shown}");
        let outputs = tf.output_json();
        assert_eq!(outputs["value"]["sensitive"], true);
        assert_eq!(outputs["value"]["value"], PLAINTEXT);

        // The data source's secret_data is sensitive: an output must say so.
        configure(&tf, &body.replace("  sensitive = true\n", ""));
        tf.expect_error(&["plan", "-no-color", "-input=false"], &["sensitive"]);
    });
}

#[test]
fn data_source_secret_reads_versions_and_stages() {
    let body = |data: &str, with_previous: bool| {
        let previous = if with_previous {
            r#"
data "strongbox_secret" "previous" {
  name          = strongbox_secret.s.name
  version_stage = "ACSPrevious"
}

output "previous" {
  value     = data.strongbox_secret.previous.secret_data
  sensitive = true
}

data "strongbox_secret" "pinned" {
  name       = strongbox_secret.s.name
  version_id = "first"
}

output "pinned" {
  value     = data.strongbox_secret.pinned.secret_data
  sensitive = true
}
"#
        } else {
            ""
        };
        format!(
            r#"
resource "strongbox_secret" "s" {{
  name        = "read/me"
  secret_data = "{data}"
}}

data "strongbox_secret" "current" {{
  name = strongbox_secret.s.name
}}

output "current" {{
  value     = data.strongbox_secret.current.secret_data
  sensitive = true
}}

output "current_version" {{
  value = data.strongbox_secret.current.version_id
}}
{previous}"#
        )
    };
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        // Pin the first version's id, so that a data source can read it by id later.
        step(
            &tf,
            &body("one", false).replace(
                "secret_data = \"one\"",
                "secret_data = \"one\"\n  version_id  = \"first\"",
            ),
        );
        let out = tf.output_json();
        assert_eq!(out["current"]["value"], "one");
        assert_eq!(out["current_version"]["value"], "first");

        step(&tf, &body("two", true));
        let out = tf.output_json();
        assert_eq!(out["current"]["value"], "two");
        assert_eq!(out["previous"]["value"], "one");
        assert_eq!(out["pinned"]["value"], "one");
        let cur = srv
            .block_on(srv.client().get_secret_value("read/me", None, None))
            .unwrap();
        assert_eq!(out["current_version"]["value"], cur.version_id.as_str());
    });
}

#[test]
fn data_source_cmk() {
    let body = r#"
resource "strongbox_cmk" "k" {
  description = "looked up"
}

resource "strongbox_cmk_alias" "x" {
  name   = "alias/looked-up"
  key_id = strongbox_cmk.k.id
}

data "strongbox_cmk" "by_id" {
  key_id = strongbox_cmk.k.id
}

data "strongbox_cmk" "by_alias" {
  key_id = strongbox_cmk_alias.x.name
}

output "by_id" {
  value = data.strongbox_cmk.by_id.description
}

output "by_alias" {
  value = data.strongbox_cmk.by_alias.id
}
"#;
    for_each_variant(|v| {
        let (_srv, tf) = v.start();
        step(&tf, body);
        let key_id = attr(&state_of(&tf, "strongbox_cmk.k"), "id");
        let out = tf.output_json();
        assert_eq!(out["by_id"]["value"], "looked up");
        assert_eq!(out["by_alias"]["value"], key_id.as_str());
    });
}

#[test]
fn null_and_empty_do_not_flap() {
    let body = r#"
resource "strongbox_cmk" "empty" {
  description = ""
  tags        = {}
}

resource "strongbox_cmk" "null" {}

resource "strongbox_rotation_policy" "empty" {
  name     = "empty-settings"
  interval = "7d"
  strategy = "random"
  settings = {}
}

resource "strongbox_secret" "empty" {
  name        = "flap/empty"
  secret_data = "x"
  description = ""
  tags        = {}
}

resource "strongbox_secret" "null" {
  name        = "flap/null"
  secret_data = "x"
}
"#;
    for_each_variant(|v| {
        let (_srv, tf) = v.start();
        step(&tf, body);
        // Once more after a refresh-only apply, which rewrites the state from the server.
        tf.apply_args(&["-refresh-only"]);
        tf.assert_no_changes();
    });
}

#[test]
fn extended_config_is_compared_by_meaning() {
    let body = |json: &str| {
        format!(
            r#"
resource "strongbox_secret" "s" {{
  name            = "db/with-config"
  secret_data     = jsonencode({{ AccountName = "app", AccountPassword = "pw" }})
  extended_config = {json}
}}
"#
        )
    };
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(
            &tf,
            &body(r#"jsonencode({ port = 5432, host = "db.internal" })"#),
        );
        // Same object, other key order and spacing: no change.
        configure(
            &tf,
            &body(r#""{\"host\": \"db.internal\",   \"port\": 5432}""#),
        );
        tf.assert_no_changes();
        let meta = srv
            .block_on(srv.client().describe_secret("db/with-config"))
            .unwrap();
        assert_eq!(
            meta.extended_config.map(Value::Object),
            Some(json!({"host": "db.internal", "port": 5432}))
        );
        // Another meaning: an update.
        configure(
            &tf,
            &body(r#"jsonencode({ port = 5433, host = "db.internal" })"#),
        );
        assert_eq!(actions(&tf.plan_json(), "strongbox_secret.s"), ["update"]);
    });
}

// ---------------------------------------------------------------------------------------
// Terraform ≥ 1.11: write-only attributes and the ephemeral resource
// ---------------------------------------------------------------------------------------

fn write_only_body(value: &str, version: u32) -> String {
    format!(
        r#"
resource "strongbox_secret" "wo" {{
  name                   = "write/only"
  secret_data_wo         = "{value}"
  secret_data_wo_version = {version}
}}
"#
    )
}

/// Panics when `needle` appears anywhere in `json` outside its `configuration` section
/// (which echoes literal constants of the configuration, as written by the user).
fn assert_absent(json: &Value, needle: &str, what: &str) {
    let mut json = json.clone();
    if let Some(o) = json.as_object_mut() {
        o.remove("configuration");
    }
    let text = json.to_string();
    assert!(
        !text.contains(needle),
        "{what} contains {needle:?}: {json:#}"
    );
}

#[test]
fn write_only_secret_data() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        if !v.terraform.supports_write_only() {
            // Older Terraform would store the value in state: refused, clearly.
            configure(&tf, &write_only_body("wo-first-value", 1));
            tf.expect_error(&["plan", "-no-color", "-input=false"], &["secret_data_wo"]);
            return;
        }

        configure(&tf, &write_only_body("wo-first-value", 1));
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.wo"), ["create"]);
        assert_absent(&plan, "wo-first-value", "the plan JSON");
        let rc = resource_change(&plan, "strongbox_secret.wo");
        assert_eq!(rc["change"]["after"]["secret_data_wo"], Value::Null);

        step(&tf, &write_only_body("wo-first-value", 1));
        let state = tf.state_json();
        assert_absent(&state, "wo-first-value", "the state JSON");
        let s = resource_values(&state, "strongbox_secret.wo");
        assert_eq!(s["secret_data_wo"], Value::Null);
        assert_eq!(s["secret_data_wo_version"], 1);
        let raw_state = std::fs::read_to_string(tf.work_dir().join("terraform.tfstate")).unwrap();
        assert!(!raw_state.contains("wo-first-value"));
        assert_eq!(server_value(&srv, "write/only"), "wo-first-value");

        // A new value under the same version is not written (nothing to compare with).
        configure(&tf, &write_only_body("wo-second-value", 1));
        tf.assert_no_changes();
        assert_eq!(server_value(&srv, "write/only"), "wo-first-value");

        // Bumping the version writes it.
        configure(&tf, &write_only_body("wo-second-value", 2));
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.wo"), ["update"]);
        assert_planned_unknown(&plan, "strongbox_secret.wo", "version_id");
        assert_absent(&plan, "wo-second-value", "the plan JSON");
        step(&tf, &write_only_body("wo-second-value", 2));
        assert_eq!(server_value(&srv, "write/only"), "wo-second-value");
        assert_absent(&tf.state_json(), "wo-second-value", "the state JSON");

        // Both value attributes at once: refused.
        configure(
            &tf,
            &write_only_body("x", 3).replace(
                "secret_data_wo ",
                "secret_data            = \"y\"\n  secret_data_wo ",
            ),
        );
        tf.expect_error(&["plan", "-no-color", "-input=false"], &["secret_data"]);
    });
}

/// Write-only mode never reads the value, but a version made current outside Terraform is
/// still drift: the version Terraform wrote lost `ACSCurrent`, the plan shows it, and apply
/// makes it current again without writing a new version.
#[test]
fn write_only_value_changed_outside_terraform_is_drift() {
    for_each_variant(|v| {
        if !v.terraform.supports_write_only() {
            return;
        }
        let (srv, tf) = v.start();
        step(&tf, &write_only_body("wo-first-value", 1));
        let mine = attr(&state_of(&tf, "strongbox_secret.wo"), "version_id");
        srv.block_on(srv.client().put_secret_value(
            "write/only",
            &api::PutSecretValueRequest {
                secret_data: "typed-by-hand".into(),
                ..Default::default()
            },
        ))
        .unwrap();
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_secret.wo"), ["update"]);
        assert_absent(&plan, "wo-first-value", "the plan JSON");
        tf.apply();
        tf.assert_no_changes();
        let cur = srv
            .block_on(srv.client().get_secret_value("write/only", None, None))
            .unwrap();
        assert_eq!(cur.secret_data, "wo-first-value");
        assert_eq!(
            cur.version_id, mine,
            "the version Terraform wrote, current again"
        );
        assert_absent(&tf.state_json(), "wo-first-value", "the state JSON");
    });
}

/// `NAME:write_only` imports a secret for a write-only configuration without its value
/// ever reaching the state or the plan (a plain import reads the value, as it must for
/// `secret_data`). The first apply records `secret_data_wo_version` and writes nothing, so
/// the import changes nothing on the server; bumping the version then writes as usual.
/// With an `import` block the same holds for the plan.
#[test]
fn write_only_import_keeps_the_value_out_of_state() {
    const ADOPTED: &str = "adopted-value-4f2a";
    for_each_variant(|v| {
        if !v.terraform.supports_write_only() {
            return;
        }
        let (srv, tf) = v.start();
        let c = srv.client();
        for name in ["write/only", "write/block"] {
            srv.block_on(c.create_secret(&api::CreateSecretRequest {
                name: name.into(),
                secret_data: ADOPTED.into(),
                ..Default::default()
            }))
            .unwrap();
        }
        let adopted = srv
            .block_on(c.get_secret_value("write/only", None, None))
            .unwrap()
            .version_id;

        configure(&tf, &write_only_body("wo-first-value", 1));
        tf.import("strongbox_secret.wo", "write/only:write_only");
        let raw_state = std::fs::read_to_string(tf.work_dir().join("terraform.tfstate")).unwrap();
        assert!(!raw_state.contains(ADOPTED), "{raw_state}");
        let s = state_of(&tf, "strongbox_secret.wo");
        assert_eq!(s["name"], "write/only");
        assert_eq!(s["secret_data"], Value::Null);
        assert_eq!(attr(&s, "version_id"), adopted);
        assert_eq!(s["version_stages"], json!(["ACSCurrent"]));

        let plan = tf.plan_json();
        assert_absent(&plan, ADOPTED, "the plan JSON");
        assert_eq!(actions(&plan, "strongbox_secret.wo"), ["update"]);
        let rc = resource_change(&plan, "strongbox_secret.wo");
        assert_eq!(rc["change"]["after"]["version_id"], json!(adopted));
        assert_eq!(rc["change"]["after"]["secret_data_wo_version"], 1);
        step(&tf, &write_only_body("wo-first-value", 1));
        assert_absent(&tf.state_json(), ADOPTED, "the state JSON");
        let cur = srv
            .block_on(c.get_secret_value("write/only", None, None))
            .unwrap();
        assert_eq!(cur.secret_data, ADOPTED, "the import wrote nothing");
        assert_eq!(cur.version_id, adopted);
        let versions = srv.block_on(c.list_secret_versions("write/only")).unwrap();
        assert_eq!(versions.versions.len(), 1);

        configure(&tf, &write_only_body("wo-second-value", 2));
        let plan = tf.plan_json();
        assert_planned_unknown(&plan, "strongbox_secret.wo", "version_id");
        step(&tf, &write_only_body("wo-second-value", 2));
        assert_eq!(server_value(&srv, "write/only"), "wo-second-value");

        // An import block: the plan that imports holds no value either.
        let block = tf.sibling();
        configure(
            &block,
            &format!(
                "{}\nimport {{\n  to = strongbox_secret.wo\n  id = \"write/block:write_only\"\n}}\n",
                write_only_body("wo-first-value", 1).replace("write/only", "write/block")
            ),
        );
        let plan = block.plan_json();
        assert_absent(&plan, ADOPTED, "the importing plan JSON");
        assert_eq!(actions(&plan, "strongbox_secret.wo"), ["update"]);
        block.apply();
        assert_absent(&block.state_json(), ADOPTED, "the state JSON");
        assert_eq!(server_value(&srv, "write/block"), ADOPTED);
    });
}

#[test]
fn ephemeral_secret_never_lands_in_plan_or_state() {
    const SOURCE_VALUE: &str = "ephemeral-source-9c1d";
    let body = r#"
ephemeral "strongbox_secret" "src" {
  name = "eph/source"
}

resource "strongbox_secret" "copy" {
  name                   = "eph/copy"
  secret_data_wo         = ephemeral.strongbox_secret.src.secret_data
  secret_data_wo_version = 1
}
"#;
    for_each_variant(|v| {
        if !v.terraform.supports_ephemeral() {
            eprintln!("skipped: {v} has no ephemeral resources");
            return;
        }
        let (srv, tf) = v.start();
        // The source exists before Terraform runs (ephemeral resources open at plan time).
        srv.block_on(srv.client().create_secret(&api::CreateSecretRequest {
            name: "eph/source".into(),
            secret_data: SOURCE_VALUE.into(),
            ..Default::default()
        }))
        .unwrap();
        configure(&tf, body);
        let plan = tf.plan_json();
        assert_absent(&plan, SOURCE_VALUE, "the plan JSON");
        assert_eq!(actions(&plan, "strongbox_secret.copy"), ["create"]);
        step(&tf, body);
        let state = tf.state_json();
        assert_absent(&state, SOURCE_VALUE, "the state JSON");
        assert!(
            !strongbox_acceptance_tests::resource_addresses(&state)
                .iter()
                .any(|a| a.starts_with("ephemeral.")),
            "an ephemeral resource is in the state: {state:#}"
        );
        assert_eq!(server_value(&srv, "eph/copy"), SOURCE_VALUE);
    });
}

// ---------------------------------------------------------------------------------------
// Encryption with a CMK: strongbox_ciphertext and strongbox_plaintext
// ---------------------------------------------------------------------------------------

fn ciphertext_body(data: &str) -> String {
    ciphertext_body_with(data, "")
}

fn ciphertext_body_with(data: &str, extra: &str) -> String {
    format!(
        r#"
resource "strongbox_cmk" "files" {{
  description = "files"
}}

resource "strongbox_cmk_alias" "files" {{
  name   = "alias/files"
  key_id = strongbox_cmk.files.id
}}

resource "strongbox_ciphertext" "c" {{
  key_id             = strongbox_cmk_alias.files.name
  plaintext          = "{data}"
  encryption_context = {{ app = "billing" }}
}}

data "strongbox_plaintext" "p" {{
  ciphertext_blob    = strongbox_ciphertext.c.ciphertext_blob
  encryption_context = {{ app = "billing" }}
}}

output "round_trip" {{
  value = nonsensitive(data.strongbox_plaintext.p.plaintext == "{data}")
}}
{extra}"#
    )
}

/// `strongbox_ciphertext` encrypts through an alias; the server opens the blob in state;
/// the data source gives the data back; a new plaintext replaces the blob.
#[test]
fn a_ciphertext_made_by_terraform_decrypts_and_is_replaced_on_change() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, &ciphertext_body("ciphertext-first-41c7"));
        assert_eq!(tf.output_json()["round_trip"]["value"], json!(true));
        let state = state_of(&tf, "strongbox_ciphertext.c");
        let key_id = attr(&state_of(&tf, "strongbox_cmk.files"), "id");
        assert_eq!(state["key_version"], json!(1));
        assert_eq!(attr(&state, "id"), format!("{key_id}:1"));
        let blob = attr(&state, "ciphertext_blob");
        let context: std::collections::BTreeMap<String, String> =
            [("app".to_string(), "billing".to_string())].into();
        let opened = srv.block_on(srv.client().decrypt(&blob, &context)).unwrap();
        assert_eq!(opened.as_slice(), b"ciphertext-first-41c7");
        let data = state_of(&tf, "data.strongbox_plaintext.p");
        assert_eq!(attr(&data, "key_id"), key_id, "the key the blob names");

        configure(&tf, &ciphertext_body("ciphertext-second-41c7"));
        let plan = tf.plan_json();
        assert_eq!(
            actions(&plan, "strongbox_ciphertext.c"),
            ["delete", "create"]
        );
        step(&tf, &ciphertext_body("ciphertext-second-41c7"));
        assert_eq!(tf.output_json()["round_trip"]["value"], json!(true));
        assert_ne!(
            attr(&state_of(&tf, "strongbox_ciphertext.c"), "ciphertext_blob"),
            blob
        );

        // Data that is not UTF-8: no text, the bytes in base64.
        let binary = srv
            .block_on(
                srv.client()
                    .encrypt(&key_id, &[0xff, 0xfe, 0x00], &Default::default()),
            )
            .unwrap()
            .ciphertext_blob;
        let extra = format!(
            r#"
data "strongbox_plaintext" "bin" {{
  ciphertext_blob = "{binary}"
}}

output "bin_text_is_null" {{
  value = nonsensitive(data.strongbox_plaintext.bin.plaintext == null)
}}

output "bin_base64" {{
  value = nonsensitive(data.strongbox_plaintext.bin.plaintext_base64)
}}
"#
        );
        step(&tf, &ciphertext_body_with("ciphertext-second-41c7", &extra));
        let out = tf.output_json();
        assert_eq!(out["bin_text_is_null"]["value"], json!(true));
        assert_eq!(out["bin_base64"]["value"], json!("//4A"));

        // Refused at plan time, before anything is sent.
        tf.write_config(&config(&ciphertext_body("")));
        tf.expect_error(&["plan"], &["plaintext: must not be empty"]);
        tf.write_config(&config(&ciphertext_body("ciphertext-second-41c7")));
        tf.destroy();
    });
}

/// The GitOps pattern: a blob kept in the configuration (made with the SDK here),
/// decrypted by the ephemeral `strongbox_plaintext` into `secret_data_wo`: the value is
/// never in plan or state. A blob of another key than the one named is refused.
#[test]
fn an_encrypted_value_in_the_configuration_reaches_a_secret_without_plan_or_state() {
    const DATA: &str = "kept-in-git-83b1";
    for_each_variant(|v| {
        if !v.terraform.supports_write_only() {
            eprintln!("skipped: {v} has no write-only attributes");
            return;
        }
        let (srv, tf) = v.start();
        let c = srv.client();
        let key = srv
            .block_on(c.create_key(&Default::default()))
            .unwrap()
            .key_id;
        srv.block_on(c.put_alias("alias/gitops", &key)).unwrap();
        let blob = srv
            .block_on(c.encrypt("alias/gitops", DATA.as_bytes(), &Default::default()))
            .unwrap()
            .ciphertext_blob;
        let body = |key_ref: &str| {
            format!(
                r#"
ephemeral "strongbox_plaintext" "p" {{
  ciphertext_blob = "{blob}"
  key_id          = "{key_ref}"
}}

resource "strongbox_secret" "s" {{
  name                   = "from/git"
  secret_data_wo         = ephemeral.strongbox_plaintext.p.plaintext
  secret_data_wo_version = 1
}}
"#
            )
        };
        configure(&tf, &body("alias/gitops"));
        let plan = tf.plan_json();
        assert_absent(&plan, DATA, "the plan JSON");
        step(&tf, &body("alias/gitops"));
        assert_absent(&tf.state_json(), DATA, "the state JSON");
        assert_eq!(server_value(&srv, "from/git"), DATA);

        let other = srv
            .block_on(c.create_key(&Default::default()))
            .unwrap()
            .key_id;
        tf.write_config(&config(&body(&other)));
        tf.expect_error(&["plan"], &["InvalidCiphertext", "not made under this key"]);
    });
}

// ---------------------------------------------------------------------------------------
// The example configuration
// ---------------------------------------------------------------------------------------

#[test]
fn example_configuration_applies() {
    let dir = workspace_dir().join("examples/terraform");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .tf files in {}", dir.display());
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy();
            tf.write_file(&name, &std::fs::read_to_string(f).unwrap());
        }
        tf.init();
        tf.apply();
        tf.assert_no_changes();

        let out = tf.output_json();
        assert_eq!(out["db_password"]["sensitive"], true);
        assert_eq!(out["db_password"]["value"], "initial-Passw0rd-change-me");
        assert!(out["cmk_arn"]["value"].is_string());
        assert_eq!(out["signing_key"]["sensitive"], true);
        assert_eq!(out["signing_key"]["value"], "example-signing-key-change-me");
        let c = srv.client();
        let opened = srv
            .block_on(c.decrypt(
                out["signing_key_blob"]["value"].as_str().unwrap(),
                &[("app".to_string(), "prod/app".to_string())].into(),
            ))
            .unwrap();
        assert_eq!(opened.as_slice(), b"example-signing-key-change-me");
        let db: Value = serde_json::from_str(&server_value(&srv, "prod/app/db")).unwrap();
        assert_eq!(db["AccountName"], "app");
        let meta = srv.block_on(c.describe_secret("prod/app/db")).unwrap();
        assert_eq!(meta.encryption_key_id, "alias/prod/app");
        let token = srv
            .block_on(c.describe_secret("prod/app/api-token"))
            .unwrap();
        assert_eq!(
            token.rotation_policy.as_deref(),
            Some("prod-api-token-monthly")
        );
        assert!(token.next_rotation_date.is_some(), "{token:?}");
        assert_eq!(
            server_value(&srv, "prod/app/smtp-relay"),
            "smtp.internal:587"
        );

        tf.destroy();
        let meta = srv.block_on(c.describe_secret("prod/app/db")).unwrap();
        assert!(meta.planned_delete_time.is_some());
    });
}

/// A work dir whose provider uses the token of a principal `deployer` holding only
/// `document` (as policy `policy`), made with the root client.
fn terraform_as_deployer(
    v: &Variant,
    srv: &DevServer,
    policy: &str,
    document: api::PolicyDocument,
) -> Terraform {
    let root = srv.client();
    srv.block_on(root.create_policy(&api::CreatePolicyRequest {
        name: policy.into(),
        description: None,
        document,
    }))
    .unwrap_or_else(|e| panic!("create policy {policy}: {e}"));
    srv.block_on(root.create_principal(&api::CreatePrincipalRequest {
        name: "deployer".into(),
        description: None,
        policies: Some(vec![policy.into()]),
    }))
    .unwrap_or_else(|e| panic!("create principal deployer: {e}"));
    let token = srv
        .block_on(root.create_token("deployer", &Default::default()))
        .unwrap_or_else(|e| panic!("create a token of deployer: {e}"))
        .token;
    Terraform::builder(&v.terraform)
        .server(srv)
        .protocols(v.protocols)
        .env("STRONGBOX_TOKEN", token)
        .build()
}

/// A create that fails after the object exists leaves the object in the state, tainted,
/// so the next apply replaces it: nothing is orphaned on the server. Here the token may
/// create keys but not disable them, so `enabled = false` fails after the create.
#[test]
fn a_create_that_fails_part_way_keeps_the_object_tainted() {
    for_each_variant(|v| {
        let srv = DevServer::start();
        let root = srv.client();
        let document = serde_json::from_value::<api::PolicyDocument>(json!({
            "Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:*"], "Resource": ["*"]},
                {"Effect": "Deny", "Action": ["kms:DisableKey"], "Resource": ["*"]}]}))
        .unwrap();
        let tf = terraform_as_deployer(v, &srv, "no-disable", document);
        configure(&tf, r#"resource "strongbox_cmk" "k" { enabled = false }"#);
        tf.expect_error(
            &["apply", "-auto-approve", "-no-color", "-input=false"],
            &["Changing the key state failed", "kms:DisableKey"],
        );
        let keys = srv.block_on(root.list_keys(None, None)).unwrap().keys;
        assert_eq!(keys.len(), 1, "one key was created");
        assert_eq!(
            attr(&state_of(&tf, "strongbox_cmk.k"), "id"),
            keys[0].key_id
        );
        // Tainted: the next plan replaces it.
        let plan = tf.plan_json();
        assert_eq!(actions(&plan, "strongbox_cmk.k"), ["delete", "create"]);
    });
}

/// An alias is created with a create-only write (`If-None-Match: *`), never a move: an
/// alias made outside Terraform keeps pointing where it did, and the apply says to import
/// it, also for a token that may not describe aliases (nothing is asked before the write,
/// so no check can be refused, time out or race a concurrent creator).
#[test]
fn an_alias_made_outside_terraform_is_not_moved_by_a_create() {
    for_each_variant(|v| {
        let srv = DevServer::start();
        let root = srv.client();
        let a = srv.block_on(root.create_key(&Default::default())).unwrap();
        let b = srv.block_on(root.create_key(&Default::default())).unwrap();
        srv.block_on(root.put_alias("alias/app", &a.key_id))
            .unwrap();
        let document = serde_json::from_value::<api::PolicyDocument>(json!({
            "Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:*"], "Resource": ["*"]},
                {"Effect": "Deny", "Action": ["kms:DescribeAlias"], "Resource": ["*"]}]}))
        .unwrap();
        let tf = terraform_as_deployer(v, &srv, "no-describe-alias", document);
        configure(
            &tf,
            &format!(
                r#"resource "strongbox_cmk_alias" "a" {{
  name   = "alias/app"
  key_id = "{}"
}}"#,
                b.key_id
            ),
        );
        tf.expect_error(
            &["apply", "-auto-approve", "-no-color", "-input=false"],
            &["Alias already exists", "terraform import"],
        );
        let alias = srv.block_on(root.get_alias("alias/app")).unwrap();
        assert_eq!(alias.key_id, a.key_id, "the alias was moved");
    });
}

/// The same for a secret whose labels could not be set: it stays in the state, tainted
/// and marked to be purged, so the next apply (the right granted meanwhile) replaces it
/// at once instead of meeting its name pending deletion.
#[test]
fn a_secret_whose_create_fails_part_way_is_replaced_by_the_next_apply() {
    for_each_variant(|v| {
        let srv = DevServer::start();
        let root = srv.client();
        let document = |deny: bool| {
            let mut statements =
                vec![json!({"Effect": "Allow", "Action": ["kms:*"], "Resource": ["*"]})];
            if deny {
                statements.push(json!({"Effect": "Deny", "Action": ["kms:UpdateSecretVersionStage"], "Resource": ["*"]}));
            }
            serde_json::from_value::<api::PolicyDocument>(
                json!({"Version": "1", "Statement": statements}),
            )
            .unwrap()
        };
        let tf = terraform_as_deployer(v, &srv, "no-labels", document(true));
        let body = r#"
resource "strongbox_secret" "s" {
  name           = "labelled"
  secret_data    = "one"
  version_stages = ["ACSCurrent", "blue"]
}
"#;
        configure(&tf, body);
        tf.expect_error(
            &["apply", "-auto-approve", "-no-color", "-input=false"],
            &["kms:UpdateSecretVersionStage"],
        );
        assert_eq!(
            attr(&state_of(&tf, "strongbox_secret.s"), "name"),
            "labelled"
        );
        srv.block_on(root.update_policy(
            "no-labels",
            &api::UpdatePolicyRequest {
                document: Some(document(false)),
                ..Default::default()
            },
        ))
        .unwrap();
        step(&tf, body);
        let blue = server_value_at(&srv, "labelled", Some("blue"));
        assert_eq!(blue, "one");
        let d = srv.block_on(root.describe_secret("labelled")).unwrap();
        assert!(d.planned_delete_time.is_none());
    });
}

/// A secret deleted outside Terraform with another recovery window is as good as gone
/// to a destroy that does not refresh first (the server refuses a second deletion with
/// another window): destroy succeeds and the first window stands.
#[test]
fn destroy_without_refresh_of_a_secret_deleted_outside_terraform() {
    let body = r#"
resource "strongbox_secret" "s" {
  name                    = "doomed/twice"
  secret_data             = "x"
  recovery_window_in_days = 7
}
"#;
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        step(&tf, body);
        let c = srv.client();
        srv.block_on(c.delete_secret("doomed/twice", Default::default()))
            .unwrap();
        tf.run_ok(&[
            "destroy",
            "-auto-approve",
            "-no-color",
            "-input=false",
            "-refresh=false",
        ]);
        let when = srv
            .block_on(c.describe_secret("doomed/twice"))
            .unwrap()
            .planned_delete_time
            .unwrap();
        assert_days_from_now(when.unix(), 30, "planned_delete_time");
    });
}

/// The server's own key and aliases (the default key of secrets that name none, and
/// `alias/strongbox/…`) cannot be changed or deleted, so they are neither importable nor
/// configurable: refused up front, saying why, not at a later destroy.
#[test]
fn the_default_key_and_reserved_aliases_are_not_importable() {
    for_each_variant(|v| {
        let (srv, tf) = v.start();
        let c = srv.client();
        // The default key exists once a secret named no key.
        srv.block_on(c.create_secret(&api::CreateSecretRequest {
            name: "uses/default".into(),
            secret_data: "v".into(),
            ..Default::default()
        }))
        .unwrap();
        let default = srv
            .block_on(c.get_alias("alias/strongbox/default"))
            .unwrap()
            .key_id;
        tf.write_config(&config(
            r#"
resource "strongbox_cmk" "d" {}
resource "strongbox_cmk_alias" "d" {
  name   = "alias/mine"
  key_id = strongbox_cmk.d.id
}
"#,
        ));
        tf.init();
        // By its id, and by an alias (its own, or one made to point at it).
        srv.block_on(c.put_alias("alias/to-default", &default))
            .unwrap();
        for id in [
            default.as_str(),
            "alias/strongbox/default",
            "alias/to-default",
        ] {
            tf.expect_error(
                &["import", "-input=false", "-no-color", "strongbox_cmk.d", id],
                &["Cannot import the default key"],
            );
        }
        tf.expect_error(
            &[
                "import",
                "-input=false",
                "-no-color",
                "strongbox_cmk_alias.d",
                "alias/strongbox/default",
            ],
            &["Reserved alias"],
        );
        // Nothing was imported (no state at all, or an empty one).
        let state = String::from_utf8_lossy(&tf.run(&["state", "list"]).stdout).into_owned();
        assert!(state.trim().is_empty(), "{state}");
        tf.write_config(&config(
            r#"
resource "strongbox_cmk" "d" {}
resource "strongbox_cmk_alias" "d" {
  name   = "alias/strongbox/mine"
  key_id = strongbox_cmk.d.id
}
"#,
        ));
        tf.expect_error(
            &["plan", "-no-color", "-input=false"],
            &["Reserved alias", "alias/strongbox/mine"],
        );
    });
}
