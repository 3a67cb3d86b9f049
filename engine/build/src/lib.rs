//! The upstream build: Go modules compiled through the module proxy, Debian
//! root filesystems from debootstrap, component images tagged the way
//! kubeadm expects for the configured image repository, and the node image
//! that carries them all. Every artifact is keyed by the content of its
//! inputs; an artifact whose key is unchanged is not rebuilt.
#![forbid(unsafe_code)]

pub mod debian;
pub mod go;
pub mod host;
pub mod image;
pub mod node;
pub mod preload;
pub mod rootfs;
pub mod sources;
pub mod ui;
pub mod workload;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

pub use bollard::Docker;
use futures::{StreamExt as _, TryStreamExt as _};

use image::{ContextFile, Instruction, Recipe};
use vigil_host::exec;
use vigil_host::progress::Progress;
pub use vigil_model::images::ImageNames;
use vigil_model::key;
use vigil_model::versions;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One step of building one artifact failed; the inner error names the command and log.
    #[error("building {artifact}: {step} failed")]
    Step {
        artifact: String,
        step: &'static str,
        #[source]
        source: Box<exec::Error>,
    },
    /// A build tool answered something the build cannot use.
    #[error("building {artifact}: {what}")]
    Unexpected { artifact: String, what: String },
    /// A file the build reads or writes.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Docker API refused a request.
    #[error("docker: {what}")]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// `docker build` reported an error.
    #[error("docker build of {image} failed: {message}\n  build log: {}", log.display())]
    ImageBuild { image: String, message: String, log: PathBuf },
    /// debootstrap needs to know where apt gets Debian's packages.
    #[error(
        "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list: set VIGIL_DEBIAN_MIRROR to the mirror apt uses"
    )]
    NoMirror,
    /// Too little free space for the build.
    #[error(transparent)]
    Disk(#[from] vigil_host::disk::LowDisk),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, for warnings that do not stop the build.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Error {
    fn step(artifact: &str, step: &'static str, source: exec::Error) -> Self {
        Error::Step { artifact: artifact.into(), step, source: Box::new(source) }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_owned(), source }
    }
}

/// Where build outputs and logs go: `$VIGIL_CACHE_DIR`, else `$XDG_CACHE_HOME/vigil`, else `~/.cache/vigil`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VIGIL_CACHE_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("vigil")
}

/// Every image the build produces, by a short name (`vigil images`): the
/// node image, what it preloads, and the deployables' (version tags).
pub fn all_images(names: &ImageNames) -> Vec<(&'static str, String)> {
    let mut images = vec![
        ("node", names.node()),
        ("kubectl", names.kubectl()),
        ("kube-apiserver", names.kube("kube-apiserver")),
        ("kube-controller-manager", names.kube("kube-controller-manager")),
        ("kube-scheduler", names.kube("kube-scheduler")),
        ("kube-proxy", names.kube("kube-proxy")),
        ("etcd", names.etcd()),
        ("coredns", names.coredns()),
        ("pause", names.pause()),
        ("flannel", names.flannel()),
    ];
    images.extend(
        vigil_addons::upstream_images().map(|image| (image.name, image.reference(&names.repository))),
    );
    images.push(("base", names.base()));
    images.extend(vigil_addons::crates().into_iter().map(|c| (c, names.version_tag(c))));
    images
}

/// The local Docker Engine as the store the deployables' images are shipped
/// to nodes from.
pub struct LocalImages(pub Docker);

#[async_trait::async_trait]
impl vigil_provider::ImageArchive for LocalImages {
    async fn archive(&self, refs: &[String]) -> std::result::Result<Vec<u8>, vigil_provider::BoxError> {
        Ok(image::save_to_memory(&self.0, refs).await?)
    }
}

/// A binary the build makes: one of an upstream Go module's (with its web
/// UI built first, for some), or pause (C).
enum Binary {
    Go(go::GoBinary),
    Ui(ui::UiBinary),
    Pause,
}

