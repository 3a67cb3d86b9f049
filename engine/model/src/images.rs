//! Image names, the way kubeadm derives them from the image repository (no
//! extra `coredns/` path: that is only added for the default registry).
//! The build tags what it makes with these names and the add-ons' objects
//! refer to them, so neither needs the other to agree on a name.

use crate::versions;

/// The images a cluster needs, for one image repository.
#[derive(Debug, Clone)]
pub struct ImageNames {
    pub repository: String,
}

impl ImageNames {
    pub fn new(repository: impl Into<String>) -> Self {
        ImageNames { repository: repository.into() }
    }
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
    /// The pod base image (iptables for kube-proxy and flannel), doubling as
    /// the tests' toolbox (socat, getent) and local-path's helper.
    pub fn base(&self) -> String {
        format!("{}/base:{}", self.repository, versions::DEBIAN_SUITE)
    }
    pub fn node(&self) -> String {
        format!("{}/node:{}", self.repository, versions::KUBERNETES)
    }
    /// The image that carries kubectl (the multi-call Kubernetes binary).
    pub fn kubectl(&self) -> String {
        self.kube("kube-apiserver")
    }
    /// An image built from an upstream module: `name` at its `version`.
    pub fn upstream(&self, name: &str, version: &str) -> String {
        format!("{}/{name}:{version}", self.repository)
    }
    /// The tag the committed manifests name for a workspace crate's image:
    /// the workspace version (`up` deploys content-keyed tags instead).
    pub fn version_tag(&self, crate_name: &str) -> String {
        format!("{}/{crate_name}:{}", self.repository, env!("CARGO_PKG_VERSION"))
    }
}
