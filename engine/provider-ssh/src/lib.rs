//! The SSH provider: machines the user already has, reached over SSH
//! ([`SshProvider`]). Its parts: the inventory (the hosts, how each is reached and how
//! its host key is checked, the cluster's networks, all checked before any
//! connection), the transport (one russh connection per host), a host as a
//! [`vigil_provider::Node`], the preflight of a host (and vigil's fixes),
//! the runbook of every command run, vigil's build installed on a host
//! (and removed), and the cluster taken off a host again (`teardown`).
#![forbid(unsafe_code)]

pub mod hosts;
pub mod install;
pub mod inventory;
pub mod node;
pub mod preflight;
pub mod provider;
pub mod runbook;
pub mod teardown;
pub mod transport;

pub use provider::SshProvider;
