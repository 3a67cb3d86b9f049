//! Upstream binaries built from their Go modules through the module proxy.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::{Error, Result, key::KeyBuilder, key::short, sources, sources::GoModule};
use vigil_host::exec;
use vigil_host::progress::Progress;
use vigil_model::versions;

/// One binary of one upstream module.
pub struct GoBinary {
    /// The output file name (and the progress title).
    pub name: &'static str,
    pub module: &'static GoModule,
    /// The main package to build.
    pub package: &'static str,
    /// `-X` settings and the like; `-s -w` are always added.
    pub ldflags: Vec<String>,
    /// flannel's UDP backend uses cgo (as upstream builds it); the image it
    /// runs in has the C library. Everything else is static.
    pub cgo: bool,
}

fn x(var: &str, value: &str) -> String {
    format!("-X {var}={value}")
}

pub fn kube() -> GoBinary {
    let base = "k8s.io/component-base/version";
    GoBinary {
        name: "kube",
        module: &sources::KUBE,
        package: ".",
        // Without these kubeadm sees v1.0.0-placeholder-version, and its
        // version checks and choice of etcd break.
        ldflags: vec![
            x(&format!("{base}.gitVersion"), versions::KUBERNETES),
            x(&format!("{base}.gitMajor"), "1"),
            x(&format!("{base}.gitMinor"), versions::KUBERNETES_MINOR),
            x(&format!("{base}.gitTreeState"), "clean"),
            x(&format!("{base}.gitCommit"), "module-proxy"),
            x(&format!("{base}.buildDate"), "1970-01-01T00:00:00Z"),
        ],
        cgo: false,
    }
}

pub fn etcd() -> GoBinary {
    GoBinary {
        name: "etcd",
        module: &sources::ETCD,
        package: "go.etcd.io/etcd/server/v3",
        ldflags: vec![],
        cgo: false,
    }
}

pub fn coredns() -> GoBinary {
    GoBinary {
        name: "coredns",
        module: &sources::COREDNS,
        package: "github.com/coredns/coredns",
        ldflags: vec![],
        cgo: false,
    }
}

pub fn flanneld() -> GoBinary {
    GoBinary {
        name: "flanneld",
        module: &sources::FLANNEL,
        package: "github.com/flannel-io/flannel",
        ldflags: vec![x("github.com/flannel-io/flannel/pkg/version.Version", versions::FLANNEL)],
        cgo: true,
    }
}

pub fn flannel_cni() -> GoBinary {
    GoBinary {
        name: "flannel",
        module: &sources::FLANNEL_CNI,
        package: "github.com/containernetworking/plugins/plugins/meta/flannel",
        ldflags: vec![],
        cgo: false,
    }
}

pub fn metallb(name: &'static str) -> GoBinary {
    let package = match name {
        "controller" => "go.universe.tf/metallb/controller",
        "speaker" => "go.universe.tf/metallb/speaker",
        other => panic!("not a MetalLB binary: {other}"),
    };
    GoBinary { name, module: &sources::METALLB, package, ldflags: vec![], cgo: false }
}

pub fn local_path_provisioner() -> GoBinary {
    GoBinary {
        name: "local-path-provisioner",
        module: &sources::LOCAL_PATH,
        package: "github.com/rancher/local-path-provisioner",
        ldflags: vec![x("main.VERSION", versions::LOCAL_PATH)],
        cgo: false,
    }
}

pub fn kube_state_metrics() -> GoBinary {
    let version = "github.com/prometheus/common/version";
    GoBinary {
        name: "kube-state-metrics",
        module: &sources::KUBE_STATE_METRICS,
        package: "k8s.io/kube-state-metrics/v2",
        // What upstream's Makefile stamps, so `--version` and its build_info metric say which release.
        ldflags: vec![
            x(&format!("{version}.Version"), versions::KUBE_STATE_METRICS.trim_start_matches('v')),
            x(&format!("{version}.Revision"), "module-proxy"),
            x(&format!("{version}.Branch"), "module-proxy"),
        ],
        cgo: false,
    }
}

