//! The machine vigil runs on: local programs run with their output logged,
//! status lines for long work, and free disk space.
#![forbid(unsafe_code)]

/// Free disk space, and the error when there is too little.
pub mod disk;
/// Local programs run with their output logged.
pub mod exec;
/// Status lines for long work.
pub mod progress;

/// Golden files under a crate's `tests/golden/`, for its unit tests.
/// `VIGIL_UPDATE_GOLDEN=1 cargo test` rewrites them; review the diff before
/// committing.
#[cfg(feature = "golden")]
pub fn assert_golden(crate_dir: &str, name: &str, actual: &str) {
    let path = std::path::Path::new(crate_dir).join("tests/golden").join(name);
    if std::env::var_os("VIGIL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pretty_assertions::assert_eq!(actual, expected, "golden file {}", path.display());
}
