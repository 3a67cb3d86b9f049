//! A host of the inventory as a [`Node`]: commands over one SSH connection
//! (opened on first use, opened again after the host hung up), as root
//! (through `sudo -n` for another user), each recorded in the runbook.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use vigil_provider::{CommandError, Node, Output, copy_in_script};

use crate::{
    inventory::Machine,
    runbook::{Outcome, Runbook, Step},
    transport::{ConnectError, Connection},
};

pub struct SshNode {
    machine: Machine,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    runbook: Runbook,
}

impl SshNode {
    pub fn new(machine: Machine, runbook: Runbook) -> Self {
        SshNode { machine, connection: tokio::sync::Mutex::new(None), runbook }
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The open connection, or a new one when there is none or it ended.
    pub async fn connection(&self) -> Result<Arc<Connection>, ConnectError> {
        let mut slot = self.connection.lock().await;
        if let Some(open) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(open.clone());
        }
        let opened = Arc::new(Connection::open(&self.machine).await?);
        *slot = Some(opened.clone());
        Ok(opened)
    }

    /// Closes the connection (the next command opens another).
    pub async fn disconnect(&self) {
        if let Some(open) = self.connection.lock().await.take()
            && let Ok(connection) = Arc::try_unwrap(open)
        {
            connection.close().await;
        }
    }

    /// The line the host's shell runs for `argv`: each word quoted, and
    /// through `sudo -n` (never a password prompt) unless the user is root.
    pub fn command_line(&self, argv: &[&str]) -> Result<String, String> {
        let quoted = shlex::try_join(argv.iter().copied()).map_err(|e| e.to_string())?;
        Ok(if self.machine.user == "root" { quoted } else { format!("sudo -n -- {quoted}") })
    }

    /// Runs `line`, recording it in the runbook as `shown`.
    async fn run_line(
        &self,
        line: &str,
        shown: &str,
        stdin: Option<Vec<u8>>,
    ) -> Result<Output, CommandError> {
        let error = |exit_code: Option<i64>, output: String, cause: Option<String>| CommandError {
            node: self.machine.name.clone(),
            command: shown.to_string(),
            exit_code,
            output,
            cause,
        };
        let sent = stdin.as_ref().map_or(0, Vec::len);
        let started = std::time::SystemTime::now();
        let clock = Instant::now();
        let result = match self.connection().await {
            Ok(connection) => connection.run(line, stdin.as_deref()).await,
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(exit) => match (&exit.status, &exit.signal) {
                (Some(code), _) => Outcome::Exited(*code),
                (None, Some(signal)) => Outcome::Signalled(signal.clone()),
                (None, None) => Outcome::NotRun("the connection ended before the command did".into()),
            },
            Err(e) => Outcome::NotRun(e.to_string()),
        };
        self.runbook.record(Step {
            host: self.machine.name.clone(),
            command: shown.into(),
            started,
            duration: clock.elapsed(),
            outcome: outcome.clone(),
            sent,
        });
        let exit = result.map_err(|e| error(None, String::new(), Some(e.to_string())))?;
        let stdout = String::from_utf8_lossy(&exit.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&exit.stderr).into_owned();
        match outcome {
            Outcome::Exited(0) => Ok(Output { stdout, stderr }),
            Outcome::Exited(code) => Err(error(Some(code.into()), format!("{stdout}{stderr}"), None)),
            Outcome::Signalled(signal) => {
                Err(error(None, format!("{stdout}{stderr}"), Some(format!("killed by signal {signal}"))))
            }
            Outcome::NotRun(why) => Err(error(None, format!("{stdout}{stderr}"), Some(why))),
        }
    }
}

#[async_trait]
impl Node for SshNode {
    fn name(&self) -> &str {
        &self.machine.name
    }

    fn shell_hint(&self, command: &str) -> String {
        let m = &self.machine;
        format!("ssh -p {} -i {} {}@{} {command:?}", m.port, m.key.display(), m.user, m.address)
    }

    fn console_hint(&self) -> String {
        format!("the console of {} ({}), or `journalctl -b` there", self.machine.name, self.machine.address)
    }

    async fn run(&self, argv: &[&str], stdin: Option<Vec<u8>>) -> Result<Output, CommandError> {
        let line = self.command_line(argv).map_err(|cause| CommandError {
            node: self.machine.name.clone(),
            command: argv.join(" "),
            exit_code: None,
            output: String::new(),
            cause: Some(cause),
        })?;
        // A script is shown as the script, not as its quoted command line.
        let shown = match argv {
            ["sh", "-c", script] if self.machine.user == "root" => script.to_string(),
            ["sh", "-c", script] => format!("# through sudo -n\n{script}"),
            _ => line.clone(),
        };
        self.run_line(&line, &shown, stdin).await
    }

    /// The same script as every transport's, recorded as what it wrote:
    /// the contents may be a key or a token.
    async fn copy_in(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), CommandError> {
        let script = copy_in_script(path, mode);
        let line = self.command_line(&["sh", "-c", &script]).expect("the copy script quotes");
        let shown = format!("# write {path} ({} bytes, mode {mode:o})", contents.len());
        self.run_line(&line, &shown, Some(contents.to_vec())).await.map(|_| ())
    }
}