impl Binary {
    fn name(&self) -> &'static str {
        match self {
            Binary::Go(b) => b.name,
            Binary::Ui(b) => b.name,
            Binary::Pause => "pause",
        }
    }

    /// Every file its build writes: its own, then (for a UI binary) the
    /// others the same `go build` makes.
    fn outputs(&self) -> Vec<&'static str> {
        match self {
            Binary::Ui(b) => b.outputs().collect(),
            _ => vec![self.name()],
        }
    }

    fn key(&self) -> String {
        match self {
            Binary::Go(b) => b.key(),
            Binary::Ui(b) => b.key(),
            Binary::Pause => go::pause_key(),
        }
    }

    async fn ensure(&self, cache: &Path, progress: &Progress) -> Result<PathBuf> {
        match self {
            Binary::Go(b) => b.ensure(cache, progress).await,
            Binary::Ui(b) => b.ensure(cache, progress).await,
            Binary::Pause => go::ensure_pause(cache, progress).await,
        }
    }
}

/// Upstream binaries built at once.
const CONCURRENT_BUILDS: usize = 2;

/// Paths of built binaries, by name, filled in as the build goes (empty
/// while only keys are needed: a key never depends on a path).
type Built = BTreeMap<&'static str, PathBuf>;

/// The content keys of the two root filesystems: known once each is
/// current (they cover the Debian packages installed).
#[derive(Debug, Clone)]
struct RootfsKeys {
    base: String,
    node: String,
}

/// Everything the build produces, with keys computable before building
/// from the root filesystems' keys: the node's root filesystem (the pod
/// base is known by its key alone), the binaries (in the order their builds
/// start), and the images made of them.
struct Plan {
    names: ImageNames,
    node_rootfs: rootfs::Rootfs,
    rootfs_keys: RootfsKeys,
    binaries: Vec<Binary>,
}

impl Plan {
    fn new(repository: &str, rootfs_keys: RootfsKeys) -> Self {
        Plan {
            names: ImageNames::new(repository),
            node_rootfs: rootfs::node(repository),
            rootfs_keys,
            // Longest first, so that the last minutes of a cold build are
            // not one long build alone on a core while the other idles
            // (Prometheus's UI, started twelfth, about 40 minutes in, ran its
            // last minutes alone). The times are one cold CI's (2 cores, with the
            // workload's cargo build beside them); binaries of one module
            // follow each other, the later ones finding its packages built.
            binaries: vec![
                Binary::Go(go::kube()),                   // 27.5 min
                Binary::Ui(ui::prometheus()),             // 12.4
                Binary::Go(go::coredns()),                // 9.4
                Binary::Go(go::jaeger()),                 // 9.3
                Binary::Go(go::metallb("controller")),    // 6.7
                Binary::Go(go::metallb("speaker")),       // 0.5
                Binary::Go(go::flanneld()),               // 5.5
                Binary::Go(go::kube_state_metrics()),     // 5.1
                Binary::Go(go::etcd()),                   // 4.2
                Binary::Go(go::local_path_provisioner()), // 4.1
                Binary::Go(go::containerd("containerd")), // 2.7
                Binary::Go(go::containerd("containerd-shim-runc-v2")),
                Binary::Go(go::containerd("ctr")),
                Binary::Ui(ui::alertmanager()),                // 2.2
                Binary::Go(go::victorialogs("victoria-logs")), // 0.7
                Binary::Go(go::victorialogs("vlagent")),
                Binary::Go(go::flannel_cni()),
                Binary::Pause,
            ],
        }
    }

    fn binary(&self, name: &str) -> &Binary {
        self.binaries
            .iter()
            .find(|b| b.outputs().contains(&name))
            .unwrap_or_else(|| panic!("no binary {name} in the plan"))
    }

    /// The built binary `name` placed at `dest` in an image.
    fn file(&self, built: &Built, name: &str, dest: &str) -> ContextFile {
        ContextFile::Path {
            dest: dest.into(),
            source: built.get(name).cloned().unwrap_or_default(),
            mode: 0o755,
            key: self.binary(name).key(),
        }
    }

    /// The binaries `recipe` carries (its files that stand for one).
    fn binaries_of(&self, recipe: &Recipe) -> Vec<&Binary> {
        let keys: Vec<&String> = recipe
            .files
            .iter()
            .filter_map(|f| if let ContextFile::Path { key, .. } = f { Some(key) } else { None })
            .collect();
        self.binaries.iter().filter(|b| keys.contains(&&b.key())).collect()
    }

