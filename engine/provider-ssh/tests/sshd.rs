//! The transport against a real OpenSSH server: Debian's `sshd`, started by
//! the test on a loopback port with host and client keys made for it by
//! `ssh-keygen` (`./vigil.sh` installs openssh-server).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use base64::Engine as _;
use vigil_model::cluster::Role;
use vigil_provider::Node;
use vigil_provider_ssh::{
    inventory::{HostKeyCheck, Machine},
    node::SshNode,
    runbook::{Outcome, Runbook},
    transport::{ConnectError, Connection},
};

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// `ssh-ed25519 AAAA...` of the server.
    host_key: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vigil-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs (Debian's openssh-client)");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

fn user() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().into()
}

impl Sshd {
    fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install Debian's openssh-server (./vigil.sh test does)"
        );
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        std::fs::copy(dir.path().join("client_key.pub"), dir.path().join("authorized_keys")).unwrap();
        // sshd's privilege separation needs its empty folder.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let option = |o: &str| ["-o".to_string(), o.to_string()];
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f", "/dev/null", "-p", &port.to_string(), "-h"])
            .arg(dir.path().join("host_key"))
            .args(option("ListenAddress=127.0.0.1"))
            .args(option(&format!("AuthorizedKeysFile={}", dir.path().join("authorized_keys").display())))
            .args(option("StrictModes=no"))
            .args(option("PidFile=none"))
            .args(option("UsePAM=no"))
            .args(option("PasswordAuthentication=no"))
            .args(option("PermitRootLogin=prohibit-password"))
            .stderr(std::fs::File::create(dir.path().join("sshd.log")).unwrap())
            .spawn()
            .expect("sshd starts");
        let host_key = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
        let host_key = host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let sshd = Sshd { child, dir, port, host_key };
        for _ in 0..100 {
            if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return sshd;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd did not listen on {port} within 5 s: {}", sshd.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn known_hosts(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("known_hosts");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn machine(&self, host_key: HostKeyCheck) -> Machine {
        Machine {
            name: "lab-worker".into(),
            role: Role::Worker,
            address: Ipv4Addr::LOCALHOST,
            user: user(),
            port: self.port,
            key: self.dir.path().join("client_key"),
            host_key,
        }
    }

    /// Checked against a known_hosts file that lists this server.
    fn known_machine(&self) -> Machine {
        let known = self.known_hosts(&format!("[127.0.0.1]:{} {}\n", self.port, self.host_key));
        self.machine(HostKeyCheck::KnownHosts(known))
    }

    fn pinned(&self, key: &str) -> HostKeyCheck {
        let (algorithm, blob) = key.split_once(' ').unwrap();
        HostKeyCheck::Pinned {
            algorithm: algorithm.into(),
            key: base64::engine::general_purpose::STANDARD.decode(blob).unwrap(),
        }
    }
}

#[tokio::test]
async fn commands_run_with_their_stdin_output_and_exit_status() {
    let sshd = Sshd::start();
    let runbook = Runbook::default();
    let node = SshNode::new(sshd.known_machine(), runbook.clone());

    let out = node.run(&["sh", "-c", "cat; echo to-stderr >&2"], Some(b"from stdin".to_vec())).await.unwrap();
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("from stdin", "to-stderr\n"));

    // Each word arrives as it was given: no word splitting, no expansion.
    let out = node.run(&["printf", "%s|", "a b", "it's", "$HOME", ""], None).await.unwrap();
    assert_eq!(out.stdout, "a b|it's|$HOME||");

    let failed = node.run(&["sh", "-c", "echo partial; exit 3"], None).await.unwrap_err();
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.node, "lab-worker");
    assert!(failed.to_string().contains("exited with 3") && failed.output.contains("partial"), "{failed}");

    let file = sshd.dir.path().join("etc/vigil/token");
    node.copy_in(file.to_str().unwrap(), b"s3cret", 0o600).await.unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"s3cret");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // A new connection after the old one is closed.
    node.disconnect().await;
    assert_eq!(node.run(&["echo", "again"], None).await.unwrap().stdout, "again\n");

    let steps = runbook.steps();
    let outcomes: Vec<&Outcome> = steps.iter().map(|s| &s.outcome).collect();
    assert_eq!(
        outcomes,
        [
            &Outcome::Exited(0),
            &Outcome::Exited(0),
            &Outcome::Exited(3),
            &Outcome::Exited(0),
            &Outcome::Exited(0)
        ]
    );
    assert_eq!(steps[0].command, "cat; echo to-stderr >&2", "a script is shown as the script");
    assert!(steps[1].command.starts_with("printf '%s|' 'a b'"), "{}", steps[1].command);
    assert_eq!(steps[3].command, format!("# write {} (6 bytes, mode 600)", file.display()));
    let book = runbook.to_markdown("test");
    assert!(!book.contains("s3cret"), "a copied file's contents never reach the runbook");
}

