//! A codec for cty values, the value model Terraform uses on the plugin wire.
//!
//! Terraform sends configuration, state and plans as `DynamicValue`s: a cty
//! value encoded as msgpack (always, from Terraform) or JSON (accepted in
//! responses and used for stored state in `RawState.json`). Decoding needs
//! the schema's [`Type`], because the wire format carries no type
//! information except inside `dynamic` slots.
//!
//! The rules follow go-cty's `msgpack` and `json` packages:
//!
//! * **null** is msgpack nil (and JSON `null`); an empty `DynamicValue`
//!   also decodes as null.
//! * **unknown** is any msgpack extension value. Newer Terraform sends
//!   *refined* unknowns as extension type `0x0c` whose payload is kept as
//!   opaque [`Refinements`]. The encoder always writes the plain unknown
//!   `d4 00 00` (fixext1, type 0, data 0), which every Terraform accepts.
//! * **numbers** are arbitrary precision. The decoder accepts any msgpack
//!   int/uint width, float32/float64, or a decimal string; [`Number`] keeps
//!   the exact value (never a lossy `f64`). The encoder writes an int when
//!   the value is an exact integer that fits `i64`, a float64 when the value
//!   is exactly representable as one, and otherwise the decimal text as a
//!   string (so `0.1` from configuration travels back as the string `"0.1"`).
//! * **objects** are msgpack maps keyed by attribute name with *every*
//!   attribute present (nil for nulls), written in byte-sorted key order.
//! * **list / set / tuple** are arrays, **map** is a string-keyed map.
//! * **dynamic** slots hold a two-element array `[type JSON (bin), value]`,
//!   or a bare nil / extension for a null / unknown of unknown type.
//!
//! Entry points: [`decode_msgpack`], [`encode_msgpack`], [`decode_json`],
//! [`encode_json`], and [`Type::from_json`] / [`Type::to_json`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use rmp::Marker;
use rmp::encode::{ByteBuf, ValueWriteError};
use serde_json::value::RawValue;

/// Maximum nesting depth accepted by the decoders and the encoders.
///
/// Types from schemas are shallow, but `dynamic` slots let the input choose
/// its own type, so untrusted input could otherwise nest without bound.
pub const MAX_DEPTH: usize = 256;

/// msgpack extension type used by newer go-cty for refined unknown values.
pub const REFINED_UNKNOWN_EXT: i8 = 0x0c;

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Errors and paths
// ---------------------------------------------------------------------------

/// One step of an [`AttrPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathStep {
    /// An object attribute.
    Attr(String),
    /// A position in a list, set or tuple (for sets: the position on the wire).
    Index(u64),
    /// A map key.
    Key(String),
}

/// Where in a value an error occurred, e.g. `.tags["env"]` or `.rules[2].name`.
///
/// The root path is empty and displays as an empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrPath(Vec<PathStep>);

impl AttrPath {
    /// The path's steps, outermost first.
    pub fn steps(&self) -> &[PathStep] {
        &self.0
    }

    /// Whether this is the root path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path followed by `": "`, or nothing for the root path (used to
    /// prefix error messages).
    fn prefix(&self) -> String {
        if self.0.is_empty() {
            String::new()
        } else {
            format!("{self}: ")
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.0 {
            match step {
                PathStep::Attr(name) => write!(f, ".{name}")?,
                PathStep::Index(i) => write!(f, "[{i}]")?,
                PathStep::Key(key) => write!(f, "[{key:?}]")?,
            }
        }
        Ok(())
    }
}

/// Errors from decoding or encoding cty values and types.
///
/// Messages are stable; those that concern a nested value start with its
/// path (`.attr[0]["key"]: ...`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The msgpack input ended in the middle of a value.
    #[error("{}unexpected end of msgpack data", .path.prefix())]
    UnexpectedEof {
        /// Where the value was being read.
        path: AttrPath,
    },
    /// Bytes were left over after the top-level msgpack value.
    #[error("{count} unexpected trailing bytes after msgpack value")]
    TrailingData {
        /// How many bytes were left.
        count: usize,
    },
    /// The msgpack data held something other than what the type requires.
    #[error("{}{expected} is required", .path.prefix())]
    Expected {
        /// Where the mismatch was found.
        path: AttrPath,
        /// What was required, e.g. `"bool"`, `"a list"`, `"an object"`.
        expected: &'static str,
    },
    /// A number could not be parsed (or is NaN).
    #[error("{}invalid number {text:?}", .path.prefix())]
    InvalidNumber {
        /// Where the number was found.
        path: AttrPath,
        /// The offending text.
        text: String,
    },
    /// A string was not valid UTF-8.
    #[error("{}string is not valid UTF-8", .path.prefix())]
    InvalidUtf8 {
        /// Where the string was found.
        path: AttrPath,
    },
    /// A map or object key was not a string.
    #[error("{}all map and object keys must be strings", .path.prefix())]
    NonStringKey {
        /// The map or object.
        path: AttrPath,
    },
    /// A map or object key appeared twice.
    #[error("{}duplicate key {key:?}", .path.prefix())]
    DuplicateKey {
        /// The map or object.
        path: AttrPath,
        /// The repeated key.
        key: String,
    },
    /// An encoded object did not have exactly the type's attributes.
    #[error("{}an object with {expected} attributes is required ({given} given)", .path.prefix())]
    AttributeCount {
        /// The object.
        path: AttrPath,
        /// Number of attributes in the type.
        expected: usize,
        /// Number of attributes found.
        given: usize,
    },
    /// An object had an attribute the type does not define.
    #[error("{}unsupported attribute {name:?}", .path.prefix())]
    UnsupportedAttribute {
        /// The object.
        path: AttrPath,
        /// The attribute name.
        name: String,
    },
    /// A [`Value::Object`] lacked an attribute of its type (encoding only;
    /// use [`Value::Null`] for null attributes).
    #[error("{}missing attribute {name:?}", .path.prefix())]
    MissingAttribute {
        /// The object.
        path: AttrPath,
        /// The attribute name.
        name: String,
    },
    /// A tuple had the wrong number of elements.
    #[error("{}a tuple of length {expected} is required ({given} given)", .path.prefix())]
    TupleLength {
        /// The tuple.
        path: AttrPath,
        /// Length of the tuple type.
        expected: usize,
        /// Length found.
        given: usize,
    },
    /// A [`Value`] did not conform to the [`Type`] it was encoded with.
    #[error("{}value does not conform to type {expected}", .path.prefix())]
    NonConforming {
        /// Where the mismatch was found.
        path: AttrPath,
        /// The required type, as cty type JSON.
        expected: String,
    },
    /// A known value in a `dynamic` slot was not wrapped in [`Value::Dynamic`],
    /// so its concrete type is unknown.
    #[error("{}a known value of dynamic type must be a Value::Dynamic carrying its type", .path.prefix())]
    DynamicTypeRequired {
        /// Where the value was found.
        path: AttrPath,
    },
    /// Invalid cty type JSON.
    #[error("{}invalid type JSON: {message}", .path.prefix())]
    InvalidType {
        /// Where the type was found (root for [`Type::from_json`]).
        path: AttrPath,
        /// What is wrong with it.
        message: String,
    },
    /// Invalid or non-conforming JSON value input.
    #[error("{}invalid JSON: {message}", .path.prefix())]
    InvalidJson {
        /// Where the problem was found.
        path: AttrPath,
        /// What is wrong.
        message: String,
    },
    /// JSON cannot represent unknown values.
    #[error("{}unknown values cannot be encoded as JSON", .path.prefix())]
    UnknownInJson {
        /// Where the unknown value was found.
        path: AttrPath,
    },
    /// JSON cannot represent infinite numbers.
    #[error("{}infinite numbers cannot be encoded as JSON", .path.prefix())]
    InfiniteInJson {
        /// Where the number was found.
        path: AttrPath,
    },
    /// Values nested deeper than [`MAX_DEPTH`].
    #[error("{}value nesting exceeds the limit of {limit} levels", .path.prefix())]
    TooDeep {
        /// Where the limit was hit.
        path: AttrPath,
        /// The limit ([`MAX_DEPTH`]).
        limit: usize,
    },
    /// A collection or string too large for msgpack's 32-bit lengths.
    #[error("{}value too large for msgpack", .path.prefix())]
    TooLarge {
        /// Where the value was found.
        path: AttrPath,
    },
}