pub fn jaeger() -> GoBinary {
    let version = "github.com/jaegertracing/jaeger/internal/version";
    GoBinary {
        name: "jaeger",
        module: &sources::JAEGER,
        package: "github.com/jaegertracing/jaeger/cmd/jaeger",
        // What upstream's Makefile stamps, so `jaeger version` says which release.
        ldflags: vec![
            x(&format!("{version}.latestVersion"), versions::JAEGER),
            x(&format!("{version}.commitSHA"), "module-proxy"),
            x(&format!("{version}.date"), "1970-01-01T00:00:00Z"),
        ],
        cgo: false,
    }
}

/// What the Prometheus projects' Makefiles (promu) stamp, so `--version`
/// and `<binary>_build_info` say which release.
pub fn prometheus_version_flags(release: &str) -> Vec<String> {
    let version = "github.com/prometheus/common/version";
    vec![
        x(&format!("{version}.Version"), release.trim_start_matches('v')),
        x(&format!("{version}.Revision"), "module-proxy"),
        x(&format!("{version}.Branch"), "module-proxy"),
        x(&format!("{version}.BuildDate"), "19700101-00:00:00"),
    ]
}

/// `victoria-logs` (the store) or `vlagent` (its agent).
pub fn victorialogs(name: &'static str) -> GoBinary {
    let package = match name {
        "victoria-logs" => "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs",
        "vlagent" => "github.com/VictoriaMetrics/VictoriaLogs/app/vlagent",
        other => panic!("not a VictoriaLogs binary: {other}"),
    };
    GoBinary {
        name,
        module: &sources::VICTORIALOGS,
        package,
        // What upstream's Makefile stamps (`<app>-<date>-<tag>`), shortened:
        // the version its `vl_app_version` metric and `-version` report is
        // the `vX.Y.Z` in it.
        ldflags: vec![x(
            "github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version",
            &format!("{name}-{}", versions::VICTORIALOGS),
        )],
        cgo: false,
    }
}

/// Standalone cAdvisor, the node-exporter benchmark's reference.
pub fn cadvisor() -> GoBinary {
    GoBinary {
        name: "cadvisor",
        module: &sources::CADVISOR,
        package: ".",
        ldflags: vec![x("github.com/google/cadvisor/lib/version.Version", versions::CADVISOR)],
        cgo: false,
    }
}

pub fn containerd(name: &'static str) -> GoBinary {
    let package = match name {
        "containerd" => "github.com/containerd/containerd/v2/cmd/containerd",
        "containerd-shim-runc-v2" => "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
        "ctr" => "github.com/containerd/containerd/v2/cmd/ctr",
        other => panic!("not a containerd binary: {other}"),
    };
    GoBinary {
        name,
        module: &sources::CONTAINERD,
        package,
        ldflags: vec![x("github.com/containerd/containerd/v2/version.Version", versions::CONTAINERD)],
        cgo: false,
    }
}

pub fn module_key(module: &GoModule) -> String {
    module
        .files
        .iter()
        .fold(KeyBuilder::new("go-module").part(module.dir), |k, (path, text)| k.part(path).part(text))
        .finish()
}

impl GoBinary {
    pub fn key(&self) -> String {
        self.ldflags
            .iter()
            .fold(
                KeyBuilder::new("go-binary")
                    .part(module_key(self.module))
                    .part(self.name)
                    .part(self.package)
                    .part([self.cgo as u8]),
                |k, flag| k.part(flag),
            )
            .finish()
    }

