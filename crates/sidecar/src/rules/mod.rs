//! The rules in force ([`store`]) and where they come from: policy files
//! ([`files`]) or the controller's snapshot stream ([`controller`]); plus what
//! the rules read besides a call: the upstream's own tool catalogue
//! ([`catalog`]) and the controller's view of the cluster ([`cluster`]).

pub(crate) mod catalog;
pub(crate) mod cluster;
pub(crate) mod controller;
pub(crate) mod files;
pub(crate) mod store;