/// Mutable path used while walking a value; errors snapshot it.
#[derive(Default)]
struct Walk {
    steps: Vec<PathStep>,
}

impl Walk {
    fn snapshot(&self) -> AttrPath {
        AttrPath(self.steps.clone())
    }

    fn push(&mut self, step: PathStep) {
        self.steps.push(step);
    }

    fn pop(&mut self) {
        self.steps.pop();
    }

    fn depth_check(&self, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            Err(Error::TooDeep {
                path: self.snapshot(),
                limit: MAX_DEPTH,
            })
        } else {
            Ok(())
        }
    }

    fn expected(&self, expected: &'static str) -> Error {
        Error::Expected {
            path: self.snapshot(),
            expected,
        }
    }

    fn eof(&self) -> Error {
        Error::UnexpectedEof {
            path: self.snapshot(),
        }
    }
}

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/// A cty type, as found in `Schema.Attribute.type` and in dynamic values.
///
/// Serialized as cty type JSON: `"string"`, `"number"`, `"bool"`,
/// `"dynamic"`, `["list",T]`, `["set",T]`, `["map",T]`,
/// `["object",{"name":T,...}]`, `["tuple",[T,...]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    /// `"bool"`.
    Bool,
    /// `"number"`.
    Number,
    /// `"string"`.
    String,
    /// `"dynamic"`: any type, chosen by the value.
    Dynamic,
    /// `["list",T]`.
    List(Box<Type>),
    /// `["set",T]`.
    Set(Box<Type>),
    /// `["map",T]`.
    Map(Box<Type>),
    /// `["object",{...}]`. A third element (optional attribute names, used
    /// only in type constraints) is accepted when parsing and dropped.
    Object(BTreeMap<String, Type>),
    /// `["tuple",[...]]`.
    Tuple(Vec<Type>),
}

impl Type {
    /// `["list",element]`.
    pub fn list(element: Type) -> Type {
        Type::List(Box::new(element))
    }

    /// `["set",element]`.
    pub fn set(element: Type) -> Type {
        Type::Set(Box::new(element))
    }

    /// `["map",element]`.
    pub fn map(element: Type) -> Type {
        Type::Map(Box::new(element))
    }

    /// `["object",{...}]` from `(name, type)` pairs.
    pub fn object<I, K>(attributes: I) -> Type
    where
        I: IntoIterator<Item = (K, Type)>,
        K: Into<String>,
    {
        Type::Object(
            attributes
                .into_iter()
                .map(|(name, ty)| (name.into(), ty))
                .collect(),
        )
    }

    /// Parses cty type JSON, e.g. `["list","string"]`.
    pub fn from_json(json: &[u8]) -> Result<Type> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| Error::InvalidType {
                path: AttrPath::default(),
                message: e.to_string(),
            })?;
        Type::from_json_value(&value)
    }

    /// Parses cty type JSON already parsed into a [`serde_json::Value`].
    pub fn from_json_value(value: &serde_json::Value) -> Result<Type> {
        use serde_json::Value as J;
        let invalid = |message: String| Error::InvalidType {
            path: AttrPath::default(),
            message,
        };
        match value {
            J::String(name) => match name.as_str() {
                "bool" => Ok(Type::Bool),
                "number" => Ok(Type::Number),
                "string" => Ok(Type::String),
                "dynamic" => Ok(Type::Dynamic),
                other => Err(invalid(format!("unsupported primitive type {other:?}"))),
            },
            J::Array(items) => {
                let Some(J::String(kind)) = items.first() else {
                    return Err(invalid(
                        "a complex type must be an array starting with its kind".to_owned(),
                    ));
                };
                let kind = kind.as_str();
                match (kind, items.len()) {
                    ("list" | "set" | "map", 2) => {
                        let element = Box::new(Type::from_json_value(&items[1])?);
                        Ok(match kind {
                            "list" => Type::List(element),
                            "set" => Type::Set(element),
                            _ => Type::Map(element),
                        })
                    }
                    ("object", 2 | 3) => {
                        let J::Object(attributes) = &items[1] else {
                            return Err(invalid("object attributes must be a JSON object".into()));
                        };
                        let mut out = BTreeMap::new();
                        for (name, ty) in attributes {
                            out.insert(name.clone(), Type::from_json_value(ty)?);
                        }
                        if let Some(optional) = items.get(2)
                            && !optional.is_array()
                        {
                            return Err(invalid(
                                "optional object attributes must be a JSON array".into(),
                            ));
                        }
                        Ok(Type::Object(out))
                    }
                    ("tuple", 2) => {
                        let J::Array(elements) = &items[1] else {
                            return Err(invalid("tuple elements must be a JSON array".into()));
                        };
                        elements
                            .iter()
                            .map(Type::from_json_value)
                            .collect::<Result<Vec<_>>>()
                            .map(Type::Tuple)
                    }
                    ("list" | "set" | "map" | "object" | "tuple", n) => Err(invalid(format!(
                        "wrong number of elements ({n}) for a {kind} type"
                    ))),
                    (other, _) => Err(invalid(format!("unsupported type kind {other:?}"))),
                }
            }
            _ => Err(invalid("a type must be a JSON string or array".to_owned())),
        }
    }

    /// Serializes to compact cty type JSON with object attributes in
    /// byte-sorted order (the form go-cty writes).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Type::Bool => out.push_str("\"bool\""),
            Type::Number => out.push_str("\"number\""),
            Type::String => out.push_str("\"string\""),
            Type::Dynamic => out.push_str("\"dynamic\""),
            Type::List(e) | Type::Set(e) | Type::Map(e) => {
                out.push_str(match self {
                    Type::List(_) => "[\"list\",",
                    Type::Set(_) => "[\"set\",",
                    _ => "[\"map\",",
                });
                e.write_json(out);
                out.push(']');
            }
            Type::Object(attributes) => {
                out.push_str("[\"object\",{");
                for (i, (name, ty)) in attributes.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(out, name);
                    out.push(':');
                    ty.write_json(out);
                }
                out.push_str("}]");
            }
            Type::Tuple(elements) => {
                out.push_str("[\"tuple\",[");
                for (i, ty) in elements.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ty.write_json(out);
                }
                out.push_str("]]");
            }
        }
    }
}

impl fmt::Display for Type {
    /// Displays the type as its cty type JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl FromStr for Type {
    type Err = Error;

    /// Parses cty type JSON.
    fn from_str(s: &str) -> Result<Type> {
        Type::from_json(s.as_bytes())
    }
}

/// Appends `s` as a JSON string literal.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

