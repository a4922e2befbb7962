//! RAM-style policy documents: parsed once at the boundary into [`PolicyDocument`], whose
//! statements hold compiled patterns, so evaluation never re-reads JSON.
//!
//! ```json
//! {"Version": "1", "Statement": [
//!   {"Effect": "Allow", "Action": ["kms:GetSecretValue"], "Resource": ["secret/app/*"]},
//!   {"Effect": "Deny",  "Action": "kms:*",                "Resource": "secret/app/root"}]}
//! ```
//!
//! `*` matches any characters (including `/`), `?` exactly one. Actions compare without
//! regard to ASCII case (`kms:getsecretvalue` is `kms:GetSecretValue`); resources compare
//! exactly. Deny by default; an explicit `Deny` wins over any `Allow`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::FieldError;

/// The only document version understood.
pub const POLICY_VERSION: &str = "1";
/// Most statements in one document.
pub const MAX_STATEMENTS: usize = 256;
/// Most actions or resources in one statement.
pub const MAX_PATTERNS_PER_STATEMENT: usize = 64;
/// Longest action or resource pattern.
pub const MAX_PATTERN_LEN: usize = 512;

/// Resource types a pattern may start with (or `*`).
pub const RESOURCE_TYPES: [&str; 6] = [
    "secret/",
    "key/",
    "alias/",
    "rotation-policy/",
    "principal/",
    "policy/",
];

/// Whether a statement grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Grants the actions on the resources.
    Allow,
    /// Refuses them, whatever any `Allow` says.
    Deny,
}

impl Effect {
    fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `*`: everything.
    Any,
    /// No wildcard.
    Exact,
    /// `literal*` with no other wildcard: a prefix test.
    Prefix,
    /// Anything else.
    Glob,
}

/// A pattern with `*` and `?` wildcards, classified once so that the common shapes
/// (exact, `prefix*`, `*`) are matched without the general algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    shape: Shape,
    /// Match without regard to ASCII case (actions).
    fold_case: bool,
}

impl Pattern {
    fn new(text: &str, fold_case: bool) -> Self {
        let wild = |b: u8| b == b'*' || b == b'?';
        let shape = if text == "*" {
            Shape::Any
        } else if !text.bytes().any(wild) {
            Shape::Exact
        } else if text.ends_with('*') && !text[..text.len() - 1].bytes().any(wild) {
            Shape::Prefix
        } else {
            Shape::Glob
        };
        Self {
            text: text.to_string(),
            shape,
            fold_case,
        }
    }

    /// An action pattern (case-insensitive).
    pub fn action(text: &str) -> Self {
        Self::new(text, true)
    }

