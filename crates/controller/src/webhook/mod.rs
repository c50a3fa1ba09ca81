//! The controller's admission webhook, served over TLS: sidecar injection,
//! and people's decisions on held tool calls ([`approval`]).
//!
//! Rooms: [`inject`] decides and builds the patch (pure); [`approval`]
//! checks a decision and turns it into a vote (pure); [`server`] speaks
//! AdmissionReview over HTTPS with the controller's certificate
//! ([`crate::certs`], which also keeps the `caBundle` the apiserver trusts
//! it by).

pub(crate) mod approval;
pub(crate) mod inject;
pub(crate) mod server;
