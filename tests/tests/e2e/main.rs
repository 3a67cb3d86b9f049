//! vigil end to end, on one real cluster (creating one costs about a minute):
//! `vigil up` from nothing, `vigil up` again (which must change nothing), the
//! cluster's checks (issue 3), the workload's (issue 4), monitoring's
//! (issue 5), the fault hooks,
//! then `vigil down`.
//! A failing check leaves the cluster for inspection; the next run starts
//! with `vigil down`.

mod cluster;
mod faults;
mod monitoring;
mod workload;

use anyhow::{Context as _, Result, ensure};
use vigil_e2e::{client, down, test_spec, up};

#[tokio::test(flavor = "multi_thread")]
async fn vigil_end_to_end() -> Result<()> {
    let spec = test_spec();
    down(&spec).await.context("vigil down before the test")?;
    let (report, deployed) = up(&spec).await.context("vigil up")?;
    let deployed = deployed.context("up deploys the workload by default")?;
    let (again, _) = up(&spec).await.context("second vigil up")?;
    ensure!(again.join_token.is_none(), "the second up joined workers again");

    let (client, config) = client(&spec).await?;
    cluster::nodes_are_ready(&client).await?;
    cluster::system_pods_run(&client, &spec).await?;
    cluster::pod_network_and_dns(&client, &spec).await?;
    cluster::join_token_is_dead(&config, report.join_token.context("the first up joined the workers")?)
        .await?;

    workload::load_balancer_reaches_every_pod(&client, &deployed).await?;
    workload::a_hung_workload_is_restarted_by_its_liveness_probe(&client, &spec).await?;
    workload::a_failing_dependency_takes_one_pod_out_of_the_service(&client, &spec, &deployed).await?;
    workload::a_deleted_pod_is_replaced(&client).await?;

    monitoring::exporter_output_is_clean(&client).await?;
    monitoring::docker_collector_reads_the_node_containers(&spec).await?;
    monitoring::prometheus_sees_every_web_pod(&client, &deployed).await?;
    monitoring::prometheus_scrapes_every_component(&deployed).await?;
    monitoring::a_deleted_pods_series_leave_the_exporter(&client).await?;
    monitoring::prometheus_data_survives_a_restart(&client, &deployed).await?;

    faults::isolate_and_reconnect(&spec).await?;
    faults::kill_and_start(&client, &spec).await?;

    down(&spec).await.context("vigil down")?;
    cluster::nothing_left_behind(&spec).await
}
