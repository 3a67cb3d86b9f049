//! Where nodes come from: the traits and helpers of `vigil-provider`, the
//! Docker provider, and the one place a provider is chosen.

use std::sync::Arc;

pub use vigil_provider::*;
pub use vigil_provider_docker as docker;

/// The provider of `machines`. The one place a provider is chosen.
pub async fn connect(machines: &Machines) -> Result<Arc<dyn NodeProvider>> {
    let unavailable = |source: docker::engine::Error| Error::Unavailable(Box::new(source));
    match machines {
        Machines::NodeContainers => {
            Ok(Arc::new(docker::DockerProvider::new(docker::engine::connect().await.map_err(unavailable)?)))
        }
    }
}
