//! Upstream binaries that embed a web UI upstream builds with a Node
//! package manager: the module's own sources (from the Go module proxy,
//! verified against the go.sum under `upstream/`), its UI installed from its
//! own lockfile and built by its own scripts, then compiled with the tag
//! that embeds the result, as upstream's release build does.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::{Error, Result, go, key::KeyBuilder, key::short, sources::GoModule};
use vigil_host::exec;
use vigil_host::progress::Progress;

/// The package manager the UI's lockfile is written for, run through `npx`
/// from the npm registry. 10.x is the newest line that runs on this
/// machine's Node 20 (11.x needs Node 22.13).
pub const PNPM: &str = "pnpm@10.34.9";

/// How a UI's packages are installed: by the package manager its lockfile
/// is written for. Each carries the packages the lockfile names at a
/// version the registry does not serve, with the served version installed
/// instead; every other package stays at its locked version.
pub enum Packages {
    /// pnpm (through `npx`), the replacements as pnpm overrides.
    Pnpm { overrides: &'static [(&'static str, &'static str)] },
    /// npm: `npm ci` from package-lock.json. The replacements are direct
    /// dependencies: package.json names the served version and `npm
    /// install` resolves those again (with the peers that must match them).
    Npm { pins: &'static [(&'static str, &'static str)] },
}

impl Packages {
    fn manager(&self) -> &'static str {
        match self {
            Packages::Pnpm { .. } => PNPM,
            Packages::Npm { .. } => "npm",
        }
    }

    fn replaced(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Packages::Pnpm { overrides } => overrides,
            Packages::Npm { pins } => pins,
        }
    }
}

/// One binary of a Go module whose UI is built first.
pub struct UiBinary {
    /// The output file name (and the progress title).
    pub name: &'static str,
    /// The module under `upstream/` whose go.sum pins `path`'s source.
    pub module: &'static GoModule,
    /// The upstream module and its version.
    pub path: &'static str,
    pub version: &'static str,
    /// The UI's workspace in the module.
    pub ui_dir: &'static str,
    pub packages: Packages,
    /// The UI's build (`<manager> run <script>`), then the script, if any,
    /// that turns its output into what the Go build embeds (run from the
    /// module's root).
    pub ui_script: &'static str,
    pub assets_script: Option<&'static str>,
    /// The main package, relative to the module's root, and the build tags.
    pub package: &'static str,
    /// More of the module's main packages, built by the same `go build`
    /// with the same tags and flags (as promu builds a module's binaries),
    /// each into the file its last path element names.
    pub also: &'static [&'static str],
    pub tags: &'static str,
    pub ldflags: Vec<String>,
}

impl UiBinary {
    pub fn key(&self) -> String {
        let key = KeyBuilder::new("ui-binary")
            .part(go::module_key(self.module))
            .part(self.name)
            .part(self.path)
            .part(self.version)
            .part(self.packages.manager())
            .part(self.ui_dir)
            .part(self.ui_script)
            .part(self.assets_script.unwrap_or_default())
            .part(self.package)
            .part(self.tags);
        let key = self.also.iter().fold(key, |k, package| k.part(package));
        let key = self.packages.replaced().iter().fold(key, |k, (name, version)| k.part(name).part(version));
        self.ldflags.iter().fold(key, |k, flag| k.part(flag)).finish()
    }

