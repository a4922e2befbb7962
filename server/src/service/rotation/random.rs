//! The `random` strategy: a password generator, optionally writing into one field of
//! a JSON secret. Also served as `GET /v1/random-password`.

use std::collections::BTreeMap;

use rand::Rng as _;
use rand::seq::SliceRandom as _;
use zeroize::Zeroizing;

use super::strategy::{StepContext, Strategy};
use crate::error::{Error, Result};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
/// The punctuation AWS and Alibaba generators use.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
/// Default length of a generated password.
pub(crate) const DEFAULT_LENGTH: usize = 32;

/// What a generated password must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRules {
    /// 8–128 characters.
    pub length: usize,
    /// Characters never used.
    pub exclude_characters: String,
    /// No `a-z`.
    pub exclude_lowercase: bool,
    /// No `A-Z`.
    pub exclude_uppercase: bool,
    /// No `0-9`.
    pub exclude_numbers: bool,
    /// No punctuation.
    pub exclude_punctuation: bool,
    /// At least one character of every class that is not excluded.
    pub require_each_included_type: bool,
}

impl Default for PasswordRules {
    fn default() -> Self {
        Self {
            length: DEFAULT_LENGTH,
            exclude_characters: String::new(),
            exclude_lowercase: false,
            exclude_uppercase: false,
            exclude_numbers: false,
            exclude_punctuation: false,
            require_each_included_type: true,
        }
    }
}

fn flag(field: &str, v: Option<&String>, default: bool) -> Result<bool> {
    match v.map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(Error::invalid(field, "must be true or false")),
    }
}

/// `password_length`: what database policies took before they took these rules (and
/// ignored). Stored policies keep it: a value `length` would take is honoured as one,
/// anything else is still ignored, so that no stored policy stops rotating. A new or
/// changed setting is checked strictly (`check_legacy_length`).
fn legacy_length(settings: &BTreeMap<String, String>) -> Option<usize> {
    settings
        .get("password_length")?
        .parse::<usize>()
        .ok()
        .filter(|n| (8..=128).contains(n))
}

/// `password_length` as a setting given now: a whole number from 8 to 128.
pub(crate) fn check_legacy_length(settings: &BTreeMap<String, String>) -> Result<()> {
    match settings.get("password_length") {
        Some(_) if legacy_length(settings).is_none() => Err(Error::invalid(
            "settings.password_length",
            "must be a whole number from 8 to 128 (it is another name of length)",
        )),
        _ => Ok(()),
    }
}

