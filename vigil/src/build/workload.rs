//! Images of vigil's own deployables, one per workspace crate the add-on
//! table names (`addons::crates`): static binaries (glibc, `crt-static`) on
//! an empty image, run as a non-root user. They are not baked into the node
//! image; `vigil up` loads them into the nodes, so changing them never
//! rebuilds the nodes.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

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

/// Workspace members no image contains: the CLI and its tests.
const NOT_DEPLOYED: &[&str] = &["vigil", "tests"];
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The workspace's `deploy` profile: LTO, one codegen unit, stripped, abort on panic.
const PROFILE: &str = "deploy";
/// An unprivileged user with no home and no shell: nothing to log in as.
const USER: &str = "65532:65532";

/// The images of the deployables, by crate.
#[derive(Debug, Clone, Default)]
pub struct Images {
    /// Each crate's image under its content-keyed tag, which `up` deploys.
    pub refs: BTreeMap<&'static str, String>,
    /// Every tag of every image (the key tags and the version tags the
    /// committed manifests name), all of which the nodes receive.
    pub all_tags: Vec<String>,
}

/// The tag the committed manifests name: the workspace version.
pub fn version_tag(repository: &str, name: &str) -> String {
    format!("{repository}/{name}:{}", env!("CARGO_PKG_VERSION"))
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

/// What the images' build reads: every workspace member but the CLI and its
/// tests (the deployables and the libraries they share), and the manifests.
fn inputs(workspace: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        workspace: Workspace,
    }
    #[derive(serde::Deserialize)]
    struct Workspace {
        members: Vec<String>,
    }
    let path = workspace.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let manifest: Manifest = toml::from_str(&text)
        .map_err(|e| Error::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let mut inputs: Vec<String> =
        manifest.workspace.members.into_iter().filter(|m| !NOT_DEPLOYED.contains(&m.as_str())).collect();
    inputs.extend(["Cargo.toml".to_owned(), "Cargo.lock".to_owned()]);
    Ok(inputs)
}

/// The content key of the deployables' sources.
pub fn sources_key(workspace: &Path) -> Result<String> {
    inputs(workspace)?
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
        tags: vec![format!("{repository}/{name}:{}", short(key)), version_tag(repository, name)],
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

/// Builds the static binaries of `crates` (each crate's binary has its
/// name); returns their paths. The memory benchmarks measure these very files.
pub async fn build_binaries(
    crates: &[&'static str],
    cache: &Path,
    progress: &Progress,
) -> Result<BTreeMap<&'static str, PathBuf>> {
    let workspace = workspace_dir();
    let step = progress.line(format!("cargo build --profile deploy: {} (static)", crates.join(", ")));
    let log = cache.join("logs").join("cargo-workload.log");
    let mut cargo = Command::new("cargo");
    cargo
        .args(["build", "--profile", PROFILE, "--locked", "--target", TARGET])
        .args(crates.iter().flat_map(|c| ["-p", c]))
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
    .map_err(|e| Error::step(&crates.join(", "), "cargo build", e))?;
    step.done();
    Ok(crates.iter().map(|name| (*name, binary_path(&workspace, name))).collect())
}

/// Builds the images of every crate the add-on table names, unless current.
pub async fn ensure(
    docker: &bollard::Docker,
    repository: &str,
    cache: &Path,
    progress: &Progress,
) -> Result<Images> {
    let workspace = workspace_dir();
    let key = sources_key(&workspace)?;
    let crates = crate::addons::crates();
    let recipes: Vec<Recipe> =
        crates.iter().map(|name| recipe(name, repository, &key, binary_path(&workspace, name))).collect();
    let images = Images {
        refs: recipes.iter().map(|r| (r.name, r.primary_tag().to_owned())).collect(),
        all_tags: recipes.iter().flat_map(|r| r.tags.clone()).collect(),
    };
    let mut current = true;
    for r in &recipes {
        current &= super::all_tags_current(docker, r).await;
    }
    if current {
        progress
            .line(format!("images {}", crates.join(", ")))
            .skipped(format!("up to date (key {})", short(&key)));
        return Ok(images);
    }
    build_binaries(&crates, cache, progress).await?;
    for r in &recipes {
        let step = progress.line(format!("image {}", r.primary_tag()));
        r.ensure(docker, &cache.join("work"), &cache.join("logs").join(format!("image-{}.log", r.name)))
            .await?;
        step.done();
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_deployable_crate_is_a_workspace_member() {
        let inputs = inputs(&workspace_dir()).unwrap();
        for name in crate::addons::crates() {
            assert!(inputs.iter().any(|i| i == name), "{name} is not among the image inputs {inputs:?}");
        }
        assert!(inputs.contains(&"telemetry".to_owned()), "shared libraries are inputs too: {inputs:?}");
        assert!(!inputs.contains(&"vigil".to_owned()));
    }
}
