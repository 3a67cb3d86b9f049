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
/// The workspace's `deploy` profile: optimised for size, stripped, abort on panic.
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
/// tests, so a change there rebuilds no image), and of the workspace's
/// manifest and lockfile only what these crates build with.
struct Inputs {
    /// The crates' folders, relative to the workspace.
    dirs: Vec<String>,
    /// The workspace's dependency table entries these crates inherit.
    inherited: std::collections::BTreeSet<String>,
    /// The workspace manifest (`Cargo.toml`), parsed.
    root: toml::Value,
}

/// A TOML file (a Cargo manifest or lockfile), parsed.
fn read_toml(path: &Path) -> Result<toml::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    toml::from_str(&text)
        .map_err(|e| Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

fn inputs(workspace: &Path) -> Result<Inputs> {
    let read = |path: PathBuf| read_toml(&path);
    let root = read(workspace.join("Cargo.toml"))?;
    let table =
        |value: Option<&toml::Value>| value.and_then(toml::Value::as_table).cloned().unwrap_or_default();
    let root_workspace = table(root.get("workspace"));
    let workspace_paths = table(root_workspace.get("dependencies"));
    // Each member's package name, its folder, the folders of its path
    // dependencies and the workspace entries it inherits.
    let mut members: BTreeMap<String, (String, Vec<String>, Vec<String>)> = BTreeMap::new();
    let member_dirs =
        root_workspace.get("members").and_then(toml::Value::as_array).cloned().unwrap_or_default();
    for dir in member_dirs.iter().filter_map(toml::Value::as_str) {
        let manifest = read(workspace.join(dir).join("Cargo.toml"))?;
        let name = table(manifest.get("package"))
            .get("name")
            .and_then(toml::Value::as_str)
            .unwrap_or(dir)
            .to_owned();
        let mut paths = vec![];
        let mut inherited = vec![];
        // What a binary's build reads: its dependencies and build dependencies.
        for section in ["dependencies", "build-dependencies"] {
            for (dependency, spec) in table(manifest.get(section)) {
                let Some(spec) = spec.as_table() else { continue };
                if let Some(path) = spec.get("path").and_then(toml::Value::as_str) {
                    paths.push(normalise(&Path::new(dir).join(path)));
                    continue;
                }
                if spec.get("workspace").and_then(toml::Value::as_bool) == Some(true) {
                    if let Some(path) = workspace_paths.get(&dependency).and_then(|d| d.get("path")?.as_str())
                    {
                        paths.push(normalise(Path::new(path)));
                    }
                    inherited.push(dependency);
                }
            }
        }
        members.insert(name, (dir.to_owned(), paths, inherited));
    }
    let by_dir: BTreeMap<String, String> =
        members.iter().map(|(name, (dir, _, _))| (normalise(Path::new(dir)), name.clone())).collect();
    let mut dirs = std::collections::BTreeSet::new();
    let mut inherited = std::collections::BTreeSet::new();
    let mut pending: Vec<String> = vigil_addons::crates().into_iter().map(str::to_owned).collect();
    while let Some(name) = pending.pop() {
        let Some((dir, paths, from_workspace)) = members.get(&name) else { continue };
        if dirs.insert(normalise(Path::new(dir))) {
            inherited.extend(from_workspace.iter().cloned());
            pending.extend(paths.iter().filter_map(|d| by_dir.get(d).cloned()));
        }
    }
    Ok(Inputs { dirs: dirs.into_iter().collect(), inherited, root })
}

/// Of the workspace manifest, what the deployables' build reads: the
/// profiles, the resolver, the package defaults and lints, and the dependency entries
/// they inherit (not the member list, nor another crate's dependencies).
fn root_manifest_part(root: &toml::Value, inherited: &std::collections::BTreeSet<String>) -> String {
    let mut part = toml::Table::new();
    if let Some(profiles) = root.get("profile") {
        part.insert("profile".into(), profiles.clone());
    }
    let workspace = root.get("workspace");
    for key in ["resolver", "package", "lints"] {
        if let Some(value) = workspace.and_then(|w| w.get(key)) {
            part.insert(key.into(), value.clone());
        }
    }
    let dependencies: toml::Table = workspace
        .and_then(|w| w.get("dependencies"))
        .and_then(toml::Value::as_table)
        .map(|all| {
            all.iter()
                .filter(|(name, _)| inherited.contains(*name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    part.insert("dependencies".into(), toml::Value::Table(dependencies));
    toml::to_string(&part).expect("a TOML table serializes")
}

/// Of the lockfile, the packages the `roots` build with (their closure
/// through the lock's dependency lists), as one text.
fn locked_closure(lock: &toml::Value, roots: &[&str]) -> String {
    let packages: Vec<&toml::Value> =
        lock.get("package").and_then(toml::Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    fn field<'a>(package: &'a toml::Value, key: &str) -> &'a str {
        package.get(key).and_then(toml::Value::as_str).unwrap_or("")
    }
    // A dependency is "name", "name version" or "name version (source)".
    let matches = |p: &toml::Value, reference: &str| {
        let mut words = reference.split(' ');
        let name = words.next().unwrap_or("");
        field(p, "name") == name && words.next().is_none_or(|version| field(p, "version") == version)
    };
    let mut chosen = std::collections::BTreeSet::new();
    let mut pending: Vec<String> = roots.iter().map(|r| (*r).to_owned()).collect();
    while let Some(reference) = pending.pop() {
        for (index, package) in packages.iter().enumerate() {
            if matches(package, &reference) && chosen.insert(index) {
                let dependencies = package.get("dependencies").and_then(toml::Value::as_array);
                pending.extend(
                    dependencies.into_iter().flatten().filter_map(toml::Value::as_str).map(str::to_owned),
                );
            }
        }
    }
    chosen
        .into_iter()
        .map(|i| toml::to_string(packages[i]).expect("a lock entry serializes") + "\n")
        .collect()
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
    let inputs = inputs(workspace)?;
    let lock = read_toml(&workspace.join("Cargo.lock"))?;
    let k = KeyBuilder::new("workload")
        .part(TARGET)
        .part(root_manifest_part(&inputs.root, &inputs.inherited))
        .part(locked_closure(&lock, &vigil_addons::crates()));
    inputs
        .dirs
        .iter()
        .try_fold(k, |k, dir| hash_tree(k, workspace, Path::new(dir)))
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
        let inputs = inputs(&workspace_dir()).unwrap().dirs;
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

    const LOCK: &str = r#"
[[package]]
name = "web"
version = "0.1.0"
dependencies = ["tokio", "serde 1.0.2"]

[[package]]
name = "tokio"
version = "1.0.0"
dependencies = ["bytes"]

[[package]]
name = "bytes"
version = "1.1.0"

[[package]]
name = "serde"
version = "1.0.2"

[[package]]
name = "serde"
version = "0.9.0"

[[package]]
name = "russh"
version = "0.65.4"
dependencies = ["bytes"]
"#;

    #[test]
    fn the_lock_counts_only_what_the_deployables_build_with() {
        let lock: toml::Value = toml::from_str(LOCK).unwrap();
        let closure = locked_closure(&lock, &["web"]);
        for wanted in ["name = \"web\"", "name = \"tokio\"", "name = \"bytes\"", "version = \"1.0.2\""] {
            assert!(closure.contains(wanted), "{wanted} in {closure}");
        }
        assert!(!closure.contains("russh") && !closure.contains("0.9.0"), "{closure}");
        // Another crate's new dependency leaves the key's part as it was.
        let grown: toml::Value =
            toml::from_str(&format!("{LOCK}\n[[package]]\nname = \"ssh-key\"\nversion = \"0.7.0\"\n"))
                .unwrap();
        assert_eq!(locked_closure(&grown, &["web"]), closure);
    }

    #[test]
    fn the_workspace_manifest_counts_only_what_the_deployables_read() {
        let root: toml::Value = toml::from_str(
            r#"
[workspace]
members = ["web", "vigil"]
[workspace.dependencies]
tokio = "1"
russh = "0.65"
[profile.deploy]
lto = "fat"
"#,
        )
        .unwrap();
        let inherited = ["tokio".to_owned()].into();
        let part = root_manifest_part(&root, &inherited);
        assert!(part.contains("tokio") && part.contains("lto = \"fat\""), "{part}");
        assert!(!part.contains("russh") && !part.contains("members"), "{part}");
        // The real workspace: the deployables inherit serde, not the SSH provider nor a test-only crate.
        let real = inputs(&workspace_dir()).unwrap().inherited;
        assert!(
            real.contains("serde") && !real.contains("vigil-provider-ssh") && !real.contains("tempfile"),
            "{real:?}"
        );
    }

    #[test]
    fn relative_paths_are_normalised() {
        assert_eq!(normalise(Path::new("engine/addons/../../alerter-api")), "alerter-api");
        assert_eq!(normalise(Path::new("./telemetry")), "telemetry");
    }
}