impl PasswordRules {
    /// Parses rules from strategy settings (or query parameters), naming the field
    /// that is wrong; `prefix` is `settings.` or empty.
    pub fn parse(settings: &BTreeMap<String, String>, prefix: &str) -> Result<Self> {
        let f = |k: &str| format!("{prefix}{k}");
        let length = match settings.get("length") {
            None => legacy_length(settings).unwrap_or(DEFAULT_LENGTH),
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (8..=128).contains(&n) => n,
                _ => {
                    return Err(Error::invalid(
                        &f("length"),
                        "must be a whole number from 8 to 128",
                    ));
                }
            },
        };
        let rules = Self {
            length,
            exclude_characters: settings
                .get("exclude_characters")
                .cloned()
                .unwrap_or_default(),
            exclude_lowercase: flag(
                &f("exclude_lowercase"),
                settings.get("exclude_lowercase"),
                false,
            )?,
            exclude_uppercase: flag(
                &f("exclude_uppercase"),
                settings.get("exclude_uppercase"),
                false,
            )?,
            exclude_numbers: flag(
                &f("exclude_numbers"),
                settings.get("exclude_numbers"),
                false,
            )?,
            exclude_punctuation: flag(
                &f("exclude_punctuation"),
                settings.get("exclude_punctuation"),
                false,
            )?,
            require_each_included_type: flag(
                &f("require_each_included_type"),
                settings.get("require_each_included_type"),
                true,
            )?,
        };
        if rules.classes().is_empty() {
            return Err(Error::invalid(
                &f("exclude_characters"),
                "the settings exclude every character",
            ));
        }
        Ok(rules)
    }

    /// The character classes left after the exclusions (empty classes dropped).
    pub fn classes(&self) -> Vec<Vec<char>> {
        [
            (LOWER, self.exclude_lowercase),
            (UPPER, self.exclude_uppercase),
            (DIGITS, self.exclude_numbers),
            (PUNCTUATION, self.exclude_punctuation),
        ]
        .into_iter()
        .filter(|(_, excluded)| !excluded)
        .map(|(class, _)| {
            class
                .chars()
                .filter(|c| !self.exclude_characters.contains(*c))
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
    }

    /// A fresh password following the rules, from the operating system's CSPRNG.
    pub fn generate(&self) -> Zeroizing<String> {
        let classes = self.classes();
        let all: Vec<char> = classes.iter().flatten().copied().collect();
        let mut rng = rand::rngs::OsRng;
        let mut chars: Zeroizing<Vec<char>> = Zeroizing::new(Vec::with_capacity(self.length));
        if self.require_each_included_type {
            // At most 4 classes and at least 8 characters: one of each always fits.
            for class in &classes {
                chars.push(class[rng.gen_range(0..class.len())]);
            }
        }
        while chars.len() < self.length && !all.is_empty() {
            chars.push(all[rng.gen_range(0..all.len())]);
        }
        chars.shuffle(&mut rng);
        Zeroizing::new(chars.iter().collect())
    }
}

/// The `random` strategy: a new password; the target system is the secret itself, so
/// *set*, *test* and *finish* have nothing to do outside Strongbox.
#[derive(Debug, Clone)]
pub(crate) struct RandomStrategy {
    pub(crate) rules: PasswordRules,
    /// Replace only this top-level field of a JSON object secret.
    pub(crate) json_field: Option<String>,
}

impl RandomStrategy {
    pub(crate) fn from_settings(settings: &BTreeMap<String, String>) -> Result<Self> {
        let json_field = settings.get("json_field").cloned();
        if json_field.as_deref() == Some("") {
            return Err(Error::invalid("settings.json_field", "must name a field"));
        }
        Ok(Self {
            rules: PasswordRules::parse(settings, "settings.")?,
            json_field,
        })
    }

    /// The new value: a password, or the current JSON object with one field replaced.
    pub(crate) fn new_value(&self, current: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>> {
        let password = self.rules.generate();
        let Some(field) = &self.json_field else {
            return Ok(Zeroizing::new(password.as_bytes().to_vec()));
        };
        // Errors never quote the value: it may hold other secrets.
        let mut doc: serde_json::Map<String, serde_json::Value> = current
            .and_then(|c| serde_json::from_slice(c).ok())
            .ok_or_else(|| {
                Error::new(
                    strongbox_schemas::ErrorCode::RotationFailed,
                    format!("json_field {field}: the current value is not a JSON object"),
                )
            })?;
        doc.insert(
            field.clone(),
            serde_json::Value::String(password.as_str().to_owned()),
        );
        let out = Zeroizing::new(serde_json::to_vec(&doc).map_err(Error::internal)?);
        // The map held a copy of the password; wipe what we can of it.
        if let Some(serde_json::Value::String(s)) = doc.get_mut(field) {
            zeroize::Zeroize::zeroize(s);
        }
        Ok(out)
    }
}

impl Strategy for RandomStrategy {
    async fn create(&self, cx: &StepContext<'_>) -> Result<Zeroizing<Vec<u8>>> {
        self.new_value(cx.current)
    }
    async fn set(&self, _: &StepContext<'_>) -> Result<()> {
        Ok(())
    }
    async fn test(&self, cx: &StepContext<'_>) -> Result<()> {
        // The value must still follow the settings (it is what applications will read).
        match cx.pending {
            Some(v) if !v.is_empty() => Ok(()),
            _ => Err(Error::new(
                strongbox_schemas::ErrorCode::RotationFailed,
                "test: the pending value is empty",
            )),
        }
    }
    async fn finish(&self, _: &StepContext<'_>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;

    #[test]
    fn password_length_is_another_name_of_length() {
        let rules = |pairs: &[(&str, &str)]| {
            let m: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            PasswordRules::parse(&m, "settings.")
        };
        assert_eq!(rules(&[("password_length", "16")]).unwrap().length, 16);
        assert_eq!(
            rules(&[("password_length", "16"), ("length", "20")])
                .unwrap()
                .length,
            20
        );
        // A stored value `length` would refuse is ignored, as it always was: the policy
        // keeps rotating with the default length. Given now, it is refused.
        assert_eq!(
            rules(&[("password_length", "4")]).unwrap().length,
            DEFAULT_LENGTH
        );
        let given: BTreeMap<String, String> =
            [("password_length".to_string(), "4".to_string())].into();
        let e = check_legacy_length(&given).unwrap_err();
        assert!(
            e.message.starts_with("settings.password_length:"),
            "{}",
            e.message
        );
    }

    fn rules_strategy() -> impl proptest::strategy::Strategy<Value = PasswordRules> {
        (
            8usize..=128,
            proptest::collection::vec(proptest::char::range('!', '~'), 0..20),
            any::<[bool; 4]>(),
            any::<bool>(),
        )
            .prop_map(|(length, excl, flags, require)| PasswordRules {
                length,
                exclude_characters: excl.into_iter().collect(),
                exclude_lowercase: flags[0],
                exclude_uppercase: flags[1],
                exclude_numbers: flags[2],
                exclude_punctuation: flags[3],
                require_each_included_type: require,
            })
            .prop_filter("some character left", |r| !r.classes().is_empty())
    }

    proptest! {
        #[test]
        fn generated_passwords_follow_every_setting(rules in rules_strategy()) {
            let p = rules.generate();
            prop_assert_eq!(p.chars().count(), rules.length);
            let classes = rules.classes();
            for c in p.chars() {
                prop_assert!(!rules.exclude_characters.contains(c), "excluded {c:?} used");
                prop_assert!(classes.iter().any(|k| k.contains(&c)), "{c:?} is in no included class");
                prop_assert!(!(rules.exclude_lowercase && c.is_ascii_lowercase()));
                prop_assert!(!(rules.exclude_uppercase && c.is_ascii_uppercase()));
                prop_assert!(!(rules.exclude_numbers && c.is_ascii_digit()));
                prop_assert!(!(rules.exclude_punctuation && c.is_ascii_punctuation()));
            }
            if rules.require_each_included_type {
                for k in &classes {
                    prop_assert!(p.chars().any(|c| k.contains(&c)), "a class is missing");
                }
            }
        }

        #[test]
        fn parsed_settings_round_trip(length in 8usize..=128, lower in any::<bool>()) {
            let s: BTreeMap<String, String> = [
                ("length".to_string(), length.to_string()),
                ("exclude_lowercase".to_string(), lower.to_string()),
            ].into();
            let r = PasswordRules::parse(&s, "settings.").unwrap();
            prop_assert_eq!(r.length, length);
            prop_assert_eq!(r.exclude_lowercase, lower);
        }
    }

    #[test]
    fn bad_settings_name_the_field() {
        let bad = |k: &str, v: &str| {
            let s: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            PasswordRules::parse(&s, "settings.").unwrap_err().message
        };
        assert!(bad("length", "7").contains("settings.length"));
        assert!(bad("length", "129").contains("settings.length"));
        assert!(bad("exclude_numbers", "yes").contains("settings.exclude_numbers"));
        let all: BTreeMap<String, String> = [
            ("exclude_lowercase", "true"),
            ("exclude_uppercase", "true"),
            ("exclude_numbers", "true"),
            ("exclude_punctuation", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(PasswordRules::parse(&all, "").is_err());
    }

    #[test]
    fn a_json_field_rotation_keeps_the_other_fields() {
        let s = RandomStrategy::from_settings(
            &[("json_field".to_string(), "AccountPassword".to_string())].into(),
        )
        .unwrap();
        let current =
            br#"{"AccountName":"app","AccountPassword":"old","Port":5432,"Nested":{"a":[1,2]}}"#;
        let new = s.new_value(Some(current)).unwrap();
        let before: serde_json::Value = serde_json::from_slice(current).unwrap();
        let after: serde_json::Value = serde_json::from_slice(&new).unwrap();
        for k in ["AccountName", "Port", "Nested"] {
            assert_eq!(before[k], after[k], "{k}");
        }
        let pw = after["AccountPassword"].as_str().unwrap();
        assert_ne!(pw, "old");
        assert_eq!(pw.chars().count(), DEFAULT_LENGTH);
        let e = s.new_value(Some(b"not json")).unwrap_err();
        assert!(!e.message.contains("not json"), "{e}");
    }
}
