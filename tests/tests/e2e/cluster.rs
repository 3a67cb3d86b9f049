//! The cluster (issue 3): a second `up` changes nothing, nodes Ready, system
//! pods Running, pod-to-pod traffic across workers over flannel, DNS for
//! Service names, a join token that is dead after the join, and nothing left
//! behind by `vigil down`.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::{
    authentication::v1::SelfSubjectReview,
    core::v1::{Container, Namespace, Node, Pod, PodSpec, Service, ServicePort, ServiceSpec},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
    config::AuthInfo,
};
use vigil::{conditions::node_ready, poll::until_some, provider::docker::CLUSTER_LABEL};
use vigil_e2e::{Cluster, down, images, run_to_completion, test_kubeconfig, up};

const NAMESPACE: &str = "vigil-e2e-net";

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), app.to_owned())])
}

/// A toolbox pod pinned to one node, running a shell script.
fn pod(name: &str, node: &str, script: &str, restart: &str) -> Pod {
    Pod {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels(name)), ..Default::default() },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            restart_policy: Some(restart.into()),
            containers: vec![Container {
                name: "main".into(),
                image: Some(images().base()),
                image_pull_policy: Some("Never".into()),
                command: Some(vec!["sh".into(), "-c".into(), script.into()]),
                ..Default::default()
            }],
            termination_grace_period_seconds: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The first `up` (the shared cluster's) joined the workers; a second one
/// finds everything done and changes nothing.
pub async fn up_again_changes_nothing(c: &Cluster) -> Result<()> {
    ensure!(c.report.join_token.is_some(), "the first up did not join the workers");
    let again = up(&c.spec).await.context("second vigil up")?;
    ensure!(again.join_token.is_none(), "the second up joined workers again");
    for step in ["kubeadm init", "kubeadm join", "load images", "credentials"] {
        let outcome = again.steps.iter().find(|s| s.name == step).map(|s| s.outcome);
        ensure!(outcome == Some("skipped"), "the second up's step {step} was {outcome:?}, not skipped");
    }
    ensure!(
        again.addresses == c.report.addresses,
        "addresses moved: {:?} then {:?}",
        c.report.addresses,
        again.addresses
    );
    ensure!(
        again.credentials == c.report.credentials,
        "the credentials moved: {:?} then {:?}",
        c.report.credentials,
        again.credentials
    );
    let file = c.report.credentials.as_ref().map(|h| h.password_file.clone()).unwrap_or_default();
    ensure!(
        vigil::password_file::read(&file)? == c.credentials.password,
        "the second up changed the password in {}",
        file.display()
    );
    Ok(())
}

/// The cluster remembers what it was made with, on every node and in a
/// ConfigMap, without the notice receivers' URLs; a second `up` asking for
/// another pod network and other failover timings is refused at once, naming
/// both and the flags that keep the cluster, and changes nothing.
pub async fn a_second_up_with_other_choices_is_refused(c: &Cluster) -> Result<()> {
    use vigil::saved_spec::{CONFIG_MAP, CONFIG_MAP_KEY, CONFIG_MAP_NAMESPACE, NODE_PATH, Saved};
    let expected = Saved::of(&c.spec);
    let webhooks: Vec<&String> =
        c.spec.alerting.webhook.iter().chain(&c.spec.alerting.alertmanager_webhook).collect();
    ensure!(webhooks.len() == 2, "the test cluster has both receivers");

    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(c.client.clone(), CONFIG_MAP_NAMESPACE);
    let in_cluster = || async {
        let map = config_maps.get(CONFIG_MAP).await?;
        let text = map.data.unwrap_or_default().remove(CONFIG_MAP_KEY).context("no cluster.json key")?;
        anyhow::Ok(text)
    };
    let text = in_cluster().await?;
    ensure!(
        webhooks.iter().all(|w| !text.contains(w.as_str())),
        "a receiver's URL is in the ConfigMap: {text}"
    );
    ensure!(Saved::from_json(&text)? == expected, "the ConfigMap holds {text}");
    for machine in c.provider.list_nodes(&c.spec.name).await? {
        let node = c.provider.node(&machine.name);
        let text = vigil::provider::nodeutils::read_file(node.as_ref(), NODE_PATH).await?;
        ensure!(Saved::from_json(&text)? == expected, "{} holds {text}", machine.name);
    }
    let existing = vigil::provider::existing(c.provider.as_ref(), &c.spec.name).await?;
    ensure!(existing == expected.spec, "existing() gave {existing:?}");

    let other = vigil::cluster::ClusterSpec {
        pod_subnet: "10.245.0.0/16".parse()?,
        failover: vigil::cluster::Failover::Upstream,
        ..c.spec.clone()
    };
    let started = std::time::Instant::now();
    let message =
        format!("{:#}", up(&other).await.err().context("an up with another pod network went ahead")?);
    for part in [
        "pod network is 10.244.0.0/16 (this `up` asks for 10.245.0.0/16)",
        "failover timings is tuned (this `up` asks for upstream)",
        "run `vigil --name vigil-e2e up --pod-subnet 10.244.0.0/16 --failover tuned`",
        "`vigil --name vigil-e2e down` first",
    ] {
        ensure!(message.contains(part), "{part:?} is not in the refusal: {message}");
    }
    ensure!(started.elapsed() < Duration::from_secs(30), "refused only after {:?}", started.elapsed());
    ensure!(in_cluster().await? == text, "the refused up changed the saved spec");
    Ok(())
}

pub async fn nodes_are_ready(c: &Cluster) -> Result<()> {
    let nodes = Api::<Node>::all(c.client.clone()).list(&ListParams::default()).await?.items;
    ensure!(nodes.len() == 3, "expected 3 nodes, found {}", nodes.len());
    for node in &nodes {
        ensure!(node_ready(node), "node {:?} is not Ready", node.metadata.name);
    }
    let control_planes = nodes
        .iter()
        .filter(|n| {
            n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"))
        })
        .count();
    ensure!(control_planes == 1, "expected 1 control-plane node, found {control_planes}");
    // The kubelet reports it and journald names its files by it.
    let machine_ids: std::collections::BTreeMap<&str, &str> = nodes
        .iter()
        .filter_map(|n| {
            Some((n.status.as_ref()?.node_info.as_ref()?.machine_id.as_str(), n.metadata.name.as_deref()?))
        })
        .collect();
    ensure!(machine_ids.len() == nodes.len(), "nodes share a machine-id: {machine_ids:?}");
    Ok(())
}

pub async fn system_pods_run(c: &Cluster) -> Result<()> {
    let pods =
        Api::<Pod>::namespaced(c.client.clone(), "kube-system").list(&ListParams::default()).await?.items;
    for pod in &pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        ensure!(phase == "Running", "kube-system pod {:?} is {phase}", pod.metadata.name);
    }
    let names: Vec<&str> = pods.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    let cp = c.spec.control_plane_name();
    for component in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
        ensure!(names.contains(&format!("{component}-{cp}").as_str()), "no {component} pod in {names:?}");
    }
    ensure!(count("kube-proxy-") == 3, "expected one kube-proxy per node: {names:?}");
    ensure!(count("coredns-") == 2, "expected two CoreDNS replicas: {names:?}");
    Ok(())
}

