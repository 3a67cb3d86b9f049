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
use vigil_host::exec;
use vigil_host::progress::Progress;
use vigil_model::images::ImageNames;

/// The workspace these images are built from (vigil runs from its checkout).
pub fn workspace_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).to_owned()
}

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

fn hash_tree(k: KeyBuilder, root: &Path, rel: &Path) -> std::io::Result<KeyBuilder> {
    let path = root.join(rel);
    if path.is_file() {
        return Ok(k.part(rel.to_string_lossy().as_bytes()).part(std::fs::read(&path)?));
    }
    let mut entries: Vec<_> = std::fs::read_dir(&path)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    entries.into_iter().try_fold(k, |k, e| hash_tree(k, root, &rel.join(e.file_name())))
}

/// What the images' build reads: the folders of the deployable crates and
/// of the workspace crates they depend on (not the CLI, its engine or its
/// tests, so a change there rebuilds no image), and the workspace's
/// manifest and lockfile.
fn inputs(workspace: &Path) -> Result<Vec<String>> {
    let read = |path: PathBuf| -> Result<toml::Table> {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        toml::from_str(&text)
            .map_err(|e| Error::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    };
    let root = read(workspace.join("Cargo.toml"))?;
    let table =
        |value: Option<&toml::Value>| value.and_then(toml::Value::as_table).cloned().unwrap_or_default();
    let root_workspace = table(root.get("workspace"));
    let workspace_paths = table(root_workspace.get("dependencies"));
    // Each member's package name, its folder and the folders of its path dependencies.
    let mut members: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let member_dirs =
        root_workspace.get("members").and_then(toml::Value::as_array).cloned().unwrap_or_default();
    for dir in member_dirs.iter().filter_map(toml::Value::as_str) {
        let manifest = read(workspace.join(dir).join("Cargo.toml"))?;
        let name = table(manifest.get("package"))
            .get("name")
            .and_then(toml::Value::as_str)
            .unwrap_or(dir)
            .to_owned();
        let dependencies = table(manifest.get("dependencies"))
            .into_iter()
            .filter_map(|(dependency, spec)| {
                let spec = spec.as_table()?;
                if let Some(path) = spec.get("path").and_then(toml::Value::as_str) {
                    return Some(normalise(&Path::new(dir).join(path)));
                }
                let inherited = spec.get("workspace").and_then(toml::Value::as_bool) == Some(true);
                let path = workspace_paths.get(&dependency)?.get("path")?.as_str()?;
                inherited.then(|| normalise(Path::new(path)))
            })
            .collect();
        members.insert(name, (dir.to_owned(), dependencies));
    }
    let by_dir: BTreeMap<String, String> =
        members.iter().map(|(name, (dir, _))| (normalise(Path::new(dir)), name.clone())).collect();
    let mut inputs = std::collections::BTreeSet::new();
    let mut pending: Vec<String> = vigil_addons::crates().into_iter().map(str::to_owned).collect();
    while let Some(name) = pending.pop() {
        let Some((dir, dependencies)) = members.get(&name) else { continue };
        if inputs.insert(normalise(Path::new(dir))) {
            pending.extend(dependencies.iter().filter_map(|d| by_dir.get(d).cloned()));
        }
    }
    let mut inputs: Vec<String> = inputs.into_iter().collect();
    inputs.extend(["Cargo.toml".to_owned(), "Cargo.lock".to_owned()]);
    Ok(inputs)
}

/// A relative path without `.` and `..` parts.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<&std::ffi::OsStr> = vec![];
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(p) => parts.push(p),
            _ => {}
        }
    }
    parts.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join("/")
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
        tags: vec![
            format!("{repository}/{name}:{}", short(key)),
            ImageNames::new(repository).version_tag(name),
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
    let crates = vigil_addons::crates();
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
    fn the_inputs_are_the_deployables_and_their_path_dependencies_only() {
        let inputs = inputs(&workspace_dir()).unwrap();
        for name in vigil_addons::crates() {
            assert!(inputs.iter().any(|i| i == name), "{name} is not among the image inputs {inputs:?}");
        }
        // The deployables' shared libraries, through a path or the workspace's table.
        for shared in ["telemetry", "alerter-api"] {
            assert!(
                inputs.contains(&shared.to_owned()),
                "{shared} is a dependency of a deployable: {inputs:?}"
            );
        }
        for not_deployed in ["vigil", "tests", "engine/build", "engine/addons", "engine/model"] {
            assert!(!inputs.contains(&not_deployed.to_owned()), "{not_deployed} is in no image: {inputs:?}");
        }
    }

    #[test]
    fn relative_paths_are_normalised() {
        assert_eq!(normalise(Path::new("engine/addons/../../alerter-api")), "alerter-api");
        assert_eq!(normalise(Path::new("./telemetry")), "telemetry");
    }
}