    /// An image of one binary on an empty image: `entrypoint` runs it, or
    /// `path` lets a manifest run it by name.
    fn scratch(
        &self,
        built: &Built,
        name: &'static str,
        tag: String,
        binary: &str,
        dest: &str,
        run: Run,
    ) -> Recipe {
        let mut instructions = vec![Instruction::From("scratch".into()), Instruction::CopyRootfs];
        instructions.extend(match run {
            Run::Entrypoint => vec![Instruction::Entrypoint(vec![dest.into()])],
            Run::ByName(dir) => vec![Instruction::Env("PATH", dir.into())],
            Run::AsUser(user) => vec![Instruction::User(user), Instruction::Entrypoint(vec![dest.into()])],
        });
        Recipe {
            name,
            tags: vec![tag],
            instructions,
            files: vec![self.file(built, binary, dest)],
            parent_keys: vec![],
        }
    }

    /// The component images, in the order they are built.
    fn component_recipes(&self, built: &Built) -> Vec<Recipe> {
        let n = &self.names;
        let pause = self.scratch(built, "pause", n.pause(), "pause", "/pause", Run::AsUser("65535:65535"));
        // kubeadm's static pod runs `etcd` by name.
        let etcd = self.scratch(
            built,
            "etcd",
            n.etcd(),
            "etcd",
            "/usr/local/bin/etcd",
            Run::ByName("/usr/local/bin"),
        );
        let coredns = self.scratch(built, "coredns", n.coredns(), "coredns", "/coredns", Run::Entrypoint);
        // One image, four tags: containerd stores the layer once. kube-proxy
        // needs iptables, hence the Debian base.
        let kube_links =
            ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl"];
        let mut kube_files = vec![self.file(built, "kube", "/usr/local/bin/kube")];
        kube_files.extend(kube_links.iter().map(|name| ContextFile::Symlink {
            dest: format!("/usr/local/bin/{name}"),
            target: "kube".into(),
        }));
        let kube = Recipe {
            name: "kube",
            tags: ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"]
                .iter()
                .map(|c| n.kube(c))
                .collect(),
            instructions: vec![Instruction::From(n.base()), Instruction::CopyRootfs],
            files: kube_files,
            parent_keys: vec![self.rootfs_keys.base.clone()],
        };
        let flannel = Recipe {
            name: "flannel",
            tags: vec![n.flannel()],
            instructions: vec![
                Instruction::From(n.base()),
                Instruction::CopyRootfs,
                Instruction::Entrypoint(vec!["/opt/bin/flanneld".into()]),
            ],
            files: vec![self.file(built, "flanneld", "/opt/bin/flanneld")],
            parent_keys: vec![self.rootfs_keys.base.clone()],
        };
        // The add-ons' upstream images, as the add-on table lists them.
        let addons = vigil_addons::upstream_images().map(|image| {
            let tag = image.reference(&n.repository);
            let mut recipe = self.scratch(built, image.name, tag, image.binary, image.path, image.run);
            recipe.files.extend(image.extra.iter().map(|(binary, path)| self.file(built, binary, path)));
            if image.from == vigil_addons::ImageFrom::PodBase {
                recipe.instructions[0] = Instruction::From(n.base());
                recipe.parent_keys.push(self.rootfs_keys.base.clone());
            }
            recipe
        });
        [pause, etcd, coredns, kube, flannel].into_iter().chain(addons).collect()
    }

    /// Every image preloaded on the nodes: the components (the add-ons'
    /// upstream images among them) and the pod base (also the tests'
    /// toolbox and local-path's helper).
    fn preloaded_images(&self, components: &[Recipe]) -> Vec<String> {
        let mut images: Vec<String> = components.iter().flat_map(|r| r.tags.clone()).collect();
        images.push(self.names.base());
        images
    }

    fn stage_recipe(&self, built: &Built, components: &[Recipe]) -> Recipe {
        let images = self.preloaded_images(components);
        node::stage_recipe(
            format!("{}/node-stage:{}", self.names.repository, versions::KUBERNETES),
            &self.node_rootfs.image,
            self.rootfs_keys.node.clone(),
            node::NodeBinaries {
                kube: self.file(built, "kube", node::paths::KUBE),
                containerd: self.file(built, "containerd", node::paths::CONTAINERD),
                containerd_shim: self.file(built, "containerd-shim-runc-v2", node::paths::CONTAINERD_SHIM),
                ctr: self.file(built, "ctr", node::paths::CTR),
                flannel_cni: self.file(built, "flannel", node::paths::FLANNEL_CNI),
            },
            self.names.pause(),
            &node::BuildInfo {
                kubernetes: versions::KUBERNETES,
                etcd: versions::ETCD,
                coredns: versions::COREDNS,
                pause: versions::PAUSE,
                flannel: versions::FLANNEL,
                containerd: versions::CONTAINERD,
                metallb: versions::METALLB,
                images: &images,
            },
        )
    }