    /// Builds the binary unless the cache already holds one with this key.
    pub async fn ensure(&self, cache: &Path, progress: &Progress) -> Result<PathBuf> {
        let key = self.key();
        let out = cache.join("bin").join(format!("{}-{}", self.name, short(&key))).join(self.name);
        let title = format!("go build {} ({})", self.name, self.package);
        if out.exists() {
            progress.line(title).skipped("cached");
            return Ok(out);
        }
        let step = progress.line(title);
        let src = write_module(self.module, cache).await?;
        let log = cache.join("logs").join(format!("go-{}.log", self.name));

        step.update("downloading modules");
        let mut download = Command::new("go");
        download.args(["mod", "download"]).current_dir(&src);
        exec::run_logged(download, &log, |_| {})
            .await
            .map_err(|e| Error::step(self.name, "go mod download", e))?;

        let total = count_deps(&src, self.package).await;
        let mut build = Command::new("go");
        let tmp = out.with_extension("partial");
        if let Some(dir) = out.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| Error::io(dir, e))?;
        }
        build.args(["build", "-v"]);
        build_args(&mut build, &self.ldflags, &tmp, &[self.package])
            .current_dir(&src)
            .env("CGO_ENABLED", if self.cgo { "1" } else { "0" });
        let mut compiled = 0usize;
        exec::run_logged(build, &log, |line| {
            // `go build -v` names each package as it compiles it.
            if !line.contains(' ') {
                compiled += 1;
                match total {
                    Some(total) => step.update(format!("{compiled}/{total} packages compiled")),
                    None => step.update(format!("{compiled} packages compiled")),
                }
            }
        })
        .await
        .map_err(|e| Error::step(self.name, "go build", e))?;
        tokio::fs::rename(&tmp, &out).await.map_err(|e| Error::io(&out, e))?;
        step.done_with(format!("{compiled} packages compiled, log {}", log.display()));
        Ok(out)
    }
}

/// The garbage collector's target for the Go toolchain's own processes
/// while they build: 400 rather than 100 trades the compiler's memory for
/// time, since compiling is most of a cold build on two cores. Measured
/// here (one cold build each, empty build caches): etcd's server 77.9 s
/// and 126 s of CPU at 100, 63.4 s and 100 s at 400; two of Kubernetes'
/// largest packages (`pkg/apis/core/v1`, `.../validation`) 75.5 s and 61.8
/// s, the compiler's peak 471 and 778 MB. What is built does not change
/// (the two etcd binaries are byte for byte the same): only the toolchain's
/// own heap is collected less often, so the cache keys stay.
pub(crate) const TOOLCHAIN_GOGC: &str = "400";

/// The compiler makes no debug information: the linker's `-w` drops it
/// from every binary anyway. Measured here (etcd's server, one cold build
/// each, empty build caches, GOGC=400): 137 s of CPU with it, 127 s
/// without (8 % less), the compiler's peak 406 and 341 MB; the two
/// binaries are the same size, their bytes laid out differently. The flag
/// is left out of the cache keys, as the collector's setting is: it
/// changes no source, no dependency and no behaviour, so a binary cached
/// before it is as good as one built with it.
pub(crate) const NO_COMPILER_DWARF: &str = "-gcflags=all=-dwarf=false";

/// What every upstream binary here is built with: no paths or VCS stamps
/// (so the output depends on the inputs alone), no debug information
/// ([`NO_COMPILER_DWARF`]), stripped, `ldflags`, into `out` (a directory,
/// with a trailing `/`, when there are more packages), by a toolchain that
/// collects garbage less often ([`TOOLCHAIN_GOGC`]).
pub(crate) fn build_args<'c>(
    command: &'c mut Command,
    ldflags: &[String],
    out: &Path,
    packages: &[&str],
) -> &'c mut Command {
    let flags = std::iter::once("-s -w".to_owned()).chain(ldflags.iter().cloned()).collect::<Vec<_>>();
    command
        .env("GOGC", TOOLCHAIN_GOGC)
        .args(["-trimpath", "-buildvcs=false", NO_COMPILER_DWARF, "-ldflags"])
        .arg(flags.join(" "))
        .arg("-o")
        .arg(out)
        .args(packages)
}

