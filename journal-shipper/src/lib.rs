//! journal-shipper: the node's own journal (the kubelet's and containerd's
//! entries) into the log store, next to the pods' lines vlagent ships.
//! vlagent has no journal reader, and systemd-journal-upload would need
//! systemd in the image and a streaming request no bounded proxy route
//! takes; this reads the host's journal files read-only with a pure-Rust
//! reader, and posts bounded batches in the journal export format to
//! VictoriaLogs' journald endpoint as the log shippers' user. It resumes
//! after the last entry the store took (a cursor in a file on the node).
#![forbid(unsafe_code)]

/// Bounded batches of the entries of the units asked for.
pub mod batch;
/// The journal export format.
pub mod export;
/// Reading the journal files.
pub mod journal;
/// `/metrics`.
pub mod metrics;
/// The read, deliver, save loop.
pub mod ship;
/// The saved position.
pub mod state;
