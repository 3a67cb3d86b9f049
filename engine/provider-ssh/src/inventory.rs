//! The inventory: the hosts a user already has, how to reach each over SSH,
//! and the cluster-wide networks. Read from YAML and checked completely
//! before any connection, so that every mistake is reported at once, each
//! naming its field and the fix.
//!
//! ```yaml
//! name: lab                          # the cluster (default: vigil)
//! network: 192.168.56.0/24           # the network the hosts share
//! load_balancer_pool: 192.168.56.224/28
//! pod_subnet: 10.244.0.0/16          # default
//! service_subnet: 10.96.0.0/16       # default
//! ssh:                               # defaults for every host
//!   user: vigil
//!   key: ~/.ssh/id_ed25519
//!   known_hosts: ~/.ssh/known_hosts  # default
//! hosts:
//!   - address: 192.168.56.10
//!     role: control-plane
//!   - address: 192.168.56.11
//!     role: worker
//!     host_key: ssh-ed25519 AAAAC3Nza...   # pinned instead of known_hosts
//!   - address: 192.168.56.12
//!     role: worker
//!     name: worker-b
//!     port: 2222
//! ```

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use ipnet::{Ipv4AddrRange, Ipv4Net};
use serde::{Deserialize, Serialize};
use vigil_model::cluster::{ClusterSpec, Role, defaults, overlaps, validate_name};

/// The inventory as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default = "default_name")]
    pub name: String,
    pub network: Ipv4Net,
    pub load_balancer_pool: Pool,
    #[serde(default = "default_pod_subnet")]
    pub pod_subnet: Ipv4Net,
    #[serde(default = "default_service_subnet")]
    pub service_subnet: Ipv4Net,
    #[serde(default)]
    pub ssh: SshDefaults,
    pub hosts: Vec<Host>,
}

impl Inventory {
    /// The cluster these hosts make: `choices` (the user's other options:
    /// alerting, failover, ...) with the inventory's name, networks, pool
    /// and number of workers.
    pub fn spec(&self, choices: ClusterSpec) -> ClusterSpec {
        ClusterSpec {
            name: self.name.clone(),
            workers: self.hosts.iter().filter(|h| h.role == Role::Worker).count(),
            node_subnet: self.network,
            pod_subnet: self.pod_subnet,
            service_subnet: self.service_subnet,
            load_balancer_pool: Some((self.load_balancer_pool.first, self.load_balancer_pool.last)),
            ..choices
        }
    }
}

/// How every host is reached unless it says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshDefaults {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key: Option<PathBuf>,
    /// Where host keys not pinned in the inventory are checked.
    pub known_hosts: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub address: Ipv4Addr,
    pub role: Role,
    /// The node's name in the cluster (default: as node containers are
    /// named, `<cluster>-control-plane`, `<cluster>-worker`, `<cluster>-worker2`...).
    pub name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key: Option<PathBuf>,
    /// The host's public key (`ssh-ed25519 AAAA...`, as in `known_hosts`
    /// without the host field), checked instead of `known_hosts`.
    pub host_key: Option<String>,
}

/// LoadBalancer addresses: a network (`192.168.56.224/28`) or a range
/// (`192.168.56.240-192.168.56.250`), as MetalLB's pools are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Pool {
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&address)
    }

    pub fn addresses(&self) -> Ipv4AddrRange {
        Ipv4AddrRange::new(self.first, self.last)
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for Pool {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(net) = text.parse::<Ipv4Net>() {
            return Ok(Pool { first: net.network(), last: net.broadcast() });
        }
        let (first, last) =
            text.split_once('-').ok_or_else(|| format!("{text:?} is neither a network nor a range"))?;
        let parse = |a: &str| a.trim().parse::<Ipv4Addr>().map_err(|e| format!("{a:?}: {e}"));
        let (first, last) = (parse(first)?, parse(last)?);
        if first > last {
            return Err(format!("{text:?} ends before it starts"));
        }
        Ok(Pool { first, last })
    }
}

impl Serialize for Pool {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

fn default_name() -> String {
    defaults::NAME.into()
}
fn default_pod_subnet() -> Ipv4Net {
    defaults::POD_SUBNET.parse().expect("valid default")
}
fn default_service_subnet() -> Ipv4Net {
    defaults::SERVICE_SUBNET.parse().expect("valid default")
}

/// One thing wrong with an inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: `hosts[2].address`, `load_balancer_pool`, ...
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}\n    fix: {}", self.field, self.problem, self.fix)
    }
}

