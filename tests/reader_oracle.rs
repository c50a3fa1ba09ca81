//! Differential tests against kubernetes-mcp-server's own readers.
//!
//! tollgate judges the manifests inside a tool argument and the JSON of
//! every message, then forwards its own serialisation of what it judged. The
//! server reads that serialisation with other code: sigs.k8s.io/yaml over
//! yaml.v2 for manifests, the MCP Go SDK's decoder and Go's encoding/json for
//! messages. `tollgate-oracle` (tests/oracle, built from the Go module proxy
//! at the exact versions of kubernetes-mcp-server 0.0.67) is that code, as a
//! program. For a generated corpus the tests check:
//!
//! - whatever manifest tollgate admits, the server reads the forwarded text
//!   as exactly the objects tollgate judged;
//! - whatever manifest tollgate admits, the server would have read the
//!   agent's own text as the same objects too (so a refusal, not a silent
//!   change of meaning, is what an agent gets where the readers differ);
//! - whatever JSON-RPC body tollgate admits, the server reads the forwarded
//!   bytes as the message tollgate judged: the same tool, the same arguments.
//!
//! `TOLLGATE_ORACLE_CASES` sets the corpus size (default 3,000 manifests and
//! 3,000 bodies; `make differential` runs 100,000 of each).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use tollgate_policy::resources::Manifest;

mod support;

/// `TOLLGATE_ORACLE_SEED` varies the corpus (`make differential` runs several).
fn seed() -> u64 {
    std::env::var("TOLLGATE_ORACLE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_261_206)
}

fn cases() -> usize {
    std::env::var("TOLLGATE_ORACLE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000)
}

/// The oracle binary, built once by the repo's script (a Go build).
fn oracle() -> String {
    let out = Command::new(support::repo().join("scripts/oracle.sh"))
        .output()
        .expect("run scripts/oracle.sh");
    assert!(
        out.status.success(),
        "scripts/oracle.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Asks the oracle about many inputs through one process (`batch` mode).
fn ask(oracle: &str, requests: &[Value]) -> Vec<Value> {
    let mut child = Command::new(oracle)
        .arg("batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the oracle");
    let mut stdin = child.stdin.take().unwrap();
    let input: Vec<u8> = requests
        .iter()
        .flat_map(|r| {
            let mut line = serde_json::to_vec(r).unwrap();
            line.push(b'\n');
            line
        })
        .collect();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).unwrap();
    });
    let mut answers: Vec<Value> = Vec::with_capacity(requests.len());
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = Vec::new();
    // Split on '\n' only: answers may hold a raw U+0085.
    while reader.read_until(b'\n', &mut line).unwrap() > 0 {
        answers.push(serde_json::from_slice(&line).expect("an oracle answer is JSON"));
        line.clear();
    }
    writer.join().unwrap();
    assert!(child.wait().unwrap().success(), "the oracle failed");
    assert_eq!(answers.len(), requests.len(), "one answer per request");
    for a in &answers {
        assert!(a.get("oracle_error").is_none(), "bad oracle request: {a}");
    }
    answers
}

/// The manifests the oracle's generator writes (structure-aware: merges,
/// anchors, tags, Unicode breaks, markers, quoting, duplicates, ...).
fn generated_manifests(oracle: &str, seed: u64, count: usize) -> Vec<String> {
    let out = Command::new(oracle)
        .args([
            "gen",
            "--seed",
            &seed.to_string(),
            "--count",
            &count.to_string(),
        ])
        .output()
        .expect("run the generator");
    assert!(out.status.success());
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a generated case is a JSON string"))
        .collect()
}

/// Equal as the Kubernetes API sees JSON: numbers by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn manifest_request(text: &str) -> Value {
    json!({"mode": "manifest", "input": text})
}

