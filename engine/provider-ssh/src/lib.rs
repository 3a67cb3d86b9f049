//! The SSH provider: machines the user already has, reached over SSH
//! (issue 19). So far its inventory: the hosts, how each is reached and
//! how its host key is checked, and the cluster's networks, all checked
//! before any connection.
#![forbid(unsafe_code)]

pub mod inventory;
