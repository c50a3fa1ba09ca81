//! A Kubernetes client from the usual places, for the controller and for a
//! sidecar that reviews callers' ServiceAccount tokens.

use std::path::{Path, PathBuf};

use kube::Client;

/// Why no client could be built, naming what the user can change.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read.
    #[error("reading kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// No configuration was found anywhere.
    #[error(
        "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in a pod with a ServiceAccount ({0})"
    )]
    Infer(#[from] kube::config::InferConfigError),
    /// The configuration could not become a client.
    #[error("building the Kubernetes client: {0}")]
    Build(#[from] kube::Error),
}

/// A client from `kubeconfig`, else the usual places (`KUBECONFIG`,
/// `~/.kube/config`, in-cluster).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| ClientError::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}