/// The number of packages the build needs, for a percentage; None if `go
/// list` fails (the build will then report the real error).
async fn count_deps(src: &Path, package: &str) -> Option<usize> {
    let mut list = Command::new("go");
    list.args(["list", "-deps", package]).current_dir(src);
    exec::output(list).await.ok().map(|out| out.lines().count())
}

/// Writes the embedded module into the cache; the directory name carries its key.
pub async fn write_module(module: &GoModule, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("src").join(format!("{}-{}", module.dir, short(&module_key(module))));
    tokio::fs::create_dir_all(&dir).await.map_err(|e| Error::io(&dir, e))?;
    for (name, text) in module.files {
        let path = dir.join(name);
        // Binaries of one module build at once: a file another `go` reads
        // is never rewritten in place, only replaced whole when it differs.
        if tokio::fs::read(&path).await.is_ok_and(|held| held == text.as_bytes()) {
            continue;
        }
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}-{n}.partial", std::process::id()));
        tokio::fs::write(&tmp, text).await.map_err(|e| Error::io(&tmp, e))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| Error::io(&path, e))?;
    }
    Ok(dir)
}

/// The key of the pause binary: the Kubernetes module it comes from, and its version.
pub fn pause_key() -> String {
    KeyBuilder::new("pause").part(module_key(&sources::KUBE)).part(versions::PAUSE).finish()
}

/// The pause binary is C (build/pause/linux/pause.c in the Kubernetes
/// module), compiled statically the way the upstream image builds it.
pub async fn ensure_pause(cache: &Path, progress: &Progress) -> Result<PathBuf> {
    let key = pause_key();
    let out = cache.join("bin").join(format!("pause-{}", short(&key))).join("pause");
    if out.exists() {
        progress.line("cc pause").skipped("cached");
        return Ok(out);
    }
    let step = progress.line("cc pause (static, from the Kubernetes module)");
    let src = write_module(&sources::KUBE, cache).await?;
    let log = cache.join("logs").join("pause.log");
    let mut download = Command::new("go");
    download.args(["mod", "download", "k8s.io/kubernetes"]).current_dir(&src);
    exec::run_logged(download, &log, |_| {}).await.map_err(|e| Error::step("pause", "go mod download", e))?;
    let mut dir = Command::new("go");
    dir.args(["list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"]).current_dir(&src);
    let k8s = PathBuf::from(exec::output(dir).await.map_err(|e| Error::step("pause", "go list", e))?);
    if let Some(parent) = out.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| Error::io(parent, e))?;
    }
    // Written aside, then moved: an interrupted build leaves no `pause`
    // that would pass for a cached one.
    let tmp = out.with_extension("partial");
    let mut cc = Command::new("cc");
    cc.args(["-Os", "-Wall", "-Werror", "-static", "-s"])
        .arg(format!("-DVERSION=v{}", versions::PAUSE))
        .arg("-o")
        .arg(&tmp)
        .arg(k8s.join("build/pause/linux/pause.c"));
    exec::run_logged(cc, &log, |_| {}).await.map_err(|e| Error::step("pause", "cc", e))?;
    tokio::fs::rename(&tmp, &out).await.map_err(|e| Error::io(&out, e))?;
    step.done();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_builds_are_stripped_reproducible_and_collect_less_often() {
        let mut command = Command::new("go");
        build_args(&mut command, &["-X a.b=c".to_owned()], Path::new("/out/"), &["./cmd/a", "./cmd/b"]);
        let command = command.as_std();
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "-trimpath",
                "-buildvcs=false",
                "-gcflags=all=-dwarf=false",
                "-ldflags",
                "-s -w -X a.b=c",
                "-o",
                "/out/",
                "./cmd/a",
                "./cmd/b"
            ]
        );
        let gogc = command.get_envs().find(|(k, _)| *k == "GOGC").and_then(|(_, v)| v);
        assert_eq!(gogc, Some(std::ffi::OsStr::new(TOOLCHAIN_GOGC)));
    }
}
