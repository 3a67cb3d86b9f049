//! vigil: builds a real kubeadm cluster in local node containers from
//! upstream sources, deploys the vigil suite on it, and breaks nodes on
//! purpose. This crate is the CLI: `up`, `drill`, `export`, `status` and
//! their wiring; the engine below it is in `engine/`.
#![forbid(unsafe_code)]

// The engine's crates, under the names the CLI's modules and the end-to-end
// tests use. Cargo enforces their layers: model and host at the bottom, the
// provider traits, the Docker provider, the add-ons, the build, then this CLI.
pub use vigil_addons::{self as addons, apply, manifests, monitoring};
pub use vigil_build as build;
pub use vigil_host::{disk, exec, progress};
pub use vigil_model::{cluster, images, saved_spec, versions};
pub use vigil_provider_docker::engine as docker;

/// `vigil alerts`: Alertmanager's alerts and silences in the terminal.
pub mod alerts;
/// Subcommands wired to the library; the only place errors become anyhow.
pub mod app;
pub mod cli;
/// What "ready" means for nodes, pods, rollouts, claims and Services.
pub mod conditions;
/// `vigil drill`: break a node under load and record what follows.
pub mod drill;
/// `vigil export logs`: journals, pod logs, events and describe output in one folder.
pub mod export;
/// Typed kubeadm configuration.
pub mod kubeadm;
/// Merging the cluster's context into the user's kubeconfig.
pub mod kubeconfig;
/// vigil's password for the proxied addresses, in a file of the user's alone.
pub mod password_file;
/// The one way vigil waits: polling, or watching one object.
pub mod poll;
/// Host files that can hold secrets: 0600 in 0700 folders, never through a link.
pub mod private;
/// Node providers: the traits (`vigil-provider`), the Docker provider, and the choice between them.
pub mod provider;
/// `vigil status`.
pub mod status;
/// Text from others (label values, span names) made safe for a terminal.
pub mod terminal;
/// Bootstrap tokens and the CA pin.
pub mod token;
/// The CLI's own span export, with vigil's credentials for its cluster's Jaeger.
pub mod trace_export;
/// `vigil traces show`: a trace from Jaeger as a waterfall, in text or SVG.
pub mod traces;
/// `vigil up` as an ordered list of steps.
pub mod up;
