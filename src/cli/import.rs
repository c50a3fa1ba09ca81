//! `tollgate import policylayer|intercept FILE`: another gateway's policy
//! as an McpToolPolicy (YAML on stdout, notes as comments), checked by the
//! same `compile` as `tollgate check` before it is printed.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_policy::import::{self, ImportErrors, Options};
use tollgate_policy::{Problems, load};

/// Flags of `tollgate import`.
#[derive(clap::Args)]
pub(crate) struct ImportArgs {
    /// The policy's format.
    #[arg(value_enum)]
    format: Format,
    /// The policy file (JSON for PolicyLayer, YAML for Intercept).
    file: PathBuf,
    /// `metadata.name` of the McpToolPolicy.
    #[arg(long, default_value = "imported")]
    name: String,
    /// Write a tool under another name, e.g. `--tool vm_clone=clone_snapshot` when the
    /// server behind tollgate calls the tool otherwise (repeatable).
    #[arg(long = "tool", value_name = "FROM=TO", value_parser = rename)]
    renames: Vec<(String, String)>,
}

/// The formats `tollgate import` reads.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    /// PolicyLayer's `policy.json`.
    Policylayer,
    /// Intercept's policy YAML (version "1").
    Intercept,
}

/// `--rename FROM=TO`, both sides non-empty.
/// A clap `value_parser`, which only prints its error after the flag's
/// name: a `String` error is clap's convention there, and the one place
/// `tests/layering.rs` allows it.
fn rename(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => Ok((from.into(), to.into())),
        _ => Err(format!(
            "{s:?}: write FROM=TO, e.g. vm_clone=clone_snapshot"
        )),
    }
}

pub(crate) fn run(args: &ImportArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let options = Options {
        name: Some(args.name.clone()),
        rename: args.renames.clone(),
    };
    let result = match args.format {
        Format::Policylayer => import::policylayer::import(&text, &options),
        Format::Intercept => import::intercept::import(&text, &options),
    };
    let imported = match result {
        Ok(i) => i,
        Err(errors) => {
            eprint!("{}", ImportErrors(errors));
            eprintln!("{}: not imported; nothing was printed", args.file.display());
            return ExitCode::FAILURE;
        }
    };
    let yaml = import::render(&imported);
    // What is printed must be what `tollgate check` accepts.
    let (loaded, mut problems) = load::parse_text("(imported)", &yaml);
    if let Err(mut p) = load::compile_set(&loaded) {
        problems.append(&mut p);
    }
    if !problems.is_empty() {
        eprintln!("{}", Problems(problems));
        eprintln!("error: the imported policy does not compile (a bug in tollgate import)");
        return ExitCode::FAILURE;
    }
    print!("{yaml}");
    ExitCode::SUCCESS
}
