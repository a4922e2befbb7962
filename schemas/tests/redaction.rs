//! `Debug` of every type that carries a secret value, a token, a data key or decrypted
//! data shows no trace of it (an application may log an answer with `?answer`).

use serde::de::DeserializeOwned;
use serde_json::json;
use strongbox_schemas as api;

const MARKER: &str = "c2VjcmV0LW1hcmtlci00NzEx";

fn debug_of<T: DeserializeOwned + std::fmt::Debug>(v: serde_json::Value) -> String {
    let parsed: T = serde_json::from_value(v).expect("a valid body");
    format!("{parsed:?} {parsed:#?}")
}

#[test]
fn debug_never_shows_values_tokens_or_keys() {
    let shown = [
        debug_of::<api::EncryptRequest>(json!({"plaintext": MARKER})),
        debug_of::<api::DecryptResponse>(
            json!({"key_id": "k", "key_version": 1, "plaintext": MARKER}),
        ),
        debug_of::<api::GenerateDataKeyResponse>(json!({
            "key_id": "k", "key_version": 1, "ciphertext_blob": "blob", "plaintext": MARKER
        })),
        debug_of::<api::CreateSecretRequest>(json!({"name": "n", "secret_data": MARKER})),
        debug_of::<api::PutSecretValueRequest>(json!({"secret_data": MARKER})),
        debug_of::<api::SecretValue>(json!({
            "name": "n", "version_id": "v", "version_stages": [], "secret_data": MARKER,
            "secret_data_type": "text", "creation_date": "2026-12-08T00:00:00Z"
        })),
        debug_of::<api::CreatedToken>(json!({
            "token_id": "t", "token": MARKER, "principal": "p", "expires_at": null,
            "creation_date": "2026-12-08T00:00:00Z"
        })),
        debug_of::<api::RandomPassword>(json!({"random_password": MARKER})),
    ];
    for s in shown {
        assert!(!s.contains(MARKER), "{s}");
    }
}
