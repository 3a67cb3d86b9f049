//! Preflight of a real host: one command gathers what kubeadm and the
//! kubelet need of the machine ([`script`]), [`Facts::parse`] reads its
//! output, and [`findings`] turns it into one line per failure, each with
//! its fix and whether vigil may apply that fix itself (swap off, kernel
//! modules, sysctls) or the user must (a port in use, the clock, an init
//! other than systemd).

use std::{collections::BTreeMap, time::Duration};

use vigil_model::cluster::Role;

/// Kernel modules the pod network and containerd need, each with what
/// shows the kernel has it built in (a kernel without module support has
/// no `/proc/modules` at all): overlay as a filesystem, br_netfilter as its
/// sysctls.
pub const MODULES: [(&str, &str); 2] = [
    ("overlay", "grep -qw overlay /proc/filesystems"),
    ("br_netfilter", "[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]"),
];

/// Sysctls kubeadm checks and the pod network needs, with their value.
pub const SYSCTLS: [(&str, &str); 3] = [
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
];

/// Ports the control plane's components listen on.
pub const CONTROL_PLANE_PORTS: [u16; 5] = [6443, 2379, 2380, 10257, 10259];
/// Ports every node's kubelet and kube-proxy listen on.
pub const NODE_PORTS: [u16; 2] = [10250, 10256];

/// A host's clock may be this far from the machine running vigil: beyond
/// it, certificates vigil's CA signs may be "not yet valid" there.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);

/// The script that prints the facts, one section per `== name` line. POSIX
/// sh and files every Linux has: nothing to install before the check. A
/// module counts as there when it is loaded or built in.
pub fn script() -> String {
    let modules: String = MODULES
        .iter()
        .map(|(module, built_in)| {
            format!(
                "if grep -q '^{module} ' /proc/modules 2>/dev/null || [ -d /sys/module/{module} ] || {built_in}; then echo {module}; fi\n"
            )
        })
        .collect();
    let sysctls: Vec<&str> = SYSCTLS.iter().map(|(key, _)| *key).collect();
    format!(
        r#"echo '== clock'; date +%s.%N
echo '== swaps'; cat /proc/swaps
echo '== modules'
{modules}echo '== sysctl'; for k in {sysctls}; do printf '%s=%s\n' "$k" "$(cat /proc/sys/$(echo $k | tr . /) 2>/dev/null)"; done
echo '== listening'; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
echo '== init'; cat /proc/1/comm
echo '== cgroupfs'; stat -fc %T /sys/fs/cgroup
echo '== machine'; uname -m; nproc; grep MemTotal /proc/meminfo
echo '== container'; systemd-detect-virt --container 2>/dev/null || true
echo '== vigil'; if [ -e {installed} ]; then echo installed; elif [ -S /run/containerd/containerd.sock ] || [ -d /var/lib/containerd ]; then echo other-containerd; fi
"#,
        sysctls = sysctls.join(" "),
        installed = crate::install::INSTALLED_LIST,
    )
}

/// What [`script`] found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    /// Seconds since the epoch on the host, when it answered.
    pub clock: Option<f64>,
    /// Active swap devices or files.
    pub swaps: Vec<String>,
    pub modules: Vec<String>,
    /// Each sysctl asked for, empty when the host has none (module not loaded).
    pub sysctls: BTreeMap<String, String>,
    /// TCP ports something listens on.
    pub listening: Vec<u16>,
    /// The name of PID 1.
    pub init: String,
    /// `cgroup2fs` for cgroup v2, `tmpfs` for v1.
    pub cgroup_filesystem: String,
    pub architecture: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// The container manager the host runs in (`docker`, `lxc`, ...), as
    /// systemd tells it; None on a machine of its own (or a VM).
    pub container: Option<String>,
    /// vigil's build is installed (an earlier `up`): the ports its
    /// components hold are no finding.
    pub vigil_installed: bool,
    /// A containerd vigil did not install runs here, or left its state
    /// (Docker's, a distribution's): vigil's would share its socket and root.
    pub other_containerd: bool,
}

