//! The one place vigil connects to Docker Engine, so that a missing socket
//! or a stopped daemon always gives the same clear error.

use bollard::Docker;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No socket, no permission, or no daemon behind it.
    #[error(
        "cannot reach Docker Engine at {endpoint}\n  fix: start it (`dockerd >/var/log/dockerd.log 2>&1 &`, or `systemctl start docker`), \
         or point DOCKER_HOST at a running engine; on a fresh machine `.ci/run` installs and starts one"
    )]
    Unreachable {
        endpoint: String,
        #[source]
        source: bollard::errors::Error,
    },
}

const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Long enough for image builds and `docker save` of the preloaded images.
const TIMEOUT_SECS: u64 = 600;

/// Connects to DOCKER_HOST, or the local socket.
pub async fn connect() -> Result<Docker, Error> {
    connect_at(&std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_ENDPOINT.into())).await
}

/// Connects, agrees on an API version the engine speaks (Debian 12's engine
/// stops at 1.41), and proves the daemon answers.
pub async fn connect_at(endpoint: &str) -> Result<Docker, Error> {
    let unreachable = |source| Error::Unreachable { endpoint: endpoint.to_owned(), source };
    let docker = match endpoint.strip_prefix("unix://") {
        Some(path) => Docker::connect_with_unix(path, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
        None => Docker::connect_with_http(endpoint, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
    }
    .map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// Creates the container `name`, runs it to its end and removes it: whether
/// it exited 0, and what it printed. For one-shot helpers (the preloader,
/// populating a node's /var).
pub async fn run_to_end(
    docker: &Docker,
    name: &str,
    body: bollard::models::ContainerCreateBody,
) -> Result<(bool, String), bollard::errors::Error> {
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    };
    use futures::StreamExt;
    let remove = || async {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        let _ = docker.remove_container(name, Some(options)).await;
    };
    remove().await;
    docker.create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body).await?;
    let ran = async {
        docker.start_container(name, None).await?;
        let exit = docker.wait_container(name, None).next().await;
        let mut output = String::new();
        let mut logs =
            docker.logs(name, Some(LogsOptionsBuilder::default().stdout(true).stderr(true).build()));
        while let Some(Ok(chunk)) = logs.next().await {
            output.push_str(&chunk.to_string());
        }
        Ok((matches!(exit, Some(Ok(response)) if response.status_code == 0), output))
    }
    .await;
    remove().await;
    ran
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_names_the_endpoint_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("unix://{}/docker.sock", dir.path().display());
        let message = connect_at(&endpoint).await.expect_err("no daemon there").to_string();
        assert!(message.contains(&format!("cannot reach Docker Engine at {endpoint}")), "{message}");
        assert!(message.contains("fix: start it"), "{message}");
    }
}
