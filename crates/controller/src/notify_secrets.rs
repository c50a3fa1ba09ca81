//! Reading the Secrets policies name for their approval notifications
//! (`approval.notify.secretRef`), for the index to hand their keys to the
//! sidecars the policy selects.
//!
//! Only what accepted policies name is read, one `get` each — no list, no
//! watch — so the controller's RBAC can be `get` on exactly those Secrets
//! (`resourceNames`, docs/approvals.md). They are read again when the
//! policies change and every [`REREAD`], which is how a rotated key reaches
//! the sidecars. Nothing here logs a key; a Secret that cannot be read is
//! reported in the policy's status (`NotificationsReady`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use tokio::sync::watch;

use tollgate_policy::snapshot::NotifyKey;

use crate::index::{Index, Key, SecretRead};

/// How often the named Secrets are read again (key rotation).
pub(crate) const REREAD: Duration = Duration::from_secs(30);
/// The least time between two reads, however often policies change.
const SPACING: Duration = Duration::from_secs(1);

/// Reads the named Secrets until shutdown.
pub(crate) async fn run(
    client: Client,
    index: Arc<Mutex<Index>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = index.lock().unwrap_or_else(|e| e.into_inner()).changes();
    loop {
        let refs = index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .secret_refs();
        let mut read = BTreeMap::new();
        for key in refs {
            let got = read_one(&client, &key).await;
            read.insert(key, got);
        }
        index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply_secrets(read);
        changes.borrow_and_update();
        tokio::select! {
            _ = tokio::time::sleep(REREAD) => {}
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                tokio::time::sleep(SPACING).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn read_one(client: &Client, (namespace, name): &Key) -> SecretRead {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(secret)) => {
            let version = secret.metadata.resource_version.unwrap_or_default();
            SecretRead::Found(
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, key)| {
                        (
                            k,
                            NotifyKey {
                                resource_version: version.clone(),
                                key,
                            },
                        )
                    })
                    .collect(),
            )
        }
        Ok(None) => SecretRead::Unreadable(format!("Secret {namespace}/{name} not found")),
        Err(kube::Error::Api(e)) if e.code == 403 => SecretRead::Unreadable(format!(
            "the controller may not read Secret {namespace}/{name}: give its ServiceAccount get on that Secret (chart value approvals.notifySecrets, docs/approvals.md)"
        )),
        Err(e) => {
            tracing::warn!(secret = %format!("{namespace}/{name}"), error = %e, "cannot read a notification Secret");
            SecretRead::Unreadable(format!("reading Secret {namespace}/{name} failed: {e}"))
        }
    }
}