/// An exact cty number.
///
/// cty numbers are arbitrary-precision decimals (go-cty parses them at 512
/// bits). `Number` never rounds: it keeps an integer as an integer, a
/// decimal as its (normalized) decimal text, and a float64 received on the
/// wire as that exact binary value. Equality is numeric: `1`, `1.0`,
/// `"1e0"` and float64 `1.0` are all equal.
///
/// Decimal text is normalized only as far as needed to be valid JSON number
/// text: a leading `+` and leading zeros are dropped, `.5` becomes `0.5`
/// and `5.` becomes `5`; digits and exponents are kept as written (`"1.50"`
/// stays `"1.50"`).
#[derive(Clone, Debug)]
pub struct Number(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Int(i64),
    UInt(u64),
    /// Never NaN; may be infinite.
    Float(f64),
    /// Normalized decimal text in JSON number syntax.
    Decimal(String),
}

/// Canonical form of a number for comparison and exactness checks:
/// `value = ±0.DIGITS × 10^exp`, digits without leading or trailing zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Canon {
    Zero,
    Finite {
        negative: bool,
        digits: String,
        exp: i64,
    },
    Infinite {
        negative: bool,
    },
}

impl Canon {
    /// The integer value, if this is an integer of at most 20 digits.
    fn to_i128(&self) -> Option<i128> {
        match self {
            Canon::Zero => Some(0),
            Canon::Infinite { .. } => None,
            Canon::Finite {
                negative,
                digits,
                exp,
            } => {
                let len = i64::try_from(digits.len()).ok()?;
                if *exp < len || *exp > 20 {
                    return None;
                }
                let mut text = digits.clone();
                for _ in len..*exp {
                    text.push('0');
                }
                let magnitude: i128 = text.parse().ok()?;
                Some(if *negative { -magnitude } else { magnitude })
            }
        }
    }

    fn is_integer(&self) -> bool {
        match self {
            Canon::Zero => true,
            Canon::Infinite { .. } => false,
            Canon::Finite { digits, exp, .. } => {
                i64::try_from(digits.len()).is_ok_and(|len| *exp >= len)
            }
        }
    }
}

/// Validates decimal number text and normalizes it to JSON number syntax.
///
/// Accepts `[+-]? (DIGITS ('.' DIGITS?)? | '.' DIGITS) ([eE] [+-]? DIGITS)?`.
fn normalize_decimal(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut out = String::with_capacity(text.len() + 1);
    match bytes.first() {
        Some(b'-') => {
            out.push('-');
            i += 1;
        }
        Some(b'+') => i += 1,
        _ => {}
    }
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &text[int_start..i];
    let mut frac_digits = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &text[frac_start..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let trimmed = int_digits.trim_start_matches('0');
    out.push_str(if trimmed.is_empty() { "0" } else { trimmed });
    if !frac_digits.is_empty() {
        out.push('.');
        out.push_str(frac_digits);
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        out.push(char::from(bytes[i]));
        i += 1;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            out.push(char::from(bytes[i]));
            i += 1;
        }
        let exp_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
        out.push_str(&text[exp_start..i]);
    }
    (i == bytes.len()).then_some(out)
}

/// Canonical form of decimal text (normalized or as printed by Rust's
/// `{:e}`); `None` if malformed or if the exponent is absurdly large.
fn canon_decimal(text: &str) -> Option<Canon> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(pos) => (&rest[..pos], &rest[pos + 1..]),
        None => (rest, "0"),
    };
    let exponent: i64 = exponent.parse().ok()?;
    if exponent.unsigned_abs() > 1_000_000_000 {
        return None;
    }
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(pos) => (&mantissa[..pos], &mantissa[pos + 1..]),
        None => (mantissa, ""),
    };
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all_digits = format!("{int_part}{frac_part}");
    let leading_zeros = all_digits.len() - all_digits.trim_start_matches('0').len();
    let digits = all_digits.trim_start_matches('0').trim_end_matches('0');
    if digits.is_empty() {
        return Some(Canon::Zero);
    }
    let int_len = i64::try_from(int_part.len()).ok()?;
    let leading = i64::try_from(leading_zeros).ok()?;
    Some(Canon::Finite {
        negative,
        digits: digits.to_owned(),
        exp: int_len - leading + exponent,
    })
}

/// Exact canonical form of a float64 (not NaN).
fn canon_f64(value: f64) -> Canon {
    if value.is_infinite() {
        return Canon::Infinite {
            negative: value < 0.0,
        };
    }
    // Every finite f64 has an exact decimal expansion of at most 767
    // significant digits; Rust's exact formatting prints it (zero-padded).
    canon_decimal(&format!("{value:.800e}")).unwrap_or(Canon::Zero)
}