#[test]
fn the_server_reads_every_admitted_manifest_as_exactly_what_was_judged() {
    let oracle = oracle();
    let texts = generated_manifests(&oracle, seed(), cases());
    let mut admitted = Vec::new();
    let mut refused = 0;
    for text in &texts {
        match Manifest::read(&Value::String(text.clone()), "resource") {
            Ok(m) => {
                let forwarded = m.forwarded(&Value::String(text.clone()));
                admitted.push((text, m, forwarded.as_str().unwrap().to_owned()));
            }
            Err(_) => refused += 1,
        }
    }
    // The corpus is adversarial by design (most cases hold a trick a reader
    // may take differently), but both sides must be exercised.
    assert!(
        admitted.len() * 20 >= texts.len() && refused * 20 >= texts.len(),
        "admitted {}, refused {refused} of {}",
        admitted.len(),
        texts.len()
    );
    let mut requests = Vec::new();
    for (text, _, forwarded) in &admitted {
        requests.push(manifest_request(forwarded));
        requests.push(manifest_request(text));
    }
    let answers = ask(&oracle, &requests);
    let mut changed_meaning = Vec::new();
    for (i, (text, m, forwarded)) in admitted.iter().enumerate() {
        let judged = Value::Array(m.objects().to_vec());
        let read_forwarded = &answers[2 * i];
        assert!(
            read_forwarded.get("ok").is_some_and(|ok| same(ok, &judged)),
            "the server reads what tollgate forwards differently from what it judged\n\
             agent's text: {text:?}\nforwarded: {forwarded:?}\njudged: {judged}\nserver: {read_forwarded}"
        );
        let read_original = &answers[2 * i + 1];
        if !read_original.get("ok").is_some_and(|ok| same(ok, &judged)) {
            changed_meaning.push(format!(
                "agent's text: {text:?}\njudged: {judged}\nserver: {read_original}"
            ));
        }
    }
    assert!(
        changed_meaning.is_empty(),
        "{} admitted manifests mean something else to the server; tollgate must refuse them:\n{}",
        changed_meaning.len(),
        changed_meaning.join("\n\n")
    );
}

/// A small deterministic generator (xorshift), so a failing case can be
/// regenerated from its index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// JSON text (not a value: the point is the spellings) for an argument.
fn json_text(rng: &mut Rng, depth: usize) -> String {
    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "1.5",
        "1e3",
        "1E+3",
        "2.0",
        "0.1",
        "1e-7",
        "9007199254740992",
        "9007199254740993",
        "-9007199254740993",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "1e308",
        "1e309",
        "123456789012345678901234567890",
        "0.30000000000000004",
        "5e-324",
        "1.7976931348623157e308",
    ];
    const STRINGS: &[&str] = &[
        r#""plain""#,
        r#""\u2028\u2029\u0085""#,
        r#""\ud83d\ude00""#,
        r#""\ud800""#,
        r#""\udc00x""#,
        r#""tab\there""#,
        r#""\u0000""#,
        r#""é😀""#,
        r#""\/slash""#,
        r#""""#,
        r#""kube-system""#,
        "\"raw\u{2028}sep\"",
        "\"raw\u{85}nel\"",
        r#""\uFEFF""#,
        r#""a\"b\\c""#,
    ];
    const KEYS: &[&str] = &[
        "namespace",
        "name",
        "resource",
        "context",
        "Name",
        "NAME",
        "na\\u006de",
        "",
        "é",
        "a b",
    ];
    match if depth > 3 {
        rng.below(3)
    } else {
        rng.below(6)
    } {
        0 => rng.pick(NUMBERS).to_owned(),
        1 => rng.pick(STRINGS).to_owned(),
        2 => rng.pick(&["true", "false", "null"]).to_owned(),
        3 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| json_text(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let n = rng.below(4);
            let members: Vec<String> = (0..n)
                .map(|_| format!("\"{}\":{}", rng.pick(KEYS), json_text(rng, depth + 1)))
                .collect();
            format!("{{{}}}", members.join(","))
        }
    }
}

