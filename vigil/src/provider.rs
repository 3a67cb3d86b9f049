//! Where nodes come from: the traits and helpers of `vigil-provider`, the
//! Docker and SSH providers, and the one place a provider is chosen.

use std::sync::Arc;

pub use vigil_provider::*;
pub use vigil_provider_docker as docker;

/// The provider of `machines`. The one place a provider is chosen.
pub async fn connect(machines: &Machines) -> Result<Arc<dyn NodeProvider>> {
    match machines {
        Machines::NodeContainers => {
            let docker = docker::engine::connect().await.map_err(|e| Error::Unavailable(Box::new(e)))?;
            Ok(Arc::new(docker::DockerProvider::new(docker)))
        }
        Machines::Inventory(path) => {
            let (inventory, machines) =
                vigil_provider_ssh::inventory::read(path).map_err(|e| Error::Unavailable(Box::new(e)))?;
            let payload = Arc::new(vigil_build::host::DockerPayload::default());
            Ok(Arc::new(vigil_provider_ssh::SshProvider::new(inventory, path.clone(), machines, payload)))
        }
    }
}