impl Facts {
    pub fn parse(output: &str) -> Facts {
        let mut facts = Facts::default();
        let mut section = "";
        let mut machine_line = 0;
        for line in output.lines() {
            if let Some(name) = line.strip_prefix("== ") {
                section = name.trim();
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            match section {
                "clock" => facts.clock = line.parse().ok(),
                // The header line names the columns; each other line is one swap.
                "swaps" if !line.starts_with("Filename") => {
                    facts.swaps.push(line.split_whitespace().next().unwrap_or_default().into())
                }
                "modules" if !facts.modules.iter().any(|m| m == line) => facts.modules.push(line.into()),
                "sysctl" => {
                    if let Some((key, value)) = line.split_once('=') {
                        facts.sysctls.insert(key.into(), value.into());
                    }
                }
                "listening" => {
                    if let Some(port) = listening_port(line)
                        && !facts.listening.contains(&port)
                    {
                        facts.listening.push(port);
                    }
                }
                "init" => facts.init = line.into(),
                "container" if line != "none" => facts.container = Some(line.into()),
                "vigil" => {
                    facts.vigil_installed = line == "installed";
                    facts.other_containerd = line == "other-containerd";
                }
                "cgroupfs" => facts.cgroup_filesystem = line.into(),
                "machine" => {
                    match machine_line {
                        0 => facts.architecture = line.into(),
                        1 => facts.cpus = line.parse().unwrap_or(0),
                        _ => {
                            facts.memory_mib = line
                                .split_whitespace()
                                .nth(1)
                                .and_then(|kib| kib.parse::<u64>().ok())
                                .map_or(0, |kib| kib / 1024)
                        }
                    }
                    machine_line += 1;
                }
                _ => {}
            }
        }
        facts.listening.sort_unstable();
        facts
    }
}

/// The local port of a `/proc/net/tcp{,6}` line in state LISTEN (0A).
fn listening_port(line: &str) -> Option<u16> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state) = (fields.get(1)?, fields.get(3)?);
    if *state != "0A" {
        return None;
    }
    let (_, port) = local.rsplit_once(':')?;
    u16::from_str_radix(port, 16).ok()
}

/// One thing wrong with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub problem: String,
    pub fix: String,
    /// What vigil changes on the host to fix it (`vigil preflight --fix`);
    /// None: the fix is the owner's.
    pub change: Option<Change>,
}

impl Finding {
    /// A finding vigil fixes: its fix is the change's own description.
    fn vigils(check: &'static str, problem: String, change: Change) -> Finding {
        Finding { check, problem, fix: change.describe(), change: Some(change) }
    }

    /// A finding only the host's owner can fix.
    fn owners(check: &'static str, problem: String, fix: String) -> Finding {
        Finding { check, problem, fix, change: None }
    }

    pub fn vigil_fixes(&self) -> bool {
        self.change.is_some()
    }
}

/// A change vigil makes to a host, now and for every boot after, in files
/// of its own that `down --inventory` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Swap off, and the swap lines of `/etc/fstab` commented out.
    SwapOff,
    LoadModule(&'static str),
    Sysctl(&'static str, &'static str),
}

/// Where vigil lists the modules a host loads at boot.
pub const MODULES_FILE: &str = "/etc/modules-load.d/vigil.conf";
/// Where vigil sets the sysctls a host applies at boot.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-vigil.conf";
/// What marks the fstab lines vigil commented out (`down` restores them).
pub const FSTAB_MARK: &str = "#vigil-swap# ";

impl Change {
    /// The fix as the preflight's line says it.
    pub fn describe(self) -> String {
        match self {
            Change::SwapOff => "swapoff -a, and comment out the swap lines of /etc/fstab".into(),
            Change::LoadModule(module) => format!("modprobe {module}, and list it in {MODULES_FILE}"),
            Change::Sysctl(key, value) => format!("sysctl -w {key}={value}, and set it in {SYSCTL_FILE}"),
        }
    }

    /// The shell lines that make the change; each finds it made and does nothing.
    fn script(self) -> String {
        match self {
            Change::SwapOff => format!(
                "swapoff -a\nsed -i -e '/^[^#]/{{/[[:space:]]swap[[:space:]]/s/^/{FSTAB_MARK}/}}' /etc/fstab"
            ),
            Change::LoadModule(module) => format!(
                "modprobe {module}\nmkdir -p /etc/modules-load.d\ngrep -qx {module} {MODULES_FILE} 2>/dev/null || echo {module} >> {MODULES_FILE}"
            ),
            Change::Sysctl(key, value) => format!(
                "sysctl -qw {key}={value}\nmkdir -p /etc/sysctl.d\ngrep -qx '{key}={value}' {SYSCTL_FILE} 2>/dev/null || echo '{key}={value}' >> {SYSCTL_FILE}"
            ),
        }
    }
}

