//! The provider schema Terraform sees, as a checked-in JSON file: every change to an
//! attribute (name, type, flags, description) shows as a diff of `provider/schema.json`.
//! `STRONGBOX_BLESS=1 cargo test` rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use serde_json::{Value, json};
use terraform_provider_strongbox::core::TfSchema;
use terraform_provider_strongbox::resources;

fn to_json(s: &TfSchema) -> Value {
    json!({
        "version": s.version,
        "description": s.description,
        "attributes": s.attrs.iter().map(|a| json!({
            "name": a.name,
            "type": serde_json::from_str::<Value>(&a.ty.to_json()).unwrap(),
            "required": a.required,
            "optional": a.optional,
            "computed": a.computed,
            "sensitive": a.sensitive,
            "write_only": a.write_only,
            "description": a.description,
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn provider_schema_matches_the_checked_in_file() {
    let core = resources::core();
    let doc = json!({
        "provider": to_json(&core.provider_schema),
        "resources": core.resources.iter().map(|(k, r)| (k.to_string(), to_json(&r.schema()))).collect::<serde_json::Map<_, _>>(),
        "data_sources": core.data_sources.iter().map(|(k, d)| (k.to_string(), to_json(&d.schema()))).collect::<serde_json::Map<_, _>>(),
        "ephemeral_resources": core.ephemerals.iter().map(|(k, e)| (k.to_string(), to_json(&e.schema()))).collect::<serde_json::Map<_, _>>(),
    });
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json");
    if std::env::var_os("STRONGBOX_BLESS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(path)
        .expect("provider/schema.json (STRONGBOX_BLESS=1 cargo test writes it)");
    assert_eq!(
        text, golden,
        "the provider schema changed: review, then STRONGBOX_BLESS=1 cargo test"
    );
    // Every attribute is described, and every secret value is sensitive.
    for (kind, m) in [
        ("resources", &doc["resources"]),
        ("data_sources", &doc["data_sources"]),
    ] {
        for (name, s) in m.as_object().unwrap() {
            for a in s["attributes"].as_array().unwrap() {
                let attr = a["name"].as_str().unwrap();
                assert_ne!(
                    a["description"], "",
                    "{kind}.{name}.{attr} has no description"
                );
                if attr.starts_with("secret_data")
                    && attr != "secret_data_type"
                    && attr != "secret_data_wo_version"
                    || attr == "token"
                    || attr.starts_with("plaintext")
                {
                    assert_eq!(
                        a["sensitive"], true,
                        "{kind}.{name}.{attr} must be sensitive"
                    );
                }
            }
        }
    }
}

/// Names and types come from the shared model in `schemas/`; only these attributes
/// exist in Terraform alone (ids, write-only inputs, the alias's `name`, the CMK's
/// `enabled` switch, the data source's stage selector and the provider block).
#[test]
fn only_terraform_specific_attributes_are_outside_the_shared_model() {
    let core = resources::core();
    let mut outside = Vec::new();
    let mut all = |kind: &str, name: &str, s: &TfSchema| {
        for a in &s.attrs {
            if !a.from_model {
                outside.push(format!("{kind}.{name}.{}", a.name));
            }
        }
    };
    all("provider", "strongbox", &core.provider_schema);
    for (k, r) in &core.resources {
        all("resource", k, &r.schema());
    }
    for (k, d) in &core.data_sources {
        all("data", k, &d.schema());
    }
    for (k, e) in &core.ephemerals {
        all("ephemeral", k, &e.schema());
    }
    outside.sort();
    let expected = [
        "data.strongbox_cmk.enabled",
        "data.strongbox_cmk.id",
        "data.strongbox_plaintext.id",
        "data.strongbox_plaintext.plaintext",
        "data.strongbox_plaintext.plaintext_base64",
        "data.strongbox_secret.id",
        "data.strongbox_secret.version_stage",
        "ephemeral.strongbox_plaintext.id",
        "ephemeral.strongbox_plaintext.plaintext",
        "ephemeral.strongbox_plaintext.plaintext_base64",
        "ephemeral.strongbox_secret.id",
        "ephemeral.strongbox_secret.version_stage",
        "provider.strongbox.address",
        "provider.strongbox.ca_cert",
        "provider.strongbox.ca_cert_file",
        "provider.strongbox.token",
        "resource.strongbox_ciphertext.id",
        "resource.strongbox_ciphertext.plaintext",
        "resource.strongbox_cmk.enabled",
        "resource.strongbox_cmk.id",
        "resource.strongbox_cmk_alias.id",
        "resource.strongbox_cmk_alias.name",
        "resource.strongbox_policy.id",
        "resource.strongbox_principal.id",
        "resource.strongbox_principal_token.id",
        "resource.strongbox_rotation_policy.id",
        "resource.strongbox_secret.id",
        "resource.strongbox_secret.secret_data_wo",
        "resource.strongbox_secret.secret_data_wo_version",
    ];
    assert_eq!(outside, expected);
}
