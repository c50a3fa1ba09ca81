//! `tollgate crdgen`: the CRDs' YAML from the Rust types (`make generate`
//! writes them into `crds/`; a test fails when a file is stale).

use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `tollgate crdgen`.
#[derive(clap::Args)]
pub(crate) struct CrdgenArgs {
    /// Write `mcptoolpolicies.tollgate.dev.yaml` and
    /// `clustermcptoolpolicies.tollgate.dev.yaml` and
    /// `mcptoolcallapprovals.tollgate.dev.yaml` into this directory (without
    /// it, all are printed as one YAML stream).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: &CrdgenArgs) -> ExitCode {
    let mut printed = Vec::new();
    for (file, crd) in tollgate_policy::crd::crds() {
        let yaml = match tollgate_policy::crd::yaml(&crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("error: cannot render {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(dir) = &args.out else {
            printed.push(yaml);
            continue;
        };
        let path = dir.join(file);
        if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, yaml)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if !printed.is_empty() {
        print!("{}", printed.join("---\n"));
    }
    ExitCode::SUCCESS
}