/// Everything wrong with an inventory file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the inventory {}: check the path given to --inventory (or VIGIL_INVENTORY)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the inventory {} is not valid:\n{}", path.display(), list(.errors))]
    Invalid { path: PathBuf, errors: Vec<FieldError> },
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
}

/// A host as vigil reaches it: every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub role: Role,
    pub address: Ipv4Addr,
    pub user: String,
    pub port: u16,
    pub key: PathBuf,
    pub host_key: HostKeyCheck,
}

/// How a host's key is checked: never accepted blindly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// Against this `known_hosts` file.
    KnownHosts(PathBuf),
    /// Against the key pinned in the inventory: its algorithm and its bytes.
    Pinned { algorithm: String, key: Vec<u8> },
}

/// Where `~` and relative paths are taken from.
pub struct Paths<'a> {
    pub home: &'a Path,
    /// The inventory file's folder: relative key paths are relative to it.
    pub base: &'a Path,
}

const SSH_USER: &str = "root";
const SSH_PORT: u16 = 22;
const FIELDS_FIX: &str = "the fields are name, network, load_balancer_pool, pod_subnet, service_subnet, ssh (user, port, key, known_hosts) and hosts (address, role, name, user, port, key, host_key)";

/// Reads and checks the inventory at `path`.
pub fn load(path: &Path, paths: &Paths) -> Result<(Inventory, Vec<Machine>), Error> {
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    parse(&text, paths).map_err(|errors| Error::Invalid { path: path.to_owned(), errors })
}

/// Reads the inventory at `path` as its user wrote it: `~` is `$HOME`, and
/// relative paths are relative to the file's folder.
pub fn read(path: &Path) -> Result<(Inventory, Vec<Machine>), Error> {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    load(path, &Paths { home: &home, base })
}

/// Parses and checks an inventory; every problem found, not just the first.
pub fn parse(text: &str, paths: &Paths) -> Result<(Inventory, Vec<Machine>), Vec<FieldError>> {
    let inventory: Inventory = serde_yaml::from_str(text).map_err(|e| {
        let field = e.location().map_or("inventory".to_owned(), |l| format!("line {}", l.line()));
        vec![FieldError { field, problem: e.to_string(), fix: FIELDS_FIX.into() }]
    })?;
    let machines = check(&inventory, paths)?;
    Ok((inventory, machines))
}

fn expand(path: &Path, paths: &Paths) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => paths.home.join(rest),
        Err(_) if path.is_relative() => paths.base.join(path),
        Err(_) => path.to_owned(),
    }
}

/// The default node names, in the order of the hosts of each role (as the
/// Docker provider names its containers).
fn default_name_of(cluster: &str, role: Role, worker_index: usize) -> String {
    match (role, worker_index) {
        (Role::ControlPlane, _) => format!("{cluster}-control-plane"),
        (Role::Worker, 0) => format!("{cluster}-worker"),
        (Role::Worker, n) => format!("{cluster}-worker{}", n + 1),
    }
}