pub async fn pod_network_and_dns(c: &Cluster) -> Result<()> {
    let (client, spec) = (&c.client, &c.spec);
    let (worker_a, worker_b) = (spec.worker_name(0), spec.worker_name(1));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(NAMESPACE.into()), ..Default::default() },
        ..Default::default()
    };
    if namespaces.get_opt(NAMESPACE).await?.is_none() {
        namespaces.create(&PostParams::default(), &ns).await?;
    }
    // The namespace's default ServiceAccount appears shortly after the namespace.
    until_some("default ServiceAccount", Duration::from_secs(30), || async {
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
        Ok::<_, kube::Error>(sa.get_opt("default").await?.map(|_| ()))
    })
    .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let server = pod(
        "echo",
        &worker_a,
        "exec socat TCP-LISTEN:8080,fork,reuseaddr SYSTEM:'echo pong from $(hostname)'",
        "Always",
    );
    let _ = pods.delete("echo", &DeleteParams::default()).await;
    until_some("old echo pod gone", Duration::from_secs(60), || async {
        Ok::<_, kube::Error>(pods.get_opt("echo").await?.is_none().then_some(()))
    })
    .await?;
    pods.create(&PostParams::default(), &server).await?;
    let server_ip = until_some("echo pod Running with an IP", Duration::from_secs(90), || async {
        let p = pods.get("echo").await?;
        let status = p.status.unwrap_or_default();
        Ok::<_, kube::Error>((status.phase.as_deref() == Some("Running")).then_some(status.pod_ip).flatten())
    })
    .await?;
    ensure!(
        spec.pod_subnet.contains(&server_ip.parse::<std::net::Ipv4Addr>()?),
        "pod IP {server_ip} is outside the pod network {}",
        spec.pod_subnet
    );

    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let service = Service {
        metadata: ObjectMeta { name: Some("echo".into()), ..Default::default() },
        spec: Some(ServiceSpec {
            selector: Some(labels("echo")),
            ports: Some(vec![ServicePort {
                port: 80,
                target_port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let _ = services.delete("echo", &DeleteParams::default()).await;
    let cluster_ip = services
        .create(&PostParams::default(), &service)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP")?;

    // From the other worker: the pod IP directly (pod network across nodes),
    // then DNS for the API server's Service and this Service, then the
    // Service by name (DNS + kube-proxy). The Service is seconds old: the
    // worker's kube-proxy programs it once its endpoints are published, so
    // the last is tried up to ten times, a second apart (seen once in CI:
    // the first try came before the rules).
    let script = format!(
        "set -e
         echo direct: $(socat -T5 - TCP:{server_ip}:8080 </dev/null)
         echo kubernetes: $(getent hosts kubernetes.default | cut -d' ' -f1)
         echo service: $(getent hosts echo | cut -d' ' -f1)
         for try in 1 2 3 4 5 6 7 8 9 10; do
           answer=$(socat -T2 - TCP:echo:80 </dev/null || true)
           [ \"$answer\" = 'pong from echo' ] && break
           sleep 1
         done
         echo tries: $try
         echo via-service: $answer"
    );
    let client_pod = pod("probe", &worker_b, &script, "Never");
    let (phase, logs) = run_to_completion(client, NAMESPACE, client_pod, Duration::from_secs(120)).await?;
    ensure!(phase == "Succeeded", "probe pod {phase}; its output:\n{logs}");
    let line = |key: &str| {
        logs.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))).unwrap_or_default().trim().to_owned()
    };
    ensure!(line("direct") == "pong from echo", "pod-to-pod across workers failed:\n{logs}");
    let api_service_ip = spec.api_service_ip().to_string();
    ensure!(
        line("kubernetes") == api_service_ip,
        "kubernetes.default resolved to {:?}:\n{logs}",
        line("kubernetes")
    );
    ensure!(
        line("service") == cluster_ip,
        "echo resolved to {:?}, Service has {cluster_ip}:\n{logs}",
        line("service")
    );
    ensure!(line("via-service") == "pong from echo", "Service name did not reach the pod:\n{logs}");

    let placed_on = pods.get("probe").await?.spec.and_then(|s| s.node_name).unwrap_or_default();
    ensure!(placed_on == worker_b && worker_a != worker_b, "probe ran on {placed_on}");
    Ok(())
}

/// A bootstrap token may create a SelfSubjectReview while it is valid;
/// once deleted, the API server answers 401.
pub async fn join_token_is_dead(c: &Cluster) -> Result<()> {
    let token = c.report.join_token.clone().context("the first up joined no worker")?;
    let admin = &c.config;
    let with_token = |token: String| -> Result<Client> {
        let mut config = admin.clone();
        config.auth_info = AuthInfo { token: Some(token.into()), ..Default::default() };
        Ok(Client::try_from(config)?)
    };
    let review = SelfSubjectReview::default();
    let err = Api::<SelfSubjectReview>::all(with_token(token.to_string())?)
        .create(&PostParams::default(), &review)
        .await
        .err()
        .context("the join token still authenticates after the join")?;
    ensure!(
        matches!(&err, kube::Error::Api(status) if status.code == 401),
        "expected 401 Unauthorized for the deleted join token, got {err}"
    );
    Ok(())
}

/// `vigil down` removes every container, volume and network of the
/// cluster, and its kubeconfig entries. (The last check: it takes the
/// shared cluster away.)
pub async fn down_leaves_nothing_behind(c: &Cluster) -> Result<()> {
    let spec = &c.spec;
    down(spec).await.context("vigil down")?;
    let docker = vigil::docker::connect().await?;
    let filter = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("{CLUSTER_LABEL}={}", spec.name)],
    )]);
    let containers = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await?;
    ensure!(
        containers.is_empty(),
        "containers left: {:?}",
        containers.iter().map(|c| &c.names).collect::<Vec<_>>()
    );
    let volumes = docker
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::default().filters(&filter).build(),
        ))
        .await?;
    ensure!(volumes.volumes.unwrap_or_default().is_empty(), "volumes left behind");
    let networks = docker
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::default().filters(&filter).build(),
        ))
        .await?;
    ensure!(networks.is_empty(), "networks left: {:?}", networks.iter().map(|n| &n.name).collect::<Vec<_>>());
    for node in c.nodes() {
        ensure!(
            docker.inspect_container(&node.name, None).await.is_err(),
            "container {} still exists",
            node.name
        );
    }
    let kubeconfig = std::fs::read_to_string(test_kubeconfig()).unwrap_or_default();
    ensure!(
        !kubeconfig.contains(&format!("name: {}\n", spec.name)),
        "kubeconfig still has {}:\n{kubeconfig}",
        spec.name
    );
    if let Some(host) = &c.report.credentials {
        ensure!(!host.password_file.exists(), "{} is left behind", host.password_file.display());
    }
    Ok(())
}
