//! `tollgate crdgen`: the CRD YAML from the Rust types (`make generate`
//! writes it into `crds/`; a test fails when the file is stale).

use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `tollgate crdgen`.
#[derive(clap::Args)]
pub(crate) struct CrdgenArgs {
    /// Write `mcptoolpolicies.tollgate.dev.yaml` into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: &CrdgenArgs) -> ExitCode {
    let yaml = match tollgate_policy::crd::crd_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("error: cannot render the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(dir) = &args.out else {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    };
    let file = dir.join("mcptoolpolicies.tollgate.dev.yaml");
    match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&file, yaml)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}
