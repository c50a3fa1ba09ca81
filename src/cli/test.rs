//! `tollgate test`: runs policy tests (`McpToolPolicyTest` files: calls and
//! the decisions they must get) through the decision sequence the sidecar
//! runs, prints a table of every call like `kyverno test` does, and exits 1
//! on any mismatch.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use tollgate_policy::catalogue::Catalogue;
use tollgate_policy::load::{self, OtherKinds, ReadOptions};
use tollgate_policy::scenario::{self, Outcome, Suite};
use tollgate_policy::{Problem, Problems};

use crate::cli::Output;

/// Flags of `tollgate test`.
#[derive(clap::Args)]
pub(crate) struct TestArgs {
    /// Test files, or directories searched (every level) for them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// One test file's document and what became of it.
struct Ran {
    file: String,
    name: String,
    outcome: Result<Vec<Outcome>, Vec<Problem>>,
    notes: Vec<String>,
}

pub(crate) fn run(args: &TestArgs) -> ExitCode {
    let mut ran = Vec::new();
    let mut problems = Vec::new();
    for path in &args.paths {
        let files = match load::files_under_with(path, true) {
            Ok((files, _)) => files,
            Err(p) => {
                problems.push(p.in_source(&path.display().to_string()));
                continue;
            }
        };
        for file in files {
            let label = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(Problem::at("", format!("cannot read: {e}")).in_source(&label));
                    continue;
                }
            };
            match scenario::parse(&label, &text) {
                Ok(suites) => {
                    for suite in suites {
                        ran.push(run_suite(&file, &label, &suite));
                    }
                }
                Err(p) => problems.extend(p),
            }
        }
    }
    if ran.is_empty() && problems.is_empty() {
        problems.push(Problem::at(
            "",
            "no McpToolPolicyTest documents found (kind: McpToolPolicyTest)",
        ));
    }
    let failed = ran
        .iter()
        .map(|r| match &r.outcome {
            Ok(rows) => rows.iter().filter(|o| o.mismatch.is_some()).count(),
            Err(_) => 1,
        })
        .sum::<usize>()
        + problems.len();
    match args.output {
        Output::Text => print_text(&ran, &problems),
        Output::Json => println!("{}", as_json(&ran, &problems)),
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Loads what `suite` names (relative to `file`) and runs its calls.
fn run_suite(file: &Path, label: &str, suite: &Suite) -> Ran {
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut notes = Vec::new();
    let paths: Vec<PathBuf> = suite.policies.iter().map(|p| dir.join(p)).collect();
    let options = ReadOptions {
        recursive: true,
        other_kinds: OtherKinds::Skip,
    };
    let outcome = load::load_with(&paths, options).and_then(|loaded| {
        let catalogue = match &suite.tools {
            Some(tools) => {
                let path = dir.join(tools);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    vec![Problem::at("tools", format!("cannot read {}: {e}", path.display()))]
                })?;
                let c = Catalogue::from_json(&text).map_err(|e| {
                    vec![Problem::at("tools", format!("{}: {e}", path.display()))]
                })?;
                notes.push(format!("{} tools from {}", c.len(), path.display()));
                Some(c)
            }
            None => {
                if loaded.set.needs_any_catalog() {
                    notes.push("these policies read the MCP server's tool list (toolSelector, resource rules or strictArguments); without `tools:` every tool counts as one the server does not list".to_owned());
                }
                None
            }
        };
        let rules: usize = loaded.set.policies().iter().map(|p| p.rules().len()).sum();
        let n = loaded.policies.len();
        notes.insert(
            0,
            format!(
                "{n} {}, {rules} {}, version {}",
                if n == 1 { "policy" } else { "policies" },
                if rules == 1 { "rule" } else { "rules" },
                loaded.set.version()
            ),
        );
        Ok(scenario::run(suite, &loaded.set, catalogue.as_ref()))
    });
    Ran {
        file: label.to_owned(),
        name: suite.metadata.name.clone(),
        outcome: outcome.map_err(|p| p.into_iter().map(|p| p.in_source(label)).collect()),
        notes,
    }
}

fn print_text(ran: &[Ran], problems: &[Problem]) {
    let (mut passed, mut failed) = (0, 0);
    for r in ran {
        println!("Loading test {:?} ( {} ) ...", r.name, r.file);
        for n in &r.notes {
            println!("  {n}");
        }
        let rows = match &r.outcome {
            Ok(rows) => rows,
            Err(p) => {
                println!("  the policies do not load:");
                for line in Problems(p.clone()).to_string().lines() {
                    println!("    {line}");
                }
                failed += 1;
                println!();
                continue;
            }
        };
        println!("  Checking results ...\n");
        let mut table = vec![[
            "ID".to_owned(),
            "CALL".to_owned(),
            "TOOL".to_owned(),
            "EXPECTED".to_owned(),
            "GOT".to_owned(),
            "RESULT".to_owned(),
            "REASON".to_owned(),
        ]];
        for (i, o) in rows.iter().enumerate() {
            let call = if o.repeat > 1 || rows.iter().any(|x| x.name == o.name && x.repeat > 1) {
                format!("{} #{}", o.name, o.repeat)
            } else {
                o.name.clone()
            };
            let (result, reason) = match &o.mismatch {
                None => {
                    passed += 1;
                    ("Pass", "Ok".to_owned())
                }
                Some(why) => {
                    failed += 1;
                    ("Fail", why.clone())
                }
            };
            table.push([
                (i + 1).to_string(),
                call,
                o.tool.clone(),
                o.expected.clone(),
                o.got.clone(),
                result.to_owned(),
                reason,
            ]);
        }
        print_table(&table);
        println!();
    }
    if !problems.is_empty() {
        eprintln!("{}", Problems(problems.to_vec()));
        failed += problems.len();
    }
    println!("Test Summary: {passed} tests passed and {failed} tests failed");
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| "─".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("│");
    println!("│{rule}│");
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!(" {cell:w$} "))
            .collect();
        println!("│{}│", cells.join("│"));
        if i == 0 {
            println!("│{rule}│");
        }
    }
    println!("│{rule}│");
}

fn as_json(ran: &[Ran], problems: &[Problem]) -> Value {
    let tests: Vec<Value> = ran
        .iter()
        .map(|r| {
            let (results, errors) = match &r.outcome {
                Ok(rows) => (
                    rows.iter()
                        .map(|o| {
                            json!({
                                "call": o.name, "tool": o.tool, "repeat": o.repeat,
                                "expected": o.expected, "got": o.got,
                                "result": if o.mismatch.is_none() { "pass" } else { "fail" },
                                "reason": o.mismatch,
                            })
                        })
                        .collect(),
                    Vec::new(),
                ),
                Err(p) => (Vec::new(), p.iter().map(ToString::to_string).collect()),
            };
            json!({"file": r.file, "name": r.name, "notes": r.notes, "results": results, "errors": errors})
        })
        .collect();
    json!({
        "tests": tests,
        "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}