    /// The main packages one `go build` builds: the binary's, then the `also` ones.
    fn packages(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.package).chain(self.also.iter().copied())
    }

    /// The files the build writes, side by side, one per [`Self::packages`]
    /// and named by its last path element.
    pub fn outputs(&self) -> impl Iterator<Item = &'static str> {
        self.packages().map(|package| package.rsplit('/').next().unwrap_or(package))
    }

    fn unexpected(&self, what: String) -> Error {
        Error::Unexpected { artifact: self.name.into(), what }
    }

    /// Builds the binary unless the cache already holds one with this key.
    pub async fn ensure(&self, cache: &Path, progress: &Progress) -> Result<PathBuf> {
        let key = self.key();
        let out = cache.join("bin").join(format!("{}-{}", self.name, short(&key))).join(self.name);
        let title = format!("build {} with its web UI ({} {})", self.name, self.path, self.version);
        if self.outputs().all(|name| out.with_file_name(name).exists()) {
            progress.line(title).skipped("cached");
            return Ok(out);
        }
        let step = progress.line(title);
        let log = cache.join("logs").join(format!("ui-{}.log", self.name));
        let fail = |what: &'static str| move |e| Error::step(self.name, what, e);

        step.update("downloading the module's sources");
        let wrapper = go::write_module(self.module, cache).await?;
        let mut download = Command::new("go");
        download
            .args(["mod", "download", "-json"])
            .arg(format!("{}@{}", self.path, self.version))
            .current_dir(&wrapper);
        let listing = exec::output(download).await.map_err(fail("go mod download"))?;
        let dir: serde_json::Value = serde_json::from_str(&listing)
            .map_err(|e| self.unexpected(format!("go mod download -json: {e}")))?;
        let source = dir["Dir"]
            .as_str()
            .ok_or_else(|| self.unexpected(format!("go mod download names no Dir: {listing}")))?;

        // A writable copy: the module cache is read-only, and the UI's
        // build writes beside its sources.
        let work = cache.join("work").join(format!("{}-{}", self.name, short(&key)));
        let _ = tokio::fs::remove_dir_all(&work).await;
        tokio::fs::create_dir_all(&work).await.map_err(|e| Error::io(&work, e))?;
        let mut copy = Command::new("cp");
        copy.arg("-r").arg(format!("{source}/.")).arg(&work);
        exec::run_logged(copy, &log, |_| {}).await.map_err(fail("copy the module"))?;
        let mut writable = Command::new("chmod");
        writable.args(["-R", "u+w"]).arg(&work);
        exec::run_logged(writable, &log, |_| {}).await.map_err(fail("chmod"))?;

        let ui = work.join(self.ui_dir);
        let manager = self.packages.manager();
        step.update(format!("installing the UI's packages ({manager}, from its lockfile)"));
        let install = self.packages.install(&ui).await?;
        exec::run_logged(install, &log, |_| {}).await.map_err(fail("install the UI's packages"))?;

        step.update(format!("building the UI ({manager} run {})", self.ui_script));
        let mut build = self.packages.command(&ui);
        build.args(["run", self.ui_script]).env("CI", "");
        exec::run_logged(build, &log, |_| {}).await.map_err(fail("build the UI"))?;
        if let Some(script) = self.assets_script {
            let mut assets = Command::new("bash");
            assets.arg(script).current_dir(&work);
            exec::run_logged(assets, &log, |_| {}).await.map_err(fail(script))?;
        }

        step.update(format!("go build -tags {}", self.tags));
        let bin_dir = out.parent().expect("a binary's path is in its directory");
        let tmp = bin_dir.with_extension("partial");
        for stale in [&tmp, bin_dir] {
            let _ = tokio::fs::remove_dir_all(stale).await;
        }
        tokio::fs::create_dir_all(&tmp).await.map_err(|e| Error::io(&tmp, e))?;
        let packages: Vec<&str> = self.packages().collect();
        let mut compile = Command::new("go");
        compile.args(["build", "-tags", self.tags]);
        // Into a directory (the trailing `/`): one file per package, named
        // by its last path element.
        go::build_args(&mut compile, &self.ldflags, &tmp.join(""), &packages)
            .current_dir(&work)
            .env("CGO_ENABLED", "0")
            .env("GOWORK", "off");
        exec::run_logged(compile, &log, |_| {}).await.map_err(fail("go build"))?;
        for name in self.outputs() {
            if !tmp.join(name).exists() {
                return Err(self.unexpected(format!("go build wrote no {name} into {}", tmp.display())));
            }
        }
        tokio::fs::rename(&tmp, bin_dir).await.map_err(|e| Error::io(bin_dir, e))?;
        let _ = tokio::fs::remove_dir_all(&work).await;
        step.done_with(format!("log {}", log.display()));
        Ok(out)
    }
}

