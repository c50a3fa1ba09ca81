//! The sidecar injection webhook, served by the controller over TLS.
//!
//! Rooms: [`inject`] decides and builds the patch (pure); [`server`] speaks
//! AdmissionReview over HTTPS; [`certs`] keeps the serving certificate and
//! the `caBundle` the apiserver trusts it by.

pub(crate) mod certs;
pub(crate) mod inject;
pub(crate) mod server;
