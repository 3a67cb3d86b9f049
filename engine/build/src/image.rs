//! Docker images from typed recipes: a Dockerfile rendered from a list of
//! instructions, a build context assembled as a tar file, and a label that
//! records the content key the image was built from.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use bollard::{
    Docker,
    query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder, TagImageOptionsBuilder},
};
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::{Error, Result, key::KeyBuilder};

/// The label every image vigil builds carries.
pub const KEY_LABEL: &str = "io.vigil.build-key";

/// True when `image` exists and was built from inputs with this key.
pub async fn has_key(docker: &Docker, image: &str, key: &str) -> Result<bool> {
    Ok(labels(docker, image)
        .await?
        .and_then(|labels| labels.get(KEY_LABEL).cloned())
        .is_some_and(|k| k == key))
}

/// The labels of `image`; None when there is no such image.
pub async fn labels(docker: &Docker, image: &str) -> Result<Option<HashMap<String, String>>> {
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(Some(inspect.config.and_then(|c| c.labels).unwrap_or_default())),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(Error::Docker { what: format!("inspect image {image}"), source: e }),
    }
}

/// `docker import` of a directory, streamed through `tar` (which keeps
/// ownership, device nodes and file capabilities the way Debian made them),
/// labelled with its content key and `labels`.
pub async fn import_rootfs(
    docker: &Docker,
    dir: &Path,
    image: &str,
    key: &str,
    labels: &[(&str, &str)],
) -> Result<()> {
    let (repo, tag) = split_ref(image);
    let mut tar = tokio::process::Command::new("tar");
    tar.args(["--numeric-owner", "--xattrs", "--xattrs-include=security.capability", "-C"])
        .arg(dir)
        .args(["-cf", "-", "."])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = tar.spawn().map_err(|e| Error::io(Path::new("tar"), e))?;
    let stdout = child.stdout.take().expect("piped");
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(
            std::iter::once((KEY_LABEL, key))
                .chain(labels.iter().copied())
                .map(|(name, value)| format!("LABEL {name}={value}"))
                .collect(),
        )
        .build();
    docker
        .create_image(Some(options), Some(bollard::body_try_stream(ReaderStream::new(stdout))), None)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| Error::Docker { what: format!("import {image}"), source: e })?;
    let status = child.wait().await.map_err(|e| Error::io(Path::new("tar"), e))?;
    if !status.success() {
        return Err(Error::io(dir, std::io::Error::other(format!("tar exited with {status}"))));
    }
    Ok(())
}