/// A `tools/call` body with generated arguments and envelope tricks
/// (duplicate members, case variants, ids of every kind, trailing bytes).
fn call_body(rng: &mut Rng) -> String {
    let id = rng.pick(&["1", "\"a\"", "1.9", "-0", "9007199254740993", "null", "1e2"]);
    let args = json_text(rng, 1);
    let args = if rng.below(4) == 0 {
        args
    } else {
        format!("{{\"namespace\":{args},\"name\":\"vm\"}}")
    };
    let mut members = vec![
        "\"jsonrpc\":\"2.0\"".to_owned(),
        format!("\"id\":{id}"),
        "\"method\":\"tools/call\"".to_owned(),
        format!("\"params\":{{\"name\":\"vm_clone\",\"arguments\":{args}}}"),
    ];
    match rng.below(8) {
        0 => members.push("\"params\":{\"name\":\"pods_list\",\"arguments\":{}}".into()),
        1 => members.push(format!(
            "\"Params\":{{\"name\":\"pods_list\",\"arguments\":{args}}}"
        )),
        2 => members.push("\"id\":2".into()),
        _ => {}
    }
    let body = format!("{{{}}}", members.join(","));
    match rng.below(10) {
        0 => format!("{body} {{}}"),
        1 => format!("\u{feff}{body}"),
        2 => format!("[{body}]"),
        _ => body,
    }
}

/// `tollgate`'s number and Go's: the same value, and tollgate's exactly
/// what it wrote (a 2^53 + 1 that Go rounds is not the same number).
fn same_number(ours: &serde_json::Number, theirs: &serde_json::Number) -> bool {
    let exact = match (ours.as_i64(), ours.as_u64()) {
        (Some(i), _) => (i as f64) as i128 == i as i128,
        (None, Some(u)) => (u as f64) as u128 == u as u128,
        _ => true,
    };
    exact && ours.as_f64() == theirs.as_f64()
}

fn same_as_go(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_as_go(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_as_go(v, w)))
        }
        _ => ours == theirs,
    }
}

#[test]
fn the_server_reads_every_admitted_message_as_exactly_what_was_judged() {
    let oracle = oracle();
    let mut rng = Rng(seed() | 1);
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..cases() {
        let body = call_body(&mut rng);
        let parsed = tollgate_mcp::json::parse_strict(body.as_bytes());
        let call = parsed.as_ref().ok().and_then(|v| {
            let envelope = tollgate_mcp::jsonrpc::inspect(v).ok()?;
            let params = tollgate_mcp::tools::call_params(v, envelope.id).ok()?;
            Some((
                params.name.to_owned(),
                params.arguments.clone(),
                envelope.id.cloned(),
            ))
        });
        match (parsed, call) {
            (Ok(v), Some(call)) => admitted.push((body, serde_json::to_string(&v).unwrap(), call)),
            _ => refused += 1,
        }
    }
    assert!(
        admitted.len() * 20 >= cases() && refused * 20 >= cases(),
        "admitted {}, refused {refused}",
        admitted.len()
    );
    let requests: Vec<Value> = admitted
        .iter()
        .map(|(_, forwarded, _)| json!({"mode": "json", "input": forwarded}))
        .collect();
    let answers = ask(&oracle, &requests);
    for ((body, forwarded, (name, arguments, id)), answer) in admitted.iter().zip(&answers) {
        let read = answer.get("ok");
        let ok = read.is_some_and(|m| {
            m["params"]["name"] == json!(name)
                && same_as_go(arguments, &m["params"]["arguments"])
                && id.as_ref().is_none_or(|id| same_as_go(id, &m["id"]))
        });
        assert!(
            ok,
            "the server reads a forwarded message differently from what tollgate judged\n\
             agent's body: {body:?}\nforwarded: {forwarded}\njudged: {name} {arguments} id {id:?}\nserver: {answer}"
        );
    }
}
