/// Which container a sample is about. Empty strings for what a source does
/// not know (a plain Docker container has no pod).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// cAdvisor's `image`, `id` (the cgroup) and `name` (the runtime's name).
    pub runtime: Runtime,
}

/// How the runtime knows a container, as cAdvisor labels it: the image it
/// runs, its cgroup and the runtime's name for it (empty when unknown).
/// Dashboards filter on `image!=""` to keep real containers only.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Runtime {
    pub image: String,
    pub id: String,
    pub name: String,
}

/// One container's usage at one instant. Counters are cumulative since the
/// container started; `None` is "the source did not report it".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerUsage {
    pub cpu_seconds: Option<f64>,
    pub memory_working_set_bytes: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_rss_bytes: Option<u64>,
    pub fs_usage_bytes: Option<u64>,
    pub fs_limit_bytes: Option<u64>,
    pub memory_cache_bytes: Option<u64>,
    pub memory_swap_bytes: Option<u64>,
    /// CFS periods, and those throttled: only for containers with a CPU limit.
    pub cpu_cfs_periods: Option<u64>,
    pub cpu_cfs_throttled_periods: Option<u64>,
}

/// Network counters of one interface of one pod (pods share a network namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceUsage {
    pub namespace: String,
    pub pod: String,
    /// For Docker containers: the container, as Docker networks are per
    /// container. Empty for a pod: its interfaces are its sandbox's, reported
    /// once, so a `sum by (pod)` counts each byte once.
    pub container: String,
    /// The pod sandbox's (or Docker container's) runtime labels.
    pub runtime: Runtime,
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_packets: Option<u64>,
    pub tx_packets: Option<u64>,
    pub rx_dropped: Option<u64>,
    pub tx_dropped: Option<u64>,
}

/// Block I/O of one container on one device, cumulative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    pub container: ContainerId,
    pub device: String,
    pub reads: Option<u64>,
    pub writes: Option<u64>,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
}

/// One of the node's filesystems, as prometheus/node_exporter names its
/// series (`node_filesystem_*{device, fstype, mountpoint}`), so queries and
/// alerts written for it read these. Empty `device` and `fstype` are
/// unknown (Prometheus drops an empty label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemUsage {
    pub mountpoint: String,
    pub device: String,
    pub fstype: String,
    pub avail_bytes: Option<u64>,
    pub size_bytes: Option<u64>,
    pub files_free: Option<u64>,
    pub files: Option<u64>,
}

/// What one collector saw in one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    pub containers: Vec<(ContainerId, ContainerUsage)>,
    pub interfaces: Vec<InterfaceUsage>,
    pub disks: Vec<DiskUsage>,
    /// The node's own filesystems (the kubelet's and the image store's).
    pub filesystems: Vec<FilesystemUsage>,
    /// What went wrong without failing the collection (a second source of
    /// the same collector): logged and counted as failures.
    pub problems: Vec<crate::collector::Error>,
}
