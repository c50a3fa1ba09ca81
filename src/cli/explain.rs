//! `tollgate explain POD` (also `kubectl tollgate explain POD`): which
//! McpToolPolicies and ClusterMcpToolPolicies govern a pod and their rules
//! in the order they are judged, computed with the controller's own index
//! and the sidecar's compiler (`tollgate_controller::explain`).
//!
//! Exit codes, for scripts: 0 at least one policy governs the pod; 1 none
//! does (no sidecar, or no policy selects it); 2 the pod or the apiserver
//! could not be read.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_controller::explain::{ExplainError, explain};

/// Flags of `tollgate explain`.
#[derive(clap::Args)]
pub(crate) struct ExplainArgs {
    /// The pod.
    pod: String,
    /// Its namespace.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// A kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

/// Why explain could not run.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Client(#[from] tollgate_runtime::kube_client::ClientError),
    #[error(transparent)]
    Explain(#[from] ExplainError),
}

pub(crate) fn run(args: &ExplainArgs) -> ExitCode {
    let explained = match super::block_on(async {
        let client = tollgate_runtime::kube_client::client(args.kubeconfig.as_deref()).await?;
        Ok::<_, Error>(explain(client, &args.namespace, &args.pod).await?)
    }) {
        Ok(e) => e,
        Err(code) => return code,
    };
    match explained {
        Ok(e) => {
            println!("{e}");
            if e.governed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
