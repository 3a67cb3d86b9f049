//! The upstream build: Go modules compiled through the module proxy, Debian
//! root filesystems from debootstrap, component images tagged the way
//! kubeadm expects for the configured image repository, and the node image
//! that carries them all. Every artifact is keyed by the content of its
//! inputs; an artifact whose key is unchanged is not rebuilt.

pub mod go;
pub mod image;
pub mod key;
pub mod node;
pub mod preload;
pub mod rootfs;
pub mod sources;
pub mod workload;

use std::path::{Path, PathBuf};

use bollard::Docker;

use crate::{exec, progress::Progress, versions};
use image::{ContextFile, Instruction, Recipe};

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
    #[error(
        "only {free_gib:.1} GiB free under {}; the build needs about {need_gib} GiB: free some space (`docker system prune`, or remove {})",
        path.display(), path.display()
    )]
    Disk { path: PathBuf, free_gib: f64, need_gib: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// The images a cluster needs, named the way kubeadm derives them from the
/// image repository (no extra `coredns/` path: that is only added for the
/// default registry).
pub struct ImageNames {
    pub repository: String,
}

impl ImageNames {
    pub fn kube(&self, component: &str) -> String {
        format!("{}/{component}:{}", self.repository, versions::KUBERNETES)
    }
    pub fn etcd(&self) -> String {
        format!("{}/etcd:{}", self.repository, versions::ETCD_IMAGE_TAG)
    }
    pub fn coredns(&self) -> String {
        format!("{}/coredns:{}", self.repository, versions::COREDNS)
    }
    pub fn pause(&self) -> String {
        format!("{}/pause:{}", self.repository, versions::PAUSE)
    }
    pub fn flannel(&self) -> String {
        format!("{}/flannel:{}", self.repository, versions::FLANNEL)
    }
    /// The pod base image, doubling as the tests' toolbox (socat, getent).
    pub fn base(&self) -> String {
        rootfs::base(&self.repository).image
    }
    pub fn node(&self) -> String {
        format!("{}/node:{}", self.repository, versions::KUBERNETES)
    }
}

fn binary_file(dest: &str, binary: &go::GoBinary, path: Option<&Path>) -> ContextFile {
    ContextFile::Path {
        dest: dest.into(),
        source: path.map(Path::to_owned).unwrap_or_default(),
        mode: 0o755,
        key: binary.key(),
    }
}

/// Everything the build produces, with keys computable before building.
struct Plan {
    names: ImageNames,
    base: rootfs::Rootfs,
    node_rootfs: rootfs::Rootfs,
    monitoring: rootfs::Rootfs,
    kube: go::GoBinary,
    etcd: go::GoBinary,
    coredns: go::GoBinary,
    flanneld: go::GoBinary,
    metallb: [go::GoBinary; 2],
    local_path: go::GoBinary,
    flannel_cni: go::GoBinary,
    containerd: [go::GoBinary; 3],
}

/// Paths of built binaries, filled in as the build goes (empty while only keys are needed).
#[derive(Default)]
struct Built {
    kube: Option<PathBuf>,
    etcd: Option<PathBuf>,
    coredns: Option<PathBuf>,
    flanneld: Option<PathBuf>,
    flannel_cni: Option<PathBuf>,
    metallb: [Option<PathBuf>; 2],
    local_path: Option<PathBuf>,
    containerd: [Option<PathBuf>; 3],
    pause: Option<PathBuf>,
}

impl Plan {
    fn new(repository: &str) -> Self {
        Plan {
            names: ImageNames { repository: repository.into() },
            base: rootfs::base(repository),
            node_rootfs: rootfs::node(repository),
            monitoring: rootfs::monitoring(repository),
            kube: go::kube(),
            etcd: go::etcd(),
            coredns: go::coredns(),
            flanneld: go::flanneld(),
            metallb: [go::metallb("controller"), go::metallb("speaker")],
            local_path: go::local_path_provisioner(),
            flannel_cni: go::flannel_cni(),
            containerd: [
                go::containerd("containerd"),
                go::containerd("containerd-shim-runc-v2"),
                go::containerd("ctr"),
            ],
        }
    }

    fn pause_key(&self) -> String {
        key::KeyBuilder::new("pause").part(go::module_key(&sources::KUBE)).part(versions::PAUSE).finish()
    }

    /// The component images, in the order they are built.
    fn component_recipes(&self, built: &Built) -> Vec<Recipe> {
        let n = &self.names;
        let path = |dest: &str| Instruction::Env("PATH", dest.into());
        let pause = Recipe {
            name: "pause",
            tags: vec![n.pause()],
            instructions: vec![
                Instruction::From("scratch".into()),
                Instruction::CopyRootfs,
                Instruction::User("65535:65535"),
                Instruction::Entrypoint(vec!["/pause".into()]),
            ],
            files: vec![ContextFile::Path {
                dest: "/pause".into(),
                source: built.pause.clone().unwrap_or_default(),
                mode: 0o755,
                key: self.pause_key(),
            }],
            parent_keys: vec![],
        };
        let etcd = Recipe {
            name: "etcd",
            tags: vec![n.etcd()],
            // kubeadm's static pod runs `etcd` by name.
            instructions: vec![
                Instruction::From("scratch".into()),
                Instruction::CopyRootfs,
                path("/usr/local/bin"),
            ],
            files: vec![binary_file("/usr/local/bin/etcd", &self.etcd, built.etcd.as_deref())],
            parent_keys: vec![],
        };
        let coredns = Recipe {
            name: "coredns",
            tags: vec![n.coredns()],
            instructions: vec![
                Instruction::From("scratch".into()),
                Instruction::CopyRootfs,
                Instruction::Entrypoint(vec!["/coredns".into()]),
            ],
            files: vec![binary_file("/coredns", &self.coredns, built.coredns.as_deref())],
            parent_keys: vec![],
        };
        // One image, four tags: containerd stores the layer once. kube-proxy
        // needs iptables, hence the Debian base.
        let kube_links =
            ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl"];
        let mut kube_files = vec![binary_file("/usr/local/bin/kube", &self.kube, built.kube.as_deref())];
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
            parent_keys: vec![self.base.key()],
        };
        let flannel = Recipe {
            name: "flannel",
            tags: vec![n.flannel()],
            instructions: vec![
                Instruction::From(n.base()),
                Instruction::CopyRootfs,
                Instruction::Entrypoint(vec!["/opt/bin/flanneld".into()]),
            ],
            files: vec![binary_file("/opt/bin/flanneld", &self.flanneld, built.flanneld.as_deref())],
            parent_keys: vec![self.base.key()],
        };
        let metallb =
            self.metallb.iter().zip(&built.metallb).zip(["metallb-controller", "metallb-speaker"]).map(
                |((binary, path), component)| Recipe {
                    name: component,
                    tags: vec![crate::addons::metallb::image(&n.repository, component)],
                    instructions: vec![
                        Instruction::From("scratch".into()),
                        Instruction::CopyRootfs,
                        Instruction::Entrypoint(vec![format!("/{}", binary.name)]),
                    ],
                    files: vec![binary_file(&format!("/{}", binary.name), binary, path.as_deref())],
                    parent_keys: vec![],
                },
            );
        let local_path = Recipe {
            name: "local-path-provisioner",
            tags: vec![crate::addons::local_path::image(&n.repository)],
            // Upstream's Deployment runs `local-path-provisioner` by name.
            instructions: vec![
                Instruction::From("scratch".into()),
                Instruction::CopyRootfs,
                path("/usr/bin"),
            ],
            files: vec![binary_file(
                "/usr/bin/local-path-provisioner",
                &self.local_path,
                built.local_path.as_deref(),
            )],
            parent_keys: vec![],
        };
        [pause, etcd, coredns, kube, flannel].into_iter().chain(metallb).chain([local_path]).collect()
    }

    /// Every image preloaded on the nodes: the components, the pod base
    /// (also the tests' toolbox and local-path's helper) and Prometheus's.
    fn preloaded_images(&self, components: &[Recipe]) -> Vec<String> {
        let mut images: Vec<String> = components.iter().flat_map(|r| r.tags.clone()).collect();
        images.push(self.names.base());
        images.push(self.monitoring.image.clone());
        images
    }

    fn stage_recipe(&self, built: &Built, components: &[Recipe]) -> Recipe {
        let images = self.preloaded_images(components);
        let [containerd, shim, ctr] = &self.containerd;
        node::stage_recipe(
            format!("{}/node-stage:{}", self.names.repository, versions::KUBERNETES),
            &self.node_rootfs.image,
            self.node_rootfs.key(),
            node::NodeBinaries {
                kube: binary_file("/usr/local/bin/kube", &self.kube, built.kube.as_deref()),
                containerd: binary_file(
                    "/usr/local/bin/containerd",
                    containerd,
                    built.containerd[0].as_deref(),
                ),
                containerd_shim: binary_file(
                    "/usr/local/bin/containerd-shim-runc-v2",
                    shim,
                    built.containerd[1].as_deref(),
                ),
                ctr: binary_file("/usr/local/bin/ctr", ctr, built.containerd[2].as_deref()),
                flannel_cni: binary_file(
                    "/opt/cni/bin/flannel",
                    &self.flannel_cni,
                    built.flannel_cni.as_deref(),
                ),
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

    /// The final node image; its key covers the stage and every preloaded image.
    fn node_recipe(&self, stage: &Recipe, components: &[Recipe], state: &Path) -> Recipe {
        let state_key = components
            .iter()
            .fold(
                key::KeyBuilder::new("containerd-state")
                    .part(stage.key())
                    .part(self.base.key())
                    .part(self.monitoring.key()),
                |k, r| k.part(r.key()),
            )
            .finish();
        let archive =
            ContextFile::Archive { name: node::CONTAINERD_STATE, source: state.to_owned(), key: state_key };
        node::final_recipe(self.names.node(), stage, archive)
    }
}

/// Builds what is missing and returns the node image's name.
pub async fn ensure_node_image(
    docker: &Docker,
    repository: &str,
    cache: &Path,
    progress: &Progress,
) -> Result<String> {
    let plan = Plan::new(repository);
    let work = cache.join("work");
    let archive = work.join("images.tar");
    let state = work.join(node::CONTAINERD_STATE);
    let planned_components = plan.component_recipes(&Built::default());
    let planned_stage = plan.stage_recipe(&Built::default(), &planned_components);
    let node_key = plan.node_recipe(&planned_stage, &planned_components, &state).key();
    let node_image = plan.names.node();
    if image::has_key(docker, &node_image, &node_key).await? {
        progress
            .step(format!("node image {node_image}"))
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
        plan.base.ensure(docker, cache, progress).await?;
        plan.node_rootfs.ensure(docker, cache, progress).await?;
        plan.monitoring.ensure(docker, cache, progress).await
    };
    let binaries = async {
        let mut built = Built::default();
        // Skip compiling what no missing image needs.
        let components = plan.component_recipes(&built);
        let need = |name: &str| components.iter().find(|r| r.name == name).expect("known recipe");
        let missing = |r: &Recipe| {
            let r = r.clone();
            async move { !all_tags_current(docker, &r).await }
        };
        // The node image itself carries kube, containerd and the flannel CNI plugin.
        built.kube = Some(plan.kube.ensure(cache, progress).await?);
        if missing(need("etcd")).await {
            built.etcd = Some(plan.etcd.ensure(cache, progress).await?);
        }
        if missing(need("coredns")).await {
            built.coredns = Some(plan.coredns.ensure(cache, progress).await?);
        }
        if missing(need("flannel")).await {
            built.flanneld = Some(plan.flanneld.ensure(cache, progress).await?);
        }
        for (i, component) in ["metallb-controller", "metallb-speaker"].into_iter().enumerate() {
            if missing(need(component)).await {
                built.metallb[i] = Some(plan.metallb[i].ensure(cache, progress).await?);
            }
        }
        if missing(need("local-path-provisioner")).await {
            built.local_path = Some(plan.local_path.ensure(cache, progress).await?);
        }
        if missing(need("pause")).await {
            built.pause = Some(go::ensure_pause(cache, progress).await?);
        }
        built.flannel_cni = Some(plan.flannel_cni.ensure(cache, progress).await?);
        for (i, binary) in plan.containerd.iter().enumerate() {
            built.containerd[i] = Some(binary.ensure(cache, progress).await?);
        }
        Ok::<_, Error>(built)
    };
    let (rootfs, built) = tokio::join!(rootfs, binaries);
    rootfs?;
    let built = built?;

    let components = plan.component_recipes(&built);
    for recipe in &components {
        let step = progress.step(format!("image {}", recipe.primary_tag()));
        let log = cache.join("logs").join(format!("image-{}.log", recipe.name));
        if recipe.ensure(docker, &work, &log).await? {
            step.done();
        } else {
            step.skipped("up to date");
        }
    }

    let stage = plan.stage_recipe(&built, &components);
    let step = progress.step(format!("image {}", stage.primary_tag()));
    stage.ensure(docker, &work, &cache.join("logs").join("image-node-stage.log")).await?;
    step.done();

    let step = progress.step("preloading the component images into the node's containerd");
    tokio::fs::create_dir_all(&work).await.map_err(|e| Error::io(&work, e))?;
    image::save(docker, &plan.preloaded_images(&components), &archive).await?;
    preload::containerd_state(
        docker,
        stage.primary_tag(),
        &archive,
        &work,
        &cache.join("logs").join("preload.log"),
    )
    .await?;
    let size = tokio::fs::metadata(&state).await.map_err(|e| Error::io(&state, e))?.len();
    step.done_with(format!(
        "{} images, {} MiB unpacked",
        plan.preloaded_images(&components).len(),
        size >> 20
    ));

    let step = progress.step(format!("image {node_image}"));
    let node = plan.node_recipe(&stage, &components, &state);
    debug_assert_eq!(node.key(), node_key);
    node.ensure(docker, &work, &cache.join("logs").join("image-node.log")).await?;
    for leftover in [&archive, &state] {
        let _ = tokio::fs::remove_file(leftover).await;
    }
    step.done_with(format!("key {}", key::short(&node_key)));
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
    let probe = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let stat = free_bytes(probe).map_err(|e| Error::io(probe, e))?;
    let free_gib = stat as f64 / (1u64 << 30) as f64;
    if free_gib < need_gib as f64 {
        return Err(Error::Disk { path: probe.to_owned(), free_gib, need_gib });
    }
    Ok(())
}

/// Free bytes on the filesystem holding `path`, from `df` (no unsafe statvfs call).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let out = std::process::Command::new("df").arg("--output=avail").arg("-B1").arg(path).output()?;
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).ok_or_else(|| {
        std::io::Error::other(format!(
            "cannot read free space from df: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}
