//! vigil: builds a real kubeadm cluster in local node containers from
//! upstream sources, deploys the vigil suite on it, and breaks nodes on purpose.
#![forbid(unsafe_code)]

/// What `up` installs, as typed objects, and the table of add-ons.
pub mod addons;
/// Subcommands wired to the library; the only place errors become anyhow.
pub mod app;
/// Server-side apply, with one discovery per cluster.
pub mod apply;
/// The upstream build: Go modules, debootstrap, images, content keys.
pub mod build;
pub mod cli;
/// The user's choices, their defaults, and what derives from them.
pub mod cluster;
/// What "ready" means for nodes, pods, rollouts, claims and Services.
pub mod conditions;
/// Free disk space, and the error when there is too little.
pub mod disk;
/// The one place vigil connects to Docker Engine (the build's image store and the Docker provider).
pub mod docker;
/// `vigil drill`: break a node under load and record what follows.
pub mod drill;
/// Local programs run with their output logged.
pub mod exec;
/// `vigil export logs`: journals, pod logs, events and describe output in one folder.
pub mod export;
/// Typed kubeadm configuration.
pub mod kubeadm;
/// Merging the cluster's context into the user's kubeconfig.
pub mod kubeconfig;
/// The kustomize layout under `manifests/`, generated from the typed objects.
pub mod manifests;
/// Prometheus rules and Grafana dashboards, generated (`dashboards/`).
pub mod monitoring;
/// vigil's password for the proxied addresses, in a file of the user's alone.
pub mod password_file;
/// The one way vigil waits: polling, or watching one object.
pub mod poll;
/// Host files that can hold secrets: 0600 in 0700 folders, never through a link.
pub mod private;
/// Status lines for long work.
pub mod progress;
/// Node providers: the traits, node-level helpers, and the Docker implementation.
pub mod provider;
/// The spec a cluster was made with, saved on its nodes and in it.
pub mod saved_spec;
/// `vigil status`.
pub mod status;
/// Bootstrap tokens and the CA pin.
pub mod token;
/// The CLI's own span export, with vigil's credentials for its cluster's Jaeger.
pub mod trace_export;
/// `vigil up` as an ordered list of steps.
pub mod up;
/// The pinned upstream releases.
pub mod versions;

#[cfg(test)]
pub(crate) mod golden {
    //! Golden files under `vigil/tests/golden/`. `VIGIL_UPDATE_GOLDEN=1 cargo test`
    //! rewrites them; review the diff before committing.
    pub fn assert_golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
        if std::env::var_os("VIGIL_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        pretty_assertions::assert_eq!(actual, expected, "golden file {}", path.display());
    }
}
