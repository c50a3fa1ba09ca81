//! `tollgate check`: the one `compile` that the sidecar and the controller
//! run, applied to files before anything is deployed. It reports every
//! problem of every document in one run (text, or `-o json` for CI), and
//! warns about valid policies that hand out credentials — and, given the
//! server's tool list (`--tools`, `--upstream`), about tool patterns that
//! name none of its tools.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use tollgate_policy::load::{self, OtherKinds, ReadOptions};
use tollgate_policy::warnings::{self, Warning};
use tollgate_policy::{Problem, Problems};

use crate::cli::{Output, ToolSource};

/// Flags of `tollgate check`.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// Policy files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Read the subdirectories of directories too.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// What to do with documents that are not policies (a Deployment next
    /// to them): skip them with a note, or count them as problems.
    #[arg(long, value_enum, default_value_t = Kinds::Skip)]
    other_kinds: Kinds,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    tools: ToolSource,
}

/// `--other-kinds`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Kinds {
    /// Skip them, with a note.
    Skip,
    /// Count them as problems.
    Error,
}

pub(crate) fn run(args: &CheckArgs) -> ExitCode {
    let options = ReadOptions {
        recursive: args.recursive,
        other_kinds: match args.other_kinds {
            Kinds::Skip => OtherKinds::Skip,
            Kinds::Error => OtherKinds::Refuse,
        },
    };
    let catalogue = match args.tools.read() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let read = load::read_paths_with(&args.paths, options);
    let compiled = load::compile_set(&read.policies);
    let report = match compiled {
        Ok(set) if read.problems.is_empty() => {
            let mut found: Vec<Warning> = set
                .policies()
                .iter()
                .flat_map(|p| warnings::warnings_with(p, catalogue.as_ref()))
                .collect();
            if let Some(c) = &catalogue {
                for p in &read.policies {
                    found.extend(warnings::unmatched_patterns(p, c));
                }
            }
            Report {
                problems: Vec::new(),
                warnings: found,
                notes: read.notes,
                summary: Some(Summary {
                    policies: read.policies.len(),
                    rules: set.policies().iter().map(|p| p.rules().len()).sum(),
                    version: set.version().to_owned(),
                }),
            }
        }
        compiled => {
            let mut problems = read.problems;
            problems.extend(compiled.err().unwrap_or_default());
            Report {
                problems,
                warnings: Vec::new(),
                notes: read.notes,
                summary: None,
            }
        }
    };
    match args.output {
        Output::Text => report.print_text(),
        Output::Json => println!("{}", report.json()),
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct Summary {
    policies: usize,
    rules: usize,
    version: String,
}

struct Report {
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
    notes: Vec<Problem>,
    summary: Option<Summary>,
}

impl Report {
    fn print_text(&self) {
        for n in &self.notes {
            eprintln!("note: {n}");
        }
        for w in &self.warnings {
            match w.path.as_str() {
                "" => eprintln!("warning: policy {}: {}", w.policy, w.message),
                path => eprintln!("warning: policy {}: {path}: {}", w.policy, w.message),
            }
        }
        match &self.summary {
            Some(s) => {
                let plural = |n: usize, one: &'static str, many: &'static str| {
                    if n == 1 { one } else { many }
                };
                println!(
                    "ok: {} {}, {} {}, version {}",
                    s.policies,
                    plural(s.policies, "policy", "policies"),
                    s.rules,
                    plural(s.rules, "rule", "rules"),
                    s.version
                );
            }
            None => {
                let n = self.problems.len();
                eprintln!("{}", Problems(self.problems.clone()));
                eprintln!("{n} {}", if n == 1 { "problem" } else { "problems" });
            }
        }
    }

    fn json(&self) -> Value {
        let problem = |p: &Problem| {
            json!({
                "source": p.source,
                "path": p.path,
                "message": p.message,
                "line": p.location.map(|l| l.0),
                "column": p.location.map(|l| l.1),
            })
        };
        json!({
            "ok": self.problems.is_empty(),
            "problems": self.problems.iter().map(problem).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(|w| json!({"policy": w.policy, "path": w.path, "message": w.message})).collect::<Vec<_>>(),
            "notes": self.notes.iter().map(problem).collect::<Vec<_>>(),
            "policies": self.summary.as_ref().map(|s| s.policies),
            "rules": self.summary.as_ref().map(|s| s.rules),
            "version": self.summary.as_ref().map(|s| s.version.clone()),
        })
    }
}
