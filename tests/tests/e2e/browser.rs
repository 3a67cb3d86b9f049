//! What a user opens, in a real browser (issue 20): Debian's headless
//! Chromium on the addresses `vigil up` printed, with vigil's credentials as
//! the browser's prompt would give them (see `vigil_e2e::browser`). Each page
//! is checked for its real content, and its screenshot is kept under
//! `~/.cache/vigil/e2e-screenshots/`:
//! - web greets from one of its pods;
//! - Prometheus's own UI runs a query and draws its graph; a malformed
//!   PromQL gets Prometheus's parse error on the page;
//! - VictoriaLogs' UI finds a line `web` just logged; a malformed LogsQL
//!   query gets VictoriaLogs' own error on the page;
//! - Alertmanager's root leads to its UI, whose status page names the
//!   release vigil built and whose config page shows vigil's route;
//! - each of vigil's dashboards opens live in Prometheus's UI from the link
//!   `vigil dashboards links` prints: every panel's query is on the page,
//!   each time-series one drawn, none in error.
//!
//! Jaeger is not opened: its module carries no UI (issue 20, item 3).
//! Alertmanager's alerts and silences are not on its UI yet (placeholders
//! upstream): `vigil alerts` shows them, checked in `access` and
//! `alerter_faults`.

use std::time::Duration;

use anyhow::{Result, ensure};
use vigil::addons::{alertmanager, prometheus, victorialogs, web};
use vigil_e2e::{
    Cluster,
    browser::{Browser, WINDOW},
};

async fn browser(c: &Cluster) -> Result<Browser> {
    let hosts = c
        .report
        .addresses
        .values()
        .filter_map(|url| reqwest::Url::parse(url).ok()?.host_str()?.parse().ok())
        .collect();
    let dir = vigil_e2e::cache_dir().join("e2e-screenshots");
    Browser::start(hosts, c.credentials.basic_header(), &dir).await
}

pub async fn prometheus_and_victorialogs_uis_work_in_a_browser(c: &Cluster) -> Result<()> {
    let browser = browser(c).await?;

    browser
        .open(c.web_url()?, web::NAME, WINDOW, |dom| {
            ensure!(dom.contains("I'm web-"), "web's page does not greet from a pod");
            Ok(())
        })
        .await?;

    let prometheus = c.url(prometheus::NAME)?;
    let query_page =
        |params: &[(&str, &str)]| reqwest::Url::parse_with_params(&format!("{prometheus}query"), params);
    let graph = query_page(&[("g0.expr", "up"), ("g0.tab", "graph"), ("g0.range_input", "15m")])?;
    browser
        .open(graph.as_str(), "prometheus-graph", WINDOW, |dom| {
            ensure!(!dom.contains("Error executing query"), "Prometheus's query of `up` failed");
            ensure!(dom.contains(r#"class="uplot"#), "Prometheus drew no graph of `up`");
            ensure!(dom.contains(r#"job=""#), "Prometheus's graph of `up` has no series in its legend");
            Ok(())
        })
        .await?;
    let bad = query_page(&[("g0.expr", "up{"), ("g0.tab", "table")])?;
    browser
        .open(bad.as_str(), "prometheus-bad-promql", WINDOW, |dom| {
            ensure!(dom.contains("parse error"), "a malformed PromQL shows no parse error");
            Ok(())
        })
        .await?;

    // A line of web's own, then the log UI finds it.
    let marker = super::logs::fresh_marker("vigil-e2e-browser");
    reqwest::Client::new()
        .get(format!("{}{marker}", c.web_url()?))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let query = format!("{marker:?}");
    vigil::poll::until_some("web's line in VictoriaLogs", Duration::from_secs(30), || async {
        Ok::<_, anyhow::Error>((!c.logs(&query, 1).await?.is_empty()).then_some(()))
    })
    .await?;
    let ui = c.url(victorialogs::NAME)?;
    let end = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(60);
    let search = alerter::logs::ui_link(ui, &query, &end.to_string(), 600);
    browser
        .open(&search, "victorialogs-search", WINDOW, |dom| {
            ensure!(dom.contains(&marker), "VictoriaLogs' UI does not show web's line {marker}");
            Ok(())
        })
        .await?;
    let bad = alerter::logs::ui_link(ui, "web AND (", &end.to_string(), 600);
    browser
        .open(&bad, "victorialogs-bad-logsql", WINDOW, |dom| {
            ensure!(dom.contains("cannot parse"), "a malformed LogsQL query shows no error");
            Ok(())
        })
        .await?;
    println!("screenshots in {}", browser.dir.display());
    Ok(())
}

pub async fn alertmanager_ui_works_in_a_browser(c: &Cluster) -> Result<()> {
    let browser = browser(c).await?;
    let root = c.url(alertmanager::NAME)?;
    // What a user types: the address `up` printed, which leads to the UI
    // (its alerts page, a placeholder upstream: the pages' names alone).
    browser
        .open(root, "alertmanager", WINDOW, |dom| {
            ensure!(
                dom.contains("Silences") && dom.contains("Status"),
                "Alertmanager's address does not lead to its UI"
            );
            Ok(())
        })
        .await?;
    let release = vigil::versions::ALERTMANAGER.trim_start_matches('v');
    browser
        .open(&format!("{root}ui/#/status"), "alertmanager-status", WINDOW, |dom| {
            ensure!(
                dom.contains("Build information") && dom.contains(release),
                "Alertmanager's status page does not name release {release}"
            );
            Ok(())
        })
        .await?;
    browser
        .open(&format!("{root}ui/#/config"), "alertmanager-config", WINDOW, |dom| {
            ensure!(
                dom.contains("group_by") && dom.contains("alertname"),
                "Alertmanager's config page does not show vigil's route"
            );
            Ok(())
        })
        .await?;
    println!("screenshots in {}", browser.dir.display());
    Ok(())
}

pub async fn dashboards_open_live_in_prometheus_ui(c: &Cluster) -> Result<()> {
    let browser = browser(c).await?;
    let prometheus = c.url(prometheus::NAME)?;
    for (_, dashboard) in vigil::monitoring::dashboards::all() {
        let link = vigil::monitoring::render::prometheus_link(prometheus, &dashboard, 30);
        let queries: Vec<_> = dashboard.queries().map(|(panel, _)| panel).collect();
        let graphs = queries.iter().filter(|p| p.kind == "timeseries").count();
        // A panel's graph is about 450 pixels high; the table ones less.
        let height = 300 + 450 * queries.len() as u32;
        let name = format!("dashboard-{}", dashboard.uid);
        browser
            .open(&link, &name, (WINDOW.0, height), |dom| {
                let shown = |what: &str| dom.matches(what).count();
                ensure!(
                    shown("Error executing query") == 0 && shown("parse error") == 0,
                    "{} shows a query error in Prometheus's UI",
                    dashboard.title
                );
                for panel in &queries {
                    ensure!(
                        dom.contains(&html_escaped(&panel.title)),
                        "{}'s panel {:?} is not on the page",
                        dashboard.title,
                        panel.title
                    );
                }
                let drawn = shown(r#"class="uplot"#);
                ensure!(
                    drawn == graphs,
                    "{drawn} of {graphs} time-series queries of {} drawn in Prometheus's UI",
                    dashboard.title
                );
                Ok(())
            })
            .await?;
    }
    println!("screenshots in {}", browser.dir.display());
    Ok(())
}

/// `text` as it appears in a page's DOM.
fn html_escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