/// Prometheus with its web UI (the Mantine one, what `--web.ui` serves by
/// default), as `make ui-build BUILD_UI=mantine` then `promu build` make it.
/// The old React UI (`--enable-feature=old-ui`) is not built: its sources
/// in the module lack the vendored packages its build needs.
pub fn prometheus() -> UiBinary {
    UiBinary {
        name: "prometheus",
        module: &super::sources::PROMETHEUS,
        path: "github.com/prometheus/prometheus",
        version: super::versions::PROMETHEUS_MODULE,
        ui_dir: "web/ui",
        packages: Packages::Pnpm { overrides: &[MANTINE_CODE_HIGHLIGHT] },
        ui_script: "build:mantine-ui",
        assets_script: Some("scripts/compress_assets.sh"),
        package: "./cmd/prometheus",
        // The tests check and unit-test the rules with it.
        also: &["./cmd/promtool"],
        // Upstream's build tags for a Prometheus with only the service
        // discovery it is given (static and file always stay): vigil's
        // configuration uses Kubernetes' alone. A fifth fewer packages
        // (the clouds' SDKs) to compile, and none of that code on a pod.
        tags: "netgo,builtinassets,remove_all_sd,enable_kubernetes_sd",
        ldflags: go::prometheus_version_flags(super::versions::PROMETHEUS),
    }
}

/// Alertmanager with its new UI (Mantine, served at `/ui/`), as `make
/// ui-mantine` (`npm ci`, `npm run build`: vite writes it compressed into
/// `ui/app/dist/mantine`) then `promu build` make it; `ui/web.go` embeds
/// `ui/app/dist`. The proto code the UI's `npm run generate` would make is
/// in the module already (and its `buf` comes from a tools module the
/// module does not carry). The old Elm UI (upstream's `/`) is not built:
/// its packages come from Elm's own package site, which this machine
/// cannot reach.
pub fn alertmanager() -> UiBinary {
    UiBinary {
        name: "alertmanager",
        module: &super::sources::ALERTMANAGER,
        path: "github.com/prometheus/alertmanager",
        version: super::versions::ALERTMANAGER,
        ui_dir: "ui/mantine-ui",
        // With it npm takes @mantine/core and @mantine/hooks to 9.6.2 too:
        // code-highlight's peers name its own version exactly.
        packages: Packages::Npm { pins: &[MANTINE_CODE_HIGHLIGHT] },
        ui_script: "build",
        assets_script: None,
        package: "./cmd/alertmanager",
        also: &[],
        tags: "netgo,builtinassets",
        ldflags: go::prometheus_version_flags(super::versions::ALERTMANAGER),
    }
}

/// Both UIs' lockfiles name a 9.7 release, which the registry does not
/// serve (its 9.x releases jump from 9.6.2 to 9.8.1); 9.6.2 is the newest
/// below it, a syntax highlighter with the same API.
const MANTINE_CODE_HIGHLIGHT: (&str, &str) = ("@mantine/code-highlight", "9.6.2");

impl Packages {
    /// The package manager, run in `dir`.
    fn command(&self, dir: &Path) -> Command {
        let mut command = match self {
            Packages::Pnpm { .. } => {
                let mut npx = Command::new("npx");
                npx.args(["--yes", PNPM]);
                npx
            }
            Packages::Npm { .. } => Command::new("npm"),
        };
        command.current_dir(dir);
        command
    }