/// Shortest text that parses back to the same `f64`, in JSON syntax
/// (exponent form for very large or very small magnitudes).
fn format_f64(value: f64) -> String {
    if value.is_infinite() {
        return if value < 0.0 { "-Inf" } else { "+Inf" }.to_owned();
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

impl Number {
    /// An integer.
    pub fn from_i64(value: i64) -> Number {
        Number(Repr::Int(value))
    }

    /// An unsigned integer.
    pub fn from_u64(value: u64) -> Number {
        Number(Repr::UInt(value))
    }

    /// The exact value of a float64; `None` for NaN. Infinities are allowed
    /// (cty has them), though JSON cannot carry them.
    pub fn from_f64(value: f64) -> Option<Number> {
        (!value.is_nan()).then_some(Number(Repr::Float(value)))
    }

    /// Parses decimal text as cty does: `[+-]digits[.digits][e[+-]digits]`
    /// (also `.5` and `5.`), or `inf`/`infinity` with an optional sign
    /// (case-insensitive). The text is kept, normalized to JSON syntax.
    pub fn parse(text: &str) -> Result<Number> {
        let invalid = || Error::InvalidNumber {
            path: AttrPath::default(),
            text: text.to_owned(),
        };
        let unsigned = text.trim_start_matches(['+', '-']);
        if text.len() - unsigned.len() <= 1
            && (unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity"))
        {
            let value = if text.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
            return Ok(Number(Repr::Float(value)));
        }
        let normalized = normalize_decimal(text).ok_or_else(invalid)?;
        canon_decimal(&normalized).ok_or_else(invalid)?;
        if let Ok(int) = normalized.parse::<i64>() {
            // Keep "-0" as text so it round-trips verbatim.
            if normalized != "-0" {
                return Ok(Number(Repr::Int(int)));
            }
        }
        Ok(Number(Repr::Decimal(normalized)))
    }

    fn canon(&self) -> Canon {
        match &self.0 {
            Repr::Int(0) | Repr::UInt(0) => Canon::Zero,
            Repr::Int(i) => canon_decimal(&i.to_string()).unwrap_or(Canon::Zero),
            Repr::UInt(u) => canon_decimal(&u.to_string()).unwrap_or(Canon::Zero),
            Repr::Float(f) => canon_f64(*f),
            Repr::Decimal(text) => canon_decimal(text).unwrap_or(Canon::Zero),
        }
    }

    /// The value as an `i64`, if it is an integer in range (never rounds).
    pub fn to_i64(&self) -> Option<i64> {
        match &self.0 {
            Repr::Int(i) => Some(*i),
            Repr::UInt(u) => i64::try_from(*u).ok(),
            _ => self.canon().to_i128().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a `u64`, if it is a non-negative integer in range.
    pub fn to_u64(&self) -> Option<u64> {
        match &self.0 {
            Repr::Int(i) => u64::try_from(*i).ok(),
            Repr::UInt(u) => Some(*u),
            _ => self.canon().to_i128().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// The nearest `f64` (lossy for decimals like `0.1`; use for display or
    /// arithmetic only, never to send the value back to Terraform).
    pub fn to_f64(&self) -> f64 {
        match &self.0 {
            Repr::Int(i) => *i as f64,
            Repr::UInt(u) => *u as f64,
            Repr::Float(f) => *f,
            Repr::Decimal(text) => text.parse().unwrap_or(f64::NAN),
        }
    }

    /// The value as an `f64` only if that is exact.
    pub fn to_f64_exact(&self) -> Option<f64> {
        let candidate = self.to_f64();
        (candidate.is_finite() && canon_f64(candidate) == self.canon()).then_some(candidate)
    }

    /// Whether the value is a (finite) integer, of any size.
    pub fn is_integer(&self) -> bool {
        self.canon().is_integer()
    }

    /// Whether the value is positive or negative infinity.
    pub fn is_infinite(&self) -> bool {
        matches!(self.0, Repr::Float(f) if f.is_infinite())
    }

    /// Decimal text: integers as digits, decimals as received (normalized),
    /// floats as the shortest text that maps back to the same float64
    /// (`1e300`, `0.5`). Infinities are `+Inf` / `-Inf` (not JSON).
    pub fn to_decimal_string(&self) -> String {
        match &self.0 {
            Repr::Int(i) => i.to_string(),
            Repr::UInt(u) => u.to_string(),
            Repr::Float(f) => format_f64(*f),
            Repr::Decimal(text) => text.clone(),
        }
    }
}

impl Number {
    /// JSON number text with the exact value: like
    /// [`Number::to_decimal_string`], except that a float64 whose shortest
    /// text is not exactly its value is written out in full, so decoding the
    /// JSON gives back the same number.
    fn to_exact_json_text(&self) -> String {
        let text = self.to_decimal_string();
        let Repr::Float(f) = self.0 else {
            return text;
        };
        let exact = canon_f64(f);
        if canon_decimal(&text).as_ref() == Some(&exact) {
            return text;
        }
        match exact {
            Canon::Finite {
                negative,
                digits,
                exp,
            } => {
                let sign = if negative { "-" } else { "" };
                let (head, tail) = digits.split_at(1);
                let dot = if tail.is_empty() { "" } else { "." };
                format!("{sign}{head}{dot}{tail}e{}", exp - 1)
            }
            Canon::Zero | Canon::Infinite { .. } => text,
        }
    }
}

impl PartialEq for Number {
    /// Numeric equality (`1 == 1.0 == "1e0"`).
    fn eq(&self, other: &Number) -> bool {
        match (&self.0, &other.0) {
            (Repr::Int(a), Repr::Int(b)) => a == b,
            (Repr::Decimal(a), Repr::Decimal(b)) if a == b => true,
            _ => self.canon() == other.canon(),
        }
    }
}

impl Eq for Number {}

impl fmt::Display for Number {
    /// Same text as [`Number::to_decimal_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string())
    }
}

impl FromStr for Number {
    type Err = Error;

    /// Same as [`Number::parse`].
    fn from_str(s: &str) -> Result<Number> {
        Number::parse(s)
    }
}

impl From<i64> for Number {
    fn from(value: i64) -> Number {
        Number::from_i64(value)
    }
}

impl From<i32> for Number {
    fn from(value: i32) -> Number {
        Number::from_i64(i64::from(value))
    }
}

impl From<u64> for Number {
    fn from(value: u64) -> Number {
        Number::from_u64(value)
    }
}

impl From<u32> for Number {
    fn from(value: u32) -> Number {
        Number::from_u64(u64::from(value))
    }
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/// Opaque refinement data of an unknown value: the msgpack payload of a
/// refined-unknown extension (type [`REFINED_UNKNOWN_EXT`]), or empty.
///
/// Kept for inspection and logging only; the encoder always writes a plain
/// unknown, which is valid (just less precise) for every Terraform version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refinements(Vec<u8>);

impl Refinements {
    /// Wraps a raw refinement payload.
    pub fn from_bytes(bytes: Vec<u8>) -> Refinements {
        Refinements(bytes)
    }

    /// The raw payload (a msgpack map), empty if there is none.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there is no refinement data.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A cty value. Which variants are valid where is decided by the [`Type`]
/// the value is encoded or decoded with.
///
/// `Null` and `Unknown` are valid for every type. Equality is structural
/// except for numbers, which compare numerically; sets compare in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A null of whatever type the context requires.
    Null,
    /// A value not known until apply, with any refinements received.
    Unknown(Refinements),
    /// A `bool`.
    Bool(bool),
    /// A `number`.
    Number(Number),
    /// A `string`.
    String(String),
    /// A `list`.
    List(Vec<Value>),
    /// A `set`, in wire order. Duplicates are not removed.
    Set(Vec<Value>),
    /// A `map`.
    Map(BTreeMap<String, Value>),
    /// An `object`: every attribute of the type must be present (use
    /// [`Value::Null`] for null attributes).
    Object(BTreeMap<String, Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A value in a `dynamic` slot together with its concrete type (the
    /// inner value may itself be null or unknown: a typed null/unknown).
    Dynamic(Type, Box<Value>),
}

impl Value {
    /// A plain unknown value (no refinements).
    pub fn unknown() -> Value {
        Value::Unknown(Refinements::default())
    }

    /// A string value.
    pub fn string(value: impl Into<String>) -> Value {
        Value::String(value.into())
    }

    /// An object value from `(name, value)` pairs.
    pub fn object<I, K>(attributes: I) -> Value
    where
        I: IntoIterator<Item = (K, Value)>,
        K: Into<String>,
    {
        Value::Object(
            attributes
                .into_iter()
                .map(|(name, value)| (name.into(), value))
                .collect(),
        )
    }

    /// A dynamic value carrying its concrete type.
    pub fn dynamic(ty: Type, value: Value) -> Value {
        Value::Dynamic(ty, Box::new(value))
    }

    /// The value inside any [`Value::Dynamic`] wrappers.
    pub fn unwrap_dynamic(&self) -> &Value {
        let mut value = self;
        while let Value::Dynamic(_, inner) = value {
            value = inner;
        }
        value
    }

    /// Whether the value is null (looking through dynamic wrappers).
    pub fn is_null(&self) -> bool {
        matches!(self.unwrap_dynamic(), Value::Null)
    }

    /// Whether the value itself is unknown (looking through dynamic
    /// wrappers; a collection containing unknowns is *not* unknown).
    pub fn is_unknown(&self) -> bool {
        matches!(self.unwrap_dynamic(), Value::Unknown(_))
    }

    /// Whether neither the value nor anything nested in it is unknown.
    pub fn is_wholly_known(&self) -> bool {
        match self {
            Value::Unknown(_) => false,
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => true,
            Value::List(items) | Value::Set(items) | Value::Tuple(items) => {
                items.iter().all(Value::is_wholly_known)
            }
            Value::Map(entries) | Value::Object(entries) => {
                entries.values().all(Value::is_wholly_known)
            }
            Value::Dynamic(_, inner) => inner.is_wholly_known(),
        }
    }

    /// The bool, if this is a known bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self.unwrap_dynamic() {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string, if this is a known string.
    pub fn as_str(&self) -> Option<&str> {
        match self.unwrap_dynamic() {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a known number.
    pub fn as_number(&self) -> Option<&Number> {
        match self.unwrap_dynamic() {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    /// An attribute of a known object (or an entry of a known map).
    pub fn get_attr(&self, name: &str) -> Option<&Value> {
        match self.unwrap_dynamic() {
            Value::Object(entries) | Value::Map(entries) => entries.get(name),
            _ => None,
        }
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Value {
        Value::Bool(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::String(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::String(value)
    }
}

impl From<Number> for Value {
    fn from(value: Number) -> Value {
        Value::Number(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Number(Number::from_i64(value))
    }
}

// ---------------------------------------------------------------------------
// msgpack decoding
// ---------------------------------------------------------------------------

/// Decodes a msgpack `DynamicValue` payload as a value of type `ty`.
///
/// Empty input decodes as [`Value::Null`] (Terraform's rule for an empty
/// `DynamicValue`). Trailing bytes are an error.
pub fn decode_msgpack(bytes: &[u8], ty: &Type) -> Result<Value> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mut reader = Reader { buf: bytes, pos: 0 };
    let mut walk = Walk::default();
    let value = decode_value(&mut reader, ty, &mut walk, 0)?;
    let rest = bytes.len() - reader.pos;
    if rest != 0 {
        return Err(Error::TrailingData { count: rest });
    }
    Ok(value)
}

/// A cursor over msgpack input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek_marker(&self, walk: &Walk) -> Result<Marker> {
        self.buf
            .get(self.pos)
            .map(|b| Marker::from_u8(*b))
            .ok_or_else(|| walk.eof())
    }

    fn take(&mut self, n: usize, walk: &Walk) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| walk.eof())?;
        let slice = self.buf.get(self.pos..end).ok_or_else(|| walk.eof())?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, walk: &Walk) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, walk)?);
        Ok(out)
    }

    fn u8(&mut self, walk: &Walk) -> Result<u8> {
        Ok(self.array::<1>(walk)?[0])
    }

    fn u16(&mut self, walk: &Walk) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(walk)?))
    }

    fn u32(&mut self, walk: &Walk) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(walk)?))
    }

    fn u64(&mut self, walk: &Walk) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(walk)?))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads a msgpack length (u32) as `usize`.
    fn len32(&mut self, walk: &Walk) -> Result<usize> {
        usize::try_from(self.u32(walk)?).map_err(|_| walk.eof())
    }

    /// If the next value is an extension, consumes it and returns its type
    /// and payload.
    fn try_ext(&mut self, walk: &Walk) -> Result<Option<(i8, &'a [u8])>> {
        let marker = self.peek_marker(walk)?;
        let fixed = match marker {
            Marker::FixExt1 => Some(1),
            Marker::FixExt2 => Some(2),
            Marker::FixExt4 => Some(4),
            Marker::FixExt8 => Some(8),
            Marker::FixExt16 => Some(16),
            Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => None,
            _ => return Ok(None),
        };
        self.pos += 1;
        let len = match (fixed, marker) {
            (Some(n), _) => n,
            (None, Marker::Ext8) => usize::from(self.u8(walk)?),
            (None, Marker::Ext16) => usize::from(self.u16(walk)?),
            _ => self.len32(walk)?,
        };
        let ext_type = i8::from_be_bytes(self.array(walk)?);
        let payload = self.take(len, walk)?;
        Ok(Some((ext_type, payload)))
    }

    /// Consumes a nil if it is next.
    fn try_nil(&mut self, walk: &Walk) -> Result<bool> {
        if self.peek_marker(walk)? == Marker::Null {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Reads a str or bin as raw bytes; `None` (nothing consumed) if the
    /// next value is neither.
    fn try_bytes(&mut self, walk: &Walk) -> Result<Option<&'a [u8]>> {
        let len = match self.peek_marker(walk)? {
            Marker::FixStr(n) => {
                self.pos += 1;
                usize::from(n)
            }
            Marker::Str8 | Marker::Bin8 => {
                self.pos += 1;
                usize::from(self.u8(walk)?)
            }
            Marker::Str16 | Marker::Bin16 => {
                self.pos += 1;
                usize::from(self.u16(walk)?)
            }
            Marker::Str32 | Marker::Bin32 => {
                self.pos += 1;
                self.len32(walk)?
            }
            _ => return Ok(None),
        };
        self.take(len, walk).map(Some)
    }

    /// Reads a str or bin that must be UTF-8.
    fn try_string(&mut self, walk: &Walk) -> Result<Option<&'a str>> {
        match self.try_bytes(walk)? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Error::InvalidUtf8 {
                    path: walk.snapshot(),
                }),
        }
    }

    /// Reads an array header; `None` (nothing consumed) if not an array.
    fn try_array_len(&mut self, walk: &Walk) -> Result<Option<usize>> {
        let len = match self.peek_marker(walk)? {
            Marker::FixArray(n) => {
                self.pos += 1;
                usize::from(n)
            }
            Marker::Array16 => {
                self.pos += 1;
                usize::from(self.u16(walk)?)
            }
            Marker::Array32 => {
                self.pos += 1;
                self.len32(walk)?
            }
            _ => return Ok(None),
        };
        Ok(Some(len))
    }

    /// Reads a map header; `None` (nothing consumed) if not a map.
    fn try_map_len(&mut self, walk: &Walk) -> Result<Option<usize>> {
        let len = match self.peek_marker(walk)? {
            Marker::FixMap(n) => {
                self.pos += 1;
                usize::from(n)
            }
            Marker::Map16 => {
                self.pos += 1;
                usize::from(self.u16(walk)?)
            }
            Marker::Map32 => {
                self.pos += 1;
                self.len32(walk)?
            }
            _ => return Ok(None),
        };
        Ok(Some(len))
    }

    /// Reads a number in any msgpack representation cty accepts.
    fn number(&mut self, walk: &Walk) -> Result<Number> {
        let marker = self.peek_marker(walk)?;
        let number = match marker {
            Marker::FixPos(n) => {
                self.pos += 1;
                Number::from_i64(i64::from(n))
            }
            Marker::FixNeg(n) => {
                self.pos += 1;
                Number::from_i64(i64::from(n))
            }
            Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
                self.pos += 1;
                Number::from_u64(match marker {
                    Marker::U8 => u64::from(self.u8(walk)?),
                    Marker::U16 => u64::from(self.u16(walk)?),
                    Marker::U32 => u64::from(self.u32(walk)?),
                    _ => self.u64(walk)?,
                })
            }
            Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                self.pos += 1;
                Number::from_i64(match marker {
                    Marker::I8 => i64::from(i8::from_be_bytes(self.array(walk)?)),
                    Marker::I16 => i64::from(i16::from_be_bytes(self.array(walk)?)),
                    Marker::I32 => i64::from(i32::from_be_bytes(self.array(walk)?)),
                    _ => i64::from_be_bytes(self.array(walk)?),
                })
            }
            Marker::F32 | Marker::F64 => {
                self.pos += 1;
                let value = if marker == Marker::F32 {
                    f64::from(f32::from_be_bytes(self.array(walk)?))
                } else {
                    f64::from_be_bytes(self.array(walk)?)
                };
                Number::from_f64(value).ok_or_else(|| Error::InvalidNumber {
                    path: walk.snapshot(),
                    text: "NaN".to_owned(),
                })?
            }
            _ => {
                let Some(text) = self.try_string(walk)? else {
                    return Err(walk.expected("number"));
                };
                Number::parse(text).map_err(|_| Error::InvalidNumber {
                    path: walk.snapshot(),
                    text: text.to_owned(),
                })?
            }
        };
        Ok(number)
    }
}

