//! `tollgate crdgen`: the CRDs' YAML from the Rust types (`make generate`
//! writes them into `crds/`; a test fails when a file is stale).

use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `tollgate crdgen`.
#[derive(clap::Args)]
pub(crate) struct CrdgenArgs {
    /// Write `mcptoolpolicies.tollgate.dev.yaml` and
    /// `mcptoolcallapprovals.tollgate.dev.yaml` into this directory (without
    /// it: print both, as one YAML stream).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: &CrdgenArgs) -> ExitCode {
    for (i, (name, source, crd)) in tollgate_policy::crd::all().into_iter().enumerate() {
        let yaml = match tollgate_policy::crd::to_yaml(source, &crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("error: cannot render {name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(dir) = &args.out else {
            if i > 0 {
                println!("---");
            }
            print!("{yaml}");
            continue;
        };
        let file = dir.join(name);
        if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&file, yaml)) {
            eprintln!("error: cannot write {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
