//! vigil: builds a real kubeadm cluster in local node containers from
//! upstream sources, deploys the vigil suite on it, and breaks nodes on purpose.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod create;
pub mod exec;
pub mod kubeadm;
pub mod kubeconfig;
pub mod progress;
pub mod provider;
pub mod status;
pub mod token;
pub mod versions;
pub mod build;
pub mod docker;

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
pub mod addons;
pub mod app;
pub mod cli;
