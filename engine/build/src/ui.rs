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
    /// Packages the lockfile names at a version the registry no longer
    /// serves, and the served version installed instead (a pnpm override).
    pub overrides: &'static [(&'static str, &'static str)],
    /// The UI's build (`pnpm run <script>`), then the script that turns its
    /// output into what the Go build embeds (run from the module's root).
    pub ui_script: &'static str,
    pub assets_script: &'static str,
    /// The main package, relative to the module's root, and the build tags.
    pub package: &'static str,
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
            .part(PNPM)
            .part(self.ui_dir)
            .part(self.ui_script)
            .part(self.assets_script)
            .part(self.package)
            .part(self.tags);
        let key = self.overrides.iter().fold(key, |k, (name, version)| k.part(name).part(version));
        self.ldflags.iter().fold(key, |k, flag| k.part(flag)).finish()
    }

    fn unexpected(&self, what: String) -> Error {
        Error::Unexpected { artifact: self.name.into(), what }
    }

    /// Builds the binary unless the cache already holds one with this key.
    pub async fn ensure(&self, cache: &Path, progress: &Progress) -> Result<PathBuf> {
        let key = self.key();
        let out = cache.join("bin").join(format!("{}-{}", self.name, short(&key))).join(self.name);
        let title = format!("build {} with its web UI ({} {})", self.name, self.path, self.version);
        if out.exists() {
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
        if !self.overrides.is_empty() {
            let workspace = ui.join("pnpm-workspace.yaml");
            let mut text =
                tokio::fs::read_to_string(&workspace).await.map_err(|e| Error::io(&workspace, e))?;
            text.push_str(&overrides_yaml(self.overrides));
            tokio::fs::write(&workspace, text).await.map_err(|e| Error::io(&workspace, e))?;
        }
        step.update(format!("installing the UI's packages ({PNPM}, from its lockfile)"));
        let mut install = pnpm(&ui);
        // Not frozen: the overrides change the lockfile's entries for their
        // packages; every other package stays at its locked version.
        install.args(["install", "--no-frozen-lockfile"]);
        exec::run_logged(install, &log, |_| {}).await.map_err(fail("pnpm install"))?;

        step.update(format!("building the UI (pnpm run {})", self.ui_script));
        let mut build = pnpm(&ui);
        build.args(["run", self.ui_script]).env("CI", "");
        exec::run_logged(build, &log, |_| {}).await.map_err(fail("pnpm run"))?;
        let mut assets = Command::new("bash");
        assets.arg(self.assets_script).current_dir(&work);
        exec::run_logged(assets, &log, |_| {}).await.map_err(fail(self.assets_script))?;

        step.update(format!("go build -tags {}", self.tags));
        if let Some(parent) = out.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| Error::io(parent, e))?;
        }
        let tmp = out.with_extension("partial");
        let mut compile = Command::new("go");
        compile.args(["build", "-tags", self.tags]);
        go::build_args(&mut compile, &self.ldflags, &tmp, self.package)
            .current_dir(&work)
            .env("CGO_ENABLED", "0")
            .env("GOWORK", "off");
        exec::run_logged(compile, &log, |_| {}).await.map_err(fail("go build"))?;
        tokio::fs::rename(&tmp, &out).await.map_err(|e| Error::io(&out, e))?;
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
        // The lockfile names 9.7.2, which the registry does not serve
        // (its 9.x releases jump from 9.6.2 to 9.8.1); 9.6.2 is the newest
        // below it, a syntax highlighter with the same API.
        overrides: &[("@mantine/code-highlight", "9.6.2")],
        ui_script: "build:mantine-ui",
        assets_script: "scripts/compress_assets.sh",
        package: "./cmd/prometheus",
        tags: "netgo,builtinassets",
        ldflags: go::prometheus_version_flags(),
    }
}

fn pnpm(dir: &Path) -> Command {
    let mut command = Command::new("npx");
    command.args(["--yes", PNPM]).current_dir(dir);
    command
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
    fn overrides_are_a_yaml_section_of_their_own() {
        let yaml = overrides_yaml(&[("@mantine/code-highlight", "9.6.2")]);
        let parsed: serde_yaml::Value = serde_yaml::from_str(&format!("packages: [a]\n{yaml}")).unwrap();
        assert_eq!(parsed["overrides"]["@mantine/code-highlight"], "9.6.2");
    }
}