fn decode_value(
    reader: &mut Reader<'_>,
    ty: &Type,
    walk: &mut Walk,
    depth: usize,
) -> Result<Value> {
    walk.depth_check(depth)?;
    if let Some((ext_type, payload)) = reader.try_ext(walk)? {
        // Every extension is an unknown; only type 0x0c carries refinements.
        let refinements = if ext_type == REFINED_UNKNOWN_EXT {
            Refinements(payload.to_vec())
        } else {
            Refinements::default()
        };
        return Ok(Value::Unknown(refinements));
    }
    if *ty == Type::Dynamic {
        return decode_dynamic(reader, walk, depth);
    }
    if reader.try_nil(walk)? {
        return Ok(Value::Null);
    }
    match ty {
        Type::Bool => match reader.peek_marker(walk)? {
            Marker::True => {
                reader.pos += 1;
                Ok(Value::Bool(true))
            }
            Marker::False => {
                reader.pos += 1;
                Ok(Value::Bool(false))
            }
            _ => Err(walk.expected("bool")),
        },
        Type::Number => reader.number(walk).map(Value::Number),
        Type::String => match reader.try_string(walk)? {
            Some(s) => Ok(Value::String(s.to_owned())),
            None => Err(walk.expected("string")),
        },
        Type::List(element) | Type::Set(element) => {
            let is_list = matches!(ty, Type::List(_));
            let Some(len) = reader.try_array_len(walk)? else {
                return Err(walk.expected(if is_list { "a list" } else { "a set" }));
            };
            let items = decode_elements(reader, len, |_| element, walk, depth)?;
            Ok(if is_list {
                Value::List(items)
            } else {
                Value::Set(items)
            })
        }
        Type::Tuple(elements) => {
            let Some(len) = reader.try_array_len(walk)? else {
                return Err(walk.expected("a tuple"));
            };
            if len != elements.len() {
                return Err(Error::TupleLength {
                    path: walk.snapshot(),
                    expected: elements.len(),
                    given: len,
                });
            }
            let items = decode_elements(reader, len, |i| &elements[i], walk, depth)?;
            Ok(Value::Tuple(items))
        }
        Type::Map(element) => {
            let Some(len) = reader.try_map_len(walk)? else {
                return Err(walk.expected("a map"));
            };
            let mut entries = BTreeMap::new();
            for _ in 0..len {
                let Some(key) = reader.try_string(walk)? else {
                    return Err(Error::NonStringKey {
                        path: walk.snapshot(),
                    });
                };
                if entries.contains_key(key) {
                    return Err(Error::DuplicateKey {
                        path: walk.snapshot(),
                        key: key.to_owned(),
                    });
                }
                walk.push(PathStep::Key(key.to_owned()));
                let value = decode_value(reader, element, walk, depth + 1)?;
                walk.pop();
                entries.insert(key.to_owned(), value);
            }
            Ok(Value::Map(entries))
        }
        Type::Object(attributes) => {
            let Some(len) = reader.try_map_len(walk)? else {
                return Err(walk.expected("an object"));
            };
            if len != attributes.len() {
                return Err(Error::AttributeCount {
                    path: walk.snapshot(),
                    expected: attributes.len(),
                    given: len,
                });
            }
            let mut entries = BTreeMap::new();
            for _ in 0..len {
                let Some(name) = reader.try_string(walk)? else {
                    return Err(Error::NonStringKey {
                        path: walk.snapshot(),
                    });
                };
                let Some(attr_ty) = attributes.get(name) else {
                    return Err(Error::UnsupportedAttribute {
                        path: walk.snapshot(),
                        name: name.to_owned(),
                    });
                };
                if entries.contains_key(name) {
                    return Err(Error::DuplicateKey {
                        path: walk.snapshot(),
                        key: name.to_owned(),
                    });
                }
                walk.push(PathStep::Attr(name.to_owned()));
                let value = decode_value(reader, attr_ty, walk, depth + 1)?;
                walk.pop();
                entries.insert(name.to_owned(), value);
            }
            // Count matched and keys were distinct and known: all present.
            Ok(Value::Object(entries))
        }
        Type::Dynamic => decode_dynamic(reader, walk, depth),
    }
}

