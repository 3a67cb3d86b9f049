//! The cluster's Docker network: a bridge with a fixed subnet the host
//! routes to, refused when it would overlap another network or host route.

use std::{collections::HashMap, net::Ipv4Addr};

use bollard::{
    Docker,
    models::{Ipam, IpamConfig, NetworkCreateRequest},
    query_parameters::ListNetworksOptionsBuilder,
};
use ipnet::Ipv4Net;

use super::{CLUSTER_LABEL, backend, is_not_found};
use vigil_model::cluster::ClusterSpec;
use vigil_provider::Error;

/// The cluster's network: its name is the cluster's.
pub fn name(spec: &ClusterSpec) -> String {
    spec.name.clone()
}

/// The bridge's gateway: the network's first address, which the host holds.
pub fn gateway(spec: &ClusterSpec) -> Ipv4Addr {
    spec.node_network_host(0)
}

/// The subnet of an existing network, as Docker reports it.
pub async fn subnet_of(docker: &Docker, name: &str) -> Result<Option<Ipv4Net>, Error> {
    match docker.inspect_network(name, None).await {
        Ok(network) => Ok(network
            .ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.subnet))
            .and_then(|s| s.parse().ok())),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(backend(format!("inspect network {name}"))(e)),
    }
}

/// Whether the cluster network exists; an existing one must be ours and match.
pub async fn check(docker: &Docker, spec: &ClusterSpec) -> Result<bool, Error> {
    let name = name(spec);
    match docker.inspect_network(&name, None).await {
        Ok(existing) => {
            let labels = existing.labels.unwrap_or_default();
            if labels.get(CLUSTER_LABEL) != Some(&spec.name) {
                return Err(Error::NameTaken { kind: "Docker network", name, cluster: spec.name.clone() });
            }
            let subnet = existing
                .ipam
                .and_then(|i| i.config)
                .and_then(|c| c.into_iter().find_map(|c| c.subnet))
                .unwrap_or_default();
            if subnet != spec.node_subnet.to_string() {
                return Err(Error::NetworkMismatch { name, actual: subnet, wanted: spec.node_subnet });
            }
            Ok(true)
        }
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(backend(format!("inspect network {name}"))(e)),
    }
}

/// Creates the cluster network unless it exists (and is ours).
pub async fn ensure(docker: &Docker, spec: &ClusterSpec) -> Result<(), Error> {
    if check(docker, spec).await? {
        return Ok(());
    }
    check_subnet_is_free(docker, spec.node_subnet).await?;
    let name = name(spec);
    let request = NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".into()),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(spec.node_subnet.to_string()),
                gateway: Some(gateway(spec).to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        labels: Some(HashMap::from([(CLUSTER_LABEL.into(), spec.name.clone())])),
        options: Some(HashMap::from([
            // The nodes' MTU must match the host's, or vxlan inside them fragments.
            ("com.docker.network.driver.mtu".into(), "1500".into()),
            ("com.docker.network.bridge.name".into(), bridge_name(&spec.name)),
        ])),
        ..Default::default()
    };
    tracing::debug!(network = %name, subnet = %spec.node_subnet, "creating the node network");
    docker.create_network(request).await.map_err(backend(format!("create network {name}")))?;
    Ok(())
}

/// Refuses a subnet that overlaps another Docker network or a host route.
pub async fn check_subnet_is_free(docker: &Docker, subnet: Ipv4Net) -> Result<(), Error> {
    let networks = docker
        .list_networks(Some(ListNetworksOptionsBuilder::default().build()))
        .await
        .map_err(backend("list networks"))?;
    for network in networks {
        let subnets = network.ipam.and_then(|i| i.config).unwrap_or_default();
        for other in subnets.into_iter().filter_map(|c| c.subnet?.parse::<Ipv4Net>().ok()) {
            if overlaps(subnet, other) {
                let name = format!("Docker network {}", network.name.clone().unwrap_or_default());
                return Err(Error::SubnetClash { subnet, other: name, other_subnet: other });
            }
        }
    }
    if let Ok(routes) = std::fs::read_to_string("/proc/net/route") {
        for (iface, other) in parse_routes(&routes) {
            if other.prefix_len() > 0 && overlaps(subnet, other) {
                return Err(Error::SubnetClash {
                    subnet,
                    other: format!("the host route via {iface}"),
                    other_subnet: other,
                });
            }
        }
    }
    Ok(())
}

/// A bridge name of at most 15 characters that says whose it is.
fn bridge_name(cluster: &str) -> String {
    format!("br-{}", cluster.chars().take(12).collect::<String>())
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Destination networks of /proc/net/route (hex, little-endian), by interface.
fn parse_routes(table: &str) -> Vec<(String, Ipv4Net)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let net =
                Ipv4Net::with_netmask(Ipv4Addr::from(dest.swap_bytes()), Ipv4Addr::from(mask.swap_bytes()))
                    .ok()?;
            Some((f[0].to_owned(), net))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_route_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = parse_routes(table);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1], ("docker0".into(), "172.17.0.0/16".parse().unwrap()));
        assert!(overlaps("172.17.5.0/24".parse().unwrap(), routes[1].1));
        assert!(!overlaps("172.29.0.0/24".parse().unwrap(), routes[1].1));
    }

    #[test]
    fn bridge_names_fit_the_kernel_limit() {
        assert_eq!(bridge_name("a-very-long-cluster-name"), "br-a-very-long-");
        assert_eq!(gateway(&ClusterSpec::default()).to_string(), "172.29.0.1");
    }
}