fn split_ref(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// A Dockerfile instruction. Only what vigil's images use.
#[derive(Debug, Clone)]
pub enum Instruction {
    From(String),
    /// `COPY rootfs/ /`: the whole context tree lands at the image root.
    CopyRootfs,
    /// `LABEL <name>=<value>`.
    Label(&'static str, String),
    Env(&'static str, String),
    Entrypoint(Vec<String>),
    Cmd(Vec<String>),
    StopSignal(&'static str),
    User(&'static str),
}

impl Instruction {
    fn render(&self) -> String {
        let json = |v: &Vec<String>| serde_json::to_string(v).expect("strings serialize");
        match self {
            Instruction::From(image) => format!("FROM {image}"),
            Instruction::CopyRootfs => "COPY rootfs/ /".into(),
            Instruction::Label(name, value) => {
                format!("LABEL {name}={}", serde_json::to_string(value).expect("string"))
            }
            Instruction::Env(name, value) => {
                format!("ENV {name}={}", serde_json::to_string(value).expect("string"))
            }
            Instruction::Entrypoint(argv) => format!("ENTRYPOINT {}", json(argv)),
            Instruction::Cmd(argv) => format!("CMD {}", json(argv)),
            Instruction::StopSignal(signal) => format!("STOPSIGNAL {signal}"),
            Instruction::User(user) => format!("USER {user}"),
        }
    }
}

/// A file placed under `rootfs/` in the build context.
#[derive(Debug, Clone)]
pub enum ContextFile {
    /// A file on disk (a built binary); `key` stands for its content.
    Path {
        dest: String,
        source: PathBuf,
        mode: u32,
        key: String,
    },
    Bytes {
        dest: String,
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        dest: String,
        target: String,
    },
}

/// An image recipe: the tags it gets, its instructions and files.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: &'static str,
    pub tags: Vec<String>,
    pub instructions: Vec<Instruction>,
    pub files: Vec<ContextFile>,
    /// Keys of the images this one is built FROM.
    pub parent_keys: Vec<String>,
}

impl Recipe {
    pub fn dockerfile(&self) -> String {
        self.instructions.iter().map(|i| i.render() + "\n").collect()
    }

    pub fn key(&self) -> String {
        let k = KeyBuilder::new("image").part(self.name).part(self.dockerfile());
        let k = self.tags.iter().fold(k, |k, t| k.part(t));
        let k = self.parent_keys.iter().fold(k, |k, p| k.part(p));
        self.files
            .iter()
            .fold(k, |k, f| match f {
                ContextFile::Path { dest, mode, key, .. } => {
                    k.part("path").part(dest).part(mode.to_le_bytes()).part(key)
                }
                ContextFile::Bytes { dest, data, mode } => {
                    k.part("bytes").part(dest).part(mode.to_le_bytes()).part(data)
                }
                ContextFile::Symlink { dest, target } => k.part("symlink").part(dest).part(target),
            })
            .finish()
    }

    pub fn primary_tag(&self) -> &str {
        &self.tags[0]
    }

    /// Writes the build context tar (Dockerfile + rootfs/).
    fn write_context(&self, path: &Path) -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        let header = |size: u64, mode: u32, kind: tar::EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(mode);
            h.set_entry_type(kind);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h
        };
        let dockerfile = self.dockerfile();
        let mut h = header(dockerfile.len() as u64, 0o644, tar::EntryType::Regular);
        tar.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())?;
        let mut dirs = std::collections::BTreeSet::new();
        for file in &self.files {
            let (ContextFile::Path { dest, .. }
            | ContextFile::Bytes { dest, .. }
            | ContextFile::Symlink { dest, .. }) = file;
            // Parent directories first, with ordinary permissions.
            let mut parent = Path::new(dest.trim_start_matches('/')).parent();
            let mut chain = vec![];
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                chain.push(p.to_owned());
                parent = p.parent();
            }
            for dir in chain.into_iter().rev() {
                if dirs.insert(dir.clone()) {
                    let mut h = header(0, 0o755, tar::EntryType::Directory);
                    tar.append_data(&mut h, Path::new("rootfs").join(&dir), std::io::empty())?;
                }
            }
            let in_context = Path::new("rootfs").join(dest.trim_start_matches('/'));
            match file {
                ContextFile::Path { source, mode, .. } => {
                    let f = std::fs::File::open(source)?;
                    let mut h = header(f.metadata()?.len(), *mode, tar::EntryType::Regular);
                    tar.append_data(&mut h, &in_context, f)?;
                }
                ContextFile::Bytes { data, mode, .. } => {
                    let mut h = header(data.len() as u64, *mode, tar::EntryType::Regular);
                    tar.append_data(&mut h, &in_context, data.as_slice())?;
                }
                ContextFile::Symlink { target, .. } => {
                    let mut h = header(0, 0o777, tar::EntryType::Symlink);
                    tar.append_link(&mut h, &in_context, target)?;
                }
            }
        }
        tar.into_inner()?.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// Builds and tags the image unless it already carries this key.
    /// Returns true when it was (re)built.
    pub async fn ensure(&self, docker: &Docker, work: &Path, log: &Path) -> Result<bool> {
        let key = self.key();
        if self.all_tags_have_key(docker, &key).await? {
            return Ok(false);
        }
        tokio::fs::create_dir_all(work).await.map_err(|e| Error::io(work, e))?;
        let context = work.join(format!("{}-context.tar", self.name));
        let (recipe, path) = (self.clone(), context.clone());
        tokio::task::spawn_blocking(move || recipe.write_context(&path))
            .await
            .expect("context writer does not panic")
            .map_err(|e| Error::io(&context, e))?;
        let labels = HashMap::from([(KEY_LABEL.to_owned(), key.clone())]);
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(self.primary_tag())
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .build();
        let body = tokio::fs::File::open(&context).await.map_err(|e| Error::io(&context, e))?;
        let mut log_file = tokio::fs::File::create(log).await.map_err(|e| Error::io(log, e))?;
        let mut stream =
            docker.build_image(options, None, Some(bollard::body_try_stream(ReaderStream::new(body))));
        while let Some(item) = stream.next().await {
            let info =
                item.map_err(|e| Error::Docker { what: format!("build {}", self.primary_tag()), source: e })?;
            if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                log_file.write_all(text.as_bytes()).await.map_err(|e| Error::io(log, e))?;
            }
            if let Some(detail) = info.error_detail {
                return Err(Error::ImageBuild {
                    image: self.primary_tag().to_owned(),
                    message: detail.message.unwrap_or_default(),
                    log: log.to_owned(),
                });
            }
        }
        let _ = tokio::fs::remove_file(&context).await;
        for extra in &self.tags[1..] {
            let (repo, tag) = split_ref(extra);
            docker
                .tag_image(
                    self.primary_tag(),
                    Some(TagImageOptionsBuilder::default().repo(repo).tag(tag).build()),
                )
                .await
                .map_err(|e| Error::Docker { what: format!("tag {extra}"), source: e })?;
        }
        Ok(true)
    }

    async fn all_tags_have_key(&self, docker: &Docker, key: &str) -> Result<bool> {
        for tag in &self.tags {
            if !has_key(docker, tag, key).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// `docker save` of several images as one archive in memory (small images only).
pub async fn save_to_memory(docker: &Docker, images: &[String]) -> Result<Vec<u8>> {
    let refs: Vec<&str> = images.iter().map(String::as_str).collect();
    let mut out = vec![];
    let mut stream = std::pin::pin!(docker.export_images(&refs));
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(
            &chunk.map_err(|e| Error::Docker { what: format!("save {}", images.join(" ")), source: e })?,
        );
    }
    Ok(out)
}

/// `docker save` of several images into one archive, so layers they share
/// are stored once (containerd imports it with `ctr images import`).
pub async fn save(docker: &Docker, images: &[String], out: &Path) -> Result<()> {
    let refs: Vec<&str> = images.iter().map(String::as_str).collect();
    let mut file = tokio::fs::File::create(out).await.map_err(|e| Error::io(out, e))?;
    let mut stream = std::pin::pin!(docker.export_images(&refs));
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Error::Docker { what: format!("save {}", images.join(" ")), source: e })?;
        file.write_all(&chunk).await.map_err(|e| Error::io(out, e))?;
    }
    file.sync_all().await.map_err(|e| Error::io(out, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        Recipe {
            name: "t",
            tags: vec!["vigil.local/t:1".into()],
            instructions: vec![
                Instruction::From("scratch".into()),
                Instruction::CopyRootfs,
                Instruction::Env("PATH", "/usr/local/bin".into()),
                Instruction::Entrypoint(vec!["/t".into(), "--flag=a b".into()]),
            ],
            files: vec![ContextFile::Bytes { dest: "/etc/t.conf".into(), data: b"x".to_vec(), mode: 0o644 }],
            parent_keys: vec![],
        }
    }

    #[test]
    fn dockerfile_uses_exec_form_and_quoted_env() {
        assert_eq!(
            recipe().dockerfile(),
            "FROM scratch\nCOPY rootfs/ /\nENV PATH=\"/usr/local/bin\"\nENTRYPOINT [\"/t\",\"--flag=a b\"]\n"
        );
    }

    #[test]
    fn key_follows_files_tags_and_parents() {
        let a = recipe();
        let mut b = recipe();
        assert_eq!(a.key(), b.key());
        b.files = vec![ContextFile::Bytes { dest: "/etc/t.conf".into(), data: b"y".to_vec(), mode: 0o644 }];
        assert_ne!(a.key(), b.key());
        let mut c = recipe();
        c.parent_keys.push("p".into());
        assert_ne!(a.key(), c.key());
    }

    #[test]
    fn context_tar_holds_dockerfile_parents_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recipe();
        r.files.push(ContextFile::Symlink {
            dest: "/usr/bin/kubectl".into(),
            target: "/usr/local/bin/kube".into(),
        });
        let path = dir.path().join("ctx.tar");
        r.write_context(&path).unwrap();
        let mut archive = tar::Archive::new(std::fs::File::open(&path).unwrap());
        let entries: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type())
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Dockerfile",
                "rootfs/etc",
                "rootfs/etc/t.conf",
                "rootfs/usr",
                "rootfs/usr/bin",
                "rootfs/usr/bin/kubectl"
            ]
        );
        assert_eq!(entries[5].1, tar::EntryType::Symlink);
    }

    #[test]
    fn splits_image_references() {
        assert_eq!(split_ref("vigil.local/kube-proxy:v1.34.12"), ("vigil.local/kube-proxy", "v1.34.12"));
        assert_eq!(split_ref("localhost:5000/x"), ("localhost:5000/x", "latest"));
    }
}