/// Decodes `len` array elements, the i-th with type `element_type(i)`.
fn decode_elements<'t>(
    reader: &mut Reader<'_>,
    len: usize,
    element_type: impl Fn(usize) -> &'t Type,
    walk: &mut Walk,
    depth: usize,
) -> Result<Vec<Value>> {
    // Every element takes at least one byte: never trust a huge header.
    let mut items = Vec::with_capacity(len.min(reader.remaining()));
    for i in 0..len {
        walk.push(PathStep::Index(i as u64));
        items.push(decode_value(reader, element_type(i), walk, depth + 1)?);
        walk.pop();
    }
    Ok(items)
}

/// Decodes a `dynamic` slot: nil, or `[type JSON, value]`. (Extensions,
/// i.e. wholly unknown values, are handled by the caller.)
fn decode_dynamic(reader: &mut Reader<'_>, walk: &mut Walk, depth: usize) -> Result<Value> {
    if reader.try_nil(walk)? {
        return Ok(Value::Null);
    }
    match reader.try_array_len(walk)? {
        Some(2) => {}
        _ => return Err(walk.expected("a dynamic value array of two elements")),
    }
    let Some(type_json) = reader.try_bytes(walk)? else {
        return Err(walk.expected("type JSON bytes"));
    };
    let ty = Type::from_json(type_json).map_err(|e| match e {
        Error::InvalidType { message, .. } => Error::InvalidType {
            path: walk.snapshot(),
            message,
        },
        other => other,
    })?;
    let value = decode_value(reader, &ty, walk, depth + 1)?;
    Ok(Value::Dynamic(ty, Box::new(value)))
}

// ---------------------------------------------------------------------------
// msgpack encoding
// ---------------------------------------------------------------------------

/// Encodes `value` as msgpack for a `DynamicValue`, following go-cty.
///
/// The value must conform to `ty`: objects must carry every attribute of
/// the type (nulls as [`Value::Null`]), tuples must match in length, and
/// known values in `dynamic` slots must be [`Value::Dynamic`].
pub fn encode_msgpack(value: &Value, ty: &Type) -> Result<Vec<u8>> {
    let mut out = ByteBuf::new();
    let mut walk = Walk::default();
    encode_value(&mut out, value, ty, &mut walk, 0)?;
    Ok(out.into_vec())
}

/// Unwraps a write into a [`ByteBuf`], which cannot fail.
fn infallible<T>(result: Result<T, ValueWriteError<Infallible>>) -> T {
    match result {
        Ok(value) => value,
        Err(
            ValueWriteError::InvalidMarkerWrite(never) | ValueWriteError::InvalidDataWrite(never),
        ) => match never {},
    }
}

fn len_u32(len: usize, walk: &Walk) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::TooLarge {
        path: walk.snapshot(),
    })
}

fn write_str(out: &mut ByteBuf, s: &str, walk: &Walk) -> Result<()> {
    len_u32(s.len(), walk)?;
    infallible(rmp::encode::write_str(out, s));
    Ok(())
}

fn write_number(out: &mut ByteBuf, number: &Number, walk: &Walk) -> Result<()> {
    match &number.0 {
        Repr::Int(i) => {
            infallible(rmp::encode::write_sint(out, *i));
        }
        Repr::UInt(u) => match i64::try_from(*u) {
            Ok(i) => {
                infallible(rmp::encode::write_sint(out, i));
            }
            // Exact either way; go-cty decodes uint64 exactly.
            Err(_) => {
                infallible(rmp::encode::write_uint(out, *u));
            }
        },
        Repr::Float(f) => match number.to_i64() {
            Some(i) => {
                infallible(rmp::encode::write_sint(out, i));
            }
            None => infallible(rmp::encode::write_f64(out, *f)),
        },
        Repr::Decimal(text) => {
            if let Some(i) = number.to_i64() {
                infallible(rmp::encode::write_sint(out, i));
            } else if let Some(f) = number.to_f64_exact() {
                infallible(rmp::encode::write_f64(out, f));
            } else {
                write_str(out, text, walk)?;
            }
        }
    }
    Ok(())
}

