//! `tollgate doctor` (also `kubectl tollgate doctor`, with the binary on
//! PATH as `kubectl-tollgate`): checks an installation from the apiserver.
//!
//! Exit codes, for scripts: 0 nothing failed (warnings may be printed),
//! 1 at least one check failed, 2 the apiserver could not be asked.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_controller::doctor::{DoctorConfig, Status, diagnose};

/// Flags of `tollgate doctor`.
#[derive(clap::Args)]
pub(crate) struct DoctorArgs {
    /// The release namespace.
    #[arg(long, short = 'n', default_value = "tollgate-system")]
    namespace: String,
    /// The controller Deployment and MutatingWebhookConfiguration name (the release's full name).
    #[arg(long, default_value = "tollgate")]
    name: String,
    /// The leader Lease.
    #[arg(long, default_value = "tollgate-controller")]
    lease: String,
    /// The namespace the webhook is dialled in: a pod labelled
    /// tollgate.dev/inject=enabled is created there with --dry-run (nothing
    /// is stored).
    #[arg(long, default_value = "default")]
    probe_namespace: String,
    /// A kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

/// Why doctor could not run its checks.
#[derive(Debug, thiserror::Error)]
enum DoctorError {
    #[error(transparent)]
    Client(#[from] tollgate_runtime::kube_client::ClientError),
    #[error(transparent)]
    Api(#[from] tollgate_controller::doctor::DiagnoseError),
}

pub(crate) fn run(args: &DoctorArgs) -> ExitCode {
    let config = DoctorConfig {
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        lease: args.lease.clone(),
        probe_namespace: args.probe_namespace.clone(),
    };
    let findings = match super::block_on(async {
        let client = tollgate_runtime::kube_client::client(args.kubeconfig.as_deref()).await?;
        Ok::<_, DoctorError>(diagnose(client, &config).await?)
    }) {
        Ok(f) => f,
        Err(code) => return code,
    };
    match findings {
        Ok(findings) => {
            for f in &findings {
                println!("{f}");
            }
            if findings.iter().any(|f| f.status == Status::Fail) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
