//! The Docker transport: commands reach a node container through
//! `docker exec`, stdin streamed in, stdout and stderr apart.

use async_trait::async_trait;
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use vigil_provider::{CommandError, Node, Output};

/// A node container.
#[derive(Clone)]
pub struct DockerNode {
    pub(super) docker: Docker,
    pub(super) name: String,
}

#[async_trait]
impl Node for DockerNode {
    fn name(&self) -> &str {
        &self.name
    }

    fn shell_hint(&self, command: &str) -> String {
        format!("docker exec {} {command}", self.name)
    }

    fn console_hint(&self) -> String {
        format!("`docker logs {}`", self.name)
    }

    async fn run(&self, argv: &[&str], stdin: Option<Vec<u8>>) -> Result<Output, CommandError> {
        let command = argv.join(" ");
        tracing::debug!(node = %self.name, %command, "run");
        let fail = |cause: String| CommandError {
            node: self.name.clone(),
            command: command.clone(),
            exit_code: None,
            output: String::new(),
            cause: Some(cause),
        };
        let exec = self
            .docker
            .create_exec(
                &self.name,
                bollard::models::ExecConfig {
                    cmd: Some(argv.iter().map(|s| (*s).to_owned()).collect()),
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        let started = self.docker.start_exec(&exec.id, None).await.map_err(|e| fail(e.to_string()))?;
        let bollard::exec::StartExecResults::Attached { mut output, mut input } = started else {
            return Err(fail("exec started detached".into()));
        };
        if let Some(bytes) = stdin {
            input.write_all(&bytes).await.map_err(|e| fail(format!("writing stdin: {e}")))?;
            input.shutdown().await.map_err(|e| fail(format!("closing stdin: {e}")))?;
        }
        drop(input);
        let mut out = Output::default();
        while let Some(chunk) = output.next().await {
            match chunk.map_err(|e| fail(e.to_string()))? {
                bollard::container::LogOutput::StdErr { message } => {
                    out.stderr.push_str(&String::from_utf8_lossy(&message))
                }
                other => out.stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
            }
        }
        let inspect = self.docker.inspect_exec(&exec.id).await.map_err(|e| fail(e.to_string()))?;
        match inspect.exit_code {
            Some(0) => Ok(out),
            code => Err(CommandError {
                node: self.name.clone(),
                command,
                exit_code: code,
                output: format!("{}{}", out.stdout, out.stderr),
                cause: None,
            }),
        }
    }
}