fn encode_value(
    out: &mut ByteBuf,
    value: &Value,
    ty: &Type,
    walk: &mut Walk,
    depth: usize,
) -> Result<()> {
    walk.depth_check(depth)?;
    let non_conforming = |walk: &Walk| Error::NonConforming {
        path: walk.snapshot(),
        expected: ty.to_json(),
    };
    match (value, ty) {
        (Value::Unknown(_), _) => {
            // fixext1, type 0, data 0: the plain unknown every Terraform reads.
            out.as_mut_vec().extend_from_slice(&[0xd4, 0x00, 0x00]);
        }
        (Value::Null, _) => {
            let Ok(()) = rmp::encode::write_nil(out);
        }
        (Value::Dynamic(Type::Dynamic, inner), _) => {
            encode_value(out, inner, ty, walk, depth + 1)?;
        }
        (Value::Dynamic(inner_ty, inner), Type::Dynamic) => {
            infallible(rmp::encode::write_array_len(out, 2));
            let type_json = inner_ty.to_json();
            infallible(rmp::encode::write_bin(out, type_json.as_bytes()));
            encode_value(out, inner, inner_ty, walk, depth + 1)?;
        }
        (Value::Dynamic(inner_ty, inner), _) => {
            if inner_ty != ty {
                return Err(non_conforming(walk));
            }
            encode_value(out, inner, ty, walk, depth + 1)?;
        }
        (_, Type::Dynamic) => {
            return Err(Error::DynamicTypeRequired {
                path: walk.snapshot(),
            });
        }
        (Value::Bool(b), Type::Bool) => {
            let Ok(()) = rmp::encode::write_bool(out, *b);
        }
        (Value::Number(n), Type::Number) => write_number(out, n, walk)?,
        (Value::String(s), Type::String) => write_str(out, s, walk)?,
        (Value::List(items), Type::List(element)) | (Value::Set(items), Type::Set(element)) => {
            infallible(rmp::encode::write_array_len(
                out,
                len_u32(items.len(), walk)?,
            ));
            for (i, item) in items.iter().enumerate() {
                walk.push(PathStep::Index(i as u64));
                encode_value(out, item, element, walk, depth + 1)?;
                walk.pop();
            }
        }
        (Value::Tuple(items), Type::Tuple(elements)) => {
            if items.len() != elements.len() {
                return Err(Error::TupleLength {
                    path: walk.snapshot(),
                    expected: elements.len(),
                    given: items.len(),
                });
            }
            infallible(rmp::encode::write_array_len(
                out,
                len_u32(items.len(), walk)?,
            ));
            for (i, (item, element)) in items.iter().zip(elements).enumerate() {
                walk.push(PathStep::Index(i as u64));
                encode_value(out, item, element, walk, depth + 1)?;
                walk.pop();
            }
        }
        (Value::Map(entries), Type::Map(element)) => {
            infallible(rmp::encode::write_map_len(
                out,
                len_u32(entries.len(), walk)?,
            ));
            for (key, item) in entries {
                write_str(out, key, walk)?;
                walk.push(PathStep::Key(key.clone()));
                encode_value(out, item, element, walk, depth + 1)?;
                walk.pop();
            }
        }
        (Value::Object(entries), Type::Object(attributes)) => {
            check_object_keys(entries, attributes, walk)?;
            infallible(rmp::encode::write_map_len(
                out,
                len_u32(attributes.len(), walk)?,
            ));
            // BTreeMap order is byte order, the order go-cty writes.
            for ((name, item), attr_ty) in entries.iter().zip(attributes.values()) {
                write_str(out, name, walk)?;
                walk.push(PathStep::Attr(name.clone()));
                encode_value(out, item, attr_ty, walk, depth + 1)?;
                walk.pop();
            }
        }
        _ => return Err(non_conforming(walk)),
    }
    Ok(())
}