fn check(inventory: &Inventory, paths: &Paths) -> Result<Vec<Machine>, Vec<FieldError>> {
    let mut errors = vec![];
    let mut error = |field: String, problem: String, fix: &str| {
        errors.push(FieldError { field, problem, fix: fix.into() });
    };
    if let Err(e) = validate_name(&inventory.name) {
        error("name".into(), e.to_string(), "use lowercase letters, digits and '-', at most 40 characters");
    }
    let networks = [
        ("network", inventory.network),
        ("pod_subnet", inventory.pod_subnet),
        ("service_subnet", inventory.service_subnet),
    ];
    for ((a_name, a), (b_name, b)) in overlaps(&networks) {
        error(
            b_name.into(),
            format!("{b} overlaps {a_name} {a}"),
            "choose pod and service networks that no host address falls in (e.g. 10.244.0.0/16 and 10.96.0.0/16)",
        );
    }
    let pool = inventory.load_balancer_pool;
    let network = inventory.network;
    if !network.contains(&pool.first) || !network.contains(&pool.last) {
        error(
            "load_balancer_pool".into(),
            format!("{pool} is not inside the hosts' network {network}"),
            "choose unused addresses of the hosts' network, so that the hosts answer ARP for them (MetalLB L2)",
        );
    } else if pool.contains(network.network()) || pool.contains(network.broadcast()) {
        error(
            "load_balancer_pool".into(),
            format!("{pool} holds the network's own address or its broadcast address"),
            "leave out the first and the last address of the network",
        );
    }
    if inventory.hosts.is_empty() {
        error("hosts".into(), "no hosts".into(), "list one control-plane host and at least one worker");
    }
    let control_planes: Vec<usize> =
        (0..inventory.hosts.len()).filter(|i| inventory.hosts[*i].role == Role::ControlPlane).collect();
    match control_planes.len() {
        0 if !inventory.hosts.is_empty() => error(
            "hosts".into(),
            "no host has role control-plane".into(),
            "give exactly one host role: control-plane",
        ),
        0 | 1 => {}
        _ => error(
            format!("hosts[{}].role", control_planes[1]),
            format!(
                "{} hosts have role control-plane; vigil makes one control plane (no HA yet)",
                control_planes.len()
            ),
            "give exactly one host role: control-plane and the others role: worker",
        ),
    }
    if !inventory.hosts.is_empty() && inventory.hosts.iter().all(|h| h.role == Role::ControlPlane) {
        error("hosts".into(), "no host has role worker".into(), "list at least one host with role: worker");
    }
    let known_hosts =
        inventory.ssh.known_hosts.clone().unwrap_or_else(|| PathBuf::from("~/.ssh/known_hosts"));
    let known_hosts = expand(&known_hosts, paths);
    let mut machines = vec![];
    let mut seen_names: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen_addresses: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut workers = 0;
    for (i, host) in inventory.hosts.iter().enumerate() {
        let field = |name: &str| format!("hosts[{i}].{name}");
        let name = host.name.clone().unwrap_or_else(|| default_name_of(&inventory.name, host.role, workers));
        if host.role == Role::Worker {
            workers += 1;
        }
        if validate_name(&name).is_err() {
            error(
                field("name"),
                format!("{name:?} is not a DNS label"),
                "use lowercase letters, digits and '-', at most 40 characters",
            );
        }
        if let Some(first) = seen_names.insert(name.clone(), i) {
            error(
                field("name"),
                format!("{name:?} is also the name of hosts[{first}]"),
                "give every host its own name",
            );
        }
        if let Some(first) = seen_addresses.insert(host.address, i) {
            error(
                field("address"),
                format!("{} is also the address of hosts[{first}]", host.address),
                "list every host once",
            );
        }
        if !network.contains(&host.address)
            || host.address == network.network()
            || host.address == network.broadcast()
        {
            error(
                field("address"),
                format!("{} is not a host address of the network {network}", host.address),
                "correct the address, or the network (field network) the hosts share",
            );
        } else if pool.contains(host.address) {
            error(
                field("address"),
                format!("{} is inside the load_balancer_pool {pool}", host.address),
                "choose a pool of addresses no host uses",
            );
        }
        let user =
            host.user.clone().or_else(|| inventory.ssh.user.clone()).unwrap_or_else(|| SSH_USER.into());
        if user.is_empty() || user.contains(char::is_whitespace) {
            error(
                field("user"),
                format!("{user:?} is not a user name"),
                "name the SSH user, e.g. user: vigil",
            );
        }
        let port = host.port.or(inventory.ssh.port).unwrap_or(SSH_PORT);
        if port == 0 {
            error(field("port"), "port 0".into(), "use the port sshd listens on (22 by default)");
        }
        let key = match host.key.clone().or_else(|| inventory.ssh.key.clone()) {
            Some(key) => expand(&key, paths),
            None => {
                error(
                    field("key"),
                    "no SSH key named, here or under ssh.key".into(),
                    "name a private key: ssh: {key: ~/.ssh/id_ed25519} (vigil authenticates with keys only)",
                );
                PathBuf::new()
            }
        };
        if !key.as_os_str().is_empty() && !key.is_file() {
            error(
                field("key"),
                format!("{} is not a file", key.display()),
                "create a key with `ssh-keygen -t ed25519` and install it on the host with `ssh-copy-id`",
            );
        }
        let host_key = match &host.host_key {
            Some(pinned) => match parse_public_key(pinned) {
                Ok((algorithm, key)) => HostKeyCheck::Pinned { algorithm, key },
                Err(problem) => {
                    error(
                        field("host_key"),
                        problem,
                        "copy the key from the host's /etc/ssh/ssh_host_ed25519_key.pub (algorithm and base64, e.g. ssh-ed25519 AAAAC3...)",
                    );
                    HostKeyCheck::KnownHosts(known_hosts.clone())
                }
            },
            None => {
                if !known_hosts.is_file() {
                    error(
                        field("host_key"),
                        format!(
                            "not pinned, and {} does not exist to check it against",
                            known_hosts.display()
                        ),
                        "pin it (host_key: the line of /etc/ssh/ssh_host_ed25519_key.pub), or add the host to known_hosts after checking its fingerprint (ssh-keyscan, then ssh-keygen -lf)",
                    );
                }
                HostKeyCheck::KnownHosts(known_hosts.clone())
            }
        };
        machines.push(Machine { name, role: host.role, address: host.address, user, port, key, host_key });
    }
    if errors.is_empty() {
        // The control plane first, as every provider plans its machines.
        machines.sort_by_key(|m| m.role != Role::ControlPlane);
        Ok(machines)
    } else {
        Err(errors)
    }
}

