//! `tollgate copy-binary DEST`: the init container of in-pod stdio
//! injection copies the (static) tollgate binary into a shared emptyDir,
//! from an image that has no shell and no `cp`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `tollgate copy-binary`.
#[derive(clap::Args)]
pub(crate) struct CopyBinaryArgs {
    /// Where the executable copy goes.
    dest: PathBuf,
}

pub(crate) fn run(args: &CopyBinaryArgs) -> ExitCode {
    match copy(&args.dest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: cannot copy tollgate to {}: {e}",
                args.dest.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Copies beside `dest` first and renames, so a container starting from
/// the volume never runs a half-written binary.
fn copy(dest: &std::path::Path) -> std::io::Result<()> {
    let me = std::env::current_exe()?;
    let tmp = dest.with_extension("tmp");
    std::fs::copy(&me, &tmp)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::rename(&tmp, dest)
}