    /// The key of containerd's preloaded state: how it is made, the stage
    /// that makes it, and every image it holds.
    fn state_key(&self, stage: &Recipe, components: &[Recipe]) -> String {
        // Sorted: the order the add-on table lists images in changes nothing preloaded.
        let mut component_keys: Vec<String> = components.iter().map(Recipe::key).collect();
        component_keys.sort_unstable();
        component_keys
            .iter()
            .fold(
                key::KeyBuilder::new("containerd-state")
                    .part(preload::SCRIPT)
                    .part(stage.key())
                    .part(&self.rootfs_keys.base),
                |k, component| k.part(component),
            )
            .finish()
    }

    /// The final node image; its key covers the stage and the preloaded state.
    fn node_recipe(&self, stage: &Recipe, state_key: &str) -> Recipe {
        node::final_recipe(self.names.node(), stage, state_key)
    }
}

use vigil_addons::ImageRun as Run;

/// Builds what is missing and returns the node image's name.
pub async fn ensure_node_image(
    docker: &Docker,
    repository: &str,
    cache: &Path,
    progress: &Progress,
) -> Result<String> {
    let (base, node_rootfs) = (rootfs::base(repository), rootfs::node(repository));
    // Each root filesystem is current, or has Debian updates to take (asked
    // in parallel; at most once per check interval).
    let sources = debian::Sources::from_host().ok();
    let (base_fresh, node_fresh) = tokio::join!(
        base.freshness(docker, cache, sources.as_ref(), progress),
        node_rootfs.freshness(docker, cache, sources.as_ref(), progress),
    );
    let (base_fresh, node_fresh) = (base_fresh?, node_fresh?);
    let planned_keys = RootfsKeys {
        base: base_fresh.planned_key(base.name),
        node: node_fresh.planned_key(node_rootfs.name),
    };
    let plan = Plan::new(repository, planned_keys);
    let work = cache.join("work");
    let archive = work.join("images.tar");
    let planned_components = plan.component_recipes(&Built::default());
    let planned_stage = plan.stage_recipe(&Built::default(), &planned_components);
    let planned_state_key = plan.state_key(&planned_stage, &planned_components);
    let node_key = plan.node_recipe(&planned_stage, &planned_state_key).key();
    let node_image = plan.names.node();
    let rootfs_current =
        [&base_fresh, &node_fresh].iter().all(|f| matches!(f, rootfs::Freshness::Current(_)));
    if rootfs_current
        && image::has_key(docker, &node_image, &node_key).await?
        && preload::state_is_current(docker, &node::state_volume(&planned_state_key), &planned_state_key)
            .await?
    {
        progress
            .line(format!("node image {node_image}"))
            .skipped(format!("up to date (key {})", key::short(&node_key)));
        return Ok(node_image);
    }
    check_disk(cache, 20)?;
    progress.info(format!(
        "Building {node_image} and its component images from upstream (logs in {})",
        cache.join("logs").display()
    ));

    // debootstrap is network-bound and the Go builds CPU-bound: run them side by side.
    let rootfs = async {
        Ok::<_, Error>(RootfsKeys {
            base: base.ensure(docker, cache, progress, base_fresh).await?,
            node: node_rootfs.ensure(docker, cache, progress, node_fresh).await?,
        })
    };
    let binaries = async {
        // Compile what the node image carries, and what the missing component
        // images do (a root filesystem to be rebuilt makes those on it missing).
        let mut needed: Vec<&str> = plan.binaries_of(&planned_stage).iter().map(|b| b.name()).collect();
        for recipe in &planned_components {
            if !all_tags_current(docker, recipe).await {
                needed.extend(plan.binaries_of(recipe).iter().map(|b| b.name()));
            }
        }
        // Two at a time: one build's link, its module download or its UI's
        // bundler leaves a core idle that the other's compile takes.
        // (The futures are made first: a closure inside the stream would
        // make the whole build future not `Send` for every lifetime.)
        let builds: Vec<_> = plan
            .binaries
            .iter()
            .filter(|b| needed.contains(&b.name()))
            .map(|binary| async move { Ok::<_, Error>((binary, binary.ensure(cache, progress).await?)) })
            .collect();
        let paths: Vec<(&Binary, PathBuf)> =
            futures::stream::iter(builds).buffer_unordered(CONCURRENT_BUILDS).try_collect().await?;
        let mut built = Built::default();
        for (binary, path) in paths {
            for output in binary.outputs() {
                built.insert(output, path.with_file_name(output));
            }
        }
        Ok::<_, Error>(built)
    };
    let (rootfs_keys, built) = tokio::join!(rootfs, binaries);
    let plan = Plan::new(repository, rootfs_keys?);
    let built = built?;

    let components = plan.component_recipes(&built);
    for recipe in &components {
        let line = progress.line(format!("image {}", recipe.primary_tag()));
        let log = cache.join("logs").join(format!("image-{}.log", recipe.name));
        if recipe.ensure(docker, &work, &log).await? {
            line.done();
        } else {
            line.skipped("up to date");
        }
    }

    let stage = plan.stage_recipe(&built, &components);
    let state_key = plan.state_key(&stage, &components);
    let line = progress.line(format!("image {}", stage.primary_tag()));
    stage.ensure(docker, &work, &cache.join("logs").join("image-node-stage.log")).await?;
    line.done();

    // Made again whenever the node image is: a volume of this key may be
    // an interrupted preload (it is complete once the node image names it).
    let volume = node::state_volume(&state_key);
    let line =
        progress.line(format!("preloading the component images into containerd's state (volume {volume})"));
    tokio::fs::create_dir_all(&work).await.map_err(|e| Error::io(&work, e))?;
    image::save(docker, &plan.preloaded_images(&components), &archive).await?;
    let preloaded = preload::containerd_state(
        docker,
        stage.primary_tag(),
        &archive,
        &volume,
        &state_key,
        &cache.join("logs").join("preload.log"),
    )
    .await;
    let _ = tokio::fs::remove_file(&archive).await;
    preloaded?;
    line.done_with(format!("{} images", plan.preloaded_images(&components).len()));

    let line = progress.line(format!("image {node_image}"));
    let node = plan.node_recipe(&stage, &state_key);
    node.ensure(docker, &work, &cache.join("logs").join("image-node.log")).await?;
    preload::remove_stale_states(docker, &volume).await;
    line.done_with(format!("key {}", key::short(&node.key())));
    Ok(node_image)
}