/// One script making every change of `found`, stopping at the first that
/// fails; None when there is none to make.
pub fn changes_script(found: &[Finding]) -> Option<String> {
    let lines: Vec<String> = found.iter().filter_map(|f| f.change).map(Change::script).collect();
    (!lines.is_empty()).then(|| format!("set -eu\n{}\n", lines.join("\n")))
}

/// Everything wrong with a host of `role` whose facts are `facts`;
/// `local_clock` is this machine's time when the host answered.
pub fn findings(facts: &Facts, role: Role, local_clock: f64) -> Vec<Finding> {
    let mut found = vec![];
    if !facts.swaps.is_empty() {
        found.push(Finding::vigils(
            "swap",
            format!("swap is on ({})", facts.swaps.join(", ")),
            Change::SwapOff,
        ));
    }
    for (module, _) in MODULES {
        if !facts.modules.iter().any(|m| m == module) {
            found.push(Finding::vigils(
                "kernel module",
                format!("the {module} module is not loaded"),
                Change::LoadModule(module),
            ));
        }
    }
    for (key, wanted) in SYSCTLS {
        let value = facts.sysctls.get(key).map(String::as_str).unwrap_or("");
        if value != wanted {
            let shown = if value.is_empty() { "unset".to_string() } else { value.to_string() };
            found.push(Finding::vigils(
                "sysctl",
                format!("{key} is {shown}, not {wanted}"),
                Change::Sysctl(key, wanted),
            ));
        }
    }
    if facts.other_containerd {
        found.push(Finding::owners(
            "containerd",
            "a containerd vigil did not install is here (/run/containerd/containerd.sock or /var/lib/containerd): vigil's own would share its socket and state".into(),
            "use a host without one, or remove it and its state (apt-get purge containerd docker.io; rm -rf /var/lib/containerd)".into(),
        ));
    }
    let ports: Vec<u16> = match role {
        // Held by the cluster an earlier `up` made here, which this one resumes.
        _ if facts.vigil_installed => vec![],
        Role::ControlPlane => CONTROL_PLANE_PORTS.iter().chain(&NODE_PORTS).copied().collect(),
        Role::Worker => NODE_PORTS.to_vec(),
    };
    for port in ports {
        if facts.listening.contains(&port) {
            found.push(Finding::owners(
                "port",
                format!("port {port} is in use"),
                format!(
                    "stop what listens on it (ss -ltnp 'sport = :{port}'), or run `vigil down --inventory` if an earlier cluster holds it"
                ),
            ));
        }
    }
    if facts.init != "systemd" {
        found.push(Finding::owners(
            "init",
            format!("PID 1 is {:?}, not systemd", facts.init),
            "use a host whose init is systemd: vigil runs containerd and the kubelet as systemd units with the systemd cgroup driver".into(),
        ));
    }
    if !matches!(facts.cgroup_filesystem.as_str(), "cgroup2fs" | "tmpfs") {
        found.push(Finding::owners(
            "cgroups",
            format!("/sys/fs/cgroup is {:?}, neither cgroup v2 nor v1", facts.cgroup_filesystem),
            "boot a kernel with cgroups mounted by systemd".into(),
        ));
    }
    match facts.clock {
        Some(clock) if (clock - local_clock).abs() > MAX_CLOCK_SKEW.as_secs_f64() => {
            found.push(Finding::owners(
                "clock",
                format!("its clock is {:+.1} s from this machine's", clock - local_clock),
                "synchronise the clocks (timedatectl set-ntp true on both)".into(),
            ))
        }
        Some(_) => {}
        None => found.push(Finding::owners(
            "clock",
            "it did not tell its time".into(),
            "check that `date +%s.%N` works there".into(),
        )),
    }
    if facts.architecture != "x86_64" {
        found.push(Finding::owners(
            "architecture",
            format!("it is {}, and vigil builds for x86_64", facts.architecture),
            "use x86_64 hosts".into(),
        ));
    }
    if role == Role::ControlPlane && facts.cpus < 2 {
        found.push(Finding::owners(
            "cpus",
            format!("{} CPU; a control plane needs 2", facts.cpus),
            "give the host 2 CPUs or more".into(),
        ));
    }
    let memory_needed = if role == Role::ControlPlane { 1700 } else { 1000 };
    if facts.memory_mib < memory_needed {
        found.push(Finding::owners(
            "memory",
            format!("{} MiB of memory; a {} needs {memory_needed} MiB", facts.memory_mib, role.as_str()),
            "give the host more memory".into(),
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the script printed on a freshly installed Debian 12 VM with
    /// swap on and nothing set up (the ports: sshd on 22, and a stray
    /// kubelet's 10250 over IPv6).
    const FRESH_HOST: &str = "== clock
1796518923.250000000
== swaps
Filename				Type		Size		Used		Priority
/swap.img                               file		2097148		0		-2
== modules
overlay
overlay
== sysctl
net.ipv4.ip_forward=0
net.bridge.bridge-nf-call-iptables=
net.bridge.bridge-nf-call-ip6tables=
== listening
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17721 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0016 0200007F:B1C2 01 00000000:00000000 02:0009A5DC 00000000     0        0 0 2 0000000000000000 20 4 30 10 -1
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2802 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
== init
systemd
== cgroupfs
cgroup2fs
== machine
x86_64
2
MemTotal:        4026036 kB
== container
none
== vigil
";

    #[test]
    fn the_script_asks_for_every_module_and_sysctl_checked() {
        let script = script();
        for (module, built_in) in MODULES {
            assert!(
                script
                    .contains(&format!("[ -d /sys/module/{module} ] || {built_in}; then echo {module}; fi"))
            );
        }
        for (key, _) in SYSCTLS {
            assert!(script.contains(key), "{key}");
        }
    }

    #[test]
    fn facts_are_read_section_by_section() {
        let facts = Facts::parse(FRESH_HOST);
        assert_eq!(facts.clock, Some(1_796_518_923.25));
        assert_eq!(facts.swaps, ["/swap.img"]);
        assert_eq!(facts.modules, ["overlay"], "each once, however it was found");
        assert_eq!(facts.sysctls["net.ipv4.ip_forward"], "0");
        assert_eq!(facts.sysctls["net.bridge.bridge-nf-call-iptables"], "");
        // 0x16 = 22 and 0x2802 = 10242 listen; the established connection does not count.
        assert_eq!(facts.listening, [22, 10242]);
        assert_eq!((facts.init.as_str(), facts.cgroup_filesystem.as_str()), ("systemd", "cgroup2fs"));
        assert_eq!((facts.architecture.as_str(), facts.cpus, facts.memory_mib), ("x86_64", 2, 3931));
        assert_eq!((facts.container, facts.vigil_installed), (None, false), "a machine of its own");
        let in_docker = FRESH_HOST
            .replace("== container\nnone\n== vigil\n", "== container\ndocker\n== vigil\ninstalled\n");
        let facts = Facts::parse(&in_docker);
        assert_eq!((facts.container.as_deref(), facts.vigil_installed), (Some("docker"), true));
    }

    #[test]
    fn another_containerd_is_the_owners_to_remove() {
        let other = FRESH_HOST.replace("== vigil\n", "== vigil\nother-containerd\n");
        let facts = Facts::parse(&other);
        assert!(facts.other_containerd && !facts.vigil_installed);
        let found = findings(&facts, Role::Worker, 1_796_518_923.0);
        let containerd: Vec<&Finding> = found.iter().filter(|f| f.check == "containerd").collect();
        assert_eq!(containerd.len(), 1);
        assert!(!containerd[0].vigil_fixes() && containerd[0].fix.contains("apt-get purge containerd"));
    }

    #[test]
    fn the_ports_of_a_cluster_vigil_made_here_are_no_finding() {
        let mut facts = Facts::parse(FRESH_HOST);
        facts.listening.extend([6443, 10250]);
        let ports = |facts: &Facts| {
            findings(facts, Role::ControlPlane, 1_796_518_923.0).iter().filter(|f| f.check == "port").count()
        };
        assert_eq!(ports(&facts), 2);
        facts.vigil_installed = true;
        assert_eq!(ports(&facts), 0, "an earlier `up` of vigil's holds them: this one resumes");
    }

    #[test]
    fn one_line_per_failure_with_who_fixes_it() {
        let mut facts = Facts::parse(FRESH_HOST);
        facts.listening.push(10250);
        let found = findings(&facts, Role::Worker, 1_796_518_923.0);
        let lines: Vec<(&str, &str, bool)> =
            found.iter().map(|f| (f.check, f.problem.as_str(), f.vigil_fixes())).collect();
        assert_eq!(
            lines,
            [
                ("swap", "swap is on (/swap.img)", true),
                ("kernel module", "the br_netfilter module is not loaded", true),
                ("sysctl", "net.ipv4.ip_forward is 0, not 1", true),
                ("sysctl", "net.bridge.bridge-nf-call-iptables is unset, not 1", true),
                ("sysctl", "net.bridge.bridge-nf-call-ip6tables is unset, not 1", true),
                ("port", "port 10250 is in use", false),
            ]
        );
        assert!(found[0].fix.starts_with("swapoff -a"));
        assert!(found[5].fix.contains("ss -ltnp 'sport = :10250'"));
    }

    #[test]
    fn a_ready_host_has_no_finding_and_roles_differ() {
        let mut facts = Facts::parse(FRESH_HOST);
        facts.swaps.clear();
        facts.modules.push("br_netfilter".into());
        for (key, value) in SYSCTLS {
            facts.sysctls.insert(key.into(), value.into());
        }
        assert_eq!(findings(&facts, Role::Worker, 1_796_518_924.0), []);
        assert_eq!(findings(&facts, Role::ControlPlane, 1_796_518_924.0), []);
        facts.listening.push(6443);
        facts.memory_mib = 1500;
        facts.cpus = 1;
        assert_eq!(findings(&facts, Role::Worker, 1_796_518_924.0), [], "a worker needs neither");
        let checks: Vec<&str> =
            findings(&facts, Role::ControlPlane, 1_796_518_924.0).iter().map(|f| f.check).collect();
        assert_eq!(checks, ["port", "cpus", "memory"]);
    }

    #[test]
    fn vigils_changes_are_one_script_that_finds_them_made() {
        let mut facts = Facts::parse(FRESH_HOST);
        facts.listening.push(10250);
        let found = findings(&facts, Role::Worker, 1_796_518_923.0);
        let script = changes_script(&found).expect("swap, a module and three sysctls");
        assert!(script.starts_with("set -eu\nswapoff -a\n"), "{script}");
        assert!(script.contains(&format!("s/^/{FSTAB_MARK}/")));
        assert!(script.contains("modprobe br_netfilter\n"));
        assert!(script.contains(
            "grep -qx 'net.ipv4.ip_forward=1' /etc/sysctl.d/90-vigil.conf 2>/dev/null || echo 'net.ipv4.ip_forward=1' >> /etc/sysctl.d/90-vigil.conf"
        ));
        assert!(!script.contains("10250"), "a port is the owner's to free");
        assert_eq!(found[0].fix, Change::SwapOff.describe());
        let owners: Vec<Finding> = found.into_iter().filter(|f| !f.vigil_fixes()).collect();
        assert_eq!(changes_script(&owners), None);
    }

    #[test]
    fn skewed_clocks_init_and_missing_answers_are_findings() {
        let mut facts = Facts::parse(FRESH_HOST);
        facts.init = "init".into();
        facts.cgroup_filesystem = "sysfs".into();
        let found = findings(&facts, Role::Worker, 1_796_518_920.0);
        let skew = found.iter().find(|f| f.check == "clock").expect("3.25 s of skew");
        assert_eq!(skew.problem, "its clock is +3.2 s from this machine's");
        assert!(found.iter().any(|f| f.check == "init" && !f.vigil_fixes()));
        assert!(found.iter().any(|f| f.check == "cgroups"));
        assert!(
            findings(&Facts::parse(FRESH_HOST), Role::Worker, 1_796_518_924.0)
                .iter()
                .all(|f| f.check != "clock")
        );
        let silent = findings(&Facts::default(), Role::Worker, 0.0);
        assert!(silent.iter().any(|f| f.check == "clock" && f.problem == "it did not tell its time"));
    }
}
