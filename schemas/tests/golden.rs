//! The JSON Schema files under `schemas/json/` are generated from the model; this test
//! fails when they drift. `STRONGBOX_BLESS=1 cargo test` rewrites them.

#[test]
fn json_schema_files_match_the_model() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/json");
    let bless = std::env::var_os("STRONGBOX_BLESS").is_some();
    let mut stale = Vec::new();
    for (stem, schema) in strongbox_schemas::resource_schemas() {
        let path = format!("{dir}/{stem}.json");
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if bless {
            std::fs::write(&path, &text).unwrap();
        }
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "stale schema files (run STRONGBOX_BLESS=1 cargo test): {stale:?}"
    );
}

#[test]
fn error_codes_map_to_documented_statuses() {
    use strongbox_schemas::ErrorCode::*;
    for (code, status) in [
        (InvalidParameter, 400),
        (InvalidCiphertext, 400),
        (Unauthenticated, 401),
        (Forbidden, 403),
        (SecretNotFound, 404),
        (PrincipalNotFound, 404),
        (PolicyNotFound, 404),
        (TokenNotFound, 404),
        (PolicyInUse, 409),
        (VersionConflict, 409),
        (SecretPendingDeletion, 409),
        (KeyDisabled, 409),
        (KeyDeleted, 409),
        (PayloadTooLarge, 413),
        (UnsupportedMediaType, 415),
        (TooManyRequests, 429),
        (ClientClosedRequest, 499),
        (RotationInProgress, 409),
        (RotationFailed, 502),
    ] {
        assert_eq!(code.http_status(), status, "{code}");
        assert_eq!(
            serde_json::to_value(code).unwrap(),
            serde_json::json!(code.as_str())
        );
    }
}
