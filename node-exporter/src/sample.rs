/// Which container a sample is about. Empty strings for what a source does
/// not know (a plain Docker container has no pod).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId {
    pub namespace: String,
    pub pod: String,
    pub container: String,
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
}

/// Network counters of one interface of one pod (pods share a network namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceUsage {
    pub namespace: String,
    pub pod: String,
    /// For Docker containers: the container, as Docker networks are per container.
    pub container: String,
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

/// What one collector saw in one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    pub containers: Vec<(ContainerId, ContainerUsage)>,
    pub interfaces: Vec<InterfaceUsage>,
}