/// Checks that an object value has exactly the type's attributes.
fn check_object_keys(
    entries: &BTreeMap<String, Value>,
    attributes: &BTreeMap<String, Type>,
    walk: &Walk,
) -> Result<()> {
    if let Some(name) = entries.keys().find(|k| !attributes.contains_key(*k)) {
        return Err(Error::UnsupportedAttribute {
            path: walk.snapshot(),
            name: name.clone(),
        });
    }
    if let Some(name) = attributes.keys().find(|k| !entries.contains_key(*k)) {
        return Err(Error::MissingAttribute {
            path: walk.snapshot(),
            name: name.clone(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// Decodes cty JSON (e.g. `RawState.json` or `DynamicValue.json`) as a value
/// of type `ty`.
///
/// Follows go-cty: `null` is null for any type; missing object attributes
/// are null, unknown ones are an error; a dynamic slot is
/// `{"value":V,"type":T}`; primitives convert leniently (a number or bool may
/// arrive as a string and vice versa). Numbers keep their exact text.
/// Empty input decodes as [`Value::Null`].
pub fn decode_json(bytes: &[u8], ty: &Type) -> Result<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let mut walk = Walk::default();
    let raw: &RawValue = serde_json::from_slice(bytes).map_err(|e| Error::InvalidJson {
        path: AttrPath::default(),
        message: e.to_string(),
    })?;
    decode_json_value(raw, ty, &mut walk, 0)
}

fn json_error(walk: &Walk, message: impl Into<String>) -> Error {
    Error::InvalidJson {
        path: walk.snapshot(),
        message: message.into(),
    }
}

/// Parses `raw` as `T`, mapping failures to an [`Error::InvalidJson`].
fn json_parse<'a, T: serde::Deserialize<'a>>(raw: &'a RawValue, walk: &Walk) -> Result<T> {
    serde_json::from_str(raw.get()).map_err(|e| json_error(walk, e.to_string()))
}

fn decode_json_value(raw: &RawValue, ty: &Type, walk: &mut Walk, depth: usize) -> Result<Value> {
    walk.depth_check(depth)?;
    let text = raw.get().trim();
    if text == "null" {
        return Ok(Value::Null);
    }
    let first = text.as_bytes().first().copied().unwrap_or(b' ');
    match ty {
        Type::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ if first == b'"' => match json_parse::<String>(raw, walk)?.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(json_error(walk, "bool is required")),
            },
            _ => Err(json_error(walk, "bool is required")),
        },
        Type::Number => {
            let number_text = if first == b'"' {
                json_parse::<String>(raw, walk)?
            } else if first == b'-' || first.is_ascii_digit() {
                text.to_owned()
            } else {
                return Err(json_error(walk, "number is required"));
            };
            Number::parse(&number_text)
                .map(Value::Number)
                .map_err(|_| Error::InvalidNumber {
                    path: walk.snapshot(),
                    text: number_text,
                })
        }
        Type::String => {
            if first == b'"' {
                json_parse::<String>(raw, walk).map(Value::String)
            } else if first == b'-' || first.is_ascii_digit() || text == "true" || text == "false" {
                Ok(Value::String(text.to_owned()))
            } else {
                Err(json_error(walk, "string is required"))
            }
        }
        Type::List(element) | Type::Set(element) => {
            let is_list = matches!(ty, Type::List(_));
            if first != b'[' {
                return Err(json_error(
                    walk,
                    if is_list {
                        "a list is required"
                    } else {
                        "a set is required"
                    },
                ));
            }
            let raw_items: Vec<&RawValue> = json_parse(raw, walk)?;
            let mut items = Vec::with_capacity(raw_items.len());
            for (i, item) in raw_items.into_iter().enumerate() {
                walk.push(PathStep::Index(i as u64));
                items.push(decode_json_value(item, element, walk, depth + 1)?);
                walk.pop();
            }
            Ok(if is_list {
                Value::List(items)
            } else {
                Value::Set(items)
            })
        }
        Type::Tuple(elements) => {
            if first != b'[' {
                return Err(json_error(walk, "a tuple is required"));
            }
            let raw_items: Vec<&RawValue> = json_parse(raw, walk)?;
            if raw_items.len() != elements.len() {
                return Err(Error::TupleLength {
                    path: walk.snapshot(),
                    expected: elements.len(),
                    given: raw_items.len(),
                });
            }
            let mut items = Vec::with_capacity(raw_items.len());
            for (i, (item, element)) in raw_items.into_iter().zip(elements).enumerate() {
                walk.push(PathStep::Index(i as u64));
                items.push(decode_json_value(item, element, walk, depth + 1)?);
                walk.pop();
            }
            Ok(Value::Tuple(items))
        }
        Type::Map(element) => {
            if first != b'{' {
                return Err(json_error(walk, "a map is required"));
            }
            let raw_entries: BTreeMap<String, &RawValue> = json_parse(raw, walk)?;
            let mut entries = BTreeMap::new();
            for (key, item) in raw_entries {
                walk.push(PathStep::Key(key.clone()));
                let value = decode_json_value(item, element, walk, depth + 1)?;
                walk.pop();
                entries.insert(key, value);
            }
            Ok(Value::Map(entries))
        }
        Type::Object(attributes) => {
            if first != b'{' {
                return Err(json_error(walk, "an object is required"));
            }
            let raw_entries: BTreeMap<String, &RawValue> = json_parse(raw, walk)?;
            if let Some(name) = raw_entries.keys().find(|k| !attributes.contains_key(*k)) {
                return Err(Error::UnsupportedAttribute {
                    path: walk.snapshot(),
                    name: name.clone(),
                });
            }
            let mut entries = BTreeMap::new();
            for (name, attr_ty) in attributes {
                let value = match raw_entries.get(name) {
                    Some(item) => {
                        walk.push(PathStep::Attr(name.clone()));
                        let value = decode_json_value(item, attr_ty, walk, depth + 1)?;
                        walk.pop();
                        value
                    }
                    None => Value::Null,
                };
                entries.insert(name.clone(), value);
            }
            Ok(Value::Object(entries))
        }
        Type::Dynamic => {
            if first != b'{' {
                return Err(json_error(
                    walk,
                    "a dynamic value must be an object with \"value\" and \"type\"",
                ));
            }
            let raw_entries: BTreeMap<String, &RawValue> = json_parse(raw, walk)?;
            if let Some(key) = raw_entries.keys().find(|k| *k != "value" && *k != "type") {
                return Err(json_error(
                    walk,
                    format!("unexpected key {key:?} in dynamic value"),
                ));
            }
            let (Some(raw_type), Some(raw_value)) =
                (raw_entries.get("type"), raw_entries.get("value"))
            else {
                return Err(json_error(
                    walk,
                    "a dynamic value must be an object with \"value\" and \"type\"",
                ));
            };
            let type_json: serde_json::Value = json_parse(raw_type, walk)?;
            let inner_ty = Type::from_json_value(&type_json).map_err(|e| match e {
                Error::InvalidType { message, .. } => Error::InvalidType {
                    path: walk.snapshot(),
                    message,
                },
                other => other,
            })?;
            let inner = decode_json_value(raw_value, &inner_ty, walk, depth + 1)?;
            Ok(Value::Dynamic(inner_ty, Box::new(inner)))
        }
    }
}

/// Encodes `value` as cty JSON (as go-cty does), e.g. for
/// `UpgradeResourceState`'s `upgraded_state.json`.
///
/// Fails on unknown values and infinite numbers, which JSON cannot carry.
/// Numbers keep their exact value: decimals are written as received, and a
/// float64 whose shortest text is inexact (which Terraform never sends) is
/// written with all its digits.
/// Object attributes are written in byte-sorted order; a dynamic slot is
/// written as `{"value":V,"type":T}`.
pub fn encode_json(value: &Value, ty: &Type) -> Result<Vec<u8>> {
    let mut out = String::new();
    let mut walk = Walk::default();
    encode_json_value(&mut out, value, ty, &mut walk, 0)?;
    Ok(out.into_bytes())
}

fn encode_json_value(
    out: &mut String,
    value: &Value,
    ty: &Type,
    walk: &mut Walk,
    depth: usize,
) -> Result<()> {
    walk.depth_check(depth)?;
    let non_conforming = |walk: &Walk| Error::NonConforming {
        path: walk.snapshot(),
        expected: ty.to_json(),
    };
    match (value, ty) {
        (Value::Unknown(_), _) => {
            return Err(Error::UnknownInJson {
                path: walk.snapshot(),
            });
        }
        (Value::Null, _) => out.push_str("null"),
        (Value::Dynamic(Type::Dynamic, inner), _) => {
            encode_json_value(out, inner, ty, walk, depth + 1)?;
        }
        (Value::Dynamic(inner_ty, inner), Type::Dynamic) => {
            out.push_str("{\"value\":");
            encode_json_value(out, inner, inner_ty, walk, depth + 1)?;
            out.push_str(",\"type\":");
            out.push_str(&inner_ty.to_json());
            out.push('}');
        }
        (Value::Dynamic(inner_ty, inner), _) => {
            if inner_ty != ty {
                return Err(non_conforming(walk));
            }
            encode_json_value(out, inner, ty, walk, depth + 1)?;
        }
        (_, Type::Dynamic) => {
            return Err(Error::DynamicTypeRequired {
                path: walk.snapshot(),
            });
        }
        (Value::Bool(b), Type::Bool) => out.push_str(if *b { "true" } else { "false" }),
        (Value::Number(n), Type::Number) => {
            if n.is_infinite() {
                return Err(Error::InfiniteInJson {
                    path: walk.snapshot(),
                });
            }
            out.push_str(&n.to_exact_json_text());
        }
        (Value::String(s), Type::String) => write_json_string(out, s),
        (Value::List(items), Type::List(element)) | (Value::Set(items), Type::Set(element)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                walk.push(PathStep::Index(i as u64));
                encode_json_value(out, item, element, walk, depth + 1)?;
                walk.pop();
            }
            out.push(']');
        }
        (Value::Tuple(items), Type::Tuple(elements)) => {
            if items.len() != elements.len() {
                return Err(Error::TupleLength {
                    path: walk.snapshot(),
                    expected: elements.len(),
                    given: items.len(),
                });
            }
            out.push('[');
            for (i, (item, element)) in items.iter().zip(elements).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                walk.push(PathStep::Index(i as u64));
                encode_json_value(out, item, element, walk, depth + 1)?;
                walk.pop();
            }
            out.push(']');
        }
        (Value::Map(entries), Type::Map(element)) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, key);
                out.push(':');
                walk.push(PathStep::Key(key.clone()));
                encode_json_value(out, item, element, walk, depth + 1)?;
                walk.pop();
            }
            out.push('}');
        }
        (Value::Object(entries), Type::Object(attributes)) => {
            check_object_keys(entries, attributes, walk)?;
            out.push('{');
            for (i, ((name, item), attr_ty)) in entries.iter().zip(attributes.values()).enumerate()
            {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, name);
                out.push(':');
                walk.push(PathStep::Attr(name.clone()));
                encode_json_value(out, item, attr_ty, walk, depth + 1)?;
                walk.pop();
            }
            out.push('}');
        }
        _ => return Err(non_conforming(walk)),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
