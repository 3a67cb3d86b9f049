//! vigil end to end, on one real cluster (creating one costs under a
//! minute): every check is a named test (libtest-mimic) run in this order on
//! the cluster the first of them creates with `vigil up` (after a `vigil
//! down`, so each run starts from nothing). Each is reported pass or fail,
//! all run even when one fails, and one can be run alone by name:
//!
//!     VIGIL_E2E=1 cargo test -p vigil-e2e --test e2e -- workload::a_deleted_pod_is_replaced
//!
//! They need Docker Engine and take minutes, so a plain `cargo test` lists
//! them as ignored; `./vigil.sh test` (and so CI) sets `VIGIL_E2E=1` and
//! fails if they did not all run. The last check, `vigil down`, removes the
//! cluster; a run stopped before it leaves the cluster for inspection.

mod access;
mod alerter_faults;
mod alerter_secrets;
mod alerting;
mod bad_input;
mod browser;
mod build;
mod cli;
mod cluster;
mod dashboards;
mod drill;
mod faults;
mod hardening;
mod logs;
mod monitoring;
mod ssh_hosts;
mod traces;
mod workload;

use std::{future::Future, pin::Pin, sync::LazyLock};

use libtest_mimic::{Arguments, Failed, Trial};
use tokio::{runtime::Runtime, sync::OnceCell};
use vigil_e2e::Cluster;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| Runtime::new().expect("a tokio runtime"));
/// The shared cluster, created by the first check that needs it.
static CLUSTER: OnceCell<Result<Cluster, String>> = OnceCell::const_new();

type Check = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

fn outcome(result: anyhow::Result<()>) -> Result<(), Failed> {
    result.map_err(|e| Failed::from(format!("{e:#}")))
}

/// Runs one check, printing how long it took: where the suite's time goes.
fn timed(check: impl std::future::Future<Output = Result<(), Failed>>) -> Result<(), Failed> {
    let started = std::time::Instant::now();
    let result = RUNTIME.block_on(check);
    eprintln!("  (took {:.1} s)", started.elapsed().as_secs_f64());
    result
}

/// A check that needs no cluster.
fn plain(name: &str, check: fn() -> Check) -> Trial {
    Trial::test(name.replace(' ', ""), move || timed(async { outcome(check().await) }))
}

/// A check on the shared cluster.
fn on_cluster(name: &str, check: fn(&'static Cluster) -> Check) -> Trial {
    let name = name.replace(' ', "");
    Trial::test(name.clone(), move || {
        timed(async {
            let cluster =
                CLUSTER.get_or_init(|| async { Cluster::create().await.map_err(|e| format!("{e:#}")) }).await;
            match cluster {
                Ok(cluster) => match check(cluster).await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(Failed::from(format!("{e:#}{}", evidence(cluster, &name).await))),
                },
                Err(e) => Err(Failed::from(format!("the shared cluster could not be created: {e}"))),
            }
        })
    })
}

/// What the cluster's nodes and pods logged up to a check's failure,
/// exported where it outlives the run (the cluster does not: the last
/// check removes it), named in the failure's message.
async fn evidence(cluster: &Cluster, check: &str) -> String {
    let dir = vigil_e2e::cache_dir().join("e2e-failures").join(check.replace("::", "-"));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return format!("\n(no logs kept: creating {}: {e})", dir.display());
    }
    let progress = vigil::progress::Progress::default();
    match vigil::app::export_logs(cluster.provider.as_ref(), &cluster.spec, &dir, &progress).await {
        Ok(export) => {
            format!("\nthe cluster's logs at the failure: {}", export.folder.join("index.md").display())
        }
        Err(e) => format!("\n(no logs kept: {e:#})"),
    }
}

macro_rules! plain {
    ($check:path) => {
        plain(stringify!($check), || Box::pin($check()))
    };
}

macro_rules! on_cluster {
    ($check:path) => {
        on_cluster(stringify!($check), |c| Box::pin($check(c)))
    };
}

