//! `tollgate check`: the one `compile` that the sidecar and the controller
//! run, applied to files before anything is deployed; plus warnings about
//! valid policies that hand out credentials.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_policy::{Problems, load, warnings};

/// Flags of `tollgate check`.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// Policy files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub(crate) fn run(args: &CheckArgs) -> ExitCode {
    match load::load(&args.paths) {
        Ok((set, loaded)) => {
            for w in set.policies().iter().flat_map(|p| warnings::warnings(p)) {
                eprintln!("warning: policy {}: {}", w.policy, w.message);
            }
            let rules: usize = set.policies().iter().map(|p| p.rules().len()).sum();
            let plural =
                |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
            println!(
                "ok: {} {}, {rules} {}, version {}",
                loaded.len(),
                plural(loaded.len(), "policy", "policies"),
                plural(rules, "rule", "rules"),
                set.version()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            let n = problems.len();
            eprintln!("{}", Problems(problems));
            eprintln!("{n} {}", if n == 1 { "problem" } else { "problems" });
            ExitCode::FAILURE
        }
    }
}
