//! The root filesystems the build debootstrapped (issue 18): each image is
//! keyed on the Debian packages actually installed in it (its labels agree
//! with its own dpkg database), its apt sources carry the release's
//! `-updates` and `-security` suites, and the check a later build makes
//! (apt in a throwaway container of the image) gets an answer from the
//! mirror.

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use vigil::build::{
    debian::{self, Sources},
    image::KEY_LABEL,
    rootfs::{self, PACKAGES_LABEL, RECIPE_LABEL, Rootfs},
};
use vigil_e2e::Cluster;

/// A file of `image`, read by a throwaway container with no network.
fn read_in_image(image: &str, path: &str) -> Result<String> {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--entrypoint", "cat", image, path])
        .output()
        .context("running docker")?;
    ensure!(out.status.success(), "cat {path} in {image}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

fn label(image: &str, name: &str) -> Result<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", &format!("{{{{index .Config.Labels \"{name}\"}}}}"), image])
        .output()
        .context("running docker")?;
    ensure!(out.status.success(), "docker image inspect {image}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

pub async fn root_filesystems_are_keyed_on_their_installed_packages(c: &Cluster) -> Result<()> {
    let repository = &c.spec.image_repository;
    let docker = vigil::docker::connect().await?;
    let sources = Sources::from_host()?;
    for fs in [rootfs::base(repository), rootfs::node(repository)] {
        let image = &fs.image;
        let installed = debian::installed(&read_in_image(image, "/var/lib/dpkg/status")?);
        ensure!(installed.len() > 50, "{image}: only {} packages installed?", installed.len());
        let digest = debian::packages_digest(&installed);
        ensure!(
            label(image, PACKAGES_LABEL)? == digest,
            "{image}: its packages label is not its dpkg database's"
        );
        ensure!(label(image, RECIPE_LABEL)? == fs.recipe_key(), "{image}: made from another recipe");
        ensure!(
            label(image, KEY_LABEL)? == Rootfs::content_key(&fs.recipe_key(), &digest),
            "{image}: its content key does not cover its installed packages"
        );
        let apt = read_in_image(image, "/etc/apt/sources.list.d/debian.sources")?;
        for suite in [format!("{}-updates", fs.suite), format!("{}-security", fs.suite)] {
            ensure!(apt.contains(&suite), "{image}: apt's sources lack {suite}:\n{apt}");
        }
        let upgrades = debian::upgradable(&docker, fs.name, image, &sources.deb822(fs.suite))
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("asking apt for updates in {image}"))?;
        eprintln!("{image}: {} packages; upgradable now: {}", installed.len(), debian::summary(&upgrades));
    }
    Ok(())
}
