//! Validation of hostile and malformed responses: a table of cases, each with its exact error
//! kind and JSON path, and a property that validation never panics.

use std::collections::HashMap;

use egress_core::http::{HeaderMap, HeaderValue, StatusCode};
use egress_core::{
    Expect, Invalid, Validate, ValidationError, ValidationKind, validate, validate_checked,
};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Page {
    items: Vec<Item>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Item {
    id: String,
    count: u8,
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(default)]
    tags: HashMap<String, i32>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Small,
    Large,
}

impl Validate for Page {
    fn validate(&self) -> Result<(), Invalid> {
        for (i, item) in self.items.iter().enumerate() {
            if item.id.is_empty() {
                return Err(Invalid::new(format!("items[{i}].id"), "must not be empty"));
            }
        }
        Ok(())
    }
}

fn json_headers(content_type: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    h
}

struct Case {
    name: &'static str,
    status: u16,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    kind: ValidationKind,
    path: Option<&'static str>,
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    kind: ValidationKind,
    path: Option<&'static str>,
) -> Case {
    Case {
        name,
        status: 200,
        content_type: Some("application/json"),
        body: body.into(),
        kind,
        path,
    }
}

fn table() -> Vec<Case> {
    use ValidationKind as K;
    let deep = format!(
        r#"{{"items":[],"meta":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let deep_obj = format!(
        r#"{{"items":[],"meta":{}1{}}}"#,
        r#"{"a":"#.repeat(150),
        "}".repeat(150)
    );
    vec![
        Case {
            status: 404,
            ..case("a 404", r#"{"items":[]}"#, K::UnexpectedStatus, None)
        },
        Case {
            status: 500,
            ..case("a 500", r#"{"items":[]}"#, K::UnexpectedStatus, None)
        },
        Case {
            status: 304,
            ..case("a 304", "", K::UnexpectedStatus, None)
        },
        Case {
            content_type: None,
            ..case("no content type", r#"{"items":[]}"#, K::ContentType, None)
        },
        Case {
            content_type: Some("text/html"),
            ..case("html", "<html>", K::ContentType, None)
        },
        Case {
            content_type: Some("text/plain; charset=utf-8"),
            ..case("plain text", "{}", K::ContentType, None)
        },
        Case {
            content_type: Some("application/jsonp"),
            ..case("jsonp", "{}", K::ContentType, None)
        },
        Case {
            content_type: Some("json"),
            ..case("no subtype", "{}", K::ContentType, None)
        },
        Case {
            content_type: Some("application/xml"),
            ..case("xml", "<a/>", K::ContentType, None)
        },
        case("an empty body", "", K::Empty, None),
        case("a whitespace body", "  \n\t ", K::Empty, None),
        case(
            "a byte-order mark",
            b"\xEF\xBB\xBF{\"items\":[]}".to_vec(),
            K::Bom,
            None,
        ),
        case(
            "invalid UTF-8",
            b"{\"items\":[{\"id\":\"\xff\xfe\"}]}".to_vec(),
            K::InvalidUtf8,
            None,
        ),
        case(
            "an overlong UTF-8 encoding",
            b"{\"items\":[{\"id\":\"\xc0\xaf\"}]}".to_vec(),
            K::InvalidUtf8,
            None,
        ),
        case("not json at all", "hello", K::Syntax, None),
        case("a single quote string", "{'items':[]}", K::Syntax, None),
        case("a trailing comma", r#"{"items":[],}"#, K::Syntax, None),
        case(
            "a truncated object",
            r#"{"items":[{"id":"a","count":1}"#,
            K::Truncated,
            Some("items"),
        ),
        case(
            "a truncated string",
            r#"{"items":[{"id":"ab"#,
            K::Truncated,
            Some("items[0].id"),
        ),
        case(
            "trailing garbage",
            r#"{"items":[]} extra"#,
            K::TrailingCharacters,
            None,
        ),
        case(
            "two documents",
            r#"{"items":[]}{"items":[]}"#,
            K::TrailingCharacters,
            None,
        ),
        case(
            "deeply nested arrays",
            deep,
            K::RecursionLimit,
            Some("meta"),
        ),
        case(
            "deeply nested objects",
            deep_obj,
            K::RecursionLimit,
            Some("meta"),
        ),
        case(
            "a number above u8",
            r#"{"items":[{"id":"a","count":300}]}"#,
            K::OutOfRange,
            Some("items[0].count"),
        ),
        case(
            "a negative count",
            r#"{"items":[{"id":"a","count":-1}]}"#,
            K::OutOfRange,
            Some("items[0].count"),
        ),
        case(
            "a float beyond f64",
            r#"{"items":[{"id":"a","count":1e999}]}"#,
            K::OutOfRange,
            Some("items[0].count"),
        ),
        case(
            "a null id",
            r#"{"items":[{"id":"a","count":1},{"id":null,"count":1}]}"#,
            K::Schema,
            Some("items[1].id"),
        ),
        case(
            "a number for a string",
            r#"{"items":[{"id":7,"count":1}]}"#,
            K::Schema,
            Some("items[0].id"),
        ),
        case(
            "a missing field",
            r#"{"items":[{"id":"a"}]}"#,
            K::Schema,
            Some("items[0]"),
        ),
        case(
            "an unknown enum variant",
            r#"{"items":[{"id":"a","count":1,"kind":"huge"}]}"#,
            K::Schema,
            Some("items[0].kind"),
        ),
        case(
            "an unknown top-level field",
            r#"{"items":[],"extra":1}"#,
            K::Schema,
            Some("extra"),
        ),
        case("an array for the top level object", "[]", K::Schema, None),
        case(
            "a string for the item list",
            r#"{"items":"none"}"#,
            K::Schema,
            Some("items"),
        ),
        case(
            "a duplicate struct field",
            r#"{"items":[],"items":[]}"#,
            K::DuplicateKey,
            None,
        ),
        case(
            "a duplicate map key",
            r#"{"items":[{"id":"a","count":1,"tags":{"x":1,"x":2}}]}"#,
            K::DuplicateKey,
            Some("items[0].tags.x"),
        ),
        case(
            "a control character in a string",
            "{\"items\":[{\"id\":\"a\u{1}\",\"count\":1}]}",
            K::Syntax,
            Some("items[0].id"),
        ),
        case(
            "an invalid escape",
            r#"{"items":[{"id":"\q","count":1}]}"#,
            K::Syntax,
            Some("items[0].id"),
        ),
        case(
            "a lone surrogate escape",
            r#"{"items":[{"id":"\ud800","count":1}]}"#,
            K::Syntax,
            Some("items[0].id"),
        ),
        case(
            "NaN",
            r#"{"items":[{"id":"a","count":NaN}]}"#,
            K::Syntax,
            Some("items[0].count"),
        ),
        case(
            "an empty id (semantic)",
            r#"{"items":[{"id":"","count":1}]}"#,
            K::Semantic,
            Some("items[0].id"),
        ),
    ]
}

#[test]
fn every_malformed_or_hostile_response_gives_its_exact_error_kind_and_path() {
    use ValidationKind as K;
    let cases = table();
    assert!(cases.len() >= 30, "the table must hold at least 30 cases");
    let mut failures = Vec::new();
    for c in cases {
        let headers = c.content_type.map(json_headers).unwrap_or_default();
        let status = StatusCode::from_u16(c.status).unwrap();
        let err = match validate_checked::<Page>(status, &headers, &c.body, &Expect::default()) {
            Ok(page) => {
                failures.push(format!("{}: accepted as {page:?}", c.name));
                continue;
            }
            Err(err) => err,
        };
        // Hostile nesting gives a path as deep as the recursion limit: only its start is fixed.
        let path_ok = match (err.path(), c.path) {
            (Some(got), Some(want)) if c.kind == K::RecursionLimit => {
                got.starts_with(want) && got.len() <= 170
            }
            (got, want) => got == want,
        };
        if err.kind() != c.kind || !path_ok {
            failures.push(format!(
                "{}: got {:?} at {:?} ({err}); want {:?} at {:?}",
                c.name,
                err.kind(),
                err.path(),
                c.kind,
                c.path
            ));
        }
        if let Some(path) = err.path().filter(|_| c.path.is_some()) {
            if !err.to_string().starts_with(&format!("{path}: ")) {
                failures.push(format!(
                    "{}: the message does not name the path: {err}",
                    c.name
                ));
            }
        }
        if err.excerpt().len() > 256 + 6 {
            failures.push(format!(
                "{}: excerpt of {} bytes",
                c.name,
                err.excerpt().len()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_body_over_the_limit_is_rejected_before_decoding() {
    let body = format!(r#"{{"items":[],"next":"{}"}}"#, "x".repeat(100));
    let err = validate::<Page>(
        StatusCode::OK,
        &json_headers("application/json"),
        body.as_bytes(),
        &Expect::default().max_body(64),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ValidationKind::TooLarge);
}

#[test]
fn json_content_types_with_suffixes_and_parameters_are_accepted() {
    for ct in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/problem+json",
        "application/vnd.github+json",
    ] {
        let page = validate::<Page>(
            StatusCode::OK,
            &json_headers(ct),
            br#"{"items":[]}"#,
            &Expect::default(),
        );
        assert_eq!(
            page.unwrap(),
            Page {
                items: vec![],
                next: None,
                meta: None
            },
            "{ct}"
        );
    }
}

#[test]
fn an_exact_expected_status_rejects_other_successes() {
    let expect = Expect::default().status(StatusCode::CREATED);
    let err = validate::<Page>(
        StatusCode::OK,
        &json_headers("application/json"),
        br#"{"items":[]}"#,
        &expect,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ValidationKind::UnexpectedStatus);
}

#[test]
fn excerpts_show_the_neighbourhood_of_the_problem_with_secrets_masked() {
    let filler = "x".repeat(1000);
    let body = format!(
        r#"{{"items":[{{"id":"{filler}","count":1,"token":"s3cr3t-value"}},{{"id":null}}]}}"#
    );
    let err = validate::<Page>(
        StatusCode::OK,
        &json_headers("application/json"),
        body.as_bytes(),
        &Expect::default(),
    )
    .unwrap_err();
    assert_eq!(err.path(), Some("items[1].id"));
    assert!(err.excerpt().contains(r#""id":null"#), "{}", err.excerpt());
    assert!(!err.excerpt().contains("s3cr3t-value"), "{}", err.excerpt());
    assert!(err.excerpt().len() <= 256 + 6);
}

fn arb_content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json".to_owned())),
        Just(Some("application/x+json; charset=utf-8".to_owned())),
        "[ -~]{0,40}".prop_map(Some),
    ]
}

fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        // JSON-ish text made of the grammar's own characters hits deeper paths.
        "[\\[\\]{}\":,0-9a-z \\\\.eE+-]{0,300}".prop_map(String::into_bytes),
        Just(br#"{"items":[{"id":"a","count":1,"tags":{"k":1}}]}"#.to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn validate_never_panics_on_arbitrary_bytes_and_content_types(
        status in 100u16..600,
        content_type in arb_content_type(),
        body in arb_body(),
    ) {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert("content-type", ct);
        }
        let status = StatusCode::from_u16(status).unwrap();
        let _ = validate_checked::<Page>(status, &headers, &body, &Expect::default());
        let _ = validate::<serde_json::Value>(status, &headers, &body, &Expect::default());
    }
}

/// A type that skips unknown fields, as most vendor payload types do.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded to validate
struct Lax {
    items: Vec<serde_json::Value>,
}

#[test]
fn a_repeated_key_after_a_laxly_skipped_field_is_still_found() {
    // Found by the validate_json fuzz target: fields the type skips are read laxly, and a
    // strict re-parse stopped at them and missed the repeat that follows.
    let deep = format!(
        r#"{{"items":[],"x":{}{{"a":1,"a":2}}{}}}"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "a lone surrogate",
            br#"{"items":[],"x":"\ud800","y":1,"y":2}"#,
            "y",
        ),
        (
            "a number out of range",
            br#"{"items":[],"x":1e400,"y":1,"y":2}"#,
            "y",
        ),
        ("nesting past the limit", deep.as_bytes(), "x[0][0]"),
    ];
    for (name, body, path_start) in cases {
        let err = validate::<Lax>(
            StatusCode::OK,
            &json_headers("application/json"),
            body,
            &Expect::default(),
        )
        .expect_err(name);
        assert_eq!(err.kind(), ValidationKind::DuplicateKey, "{name}: {err}");
        assert!(
            err.path().is_some_and(|p| p.starts_with(path_start)),
            "{name}: {:?}",
            err.path()
        );
    }
}

/// The shapes a payload type can take over an object, for the test below: each one reads its
/// objects through a different path of serde (derived fields, skipped fields, maps, buffered
/// content for `flatten` and untagged enums, enum variants, raw values).
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded to validate
struct Known {
    a: i32,
    b: Option<Inner>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded to validate
struct Inner {
    c: i32,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded to validate
struct Flat {
    a: i32,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded to validate
#[serde(untagged)]
enum Untagged {
    Known(Known),
    Other(Vec<i32>),
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded to validate
#[serde(tag = "type")]
enum Tagged {
    Inner { c: i32, more: Option<Inner> },
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded to validate
enum External {
    Wrapped(Inner),
    Fields { c: i32, more: Option<Inner> },
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded to validate
struct Raw {
    a: i32,
    raw: Box<serde_json::value::RawValue>,
}

type Maps = std::collections::BTreeMap<String, HashMap<u32, i32>>;

type Run = fn(&str) -> Result<(), ValidationError>;

#[test]
fn a_repeated_key_is_found_whatever_the_payload_type_does_with_the_object() {
    fn run<T: serde::de::DeserializeOwned>(body: &str) -> Result<(), ValidationError> {
        let headers = json_headers("application/json");
        validate::<T>(
            StatusCode::OK,
            &headers,
            body.as_bytes(),
            &Expect::default(),
        )
        .map(drop)
    }
    // Each case twice: as written (no key repeats) and with `@` replaced by a repeat.
    let cases: [(&str, Run, &str); 14] = [
        ("a derived field", run::<Known>, r#"{"a":1@,"b":null}"#),
        (
            "unknown fields of an optional struct",
            run::<Known>,
            r#"{"a":1,"b":{"c":1,"x":1@}}"#,
        ),
        ("an unknown scalar field", run::<Known>, r#"{"a":1,"x":1@}"#),
        (
            "inside an unknown object",
            run::<Known>,
            r#"{"a":1,"x":{"y":1@}}"#,
        ),
        (
            "inside an unknown array",
            run::<Known>,
            r#"{"a":1,"x":[{"y":1@}]}"#,
        ),
        ("a map of maps", run::<Maps>, r#"{"m":{"1":1@}}"#),
        ("a flattened map", run::<Flat>, r#"{"a":1,"x":{"y":1@}}"#),
        (
            "an untagged enum",
            run::<Untagged>,
            r#"{"a":1,"x":{"y":1@}}"#,
        ),
        (
            "an internally tagged enum",
            run::<Tagged>,
            r#"{"type":"Inner","c":1,"more":{"c":1,"x":1@}}"#,
        ),
        (
            "a newtype variant",
            run::<External>,
            r#"{"Wrapped":{"c":1,"x":1@}}"#,
        ),
        (
            "a struct variant",
            run::<External>,
            r#"{"Fields":{"c":1,"more":{"c":1,"x":1@}}}"#,
        ),
        ("a raw value", run::<Raw>, r#"{"a":1,"raw":{"y":1@}}"#),
        ("a value", run::<serde_json::Value>, r#"[{"y":1@}]"#),
        (
            "a plain key of a wide object",
            run::<serde_json::Value>,
            WIDE,
        ),
    ];
    for (name, run, body) in cases {
        let (before, _) = body.split_once('@').expect("every case marks its repeat");
        // The key just before `@`, and its value, once more.
        let last = before
            .rfind("{\"")
            .max(before.rfind(",\""))
            .expect("a key precedes `@`")
            + 1;
        let repeated = body.replace('@', &format!(",{}", &before[last..]));
        let kind = |body: &str| run(body).err().map(|e| e.kind());
        assert_eq!(kind(&body.replace('@', "")), None, "{name}");
        assert_eq!(
            kind(&repeated),
            Some(ValidationKind::DuplicateKey),
            "{name}: {repeated}"
        );
    }
}

/// An object past the size at which keys move into a hash set, with `@` after its last key.
const WIDE: &str = r#"{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"k18":18,"k19":19@}"#;

#[test]
fn escaped_and_plain_spellings_of_a_key_are_the_same_key() {
    let err = validate::<serde_json::Value>(
        StatusCode::OK,
        &json_headers("application/json"),
        br#"{"a":{"b":1,"\u0062":2}}"#,
        &Expect::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ValidationKind::DuplicateKey);
    assert_eq!(err.path(), Some("a.b"));
}

/// A JSON document as a tree that may repeat keys, so that a test knows where the first
/// repeat is without parsing anything.
#[derive(Clone, Debug)]
enum Doc {
    Number(i32),
    Text(String),
    List(Vec<Doc>),
    Object(Vec<(String, Doc)>),
}

fn arb_doc() -> impl Strategy<Value = Doc> {
    // Few distinct keys, so that repeats are common; some need escaping, one is not ASCII.
    let key = prop::sample::select(vec![
        "a", "b", "ab", "ba", "abc", "axc", "q\"", "é", "a\\", "",
    ]);
    let leaf = prop_oneof![
        any::<i32>().prop_map(Doc::Number),
        "[a-z\"\\\\{}\\[\\],:]{0,6}".prop_map(Doc::Text),
    ];
    leaf.prop_recursive(4, 40, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Doc::List),
            prop::collection::vec((key.clone().prop_map(str::to_owned), inner), 0..5)
                .prop_map(Doc::Object),
        ]
    })
}

impl Doc {
    /// The JSON text; `unicode_keys` spells every key character as a `\uXXXX` escape.
    fn render(&self, unicode_keys: bool, out: &mut String) {
        match self {
            Doc::Number(n) => out.push_str(&n.to_string()),
            Doc::Text(t) => out.push_str(&serde_json::to_string(t).unwrap()),
            Doc::List(items) => {
                out.push_str("[ ");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.render(unicode_keys, out);
                }
                out.push(']');
            }
            Doc::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if unicode_keys {
                        out.push('"');
                        for unit in key.encode_utf16() {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                        out.push('"');
                    } else {
                        out.push_str(&serde_json::to_string(key).unwrap());
                    }
                    out.push_str(" : ");
                    value.render(unicode_keys, out);
                }
                out.push('}');
            }
        }
    }

    /// The first repeated key in document order, with its path as `validate` names it.
    fn first_repeat(&self, path: &str) -> Option<(String, String)> {
        let join = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        match self {
            Doc::Number(_) | Doc::Text(_) => None,
            Doc::List(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| item.first_repeat(&format!("{path}[{i}]"))),
            Doc::Object(fields) => {
                let mut seen = std::collections::HashSet::new();
                for (key, value) in fields {
                    if !seen.insert(key.as_str()) {
                        return Some((join(key), key.clone()));
                    }
                    if let Some(found) = value.first_repeat(&join(key)) {
                        return Some(found);
                    }
                }
                None
            }
        }
    }
}

/// A payload type that knows one key and skips the rest, as vendor types do: its decode sees
/// the keys it skips only through the duplicate-key check's wrapper.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded to validate
struct KnowsOneKey {
    #[serde(default)]
    ab: Option<serde_json::Value>,
}

proptest! {
    #[test]
    fn a_repeated_key_is_found_in_any_object_whether_the_type_reads_or_skips_it(
        doc in arb_doc(),
        unicode_keys in any::<bool>(),
    ) {
        prop_assume!(matches!(doc, Doc::Object(_)));
        let mut body = String::new();
        doc.render(unicode_keys, &mut body);
        let headers = json_headers("application/json");
        let kinds = [
            validate::<KnowsOneKey>(StatusCode::OK, &headers, body.as_bytes(), &Expect::default())
                .err()
                .map(|e| e.kind()),
            validate::<std::collections::BTreeMap<String, serde::de::IgnoredAny>>(
                StatusCode::OK,
                &headers,
                body.as_bytes(),
                &Expect::default(),
            )
            .err()
            .map(|e| e.kind()),
        ];
        let expected = doc.first_repeat("").map(|_| ValidationKind::DuplicateKey);
        prop_assert_eq!(kinds, [expected, expected], "{}", body);
    }
}

proptest! {
    #[test]
    fn the_first_repeated_key_is_found_with_its_path_in_any_document(
        doc in arb_doc(),
        unicode_keys in any::<bool>(),
    ) {
        let mut body = String::new();
        doc.render(unicode_keys, &mut body);
        let result = validate::<serde_json::Value>(
            StatusCode::OK,
            &json_headers("application/json"),
            body.as_bytes(),
            &Expect::default(),
        );
        match doc.first_repeat("") {
            None => prop_assert!(result.is_ok(), "{body}: {:?}", result.err()),
            Some((path, key)) => {
                let err = result.expect_err(&body);
                prop_assert_eq!(err.kind(), ValidationKind::DuplicateKey, "{}", body);
                prop_assert_eq!(err.path(), Some(path.as_str()), "{}", body);
                prop_assert_eq!(err.message(), format!("duplicate key {key:?}"), "{}", body);
            }
        }
    }
}

#[test]
fn a_repeated_key_in_an_object_with_many_keys_is_found() {
    // Past 16 keys an object's keys move into a hash set; the repeat must still be seen, in
    // that object and not in its siblings.
    let fields: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let fields = fields.join(",");
    let ok = format!(r#"{{"x":{{{fields}}},"y":{{{fields}}}}}"#);
    let repeated = format!(r#"{{"x":{{{fields}}},"y":{{{fields},"k\u0031\u0037":1}}}}"#);
    let headers = json_headers("application/json");
    assert!(
        validate::<serde_json::Value>(StatusCode::OK, &headers, ok.as_bytes(), &Expect::default())
            .is_ok()
    );
    let err = validate::<serde_json::Value>(
        StatusCode::OK,
        &headers,
        repeated.as_bytes(),
        &Expect::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ValidationKind::DuplicateKey);
    assert_eq!(err.path(), Some("y.k17"));
}

/// Accepted content types are configurable; the error names what came and what was accepted.
#[test]
fn accepted_content_types_are_configurable_and_the_error_names_both_sides() {
    use egress_core::http::{HeaderMap, HeaderValue, StatusCode, header::CONTENT_TYPE};
    use egress_core::{ContentTypes, Expect, ValidationKind, validate};

    let body = br#"{"id":"7"}"#;
    let with = |ct: Option<&str>| {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        h
    };
    let check = |ct: Option<&str>, types: ContentTypes| {
        validate::<serde_json::Value>(
            StatusCode::OK,
            &with(ct),
            body,
            &Expect::default().content_types(types),
        )
    };
    // The default: JSON and +json.
    assert!(check(Some("application/json"), ContentTypes::default()).is_ok());
    assert!(check(Some("application/hal+json"), ContentTypes::default()).is_ok());
    let error = check(Some("application/octet-stream"), ContentTypes::default()).unwrap_err();
    assert_eq!(error.kind(), ValidationKind::ContentType);
    assert_eq!(
        error.to_string(),
        "content type \"application/octet-stream\" is not accepted (accepted: application/json or any +json type)"
    );
    // A list added to JSON.
    let legacy = ContentTypes::json().or(["text/plain"]);
    assert!(check(Some("text/plain; charset=utf-8"), legacy.clone()).is_ok());
    assert!(check(Some("application/json"), legacy).is_ok());
    // Exactly one type.
    let only = ContentTypes::exactly(["application/vnd.api+json"]);
    assert!(check(Some("application/vnd.api+json"), only.clone()).is_ok());
    let error = check(Some("application/json"), only).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("accepted: application/vnd.api+json"),
        "{error}"
    );
    // Anything, a missing header included.
    assert!(check(None, ContentTypes::any()).is_ok());
    assert!(check(Some("text/html"), ContentTypes::any()).is_ok());
    let error = check(None, ContentTypes::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the response has no content type"),
        "{error}"
    );
}