fn main() {
    let mut args = Arguments::from_args();
    // One cluster, changed by the checks: one at a time, in this order.
    args.test_threads = Some(1);
    let trials = vec![
        plain!(bad_input::a_clashing_subnet_is_refused_before_anything_is_built),
        plain!(bad_input::a_network_name_that_is_not_ours_is_refused),
        plain!(cli::a_cluster_that_does_not_exist_is_named_as_such),
        plain!(cli::a_name_that_is_not_a_dns_label_is_refused),
        plain!(ssh_hosts::preflight_reaches_bare_hosts_and_names_what_is_wrong),
        on_cluster!(cluster::up_again_changes_nothing),
        on_cluster!(cluster::a_second_up_with_other_choices_is_refused),
        on_cluster!(cluster::nodes_are_ready),
        on_cluster!(cluster::system_pods_run),
        on_cluster!(cluster::pod_network_and_dns),
        on_cluster!(cluster::join_token_is_dead),
        on_cluster!(build::root_filesystems_are_keyed_on_their_installed_packages),
        plain!(ssh_hosts::vigils_build_installs_on_bare_hosts_and_uninstalls_cleanly),
        on_cluster!(workload::load_balancer_reaches_every_pod),
        on_cluster!(workload::a_hung_workload_is_restarted_by_its_liveness_probe),
        on_cluster!(workload::a_failing_dependency_takes_one_pod_out_of_the_service),
        on_cluster!(workload::a_deleted_pod_is_replaced),
        on_cluster!(access::an_unauthenticated_silence_is_refused),
        on_cluster!(access::a_cross_origin_silence_is_refused_even_with_credentials),
        on_cluster!(access::otlp_takes_spans_only_with_the_senders_credentials),
        on_cluster!(access::prometheus_answers_queries_only_with_credentials),
        on_cluster!(access::no_service_has_a_node_port),
        on_cluster!(access::the_password_file_is_the_users_alone_and_the_clusters),
        on_cluster!(monitoring::exporter_output_is_clean),
        on_cluster!(monitoring::docker_collector_reads_the_node_containers),
        on_cluster!(monitoring::prometheus_sees_every_web_pod),
        on_cluster!(monitoring::prometheus_scrapes_every_component),
        on_cluster!(monitoring::a_deleted_pods_series_leave_the_exporter),
        on_cluster!(monitoring::prometheus_data_survives_a_restart),
        on_cluster!(dashboards::promtool_checks_and_tests_the_rules),
        on_cluster!(hardening::a_privileged_pod_is_refused_where_vigil_enforces_restricted),
        on_cluster!(hardening::prometheus_bounds_its_tsdb_and_every_scrape),
        on_cluster!(hardening::a_pod_in_default_cannot_fire_vigils_alerts),
        on_cluster!(traces::a_traceparent_through_the_load_balancer_is_in_jaeger),
        on_cluster!(traces::export_logs_holds_every_kubelet_journal_and_web_log),
        on_cluster!(logs::a_line_web_logs_is_in_victorialogs_within_10_s),
        on_cluster!(logs::only_vigil_reads_the_logs_and_the_shippers_only_insert),
        on_cluster!(logs::a_malformed_logsql_query_gets_victorialogs_own_error),
        on_cluster!(logs::a_replaced_vlagent_sends_no_line_twice),
        on_cluster!(logs::a_nodes_kubelet_and_containerd_journals_are_in_victorialogs),
        on_cluster!(browser::prometheus_and_victorialogs_uis_work_in_a_browser),
        on_cluster!(browser::dashboards_open_live_in_prometheus_ui),
        on_cluster!(browser::alertmanager_ui_works_in_a_browser),
        on_cluster!(alerting::two_replicas_on_two_nodes_one_leading),
        on_cluster!(alerting::a_node_set_not_ready_is_down_then_resolved),
        on_cluster!(drill::a_killed_worker_comes_back_elsewhere_and_every_notice_arrives),
        on_cluster!(drill::the_node_holding_prometheus_is_not_rescheduled_and_says_why),
        on_cluster!(alerting::losing_the_leaders_node_loses_no_notice),
        on_cluster!(alerting::an_api_server_restart_loses_no_transition),
        on_cluster!(alerter_faults::a_frozen_api_server_is_one_control_plane_incident),
        on_cluster!(alerter_faults::alertmanager_restarted_keeps_a_held_down_node_firing),
        on_cluster!(alerter_secrets::the_webhook_url_is_only_in_its_secret),
        on_cluster!(dashboards::every_panel_query_has_data),
        on_cluster!(traces::every_component_exports_its_spans),
        on_cluster!(faults::isolate_and_reconnect),
        on_cluster!(faults::kill_and_start),
        on_cluster!(cluster::down_leaves_nothing_behind),
        // After the local cluster is gone: the machine holds one cluster at a time.
        plain!(ssh_hosts::the_cluster_and_suite_run_on_bare_hosts_and_down_leaves_them_clean),
    ];
    let enabled = std::env::var_os("VIGIL_E2E").is_some_and(|v| v == "1");
    if !enabled {
        eprintln!(
            "vigil-e2e: the end-to-end checks need Docker Engine and build a cluster, so they are ignored here; `./vigil.sh test` runs them (VIGIL_E2E=1)"
        );
    }
    let total = trials.len();
    let trials = trials.into_iter().map(|t| t.with_ignored_flag(!enabled)).collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // For `./vigil.sh test`, which fails unless every check ran.
    if let Some(path) = std::env::var_os("VIGIL_E2E_REPORT") {
        let report = serde_json::json!({
            "checks": total,
            "passed": conclusion.num_passed,
            "failed": conclusion.num_failed,
            "ignored": conclusion.num_ignored,
            "filtered_out": conclusion.num_filtered_out,
        });
        if let Err(e) = std::fs::write(&path, report.to_string()) {
            eprintln!("vigil-e2e: cannot write {}: {e}", path.to_string_lossy());
        }
    }
    conclusion.exit();
}