const HOST_KEY_ALGORITHMS: [&str; 6] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "ssh-rsa",
];

/// `algorithm base64 [comment]`, the key's wire form naming the same algorithm.
fn parse_public_key(text: &str) -> Result<(String, Vec<u8>), String> {
    let mut words = text.split_whitespace();
    let (Some(algorithm), Some(encoded)) = (words.next(), words.next()) else {
        return Err("not `algorithm base64`".into());
    };
    if !HOST_KEY_ALGORITHMS.contains(&algorithm) {
        return Err(format!(
            "{algorithm:?} is not a host key algorithm vigil checks ({})",
            HOST_KEY_ALGORITHMS.join(", ")
        ));
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the key is not base64: {e}"))?;
    // The wire form starts with the algorithm's name, length-prefixed.
    let named = key
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| key.get(4..4 + n));
    let expected = if algorithm == "rsa-sha2-512" { "ssh-rsa" } else { algorithm };
    if named != Some(expected.as_bytes()) {
        return Err(format!("the key's bytes are not an {algorithm} key"));
    }
    Ok((algorithm.to_owned(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 host key's public half (generated for this test).
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPjS4ohaAkXtF9q3vfvuqgZH18IAs0SwQqrXCYvvDV89 host";

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join(".ssh")).unwrap();
            std::fs::write(dir.path().join(".ssh/id_ed25519"), "key").unwrap();
            std::fs::write(dir.path().join(".ssh/known_hosts"), "").unwrap();
            Files { dir }
        }
        fn paths(&self) -> Paths<'_> {
            Paths { home: self.dir.path(), base: self.dir.path() }
        }
    }

    const GOOD: &str = "
name: lab
network: 192.168.56.0/24
load_balancer_pool: 192.168.56.224/28
ssh: {user: vigil, key: ~/.ssh/id_ed25519}
hosts:
  - {address: 192.168.56.11, role: worker}
  - {address: 192.168.56.10, role: control-plane}
  - {address: 192.168.56.12, role: worker, port: 2222, host_key: HOSTKEY}
