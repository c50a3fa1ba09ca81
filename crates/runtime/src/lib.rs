//! What both tollgate processes run on: serving HTTP with bounded resources
//! ([`serve`], [`slots`]), bodies ([`body`]), the admin listener ([`admin`]), build
//! identity ([`build_info`]), shutdown
//! ([`shutdown`]), structured logs ([`logging`]), OpenTelemetry traces ([`otel`]), a Kubernetes client
//! ([`kube_client`]), the TokenReview authenticator ([`token_review`]) and
//! SubjectAccessReviews ([`access_review`]).
//!
//! Nothing here knows about policies or MCP: the sidecar and the controller
//! both depend on this crate, and it on neither.

pub mod access_review;
pub mod admin;
pub mod body;
pub mod build_info;
pub mod expiring;
pub mod kube_client;
pub mod labels;
pub mod logging;
pub mod names;
pub mod otel;
pub mod serve;
pub mod shutdown;
pub mod slots;
pub mod token_review;