    /// A resource pattern (case-sensitive).
    pub fn resource(text: &str) -> Self {
        Self::new(text, false)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern positions a match can be at after reading `prefix` (`*` standing for
    /// any run of characters, also none).
    fn positions_after(&self, prefix: &str) -> Vec<bool> {
        let p = self.text.as_bytes();
        let close = |at: &mut Vec<bool>| {
            for i in 0..p.len() {
                if at[i] && p[i] == b'*' {
                    at[i + 1] = true;
                }
            }
        };
        let mut at = vec![false; p.len() + 1];
        at[0] = true;
        close(&mut at);
        for c in prefix.bytes() {
            let mut next = vec![false; p.len() + 1];
            for i in (0..p.len()).filter(|&i| at[i]) {
                match p[i] {
                    b'*' => next[i] = true,
                    b'?' => next[i + 1] = true,
                    x if x == c || (self.fold_case && x.eq_ignore_ascii_case(&c)) => {
                        next[i + 1] = true
                    }
                    _ => {}
                }
            }
            close(&mut next);
            at = next;
        }
        at
    }

    /// Whether every string that starts with `prefix` matches: some way of reading
    /// `prefix` leaves only `*`s of the pattern.
    pub fn matches_everything_under(&self, prefix: &str) -> bool {
        let p = self.text.as_bytes();
        self.positions_after(prefix)
            .iter()
            .enumerate()
            .any(|(i, &at)| at && i < p.len() && p[i..].iter().all(|&b| b == b'*'))
    }

    /// Whether some string that starts with `prefix` matches: any way of reading
    /// `prefix` (what is left of the pattern then matches some string).
    pub fn matches_something_under(&self, prefix: &str) -> bool {
        self.positions_after(prefix).contains(&true)
    }

    /// Whether `s` matches the whole pattern.
    pub fn matches(&self, s: &str) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            if self.fold_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match self.shape {
            Shape::Any => true,
            Shape::Exact => eq(self.text.as_bytes(), s.as_bytes()),
            Shape::Prefix => {
                let p = &self.text.as_bytes()[..self.text.len() - 1];
                s.len() >= p.len() && eq(p, &s.as_bytes()[..p.len()])
            }
            Shape::Glob => glob(self.text.as_bytes(), s.as_bytes(), self.fold_case),
        }
    }
}

/// Wildcard match in O(len(p) × len(s)) worst case, linear in the usual cases: on a
/// mismatch it backtracks only to the most recent `*`.
fn glob(p: &[u8], s: &[u8], fold_case: bool) -> bool {
    let same = |a: u8, b: u8| {
        if fold_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || same(c, s[si]) => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// One statement: an effect on actions and resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Allow or Deny.
    pub effect: Effect,
    /// Action patterns, such as `kms:GetSecretValue` or `kms:*`.
    pub actions: Vec<Pattern>,
    /// Resource patterns, such as `secret/app/*`.
    pub resources: Vec<Pattern>,
}

impl Statement {
    /// Whether this statement speaks about `action` on `resource`.
    pub fn applies(&self, action: &str, resource: &str) -> bool {
        self.actions.iter().any(|a| a.matches(action))
            && self.resources.iter().any(|r| r.matches(resource))
    }
}

/// The outcome of evaluating statements for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An `Allow` applies and no `Deny` does.
    Allow,
    /// A `Deny` applies.
    ExplicitDeny,
    /// Nothing applies: denied by default.
    ImplicitDeny,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// Evaluates statements (from every policy attached to a principal) for one request.
pub fn evaluate<'a>(
    statements: impl IntoIterator<Item = &'a Statement>,
    action: &str,
    resource: &str,
) -> Decision {
    let mut allowed = false;
    for s in statements {
        match s.effect {
            Effect::Deny if s.applies(action, resource) => return Decision::ExplicitDeny,
            Effect::Allow if !allowed && s.applies(action, resource) => allowed = true,
            _ => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    statements: Vec<Statement>,
}

impl PolicyDocument {
    /// Statements in document order.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// A document from statements already built (built-in policies, tests).
    pub fn from_statements(statements: Vec<Statement>) -> Self {
        Self { statements }
    }

    /// Everything on everything: the built-in `AdministratorAccess`.
    pub fn administrator() -> Self {
        Self::from_statements(vec![Statement {
            effect: Effect::Allow,
            actions: vec![Pattern::action("*")],
            resources: vec![Pattern::resource("*")],
        }])
    }

    /// Parses a document. Errors name the statement index and field, e.g.
    /// `Statement[1].Effect: must be "Allow" or "Deny"`.
    pub fn parse(v: &Value) -> Result<Self, FieldError> {
        let obj = v
            .as_object()
            .ok_or_else(|| FieldError::new("document", "must be a JSON object"))?;
        check_keys(obj, "", &["Version", "Statement"])?;
        match obj.get("Version") {
            Some(Value::String(s)) if s == POLICY_VERSION => {}
            _ => return Err(FieldError::new("Version", "must be \"1\"")),
        }
        let list = match obj.get("Statement") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            _ => {
                return Err(FieldError::new(
                    "Statement",
                    "must be a non-empty array of statements",
                ));
            }
        };
        if list.len() > MAX_STATEMENTS {
            return Err(FieldError::new(
                "Statement",
                format!("at most {MAX_STATEMENTS} statements"),
            ));
        }
        let statements = list
            .iter()
            .enumerate()
            .map(|(i, s)| parse_statement(&format!("Statement[{i}]"), s))
            .collect::<Result<_, _>>()?;
        Ok(Self { statements })
    }

    /// The canonical JSON form: `Action` and `Resource` always arrays.
    pub fn to_value(&self) -> Value {
        let statements: Vec<Value> = self
            .statements
            .iter()
            .map(|s| {
                let list = |ps: &[Pattern]| ps.iter().map(|p| Value::from(p.as_str())).collect();
                serde_json::json!({
                    "Effect": s.effect.as_str(),
                    "Action": Value::Array(list(&s.actions)),
                    "Resource": Value::Array(list(&s.resources)),
                })
            })
            .collect();
        serde_json::json!({"Version": POLICY_VERSION, "Statement": statements})
    }
}

impl std::str::FromStr for PolicyDocument {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: Value = serde_json::from_str(s)
            .map_err(|e| FieldError::new("document", format!("not JSON: {e}")))?;
        Self::parse(&v)
    }
}

fn check_keys(obj: &Map<String, Value>, at: &str, known: &[&str]) -> Result<(), FieldError> {
    for k in obj.keys() {
        if !known.contains(&k.as_str()) {
            let field = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            return Err(FieldError::new(
                field,
                format!("not supported; expected {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn parse_statement(at: &str, v: &Value) -> Result<Statement, FieldError> {
    let obj = v
        .as_object()
        .ok_or_else(|| FieldError::new(at, "must be an object"))?;
    check_keys(obj, at, &["Effect", "Action", "Resource"])?;
    let effect = match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => {
            return Err(FieldError::new(
                format!("{at}.Effect"),
                "must be \"Allow\" or \"Deny\"",
            ));
        }
    };
    let actions = patterns(at, "Action", obj.get("Action"))?
        .into_iter()
        .map(|(field, p)| check_action(&field, &p).map(|()| Pattern::action(&p)))
        .collect::<Result<_, _>>()?;
    let resources = patterns(at, "Resource", obj.get("Resource"))?
        .into_iter()
        .map(|(field, p)| check_resource(&field, &p).map(|()| Pattern::resource(&p)))
        .collect::<Result<_, _>>()?;
    Ok(Statement {
        effect,
        actions,
        resources,
    })
}

/// A string or a non-empty array of strings, with each element's field name.
fn patterns(at: &str, key: &str, v: Option<&Value>) -> Result<Vec<(String, String)>, FieldError> {
    let field = format!("{at}.{key}");
    let expected = "must be a string or a non-empty array of strings";
    let list = match v {
        Some(Value::String(s)) => return Ok(vec![(field, s.clone())]),
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(FieldError::new(field, expected)),
    };
    if list.len() > MAX_PATTERNS_PER_STATEMENT {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_PATTERNS_PER_STATEMENT} entries"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, e)| match e {
            Value::String(s) => Ok((format!("{field}[{i}]"), s.clone())),
            _ => Err(FieldError::new(format!("{field}[{i}]"), "must be a string")),
        })
        .collect()
}

fn check_action(field: &str, p: &str) -> Result<(), FieldError> {
    let part_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?')
    };
    let ok = p.len() <= MAX_PATTERN_LEN
        && (p == "*"
            || p.split_once(':')
                .is_some_and(|(svc, op)| part_ok(svc) && part_ok(op)));
    if !ok {
        return Err(FieldError::new(
            field,
            "must be * or service:Operation (letters and digits, * and ? wildcards), e.g. kms:GetSecretValue or kms:*",
        ));
    }
    Ok(())
}

fn check_resource(field: &str, p: &str) -> Result<(), FieldError> {
    let printable = p.bytes().all(|b| b.is_ascii_graphic());
    let typed = p.starts_with('*') || RESOURCE_TYPES.iter().any(|t| p.starts_with(t));
    if p.is_empty() || p.len() > MAX_PATTERN_LEN || !printable || !typed {
        return Err(FieldError::new(
            field,
            format!(
                "must be * or start with one of {} (printable ASCII, at most {MAX_PATTERN_LEN} characters)",
                RESOURCE_TYPES.join(" ")
            ),
        ));
    }
    Ok(())
}

impl Serialize for PolicyDocument {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PolicyDocument {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::parse(&v).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for PolicyDocument {
    fn schema_name() -> Cow<'static, str> {
        "PolicyDocument".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let patterns = serde_json::json!({
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_PATTERNS_PER_STATEMENT}
            ]
        });
        schemars::json_schema!({
            "description": "A RAM-style policy document. `*` matches any characters including `/`, `?` one character. Deny by default; an explicit Deny wins.",
            "type": "object",
            "required": ["Version", "Statement"],
            "additionalProperties": false,
            "properties": {
                "Version": {"const": "1"},
                "Statement": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_STATEMENTS,
                    "items": {
                        "type": "object",
                        "required": ["Effect", "Action", "Resource"],
                        "additionalProperties": false,
                        "properties": {
                            "Effect": {"enum": ["Allow", "Deny"]},
                            "Action": patterns.clone(),
                            "Resource": patterns
                        }
                    }
                }
            },
            "examples": [{"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["kms:GetSecretValue", "kms:DescribeSecret"], "Resource": ["secret/app/*"]},
                {"Effect": "Deny", "Action": ["kms:*"], "Resource": ["secret/app/root"]}
            ]}]
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn doc(text: &str) -> Result<PolicyDocument, FieldError> {
        text.parse()
    }

    #[test]
    fn patterns_over_every_name_under_a_prefix() {
        let r = Pattern::resource;
        for (pattern, prefix, every, some) in [
            ("principal/*", "principal/ci-", true, true),
            ("*", "principal/", true, true),
            ("principal/ci-*", "principal/ci-adm", true, true),
            ("principal/ci-admin", "principal/ci-adm", false, true),
            ("principal/ci-?dmin", "principal/ci-", false, true),
            ("principal/?", "principal/", false, true),
            ("principal/*x", "principal/a", false, true),
            ("principal/a*b*", "principal/aXb", true, true),
            ("principal/other", "principal/ci-", false, false),
            ("secret/*", "principal/", false, false),
            ("principal/ci-", "principal/ci-", false, true),
        ] {
            assert_eq!(
                r(pattern).matches_everything_under(prefix),
                every,
                "{pattern} over every name under {prefix}"
            );
            assert_eq!(
                r(pattern).matches_something_under(prefix),
                some,
                "{pattern} over some name under {prefix}"
            );
        }
    }

    #[test]
    fn wildcards() {
        let r = Pattern::resource;
        assert!(r("*").matches("secret/a/b"));
        assert!(r("secret/app/*").matches("secret/app/db/x"), "* crosses /");
        assert!(r("secret/app/*").matches("secret/app/"));
        assert!(!r("secret/app/*").matches("secret/apps"));
        assert!(r("secret/a?c").matches("secret/abc"));
        assert!(!r("secret/a?c").matches("secret/ac"));
        assert!(r("secret/*/db").matches("secret/x/y/db"));
        assert!(!r("secret/*/db").matches("secret/x/y/dbx"));
        assert!(r("*db*").matches("secret/mydbcreds"));
        assert!(r("secret/**").matches("secret/"));
        assert!(r("secret/a*b*c").matches("secret/aXbYbZc"));
        assert!(!r("secret/a*b*c").matches("secret/aXbYbZ"));
        assert!(
            !r("secret/App").matches("secret/app"),
            "resources are exact"
        );
        assert!(Pattern::action("kms:get*").matches("kms:GetSecretValue"));
        assert!(Pattern::action("KMS:GetSecretValue").matches("kms:GetSecretValue"));
        assert!(!Pattern::action("kms:Get*").matches("ram:GetPolicy"));
    }

    #[test]
    fn explicit_deny_wins_and_default_is_deny() {
        let d = doc(r#"{"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": ["kms:GetSecretValue", "kms:DescribeSecret"], "Resource": ["secret/app/*"]},
            {"Effect": "Deny", "Action": "kms:*", "Resource": "secret/app/root"}]}"#)
        .unwrap();
        let ev = |a, r| evaluate(d.statements(), a, r);
        assert_eq!(ev("kms:GetSecretValue", "secret/app/db"), Decision::Allow);
        assert_eq!(
            ev("kms:GetSecretValue", "secret/app/root"),
            Decision::ExplicitDeny
        );
        assert_eq!(
            ev("kms:PutSecretValue", "secret/app/db"),
            Decision::ImplicitDeny
        );
        assert_eq!(
            ev("kms:GetSecretValue", "secret/other"),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(PolicyDocument::administrator().statements(), "x:Y", "*"),
            Decision::Allow
        );
    }

    #[test]
    fn errors_name_the_statement_and_field() {
        let cases = [
            (r#"[]"#, "document"),
            (r#"{"Statement": []}"#, "Version"),
            (r#"{"Version": "2", "Statement": []}"#, "Version"),
            (r#"{"Version": "1", "Statement": []}"#, "Statement"),
            (r#"{"Version": "1", "Statement": [], "Extra": 1}"#, "Extra"),
            (
                r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}, {"Effect": "Permit", "Action": "*", "Resource": "*"}]}"#,
                "Statement[1].Effect",
            ),
            (
                r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Resource": "*"}]}"#,
                "Statement[0].Action",
            ),
            (
                r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Action": ["kms:Get", "GetSecretValue"], "Resource": "*"}]}"#,
                "Statement[0].Action[1]",
            ),
            (
                r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": ["secret/a", "secrets/b"]}]}"#,
                "Statement[0].Resource[1]",
            ),
            (
                r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": [7]}]}"#,
                "Statement[0].Resource[0]",
            ),
            (
                r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}]}"#,
                "Statement[0].Condition",
            ),
            (r#"{"Version": "1", "Statement": [3]}"#, "Statement[0]"),
        ];
        for (text, field) in cases {
            let e = doc(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    #[test]
    fn canonical_form_round_trips() {
        let d = doc(r#"{"Version": "1", "Statement": [{"Effect": "Deny", "Action": "kms:*", "Resource": "key/*"}]}"#).unwrap();
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Version": "1", "Statement": [{"Effect": "Deny", "Action": ["kms:*"], "Resource": ["key/*"]}]})
        );
        let back: PolicyDocument = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }
}
