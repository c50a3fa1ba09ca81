//! The sidecar injection webhook, served by the controller over TLS.
//!
//! Rooms: [`inject`] decides and builds the patch (pure); [`server`] speaks
//! AdmissionReview over HTTPS with the controller's certificate
//! ([`crate::certs`], which also keeps the `caBundle` the apiserver trusts
//! it by).

pub(crate) mod inject;
pub(crate) mod server;
