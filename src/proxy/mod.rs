//! The sidecar data path.
