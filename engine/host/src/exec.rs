//! Running local programs (go, gcc, debootstrap, tar) with their output kept
//! in a log file, so a failure can name the command and point at the log.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

/// A command that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program is not installed or not executable.
    #[error("cannot run `{command}`: is it installed? (.ci/run and the README list what to install)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("`{command}` failed ({status}); last output:\n{tail}\nfull log: {}", log.display())]
    Failed { command: String, status: String, tail: String, log: PathBuf },
    /// The log file could not be written.
    #[error("cannot write log {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The command line as a user would type it, for error messages.
pub fn display(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program().to_string_lossy().into_owned())
        .chain(std.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

const TAIL_LINES: usize = 15;

/// Runs `cmd`, appending stdout and stderr to `log`, and calls `on_line` for
/// every line (progress parsing). Fails with the last lines of output.
pub async fn run_logged(mut cmd: Command, log: &Path, mut on_line: impl FnMut(&str)) -> Result<()> {
    let command = display(&cmd);
    let log_err = |source| Error::Log { path: log.to_owned(), source };
    if let Some(dir) = log.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(log_err)?;
    }
    let mut file =
        tokio::fs::OpenOptions::new().create(true).append(true).open(log).await.map_err(log_err)?;
    file.write_all(format!("$ {command}\n").as_bytes()).await.map_err(log_err)?;

    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn { command: command.clone(), source })?;
    let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut lines = std::pin::pin!(futures::stream::select(lines_of(stdout), lines_of(stderr)));
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    use futures::StreamExt;
    while let Some(line) = lines.next().await {
        on_line(&line);
        file.write_all(line.as_bytes()).await.map_err(log_err)?;
        file.write_all(b"\n").await.map_err(log_err)?;
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().await.map_err(|source| Error::Spawn { command: command.clone(), source })?;
    if status.success() {
        return Ok(());
    }
    Err(Error::Failed {
        command,
        status: status.to_string(),
        tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
        log: log.to_owned(),
    })
}

fn lines_of<R: tokio::io::AsyncBufRead + Unpin>(
    lines: tokio::io::Lines<R>,
) -> impl futures::Stream<Item = String> {
    futures::stream::unfold(lines, |mut lines| async move {
        match lines.next_line().await {
            Ok(Some(line)) => Some((line, lines)),
            _ => None,
        }
    })
}

/// Runs `cmd` and returns its trimmed stdout (short queries like `go env`).
pub async fn output(mut cmd: Command) -> Result<String> {
    let command = display(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| Error::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        return Err(Error::Failed {
            command,
            status: out.status.to_string(),
            tail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            log: PathBuf::from("(not logged)"),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