";

    fn good() -> String {
        GOOD.replace("HOSTKEY", ED25519)
    }

    fn errors(text: &str) -> Vec<FieldError> {
        let files = Files::new();
        parse(text, &files.paths()).expect_err("invalid")
    }

    fn fields(text: &str) -> Vec<String> {
        errors(text).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn an_inventory_written_from_its_type_reads_back_the_same() {
        let files = Files::new();
        let (inventory, machines) = parse(&good(), &files.paths()).unwrap();
        let written = serde_yaml::to_string(&inventory).unwrap();
        assert!(written.contains("load_balancer_pool: 192.168.56.224-192.168.56.239\n"), "{written}");
        let (again, machines_again) = parse(&written, &files.paths()).unwrap();
        assert_eq!((again, machines_again), (inventory, machines));
    }

    #[test]
    fn a_good_inventory_gives_machines_control_plane_first_with_defaults_applied() {
        let files = Files::new();
        let (inventory, machines) = parse(&good(), &files.paths()).unwrap();
        assert_eq!(inventory.pod_subnet.to_string(), defaults::POD_SUBNET);
        let names: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["lab-control-plane", "lab-worker", "lab-worker2"]);
        assert_eq!(machines[0].address, Ipv4Addr::new(192, 168, 56, 10));
        assert_eq!((machines[0].user.as_str(), machines[0].port), ("vigil", 22));
        assert_eq!(machines[0].key, files.dir.path().join(".ssh/id_ed25519"));
        assert_eq!(machines[0].host_key, HostKeyCheck::KnownHosts(files.dir.path().join(".ssh/known_hosts")));
        assert_eq!(machines[2].port, 2222);
        assert!(
            matches!(&machines[2].host_key, HostKeyCheck::Pinned { algorithm, .. } if algorithm == "ssh-ed25519")
        );
        assert_eq!(inventory.load_balancer_pool.addresses().count(), 16);
    }

    #[test]
    fn an_unknown_field_is_named_with_the_fields_there_are() {
        let e = errors(&good().replace("role: worker, port", "role: worker, prot"));
        assert_eq!(e.len(), 1);
        assert!(e[0].problem.contains("unknown field `prot`"), "{e:?}");
        assert!(e[0].field.starts_with("line "), "{e:?}");
        assert!(e[0].fix.contains("host_key"));
    }

    #[test]
    fn every_mistake_is_reported_at_once_by_field() {
        let text = "
network: 192.168.56.0/24
load_balancer_pool: 192.168.57.0/28
pod_subnet: 192.168.0.0/16
hosts:
  - {address: 192.168.56.10, role: control-plane, key: /nonexistent/key}
  - {address: 192.168.56.10, role: control-plane, key: ~/.ssh/id_ed25519, name: Bad_Name}
  - {address: 10.0.0.1, role: worker, key: ~/.ssh/id_ed25519, host_key: ssh-dss AAAA}
";
        let found = fields(text);
        for wanted in [
            "pod_subnet",
            "load_balancer_pool",
            "hosts[1].role",
            "hosts[0].key",
            "hosts[1].name",
            "hosts[1].address",
            "hosts[2].address",
            "hosts[2].host_key",
        ] {
            assert!(found.contains(&wanted.to_owned()), "{wanted} not in {found:?}");
        }
        let all = errors(text);
        assert!(all.iter().all(|e| !e.fix.is_empty()));
    }

    #[test]
    fn roles_need_one_control_plane_and_a_worker() {
        let no_control_plane = "
network: 192.168.56.0/24
load_balancer_pool: 192.168.56.240-192.168.56.250
ssh: {key: ~/.ssh/id_ed25519}
hosts: [{address: 192.168.56.11, role: worker}]
";
        assert_eq!(fields(no_control_plane), ["hosts"]);
        let no_worker = no_control_plane.replace("role: worker", "role: control-plane");
        assert_eq!(fields(&no_worker), ["hosts"]);
        assert!(errors(&no_worker)[0].problem.contains("worker"));
    }

    #[test]
    fn host_keys_are_pinned_or_checked_never_accepted() {
        let files = Files::new();
        std::fs::remove_file(files.dir.path().join(".ssh/known_hosts")).unwrap();
        let e = parse(&good(), &files.paths()).expect_err("no known_hosts for two hosts");
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["hosts[0].host_key", "hosts[1].host_key"], "the pinned host needs none");
        // A key whose bytes name another algorithm than its text.
        let mismatched = ED25519.replace("ssh-ed25519 ", "ecdsa-sha2-nistp256 ");
        assert!(parse_public_key(&mismatched).unwrap_err().contains("not an ecdsa-sha2-nistp256 key"));
        assert!(parse_public_key("ssh-ed25519 !!!").unwrap_err().contains("base64"));
    }

    #[test]
    fn pools_are_networks_or_ranges_inside_the_hosts_network() {
        assert_eq!("10.0.0.8/30".parse::<Pool>().unwrap().to_string(), "10.0.0.8-10.0.0.11");
        assert!("10.0.0.9-10.0.0.8".parse::<Pool>().is_err());
        assert!("nonsense".parse::<Pool>().is_err());
        let holds_a_host = good().replace("192.168.56.224/28", "192.168.56.8/29");
        assert_eq!(fields(&holds_a_host), ["hosts[0].address", "hosts[1].address", "hosts[2].address"]);
        let holds_the_broadcast = good().replace("192.168.56.224/28", "192.168.56.250-192.168.56.255");
        assert_eq!(fields(&holds_the_broadcast), ["load_balancer_pool"]);
    }
}
