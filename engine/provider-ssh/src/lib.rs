//! The SSH provider: machines the user already has, reached over SSH
//! (issue 19). So far: its inventory (the hosts, how each is reached and how
//! its host key is checked, the cluster's networks, all checked before any
//! connection), the transport (one russh connection per host), a host as a
//! [`vigil_provider::Node`], the preflight of a host (and vigil's fixes),
//! the runbook of every command run, and vigil's build installed on a host
//! (and removed).
#![forbid(unsafe_code)]

pub mod hosts;
pub mod install;
pub mod inventory;
pub mod node;
pub mod preflight;
pub mod runbook;
pub mod transport;