/// Input and output flow at once: a command that exits without reading
/// its input (a tar that cannot unpack) ends the run with its status, and
/// one that writes much before it reads does not block on its output.
#[tokio::test]
async fn large_input_a_command_does_not_read_ends_with_its_status() {
    let sshd = Sshd::start();
    let node = SshNode::new(sshd.known_machine(), Runbook::default());
    let input = vec![b'x'; 64 << 20];
    let run = node.run(&["sh", "-c", "echo refused; exit 2"], Some(input.clone()));
    let failed = tokio::time::timeout(Duration::from_secs(30), run).await.expect("no hang").unwrap_err();
    assert_eq!(failed.exit_code, Some(2), "{failed}");
    let run = node.run(&["sh", "-c", "head -c 8000000 /dev/zero | tr '\\0' y; wc -c"], Some(input));
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("no deadlock").unwrap();
    assert_eq!(out.stdout.len(), 8_000_000 + format!("{}\n", 64 << 20).len());
    assert!(
        out.stdout.ends_with(&format!("{}\n", 64 << 20)),
        "every byte of input was read after the output"
    );
}

#[tokio::test]
async fn host_keys_are_checked_never_accepted_blindly() {
    let sshd = Sshd::start();
    assert!(Connection::open(&sshd.known_machine()).await.is_ok(), "{}", sshd.log());
    assert!(Connection::open(&sshd.machine(sshd.pinned(&sshd.host_key))).await.is_ok());

    let unknown = sshd.machine(HostKeyCheck::KnownHosts(sshd.known_hosts("")));
    let e = Connection::open(&unknown).await.err().expect("an unknown host key is refused");
    assert!(matches!(e, ConnectError::UnknownHostKey { .. }), "{e}");
    assert!(e.to_string().contains(&format!("ssh-keyscan -p {} 127.0.0.1", sshd.port)), "{e}");

    keygen(&sshd.dir.path().join("other"));
    let other = std::fs::read_to_string(sshd.dir.path().join("other.pub")).unwrap();
    let other: String = other.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let changed = sshd.known_hosts(&format!("# a comment\n[127.0.0.1]:{} {other}\n", sshd.port));
    let e = Connection::open(&sshd.machine(HostKeyCheck::KnownHosts(changed))).await.err().expect("changed");
    assert!(matches!(e, ConnectError::ChangedHostKey { .. }), "{e}");
    assert!(e.to_string().contains("lab-worker") && e.to_string().contains("CHANGED"), "{e}");

    let e = Connection::open(&sshd.machine(sshd.pinned(&other))).await.err().expect("another pinned key");
    assert!(matches!(e, ConnectError::PinnedKeyMismatch { .. }), "{e}");
}

#[tokio::test]
async fn a_refused_key_and_an_unreachable_host_name_the_host_and_the_fix() {
    let sshd = Sshd::start();
    let mut stranger = sshd.known_machine();
    keygen(&sshd.dir.path().join("stranger"));
    stranger.key = sshd.dir.path().join("stranger");
    let e = Connection::open(&stranger).await.err().expect("a key not in authorized_keys");
    assert!(matches!(e, ConnectError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("authorized_keys") && e.to_string().contains("stranger.pub"), "{e}");

    let mut gone = sshd.known_machine();
    gone.port = free_port();
    let e = Connection::open(&gone).await.err().expect("nothing listens");
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("host lab-worker (127.0.0.1:{})", gone.port)), "{e}");

    let mut keyless = sshd.known_machine();
    keyless.key = sshd.dir.path().join("missing");
    let e = Connection::open(&keyless).await.err().expect("no key file");
    assert!(matches!(e, ConnectError::Key { .. }), "{e}");

    // A command through a node that cannot connect fails naming the host, and is in the runbook.
    let runbook = Runbook::default();
    let node = SshNode::new(gone, runbook.clone());
    let e = node.run(&["true"], None).await.unwrap_err();
    assert!(e.cause.as_deref().is_some_and(|c| c.contains("cannot be reached")), "{e}");
    assert!(matches!(runbook.steps()[0].outcome, Outcome::NotRun(_)));
}

#[tokio::test]
async fn preflight_reads_a_real_host() {
    let sshd = Sshd::start();
    let hosts = vigil_provider_ssh::hosts::Hosts::new(vec![sshd.known_machine()]);
    let reports = hosts.preflight().await;
    let found = reports[0].outcome.as_ref().expect("the script runs under the host's sh");
    // This machine's PID 1 is not systemd (environment.md): the one thing
    // about it known for certain; the rest depends on the machine.
    let init = String::from_utf8(std::fs::read("/proc/1/comm").unwrap()).unwrap();
    assert_eq!(found.iter().any(|f| f.check == "init"), init.trim() != "systemd", "{found:?}");
    assert!(found.iter().all(|f| f.check != "clock"), "the same clock: {found:?}");
    assert!(found.iter().all(|f| f.check != "architecture"), "{found:?}");
    let text = vigil_provider_ssh::hosts::render(&reports);
    assert!(text.starts_with("lab-worker (127.0.0.1, worker): "), "{text}");
    assert_eq!(hosts.runbook().steps().len(), 1);
}
