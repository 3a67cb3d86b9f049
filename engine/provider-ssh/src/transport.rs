//! One SSH connection to one host: key authentication, the host key checked
//! against `known_hosts` or the key pinned in the inventory (never accepted
//! blindly), and commands run with their stdin, output and exit status.
//!
//! russh, not a binding to libssh2 or a wrapper around the `ssh` binary: it
//! is async on tokio like the rest of vigil, builds with the `ring` backend
//! vigil already links (no C toolchain or system library), and its
//! `known_hosts` reader tells a changed key from an unknown one.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use russh::{
    ChannelMsg,
    client::{self, Handle},
    keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate, known_hosts},
};

use crate::inventory::{HostKeyCheck, Machine};

/// How long a host may take to accept the TCP connection and finish the
/// SSH handshake before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A host that stops answering is given up after this many missed keepalives, 15 s apart.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 4;

/// Why a host could not be reached, each with its fix.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "host {host} ({address}:{port}) cannot be reached: {cause}; check that it is up, that sshd listens on port {port} and that nothing between drops the connection"
    )]
    Unreachable { host: String, address: Ipv4Addr, port: u16, cause: String },
    #[error(
        "host {host} ({address}:{port}): its host key ({offered}) is not in {}; check its fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then add it (ssh-keyscan -p {port} {address} >> {0}) or pin it in the inventory (host_key)",
        known_hosts.display()
    )]
    UnknownHostKey { host: String, address: Ipv4Addr, port: u16, offered: String, known_hosts: PathBuf },
    #[error(
        "host {host} ({address}:{port}): its host key CHANGED ({offered}) from the one {} records for it; if the host was reinstalled, check the new key's fingerprint on the host and replace that line (ssh-keygen -R '[{address}]:{port}'); otherwise something else answers at this address",
        known_hosts.display()
    )]
    ChangedHostKey { host: String, address: Ipv4Addr, port: u16, offered: String, known_hosts: PathBuf },
    #[error(
        "host {host} ({address}:{port}): its host key ({offered}) is not the one pinned in the inventory (hosts[].host_key); if the host was reinstalled, pin its new key after checking its fingerprint on the host; otherwise something else answers at this address"
    )]
    PinnedKeyMismatch { host: String, address: Ipv4Addr, port: u16, offered: String },
    #[error("cannot read the SSH key {} for host {host}: {cause}; give an unencrypted private key (ssh.key or hosts[].key)", path.display())]
    Key { host: String, path: PathBuf, cause: String },
    #[error(
        "host {host} ({address}:{port}) refused user {user} with the key {}: add its public key ({}.pub) to ~{user}/.ssh/authorized_keys on the host",
        key.display(), key.display()
    )]
    Refused { host: String, address: Ipv4Addr, port: u16, user: String, key: PathBuf },
    #[error("host {host} ({address}:{port}): the SSH session failed: {cause}")]
    Session { host: String, address: Ipv4Addr, port: u16, cause: String },
}

/// What a command did: its exit status (None when it was killed by a
/// signal or the connection ended first) and what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub status: Option<u32>,
    /// The signal that ended it, when one did.
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// An open, authenticated connection to one host.
pub struct Connection {
    handle: Handle<HostKeyChecker>,
    host: String,
    address: Ipv4Addr,
    port: u16,
}

