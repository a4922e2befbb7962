/// A request field that broke a rule: names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct FieldError {
    /// JSON field (or query/path parameter) name.
    pub field: String,
    /// What was expected.
    pub rule: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// Secret names: 1–192 characters of `A-Za-z0-9_/+=.@-`, not `.` or `..`.
pub fn validate_secret_name(field: &str, name: &str) -> Result<(), FieldError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_/+=.@-".contains(&b));
    if name.is_empty() || name.len() > 192 || !ok_chars || name == "." || name == ".." {
        return Err(FieldError::new(
            field,
            "must be 1 to 192 characters of A-Z a-z 0-9 _ / + = . @ - and not . or ..",
        ));
    }
    Ok(())
}

/// 1–64 characters of `A-Za-z0-9_.-` (version ids and stage labels).
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Caller-supplied version ids: 1–64 characters of `A-Za-z0-9_.-`.
pub fn validate_version_id(field: &str, id: &str) -> Result<(), FieldError> {
    if !is_label(id) {
        return Err(FieldError::new(
            field,
            "must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
        ));
    }
    Ok(())
}

/// Stage labels (`ACSCurrent`, custom labels): 1–64 characters of `A-Za-z0-9_.-`.
pub fn validate_version_stage(field: &str, stage: &str) -> Result<(), FieldError> {
    if !is_label(stage) {
        return Err(FieldError::new(
            field,
            "stage labels are 1 to 64 characters of A-Z a-z 0-9 _ . -",
        ));
    }
    Ok(())
}

/// The alias of the key that seals the secrets which name none (made with the first).
pub const DEFAULT_KEY_ALIAS: &str = "alias/strongbox/default";
/// Aliases under this prefix are the server's: none can be made, moved or deleted.
pub const RESERVED_ALIAS_PREFIX: &str = "alias/strongbox/";

/// Aliases: `alias/` followed by 1–255 characters of `A-Za-z0-9:/_-`.
pub fn validate_alias_name(field: &str, alias: &str) -> Result<(), FieldError> {
    let rest = alias.strip_prefix("alias/").unwrap_or("");
    let ok = !rest.is_empty()
        && rest.len() <= 255
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b));
    if !ok {
        return Err(FieldError::new(
            field,
            "must be alias/ followed by 1 to 255 characters of A-Z a-z 0-9 : / _ -",
        ));
    }
    Ok(())
}

/// `.` and `..` cannot be a URL path segment: URL parsers resolve them (also as
/// `%2e`), so a resource of that name could be created and never reached again.
fn is_dot_segment(name: &str) -> bool {
    name == "." || name == ".."
}

/// Principal names: 1–64 characters of `A-Za-z0-9_.@+=-`, not `.` or `..`.
pub fn validate_principal_name(field: &str, name: &str) -> Result<(), FieldError> {
    let ok = !is_dot_segment(name)
        && !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@+=-".contains(&b));
    if !ok {
        return Err(FieldError::new(
            field,
            "must be 1 to 64 characters of A-Z a-z 0-9 _ . @ + = - and not . or ..",
        ));
    }
    Ok(())
}

/// Access policy names: 1–128 characters of `A-Za-z0-9_.-`, not `.` or `..`.
pub fn validate_policy_name(field: &str, name: &str) -> Result<(), FieldError> {
    let ok = !is_dot_segment(name)
        && !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        return Err(FieldError::new(
            field,
            "must be 1 to 128 characters of A-Z a-z 0-9 _ . - and not . or ..",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for ok in ["a", "app/db", "My.Db-Creds_1+=@", &"x".repeat(192)] {
            assert!(validate_secret_name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a%2F", "é", &"x".repeat(193)] {
            assert!(validate_secret_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn principal_and_policy_names_are_never_dot_segments() {
        for ok in ["a", "ci.deployer", "a..b", "...", ".hidden"] {
            assert!(validate_principal_name("name", ok).is_ok(), "{ok}");
            assert!(validate_policy_name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b"] {
            let e = validate_principal_name("name", bad).unwrap_err();
            assert!(e.rule.contains("not . or .."), "{bad}: {e}");
            assert!(validate_policy_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aliases() {
        assert!(validate_alias_name("alias", "alias/app/key-1").is_ok());
        assert!(validate_alias_name("alias", "alias/").is_err());
        assert!(validate_alias_name("alias", "app").is_err());
    }
}
