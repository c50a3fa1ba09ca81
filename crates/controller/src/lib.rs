//! The controller: watches `McpToolPolicy` and `ClusterMcpToolPolicy`
//! objects, namespaces' labels and the pods that run a tollgate sidecar ([`watch`]), compiles each pod's rules in the [`index`],
//! pushes them to the sidecars ([`push`]), and reports in each policy's
//! status how many selected sidecars enforce it ([`status`], leader only,
//! see [`lease`]). It also serves the injection [`webhook`].
//!
//! Rooms: [`object`] reads policies leniently, [`index`] judges them
//! strictly; [`certs`] keeps the serving certificate [`https`] serves the
//! push server and the webhook with; [`acks`] shares what sidecars acknowledged between replicas;
//! [`kubevirt`] watches what resource rules need from the cluster;
//! [`metrics`] counts it all; [`config`] and [`run`] start it. [`doctor`]
//! is the operator's read-only check of an installation.

mod acks;
mod certs;
mod cluster_state;
mod config;
pub mod doctor;
pub mod explain;
mod https;
mod index;
mod kubevirt;
mod lease;
mod metrics;
mod notify_secrets;
mod object;
mod push;
mod run;
mod status;
mod traces;
mod watch;
mod webhook;

pub use config::{ControllerConfig, NativeSidecars, TlsConfig, WebhookConfig};
pub use object::{ClusterPolicyObject, PolicyObject};
pub use run::{Running, StartError, run, start};
pub use webhook::inject::InjectConfig;
