//! Tests for the cty value codec: golden bytes, error cases and round trips.

use super::*;
use proptest::prelude::*;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn num(text: &str) -> Value {
    Value::Number(Number::parse(text).expect("valid number"))
}

fn ty(json: &str) -> Type {
    Type::from_json(json.as_bytes()).expect("valid type JSON")
}

// --- golden bytes ----------------------------------------------------------

#[test]
fn unknown_encodes_as_fixext1_zero() {
    for t in [
        Type::String,
        Type::Number,
        ty(r#"["list","string"]"#),
        Type::Dynamic,
    ] {
        assert_eq!(
            encode_msgpack(&Value::unknown(), &t).unwrap(),
            [0xd4, 0x00, 0x00]
        );
    }
    assert_eq!(
        decode_msgpack(&[0xd4, 0x00, 0x00], &Type::String).unwrap(),
        Value::unknown()
    );
}

#[test]
fn any_extension_decodes_as_unknown() {
    // fixext4 of type 5, ext8 with empty payload, ext16 of type 0x7f.
    let cases: [&[u8]; 3] = [
        &[0xd6, 0x05, 1, 2, 3, 4],
        &[0xc7, 0x00, 0x00],
        &[0xc8, 0x00, 0x02, 0x7f, 0xaa, 0xbb],
    ];
    for bytes in cases {
        assert_eq!(
            decode_msgpack(bytes, &Type::Number).unwrap(),
            Value::unknown()
        );
    }
}

#[test]
fn refined_unknown_keeps_payload_and_reencodes_plain() {
    // ext8, length 5, type 0x0c, payload {1: true, 2: "ab"} (not null, prefix "ab").
    let payload = [0x82, 0x01, 0xc3, 0x02, 0xa2];
    let mut bytes = vec![0xc7, 0x06, 0x0c];
    bytes.extend_from_slice(&payload);
    bytes.push(b'a');
    let value = decode_msgpack(&bytes, &Type::String).unwrap();
    let Value::Unknown(refinements) = &value else {
        panic!("expected unknown, got {value:?}");
    };
    assert_eq!(refinements.as_bytes(), [0x82, 0x01, 0xc3, 0x02, 0xa2, b'a']);
    assert!(value.is_unknown());
    assert_eq!(
        encode_msgpack(&value, &Type::String).unwrap(),
        [0xd4, 0x00, 0x00]
    );

    // Also nested in an object attribute.
    let t = ty(r#"["object",{"id":"string"}]"#);
    let mut obj = vec![0x81, 0xa2, b'i', b'd'];
    obj.extend_from_slice(&bytes);
    let value = decode_msgpack(&obj, &t).unwrap();
    assert!(value.get_attr("id").unwrap().is_unknown());
    assert!(!value.is_wholly_known());
}

#[test]
fn decimal_string_number_keeps_its_text() {
    let bytes = [0xa3, b'0', b'.', b'1'];
    let value = decode_msgpack(&bytes, &Type::Number).unwrap();
    let n = value.as_number().unwrap();
    assert_eq!(n.to_decimal_string(), "0.1");
    assert_eq!(n.to_f64_exact(), None);
    assert_eq!(n.to_f64(), 0.1);
    // Re-encoded as the same string, never as the float64 nearest to 0.1.
    assert_eq!(encode_msgpack(&value, &Type::Number).unwrap(), bytes);
    // And 0.1 as a float64 is a different number.
    assert_ne!(*n, Number::from_f64(0.1).unwrap());
}

#[test]
fn number_encoding_rules() {
    let cases: &[(&str, &[u8])] = &[
        ("0", &[0x00]),
        ("5", &[0x05]),
        ("-1", &[0xff]),
        ("1e3", &[0xcd, 0x03, 0xe8]),
        ("1.50e1", &[0x0f]),
        ("-129", &[0xd1, 0xff, 0x7f]),
        ("0.5", &[0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]),
        ("2.5", &[0xcb, 0x40, 0x04, 0, 0, 0, 0, 0, 0]),
        // 2^63 is not an i64 but is exactly a float64.
        ("9223372036854775808", &[0xcb, 0x43, 0xe0, 0, 0, 0, 0, 0, 0]),
        ("0.1", &[0xa3, b'0', b'.', b'1']),
        ("123456789012345678901", b"\xb5123456789012345678901"),
    ];
    for (text, expected) in cases {
        let got = encode_msgpack(&num(text), &Type::Number).unwrap();
        assert_eq!(hex(&got), hex(expected), "encoding {text}");
    }
    // A float64 that is not a short decimal still travels as that float64.
    let f = Value::Number(Number::from_f64(0.1).unwrap());
    assert_eq!(
        hex(&encode_msgpack(&f, &Type::Number).unwrap()),
        "cb 3f b9 99 99 99 99 99 9a"
    );
    let inf = Value::Number(Number::from_f64(f64::INFINITY).unwrap());
    assert_eq!(
        hex(&encode_msgpack(&inf, &Type::Number).unwrap()),
        "cb 7f f0 00 00 00 00 00 00"
    );
    // u64 beyond i64 stays exact as msgpack uint64.
    let big = Value::Number(Number::from_u64(u64::MAX));
    assert_eq!(
        hex(&encode_msgpack(&big, &Type::Number).unwrap()),
        "cf ff ff ff ff ff ff ff ff"
    );
}

#[test]
fn number_decoding_accepts_every_width() {
    let cases: &[(&[u8], &str)] = &[
        (&[0x7f], "127"),
        (&[0xe0], "-32"),
        (&[0xcc, 0xff], "255"),
        (&[0xcd, 0xff, 0xff], "65535"),
        (&[0xce, 0xff, 0xff, 0xff, 0xff], "4294967295"),
        (
            &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "18446744073709551615",
        ),
        (&[0xd0, 0x80], "-128"),
        (&[0xd1, 0x80, 0x00], "-32768"),
        (&[0xd2, 0x80, 0x00, 0x00, 0x00], "-2147483648"),
        (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0], "-9223372036854775808"),
        (&[0xca, 0x3f, 0xc0, 0x00, 0x00], "1.5"),
        (&[0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0], "0.5"),
        (b"\xa51e400", "1e400"),
        (b"\xc4\x031.0", "1.0"),
    ];
    for (bytes, text) in cases {
        let value = decode_msgpack(bytes, &Type::Number).unwrap();
        assert_eq!(value, num(text), "decoding {}", hex(bytes));
    }
    let err = decode_msgpack(b"\xa3abc", &Type::Number).unwrap_err();
    assert_eq!(err.to_string(), "invalid number \"abc\"");
    let err = decode_msgpack(&[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0], &Type::Number).unwrap_err();
    assert_eq!(err.to_string(), "invalid number \"NaN\"");
    let err = decode_msgpack(&[0xc3], &Type::Number).unwrap_err();
    assert_eq!(err.to_string(), "number is required");
}

#[test]
fn object_with_null_attribute() {
    let t = ty(r#"["object",{"b":"number","a":"string"}]"#);
    let value = Value::object([("a", Value::string("x")), ("b", Value::Null)]);
    let bytes = encode_msgpack(&value, &t).unwrap();
    // Map of 2, keys sorted, null as nil.
    assert_eq!(hex(&bytes), "82 a1 61 a1 78 a1 62 c0");
    assert_eq!(decode_msgpack(&bytes, &t).unwrap(), value);
    // Key order on input does not matter.
    let reordered = [0x82, 0xa1, b'b', 0xc0, 0xa1, b'a', 0xa1, b'x'];
    assert_eq!(decode_msgpack(&reordered, &t).unwrap(), value);
}

#[test]
fn object_errors() {
    let t = ty(r#"["object",{"a":"string","b":"number"}]"#);
    let err = decode_msgpack(&[0x81, 0xa1, b'a', 0xc0], &t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "an object with 2 attributes is required (1 given)"
    );
    let err = decode_msgpack(&[0x82, 0xa1, b'a', 0xc0, 0xa1, b'z', 0xc0], &t).unwrap_err();
    assert_eq!(err.to_string(), "unsupported attribute \"z\"");
    let err = decode_msgpack(&[0x82, 0xa1, b'a', 0xc0, 0xa1, b'a', 0xc0], &t).unwrap_err();
    assert_eq!(err.to_string(), "duplicate key \"a\"");
    let err = decode_msgpack(&[0x82, 0xa1, b'a', 0x01, 0xa1, b'b', 0xc0], &t).unwrap_err();
    assert_eq!(err.to_string(), ".a: string is required");
    assert_eq!(
        err,
        Error::Expected {
            path: AttrPath(vec![PathStep::Attr("a".into())]),
            expected: "string"
        }
    );

    let missing = Value::object([("a", Value::Null)]);
    let err = encode_msgpack(&missing, &t).unwrap_err();
    assert_eq!(err.to_string(), "missing attribute \"b\"");
    let extra = Value::object([("a", Value::Null), ("b", Value::Null), ("c", Value::Null)]);
    let err = encode_msgpack(&extra, &t).unwrap_err();
    assert_eq!(err.to_string(), "unsupported attribute \"c\"");
    let wrong = Value::object([("a", Value::from(1)), ("b", Value::Null)]);
    let err = encode_msgpack(&wrong, &t).unwrap_err();
    assert_eq!(
        err.to_string(),
        ".a: value does not conform to type \"string\""
    );
}

#[test]
fn dynamic_value_is_type_and_value_pair() {
    let value = Value::dynamic(Type::String, Value::string("hi"));
    let bytes = encode_msgpack(&value, &Type::Dynamic).unwrap();
    assert_eq!(hex(&bytes), hex(b"\x92\xc4\x08\"string\"\xa2hi"));
    assert_eq!(decode_msgpack(&bytes, &Type::Dynamic).unwrap(), value);
    // The type JSON may also arrive as a msgpack str.
    let as_str = b"\x92\xa8\"string\"\xa2hi";
    assert_eq!(decode_msgpack(as_str, &Type::Dynamic).unwrap(), value);

    // Complex inner type, nested in an object attribute.
    let t = ty(r#"["object",{"v":"dynamic"}]"#);
    let inner_ty = ty(r#"["list","number"]"#);
    let value = Value::object([(
        "v",
        Value::dynamic(inner_ty.clone(), Value::List(vec![num("1"), num("0.1")])),
    )]);
    let bytes = encode_msgpack(&value, &t).unwrap();
    let mut expected = b"\x81\xa1v\x92\xc4\x11[\"list\",\"number\"]\x92\x01".to_vec();
    expected.extend_from_slice(b"\xa30.1");
    assert_eq!(hex(&bytes), hex(&expected));
    assert_eq!(decode_msgpack(&bytes, &t).unwrap(), value);

    // Null, wholly unknown, typed null and typed unknown.
    assert_eq!(
        decode_msgpack(&[0xc0], &Type::Dynamic).unwrap(),
        Value::Null
    );
    assert_eq!(
        decode_msgpack(&[0xd4, 0, 0], &Type::Dynamic).unwrap(),
        Value::unknown()
    );
    let typed_null = Value::dynamic(Type::Bool, Value::Null);
    let bytes = encode_msgpack(&typed_null, &Type::Dynamic).unwrap();
    assert_eq!(hex(&bytes), hex(b"\x92\xc4\x06\"bool\"\xc0"));
    assert_eq!(decode_msgpack(&bytes, &Type::Dynamic).unwrap(), typed_null);
    let typed_unknown = Value::dynamic(Type::Bool, Value::unknown());
    let bytes = encode_msgpack(&typed_unknown, &Type::Dynamic).unwrap();
    assert_eq!(
        decode_msgpack(&bytes, &Type::Dynamic).unwrap(),
        typed_unknown
    );

    // A known value without its type cannot go into a dynamic slot.
    let err = encode_msgpack(&Value::string("x"), &Type::Dynamic).unwrap_err();
    assert!(matches!(err, Error::DynamicTypeRequired { .. }));
    // Errors inside dynamic decoding.
    let err = decode_msgpack(&[0x91, 0xc0], &Type::Dynamic).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a dynamic value array of two elements is required"
    );
    let err = decode_msgpack(b"\x92\xc4\x06\"nope\"\xc0", &Type::Dynamic).unwrap_err();
    assert!(matches!(err, Error::InvalidType { .. }), "{err}");
}

#[test]
fn set_is_an_array() {
    let t = ty(r#"["set","string"]"#);
    let value = Value::Set(vec![Value::string("a"), Value::string("b")]);
    let bytes = encode_msgpack(&value, &t).unwrap();
    assert_eq!(hex(&bytes), "92 a1 61 a1 62");
    assert_eq!(decode_msgpack(&bytes, &t).unwrap(), value);
    assert_eq!(decode_msgpack(&[0x90], &t).unwrap(), Value::Set(vec![]));
}

#[test]
fn map_is_a_string_keyed_map() {
    let t = ty(r#"["map","number"]"#);
    let value = Value::Map(BTreeMap::from([
        ("y".to_owned(), num("2.5")),
        ("x".to_owned(), num("1")),
    ]));
    let bytes = encode_msgpack(&value, &t).unwrap();
    assert_eq!(hex(&bytes), "82 a1 78 01 a1 79 cb 40 04 00 00 00 00 00 00");
    assert_eq!(decode_msgpack(&bytes, &t).unwrap(), value);
    let err = decode_msgpack(&[0x81, 0x01, 0x01], &t).unwrap_err();
    assert_eq!(err.to_string(), "all map and object keys must be strings");
}

#[test]
fn tuple_and_list() {
    let t = ty(r#"["tuple",["string","bool"]]"#);
    let value = Value::Tuple(vec![Value::string("a"), Value::Bool(true)]);
    let bytes = encode_msgpack(&value, &t).unwrap();
    assert_eq!(hex(&bytes), "92 a1 61 c3");
    assert_eq!(decode_msgpack(&bytes, &t).unwrap(), value);
    let err = decode_msgpack(&[0x91, 0xc0], &t).unwrap_err();
    assert_eq!(err.to_string(), "a tuple of length 2 is required (1 given)");

    let t = ty(r#"["list",["list","bool"]]"#);
    let err = decode_msgpack(&[0x92, 0x90, 0x91, 0x01], &t).unwrap_err();
    assert_eq!(err.to_string(), "[1][0]: bool is required");
}

#[test]
fn nulls_empty_input_and_framing() {
    assert_eq!(decode_msgpack(&[], &Type::String).unwrap(), Value::Null);
    assert_eq!(
        decode_msgpack(&[0xc0], &ty(r#"["list","string"]"#)).unwrap(),
        Value::Null
    );
    let err = decode_msgpack(&[0xc0, 0x00], &Type::String).unwrap_err();
    assert_eq!(err, Error::TrailingData { count: 1 });
    let err = decode_msgpack(&[0xa5, b'a'], &Type::String).unwrap_err();
    assert_eq!(err.to_string(), "unexpected end of msgpack data");
    // A huge array header with no data fails cleanly (no huge allocation).
    let err =
        decode_msgpack(&[0xdd, 0xff, 0xff, 0xff, 0xff], &ty(r#"["list","bool"]"#)).unwrap_err();
    assert_eq!(err.to_string(), "[0]: unexpected end of msgpack data");
    let err = decode_msgpack(&[0xa2, 0xff, 0xfe], &Type::String).unwrap_err();
    assert_eq!(err.to_string(), "string is not valid UTF-8");
    let err = decode_msgpack(&[0xc1], &Type::Bool).unwrap_err();
    assert_eq!(err.to_string(), "bool is required");
}

#[test]
fn depth_is_limited() {
    // list(dynamic) nested through dynamic values without bound.
    let mut bytes = Vec::new();
    for _ in 0..(MAX_DEPTH + 5) {
        bytes.extend_from_slice(b"\x92\xc4\x12[\"list\",\"dynamic\"]\x91");
    }
    bytes.push(0xc0);
    let err = decode_msgpack(&bytes, &Type::Dynamic).unwrap_err();
    assert!(matches!(err, Error::TooDeep { .. }), "{err}");
}

// --- types -----------------------------------------------------------------

#[test]
fn type_json_round_trip() {
    let cases = [
        r#""string""#,
        r#""number""#,
        r#""bool""#,
        r#""dynamic""#,
        r#"["list","string"]"#,
        r#"["set",["object",{"a":"string","n":"number"}]]"#,
        r#"["map",["tuple",["bool",["list","dynamic"]]]]"#,
        r#"["object",{}]"#,
        r#"["tuple",[]]"#,
    ];
    for json in cases {
        let t = ty(json);
        assert_eq!(t.to_json(), json);
        assert_eq!(json.parse::<Type>().unwrap(), t);
    }
    // Whitespace and attribute order are normalized; optional attrs dropped.
    let t = ty(r#"[ "object", { "z": "bool", "a": "string" }, ["z"] ]"#);
    assert_eq!(t.to_json(), r#"["object",{"a":"string","z":"bool"}]"#);
    assert_eq!(t, Type::object([("a", Type::String), ("z", Type::Bool)]));
    for bad in [
        r#""float""#,
        r#"["list"]"#,
        r#"["list","string","x"]"#,
        r#"["object",[]]"#,
        r#"["frob","string"]"#,
        "42",
        "not json",
    ] {
        let err = Type::from_json(bad.as_bytes()).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid type JSON: "),
            "{bad}: {err}"
        );
    }
}

// --- numbers ---------------------------------------------------------------

#[test]
fn number_text_and_helpers() {
    assert_eq!(
        Number::parse("+007.50").unwrap().to_decimal_string(),
        "7.50"
    );
    assert_eq!(Number::parse(".5").unwrap().to_decimal_string(), "0.5");
    assert_eq!(Number::parse("5.").unwrap().to_decimal_string(), "5");
    assert_eq!(Number::parse("1E+3").unwrap().to_i64(), Some(1000));
    assert_eq!(Number::parse("1.5").unwrap().to_i64(), None);
    assert_eq!(Number::parse("-12.000").unwrap().to_i64(), Some(-12));
    assert_eq!(Number::parse("-1").unwrap().to_u64(), None);
    assert_eq!(
        Number::parse("18446744073709551615").unwrap().to_u64(),
        Some(u64::MAX)
    );
    assert_eq!(Number::parse("1e30").unwrap().to_i64(), None);
    assert!(Number::parse("1e30").unwrap().is_integer());
    assert!(Number::parse("-inf").unwrap().is_infinite());
    assert_eq!(
        Number::parse("-Infinity").unwrap().to_f64(),
        f64::NEG_INFINITY
    );
    for bad in [
        "",
        "-",
        "1e",
        "e5",
        "1.2.3",
        "0x10",
        " 1",
        "1_000",
        "NaN",
        "--1",
        "1e99999999999",
    ] {
        assert!(Number::parse(bad).is_err(), "{bad:?} should be rejected");
    }
    // Numeric equality across representations.
    assert_eq!(
        Number::parse("1").unwrap(),
        Number::parse("1.000e0").unwrap()
    );
    assert_eq!(
        Number::from_f64(0.5).unwrap(),
        Number::parse("5e-1").unwrap()
    );
    assert_eq!(Number::from_u64(7), Number::from_i64(7));
    assert_eq!(Number::parse("-0").unwrap(), Number::from_i64(0));
    assert_ne!(
        Number::parse("0.1").unwrap(),
        Number::parse("0.10000001").unwrap()
    );
    // Float text is the shortest round-trip form.
    assert_eq!(Number::from_f64(0.1).unwrap().to_string(), "0.1");
    assert_eq!(Number::from_f64(1e300).unwrap().to_string(), "1e300");
    assert_eq!(Number::from_f64(5.0).unwrap().to_string(), "5");
    // Exact float check sees the true binary value of 0.1.
    assert_eq!(
        canon_f64(0.1),
        Canon::Finite {
            negative: false,
            digits: "1000000000000000055511151231257827021181583404541015625".into(),
            exp: 0,
        }
    );
    assert_eq!(Number::parse("0.125").unwrap().to_f64_exact(), Some(0.125));
    assert_eq!(Number::parse("1e400").unwrap().to_f64_exact(), None);
}

// --- JSON ------------------------------------------------------------------

#[test]
fn json_state_decoding() {
    let t = ty(
        r#"["object",{"id":"string","ratio":"number","tags":["map","string"],
            "ports":["set","number"],"extra":"dynamic","gone":"bool"}]"#,
    );
    let json = br#"{
        "id": "abc",
        "ratio": 0.1,
        "tags": {"env": "prod"},
        "ports": [80, 443],
        "extra": {"value": ["x", 1], "type": ["tuple", ["string", "number"]]}
    }"#;
    let value = decode_json(json, &t).unwrap();
    assert_eq!(value.get_attr("gone"), Some(&Value::Null));
    assert_eq!(
        value
            .get_attr("ratio")
            .unwrap()
            .as_number()
            .unwrap()
            .to_decimal_string(),
        "0.1"
    );
    assert_eq!(
        value.get_attr("extra").unwrap(),
        &Value::dynamic(
            ty(r#"["tuple",["string","number"]]"#),
            Value::Tuple(vec![Value::string("x"), num("1")])
        )
    );
    // The decoded state re-encodes as msgpack with 0.1 kept as text.
    let bytes = encode_msgpack(&value, &t).unwrap();
    assert!(bytes.windows(4).any(|w| w == b"\xa30.1"));
    assert_eq!(decode_msgpack(&bytes, &t).unwrap(), value);

    // And back to JSON.
    let json_out = encode_json(&value, &t).unwrap();
    assert_eq!(
        String::from_utf8(json_out).unwrap(),
        r#"{"extra":{"value":["x",1],"type":["tuple",["string","number"]]},"gone":null,"id":"abc","ports":[80,443],"ratio":0.1,"tags":{"env":"prod"}}"#
    );
}

#[test]
fn json_lenient_primitives_and_errors() {
    assert_eq!(
        decode_json(br#""12.50""#, &Type::Number).unwrap(),
        num("12.50")
    );
    assert_eq!(
        decode_json(br#""true""#, &Type::Bool).unwrap(),
        Value::Bool(true)
    );
    assert_eq!(
        decode_json(b"12", &Type::String).unwrap(),
        Value::string("12")
    );
    assert_eq!(
        decode_json(b"false", &Type::String).unwrap(),
        Value::string("false")
    );
    assert_eq!(decode_json(b"", &Type::String).unwrap(), Value::Null);

    let t = ty(r#"["object",{"a":"string"}]"#);
    let err = decode_json(br#"{"a":"x","b":1}"#, &t).unwrap_err();
    assert_eq!(err.to_string(), "unsupported attribute \"b\"");
    let err = decode_json(br#"{"a":[1]}"#, &t).unwrap_err();
    assert_eq!(err.to_string(), ".a: invalid JSON: string is required");
    let err = decode_json(b"{", &t).unwrap_err();
    assert!(err.to_string().starts_with("invalid JSON: "), "{err}");
    let err = decode_json(br#"{"value":1}"#, &Type::Dynamic).unwrap_err();
    assert!(err.to_string().starts_with("invalid JSON: "), "{err}");

    let err = encode_json(&Value::unknown(), &Type::String).unwrap_err();
    assert_eq!(err.to_string(), "unknown values cannot be encoded as JSON");
    let inf = Value::Number(Number::from_f64(f64::INFINITY).unwrap());
    assert!(matches!(
        encode_json(&inf, &Type::Number),
        Err(Error::InfiniteInJson { .. })
    ));
    assert_eq!(
        encode_json(&Value::string("a\"\n\u{1}"), &Type::String).unwrap(),
        br#""a\"\n\u0001""#
    );
}

// --- round trips -----------------------------------------------------------

/// A few hand-built type/value pairs.
fn samples() -> Vec<(Type, Value)> {
    let resource = ty(
        r#"["object",{"id":"string","version":"number","enabled":"bool",
            "labels":["map","string"],"members":["set","string"],
            "rules":["list",["object",{"name":"string","limit":"number"}]],
            "meta":"dynamic","pair":["tuple",["string","number"]]}]"#,
    );
    let full = Value::object([
        ("id", Value::string("sec-1")),
        ("version", num("3")),
        ("enabled", Value::Bool(true)),
        (
            "labels",
            Value::Map(BTreeMap::from([("team".into(), Value::string("core"))])),
        ),
        (
            "members",
            Value::Set(vec![Value::string("a"), Value::string("b")]),
        ),
        (
            "rules",
            Value::List(vec![
                Value::object([("name", Value::string("r1")), ("limit", num("0.25"))]),
                Value::object([("name", Value::string("r2")), ("limit", num("1e-7"))]),
            ]),
        ),
        (
            "meta",
            Value::dynamic(ty(r#"["map","bool"]"#), Value::Map(BTreeMap::new())),
        ),
        ("pair", Value::Tuple(vec![Value::string("x"), num("-42")])),
    ]);
    let planned = Value::object([
        ("id", Value::unknown()),
        ("version", Value::unknown()),
        ("enabled", Value::Null),
        ("labels", Value::Null),
        ("members", Value::Set(vec![])),
        ("rules", Value::List(vec![])),
        ("meta", Value::Null),
        ("pair", Value::unknown()),
    ]);
    vec![
        (resource.clone(), full),
        (resource.clone(), planned),
        (resource, Value::Null),
        (
            Type::Number,
            num("123456789012345678901234567890.000000000000000000001"),
        ),
        (Type::String, Value::string("ünïcødé ✓")),
    ]
}

#[test]
fn hand_built_round_trips() {
    for (t, value) in samples() {
        let bytes = encode_msgpack(&value, &t).unwrap();
        assert_eq!(decode_msgpack(&bytes, &t).unwrap(), value, "msgpack {t}");
        // Encoding is deterministic.
        assert_eq!(encode_msgpack(&value, &t).unwrap(), bytes);
        if value.is_wholly_known() {
            let json = encode_json(&value, &t).unwrap();
            assert_eq!(decode_json(&json, &t).unwrap(), value, "json {t}");
        }
    }
}

fn arb_type() -> impl Strategy<Value = Type> {
    let leaf = prop_oneof![
        Just(Type::Bool),
        Just(Type::Number),
        Just(Type::String),
        Just(Type::Dynamic),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(Type::list),
            inner.clone().prop_map(Type::set),
            inner.clone().prop_map(Type::map),
            prop::collection::btree_map("[a-z_]{1,6}", inner.clone(), 0..4).prop_map(Type::Object),
            prop::collection::vec(inner, 0..3).prop_map(Type::Tuple),
        ]
    })
}

fn arb_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from_i64),
        any::<u64>().prop_map(Number::from_u64),
        any::<f64>().prop_filter_map("finite", |f| {
            f.is_finite().then(|| Number::from_f64(f)).flatten()
        }),
        "-?[0-9]{1,25}(\\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?"
            .prop_map(|s| Number::parse(&s).expect("generated decimal")),
    ]
}

fn arb_value(t: Type, allow_unknown: bool) -> BoxedStrategy<Value> {
    let known: BoxedStrategy<Value> = match &t {
        Type::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Type::Number => arb_number().prop_map(Value::Number).boxed(),
        Type::String => any::<String>().prop_map(Value::String).boxed(),
        Type::List(e) => prop::collection::vec(arb_value((**e).clone(), allow_unknown), 0..4)
            .prop_map(Value::List)
            .boxed(),
        Type::Set(e) => prop::collection::vec(arb_value((**e).clone(), allow_unknown), 0..4)
            .prop_map(Value::Set)
            .boxed(),
        Type::Map(e) => {
            prop::collection::btree_map(".{0,4}", arb_value((**e).clone(), allow_unknown), 0..4)
                .prop_map(Value::Map)
                .boxed()
        }
        Type::Object(attributes) => {
            let names: Vec<String> = attributes.keys().cloned().collect();
            let values: Vec<BoxedStrategy<Value>> = attributes
                .values()
                .map(|a| arb_value(a.clone(), allow_unknown))
                .collect();
            values
                .prop_map(move |vs| Value::Object(names.iter().cloned().zip(vs).collect()))
                .boxed()
        }
        Type::Tuple(elements) => elements
            .iter()
            .map(|e| arb_value(e.clone(), allow_unknown))
            .collect::<Vec<_>>()
            .prop_map(Value::Tuple)
            .boxed(),
        Type::Dynamic => prop_oneof![
            Just(Type::String),
            Just(Type::Number),
            Just(Type::list(Type::Bool)),
            Just(Type::object([("k", Type::Dynamic)])),
        ]
        .prop_flat_map(move |inner| {
            arb_value(inner.clone(), allow_unknown)
                .prop_map(move |v| Value::dynamic(inner.clone(), v))
        })
        .boxed(),
    };
    let mut options = vec![(6, known), (1, Just(Value::Null).boxed())];
    if allow_unknown {
        options.push((1, Just(Value::unknown()).boxed()));
    }
    prop::strategy::Union::new_weighted(options).boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn msgpack_round_trip((t, value) in arb_type().prop_flat_map(|t| {
        let values = arb_value(t.clone(), true);
        (Just(t), values)
    })) {
        let bytes = encode_msgpack(&value, &t).unwrap();
        prop_assert_eq!(decode_msgpack(&bytes, &t).unwrap(), value);
    }

    #[test]
    fn json_round_trip((t, value) in arb_type().prop_flat_map(|t| {
        let values = arb_value(t.clone(), false);
        (Just(t), values)
    })) {
        let json = encode_json(&value, &t).unwrap();
        prop_assert_eq!(decode_json(&json, &t).unwrap(), value);
    }

    #[test]
    fn type_json_round_trip_prop(t in arb_type()) {
        prop_assert_eq!(Type::from_json(t.to_json().as_bytes()).unwrap(), t);
    }

    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), t in arb_type()) {
        let _ = decode_msgpack(&bytes, &t);
        let _ = decode_json(&bytes, &t);
    }
}

#[test]
fn json_keeps_exact_float_values() {
    // The float64 nearest 0.1 is written in full so it decodes to itself.
    let f = Value::Number(Number::from_f64(0.1).unwrap());
    let json = String::from_utf8(encode_json(&f, &Type::Number).unwrap()).unwrap();
    assert_eq!(
        json,
        "1.000000000000000055511151231257827021181583404541015625e-1"
    );
    assert_eq!(decode_json(json.as_bytes(), &Type::Number).unwrap(), f);
    // Short exact floats stay short.
    let half = Value::Number(Number::from_f64(0.5).unwrap());
    assert_eq!(encode_json(&half, &Type::Number).unwrap(), b"0.5");
}

#[test]
fn deeply_nested_input_is_rejected_without_overflow() {
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for t in [Type::Dynamic, ty(r#"["list",["list","string"]]"#)] {
        assert!(decode_json(deep_json.as_bytes(), &t).is_err());
    }
    let deep_msgpack = vec![0x91; 100_000];
    assert!(decode_msgpack(&deep_msgpack, &ty(r#"["list",["list","string"]]"#)).is_err());
    let deep_type = format!(
        "{}\"string\"{}",
        "[\"list\",".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(Type::from_json(deep_type.as_bytes()).is_err());
}