    /// Writes the replacements into the UI's workspace, and returns the
    /// command that installs its packages.
    async fn install(&self, ui: &Path) -> Result<Command> {
        let mut install = self.command(ui);
        match self {
            Packages::Pnpm { overrides: [] } => {
                install.args(["install", "--frozen-lockfile"]);
            }
            Packages::Pnpm { overrides } => {
                let workspace = ui.join("pnpm-workspace.yaml");
                let mut text =
                    tokio::fs::read_to_string(&workspace).await.map_err(|e| Error::io(&workspace, e))?;
                text.push_str(&overrides_yaml(overrides));
                tokio::fs::write(&workspace, text).await.map_err(|e| Error::io(&workspace, e))?;
                // Not frozen: the overrides change the lockfile's entries for
                // their packages.
                install.args(["install", "--no-frozen-lockfile"]);
            }
            Packages::Npm { pins: [] } => {
                install.args(["ci", "--no-audit", "--no-fund"]);
            }
            Packages::Npm { pins } => {
                let manifest = ui.join("package.json");
                let text = tokio::fs::read_to_string(&manifest).await.map_err(|e| Error::io(&manifest, e))?;
                let pinned = pin_dependencies(&text, pins)
                    .map_err(|what| Error::Unexpected { artifact: manifest.display().to_string(), what })?;
                tokio::fs::write(&manifest, pinned).await.map_err(|e| Error::io(&manifest, e))?;
                // Not `ci`: package.json no longer matches the lockfile for
                // the pinned packages, which `npm install` resolves again.
                install.args(["install", "--no-audit", "--no-fund"]);
            }
        }
        Ok(install)
    }
}

/// package.json with each of `pins` (a direct dependency) at exactly the
/// given version.
fn pin_dependencies(package_json: &str, pins: &[(&str, &str)]) -> std::result::Result<String, String> {
    let mut manifest: serde_json::Value =
        serde_json::from_str(package_json).map_err(|e| format!("not JSON: {e}"))?;
    for (name, version) in pins {
        let section = ["dependencies", "devDependencies"]
            .into_iter()
            .find(|section| manifest.get(section).and_then(|s| s.get(name)).is_some())
            .ok_or_else(|| format!("{name} is not one of its direct dependencies"))?;
        let found = &mut manifest[section][*name];
        *found = serde_json::Value::from(*version);
    }
    serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())
}

/// The `overrides:` section appended to the UI's pnpm-workspace.yaml.
fn overrides_yaml(overrides: &[(&str, &str)]) -> String {
    let map: std::collections::BTreeMap<&str, &str> = overrides.iter().copied().collect();
    let section = std::collections::BTreeMap::from([("overrides", map)]);
    format!("\n{}", serde_yaml::to_string(&section).expect("a map serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_replaces_the_range_of_a_direct_dependency_only() {
        let manifest =
            r#"{"name": "ui", "dependencies": {"@mantine/code-highlight": "^9.7.3", "react": "^19"}}"#;
        let pinned: serde_json::Value =
            serde_json::from_str(&pin_dependencies(manifest, &[MANTINE_CODE_HIGHLIGHT]).unwrap()).unwrap();
        assert_eq!(pinned["dependencies"]["@mantine/code-highlight"], "9.6.2");
        assert_eq!(pinned["dependencies"]["react"], "^19");
        let missing = pin_dependencies(manifest, &[("left-pad", "1.0.0")]).unwrap_err();
        assert!(missing.contains("left-pad is not one of its direct dependencies"), "{missing}");
    }

    #[test]
    fn overrides_are_a_yaml_section_of_their_own() {
        let yaml = overrides_yaml(&[("@mantine/code-highlight", "9.6.2")]);
        let parsed: serde_yaml::Value = serde_yaml::from_str(&format!("packages: [a]\n{yaml}")).unwrap();
        assert_eq!(parsed["overrides"]["@mantine/code-highlight"], "9.6.2");
    }

    #[test]
    fn each_binary_is_the_file_its_package_builds() {
        // `go build -o dir/` names a package's binary by its last path
        // element; the images take the binary by its own name.
        for ui in [prometheus(), alertmanager()] {
            assert_eq!(ui.outputs().next(), Some(ui.name));
        }
        assert_eq!(prometheus().outputs().collect::<Vec<_>>(), ["prometheus", "promtool"]);
    }
}