impl Connection {
    /// Connects to `machine`, checks its host key and logs in with its key.
    pub async fn open(machine: &Machine) -> Result<Connection, ConnectError> {
        let host = machine.name.clone();
        let (address, port) = (machine.address, machine.port);
        let key = russh::keys::load_secret_key(&machine.key, None).map_err(|e| ConnectError::Key {
            host: host.clone(),
            path: machine.key.clone(),
            cause: e.to_string(),
        })?;
        let unreachable =
            |cause: String| ConnectError::Unreachable { host: host.clone(), address, port, cause };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: KEEPALIVE_MAX,
            ..Default::default()
        });
        let verdict = Arc::new(Mutex::new(None));
        let checker = HostKeyChecker { machine: machine.clone(), verdict: verdict.clone() };
        let handshake = async {
            let socket = tokio::net::TcpStream::connect((address, port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            // russh's `Config::nodelay` applies only to the sockets it opens itself.
            let _ = socket.set_nodelay(true);
            client::connect_stream(config, socket, checker).await.map_err(|e| {
                // A refused host key ends the handshake with russh's own
                // error; the checker kept the reason.
                match verdict.lock().expect("verdict lock").take() {
                    Some(refusal) => refusal,
                    None => ConnectError::Session { host: host.clone(), address, port, cause: e.to_string() },
                }
            })
        };
        let mut handle = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| unreachable(format!("no SSH handshake within {} s", CONNECT_TIMEOUT.as_secs())))??;
        let session = |e: russh::Error| ConnectError::Session {
            host: host.clone(),
            address,
            port,
            cause: e.to_string(),
        };
        let hash = handle.best_supported_rsa_hash().await.map_err(session)?.flatten();
        let auth = handle
            .authenticate_publickey(&machine.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(session)?;
        if !auth.success() {
            return Err(ConnectError::Refused {
                host: host.clone(),
                address,
                port,
                user: machine.user.clone(),
                key: machine.key.clone(),
            });
        }
        Ok(Connection { handle, host, address, port })
    }

    /// False once the host hung up or stopped answering keepalives.
    pub fn is_open(&self) -> bool {
        !self.handle.is_closed()
    }

    /// Runs `command` (a shell command line: SSH carries one string) with
    /// `stdin`, and waits for it to end.
    pub async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<Exit, ConnectError> {
        let session = |e: russh::Error| ConnectError::Session {
            host: self.host.clone(),
            address: self.address,
            port: self.port,
            cause: e.to_string(),
        };
        let channel = self.handle.channel_open_session().await.map_err(session)?;
        channel.exec(true, command).await.map_err(session)?;
        let (mut read, write) = channel.split();
        // Input goes while output is read: a command that writes much
        // before it reads (or exits without reading all of its input) must
        // neither block on its output nor leave vigil waiting to send.
        let send = async {
            if let Some(input) = stdin {
                write.data(input).await?;
            }
            write.eof().await
        };
        let receive = async {
            let mut exit = Exit { status: None, signal: None, stdout: vec![], stderr: vec![] };
            // Output can still arrive after the exit status: read to the end.
            while let Some(message) = read.wait().await {
                match message {
                    ChannelMsg::Data { data } => exit.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => exit.stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => exit.status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        exit.signal = Some(format!("{signal_name:?}"))
                    }
                    _ => {}
                }
            }
            exit
        };
        tokio::pin!(send, receive);
        let mut sent: Option<Result<(), russh::Error>> = None;
        let exit = loop {
            tokio::select! {
                result = &mut send, if sent.is_none() => sent = Some(result),
                exit = &mut receive => break exit,
            }
        };
        match sent {
            // The input could not all be sent and the command did not say how it ended.
            Some(Err(e)) if exit.status.is_none() && exit.signal.is_none() => Err(session(e)),
            _ => Ok(exit),
        }
    }

    pub async fn close(self) {
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

/// russh's client handler: the host key check, with the reason kept when it refuses.
struct HostKeyChecker {
    machine: Machine,
    verdict: Arc<Mutex<Option<ConnectError>>>,
}

impl client::Handler for HostKeyChecker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            *self.verdict.lock().expect("verdict lock") = Some(ConnectError::Session {
                host: self.machine.name.clone(),
                address: self.machine.address,
                port: self.machine.port,
                cause: "the host offered a certificate; vigil checks plain host keys (known_hosts or pinned)"
                    .into(),
            });
            return Ok(false);
        };
        let refusal = check_host_key(&self.machine, key);
        let accepted = refusal.is_none();
        *self.verdict.lock().expect("verdict lock") = refusal;
        Ok(accepted)
    }
}

/// None when `offered` is the key the inventory expects for `machine`;
/// otherwise why not.
pub fn check_host_key(machine: &Machine, offered: &PublicKey) -> Option<ConnectError> {
    let (host, address, port) = (machine.name.clone(), machine.address, machine.port);
    let offered_text = fingerprint(offered);
    match &machine.host_key {
        HostKeyCheck::Pinned { algorithm, key } => {
            let matches = offered.algorithm().as_str() == algorithm
                && offered.to_bytes().is_ok_and(|bytes| &bytes == key);
            (!matches).then_some(ConnectError::PinnedKeyMismatch {
                host,
                address,
                port,
                offered: offered_text,
            })
        }
        HostKeyCheck::KnownHosts(file) => {
            // known_hosts names a host on port 22 by its address alone, on
            // any other port as [address]:port; russh's reader does both.
            match known_hosts::check_known_hosts_path(&address.to_string(), port, offered, file) {
                Ok(true) => None,
                Ok(false) => Some(ConnectError::UnknownHostKey {
                    host,
                    address,
                    port,
                    offered: offered_text,
                    known_hosts: file.clone(),
                }),
                // russh's line number skips comment lines: not shown.
                Err(russh::keys::Error::KeyChanged { .. }) => Some(ConnectError::ChangedHostKey {
                    host,
                    address,
                    port,
                    offered: offered_text,
                    known_hosts: file.clone(),
                }),
                Err(e) => Some(ConnectError::Session {
                    host,
                    address,
                    port,
                    cause: format!("cannot read {}: {e}", file.display()),
                }),
            }
        }
    }
}

/// `ssh-ed25519 SHA256:...`, as `ssh-keygen -lf` shows it.
fn fingerprint(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm(), key.fingerprint(russh::keys::HashAlg::Sha256))
}
