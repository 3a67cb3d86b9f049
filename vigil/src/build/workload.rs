//! Images of vigil's own deployables (`web`, `probe-server`), built from this
//! workspace: static binaries (glibc, `crt-static`) on an empty image, run as
//! a non-root user. They are not baked into the node image; `vigil up` loads
//! them into the nodes, so changing them never rebuilds the nodes.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::{
    Error, Result,
    image::{ContextFile, Instruction, Recipe},
    key::{KeyBuilder, short},
};
use crate::{exec, progress::Progress};

/// The workspace these images are built from (vigil runs from its checkout).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the vigil crate sits in the workspace").to_owned()
}

/// The crates the images contain, and what else their build reads.
const INPUTS: &[&str] = &["web", "probe-server", "node-exporter", "telemetry", "Cargo.toml", "Cargo.lock"];
/// The deployables built into images, by crate (and binary) name.
const CRATES: [&str; 3] = ["web", "probe-server", "node-exporter"];
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The workspace's `deploy` profile: LTO, one codegen unit, stripped, abort on panic.
const PROFILE: &str = "deploy";
/// An unprivileged user with no home and no shell: nothing to log in as.
const USER: &str = "65532:65532";

#[derive(Debug, Clone)]
pub struct WorkloadImages {
    pub web: String,
    pub probe_server: String,
    pub node_exporter: String,
    /// Every tag of both images (the key tags above and the version tags
    /// the committed manifests name), all of which the nodes receive.
    pub all_tags: Vec<String>,
}

fn hash_tree(k: KeyBuilder, root: &Path, rel: &Path) -> std::io::Result<KeyBuilder> {
    let path = root.join(rel);
    if path.is_file() {
        return Ok(k.part(rel.to_string_lossy().as_bytes()).part(std::fs::read(&path)?));
    }
    let mut entries: Vec<_> = std::fs::read_dir(&path)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    entries.into_iter().try_fold(k, |k, e| hash_tree(k, root, &rel.join(e.file_name())))
}

/// The content key of the workload sources.
pub fn sources_key(workspace: &Path) -> Result<String> {
    INPUTS
        .iter()
        .try_fold(KeyBuilder::new("workload").part(TARGET), |k, input| {
            hash_tree(k, workspace, Path::new(input))
        })
        .map(KeyBuilder::finish)
        .map_err(|e| Error::io(workspace, e))
}

fn recipe(name: &'static str, repository: &str, key: &str, binary: PathBuf) -> Recipe {
    Recipe {
        name,
        // The key tag makes a code change roll the Deployment; the version
        // tag is what the committed manifests name.
        tags: vec![
            format!("{repository}/{name}:{}", short(key)),
            format!("{repository}/{name}:{}", env!("CARGO_PKG_VERSION")),
        ],
        instructions: vec![
            Instruction::From("scratch".into()),
            Instruction::CopyRootfs,
            Instruction::User(USER),
            Instruction::Entrypoint(vec![format!("/{name}")]),
        ],
        files: vec![ContextFile::Path {
            dest: format!("/{name}"),
            source: binary,
            mode: 0o755,
            key: key.into(),
        }],
        parent_keys: vec![],
    }
}

fn binary_path(workspace: &Path, name: &str) -> PathBuf {
    workspace.join("target").join("static").join(TARGET).join(PROFILE).join(name)
}

/// Builds the static binaries the images carry (the memory benchmarks
/// measure these very files); returns their paths, in `CRATES` order.
pub async fn build_binaries(cache: &Path, progress: &Progress) -> Result<[PathBuf; 3]> {
    let workspace = workspace_dir();
    let step = progress.step(format!("cargo build --profile deploy: {} (static)", CRATES.join(", ")));
    let log = cache.join("logs").join("cargo-workload.log");
    let mut cargo = Command::new("cargo");
    cargo
        .args(["build", "--profile", PROFILE, "--locked", "--target", TARGET])
        .args(CRATES.iter().flat_map(|c| ["-p", c]))
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", workspace.join("target").join("static"))
        // Static and non-PIE: the images hold nothing but the binary, and
        // no load-time relocation touches (and keeps resident) its pages.
        .env("RUSTFLAGS", "-C target-feature=+crt-static -C relocation-model=static");
    let mut compiled = 0;
    exec::run_logged(cargo, &log, |line| {
        if line.trim_start().starts_with("Compiling") {
            compiled += 1;
            step.update(format!("{compiled} crates compiled"));
        }
    })
    .await
    .map_err(|e| Error::step(&CRATES.join(", "), "cargo build", e))?;
    step.done();
    Ok(CRATES.map(|name| binary_path(&workspace, name)))
}

pub async fn ensure(
    docker: &bollard::Docker,
    repository: &str,
    cache: &Path,
    progress: &Progress,
) -> Result<WorkloadImages> {
    let workspace = workspace_dir();
    let key = sources_key(&workspace)?;
    let bin = |name: &str| binary_path(&workspace, name);
    let recipes = CRATES.map(|name| recipe(name, repository, &key, bin(name)));
    let images = WorkloadImages {
        web: recipes[0].tags[0].clone(),
        probe_server: recipes[1].tags[0].clone(),
        node_exporter: recipes[2].tags[0].clone(),
        all_tags: recipes.iter().flat_map(|r| r.tags.clone()).collect(),
    };
    let mut current = true;
    for r in &recipes {
        current &= super::all_tags_current(docker, r).await;
    }
    if current {
        progress
            .step(format!("images {}", CRATES.join(", ")))
            .skipped(format!("up to date (key {})", short(&key)));
        return Ok(images);
    }
    build_binaries(cache, progress).await?;
    for r in &recipes {
        let step = progress.step(format!("image {}", r.primary_tag()));
        r.ensure(docker, &cache.join("work"), &cache.join("logs").join(format!("image-{}.log", r.name)))
            .await?;
        step.done();
    }
    Ok(images)
}