pub(crate) async fn all_tags_current(docker: &Docker, recipe: &Recipe) -> bool {
    let key = recipe.key();
    for tag in &recipe.tags {
        if !image::has_key(docker, tag, &key).await.unwrap_or(false) {
            return false;
        }
    }
    true
}

/// Fails early, naming the path and the shortfall, rather than half-way through a build.
pub fn check_disk(path: &Path, need_gib: u64) -> Result<()> {
    let place = |p: &Path| p.display().to_string();
    let fix = |p: &Path| format!("free some space (`docker system prune`, or remove {})", p.display());
    vigil_host::disk::check(path, need_gib, "the build", place, fix).map_err(|e| Error::io(path, e))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let key = || "0".repeat(64);
        Plan::new("vigil.test", RootfsKeys { base: key(), node: key() })
    }

    #[test]
    fn every_upstream_image_of_the_addon_table_is_built_from_a_planned_binary() {
        let plan = plan();
        let components = plan.component_recipes(&Built::new());
        for image in vigil_addons::upstream_images() {
            assert!(
                plan.binaries.iter().any(|b| b.name() == image.binary),
                "{}: no Go binary {} in the build's plan (add it to Plan::new)",
                image.name,
                image.binary
            );
            let reference = image.reference("vigil.test");
            assert!(
                components.iter().any(|r| r.tags.contains(&reference)),
                "{reference} is not among the component images"
            );
        }
    }

    #[test]
    fn vigil_images_lists_every_upstream_image_once() {
        let names = ImageNames::new("vigil.test");
        let listed = all_images(&names);
        for image in vigil_addons::upstream_images() {
            let reference = image.reference("vigil.test");
            assert_eq!(
                listed.iter().filter(|(_, r)| *r == reference).count(),
                1,
                "{reference} in {listed:?}"
            );
        }
        let mut short: Vec<_> = listed.iter().map(|(name, _)| *name).collect();
        short.sort_unstable();
        short.dedup();
        assert_eq!(short.len(), listed.len(), "short names are unique: {listed:?}");
    }
}
