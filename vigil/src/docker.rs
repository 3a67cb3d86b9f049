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

fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Connects (honouring DOCKER_HOST), agrees on an API version the engine
/// speaks (Debian 12's engine stops at 1.41), and proves the daemon answers.
pub async fn connect() -> Result<Docker, Error> {
    let unreachable = |source| Error::Unreachable { endpoint: endpoint(), source };
    let docker = Docker::connect_with_local_defaults().map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}
