//! Properties of the wire parsers on inputs nobody wrote by hand: strict
//! JSON and SSE framing never panic, hold one reading of every input, and
//! give the same result however a stream is cut into chunks. Every input is
//! bounded in size, and the parsers bound what they build from it (depth,
//! values, event size), so every case is bounded in time and memory.
//!
//! `cargo test` runs a few cases of each; `make fuzz` many more.

#[path = "common/cases.rs"]
mod common;

use proptest::prelude::*;
use serde_json::Value;

use tollgate_mcp::json::{Limits, StrictJsonError, parse_strict, parse_strict_with};
use tollgate_mcp::sse::{self, Event, Parser};

/// The largest integer magnitude a double holds exactly (what MCP servers
/// read numbers as); strict parsing refuses integers beyond it.
const EXACT: i64 = 1 << 53;

/// Any JSON value a server reads exactly, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-EXACT..=EXACT).prop_map(Value::from),
        (0..=EXACT as u64).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 128, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text shaped like JSON, sloppy JSON and almost-JSON: the tokens strict
/// parsing is about (duplicate keys, escapes, surrogates, trailing bytes,
/// byte-order marks, odd numbers) in any order.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(&b"{"[..]),
        Just(&b"}"[..]),
        Just(&b"["[..]),
        Just(&b"]"[..]),
        Just(&b","[..]),
        Just(&b":"[..]),
        Just(&b"\"k\""[..]),
        Just(&b"\"method\""[..]),
        Just(&b"\"\\ud800\""[..]),
        Just(&b"\"\\ud83d\\ude00\""[..]),
        Just(&b"\"\\u0000\""[..]),
        Just(&b"\"\xff\""[..]),
        Just(&b"0"[..]),
        Just(&b"-0.5e3"[..]),
        Just(&b"1e999"[..]),
        Just(&b"18446744073709551616"[..]),
        Just(&b"true"[..]),
        Just(&b"null"[..]),
        Just(&b" "[..]),
        Just(&b"\n"[..]),
        Just(&b"\xef\xbb\xbf"[..]),
    ];
    prop::collection::vec(token, 0..64).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(common::cases(256))]

    #[test]
    fn strict_json_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_strict(&bytes);
    }

    /// What strict parsing accepts, serde_json reads the same way, and the
    /// proxy's re-serialisation of it reads back as the same value.
    #[test]
    fn strict_json_has_one_reading_and_survives_reserialisation(bytes in json_ish()) {
        if let Ok(value) = parse_strict(&bytes) {
            let lenient: Value = serde_json::from_slice(&bytes).expect("serde_json reads it too");
            prop_assert_eq!(&lenient, &value);
            let again = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(parse_strict(&again), Ok(value));
        }
    }

    /// An integer a double cannot hold is refused, never rounded on the way.
    #[test]
    fn integers_beyond_two_to_the_53_are_refused_by_name(
        n in prop_oneof![
            (EXACT as u64 + 1..=u64::MAX).prop_map(|n| n.to_string()),
            (i64::MIN..-EXACT).prop_map(|n| n.to_string()),
        ],
    ) {
        let text = format!("{{\"n\":{n}}}");
        prop_assert_eq!(parse_strict(text.as_bytes()), Err(StrictJsonError::InexactInteger(n)));
    }

    #[test]
    fn any_value_reads_back_as_itself(value in json_value()) {
        let text = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(parse_strict_with(&text, Limits::UNLIMITED), Ok(value.clone()));
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        prop_assert_eq!(parse_strict_with(&pretty, Limits::UNLIMITED), Ok(value));
    }

    /// However the bytes of a stream arrive, the same events come out, each
    /// with its exact bytes, and what is left is the unfinished tail.
    #[test]
    fn sse_events_do_not_depend_on_chunking(
        stream in sse_ish(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut whole = Parser::new();
        let expected = whole.push(&stream).expect("bounded input");
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunked = Parser::new();
        let mut got: Vec<Event> = Vec::new();
        let mut from = 0;
        for to in points.into_iter().chain([stream.len()]) {
            got.extend(chunked.push(&stream[from..to]).expect("bounded input"));
            from = to;
        }
        prop_assert_eq!(&got, &expected);
        let raw: Vec<u8> = got.iter().flat_map(|e| e.raw.to_vec()).collect();
        prop_assert_eq!(&stream[..raw.len()], &raw[..]);
        prop_assert_eq!(chunked.pending(), stream.len() - raw.len());
    }

    /// An event the proxy writes reads back as exactly that event, whatever
    /// its data holds: data can never start a field or an event of its own.
    #[test]
    fn sse_encoded_events_read_back(
        event in proptest::option::of("[a-z/_]{1,16}"),
        id in proptest::option::of("[a-zA-Z0-9-]{1,16}"),
        data in text_with_line_breaks(),
    ) {
        let bytes = sse::encode(event.as_deref(), id.as_deref(), &data);
        let events = Parser::new().push(&bytes).expect("bounded input");
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(events[0].event.as_deref(), event.as_deref());
        prop_assert_eq!(events[0].id.as_deref(), id.as_deref());
        prop_assert_eq!(&events[0].data, &normalise_line_breaks(&data));
        prop_assert_eq!(&events[0].raw[..], &bytes[..]);
    }
}

/// Bytes shaped like an event stream: fields, comments, blank lines and
/// every line ending, with arbitrary bytes mixed in.
fn sse_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:x".to_vec()),
        Just(b"event: message".to_vec()),
        Just(b"event: endpoint".to_vec()),
        Just(b"id: 7".to_vec()),
        Just(b"id: a\0b".to_vec()),
        Just(b": keep-alive".to_vec()),
        Just(b"retry: 10".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"{\"jsonrpc\":\"2.0\"}".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..64).prop_map(|pieces| pieces.concat())
}

/// Any text, with the line breaks and field names SSE cares about often.
fn text_with_line_breaks() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n".to_owned()),
        Just("\r".to_owned()),
        Just("\r\n".to_owned()),
        Just("data: ".to_owned()),
        Just("event: x".to_owned()),
        Just(":".to_owned()),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// A line break in SSE is CRLF, CR or LF; data lines come back joined by LF.
fn normalise_line_breaks(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}
