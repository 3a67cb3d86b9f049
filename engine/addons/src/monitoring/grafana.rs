//! Grafana's dashboard model, as much of it as vigil's dashboards use,
//! typed: panels of Prometheus queries on a `datasource` variable (no
//! datasource UID is written anywhere), query variables, and the
//! provisioning files that make a Grafana load them at start.

use serde::{Deserialize, Serialize};

/// The dashboard schema version these files are written in (Grafana 12).
pub const SCHEMA_VERSION: u32 = 41;

/// Every panel and query variable names its datasource through this variable.
pub const DATASOURCE: &str = "${datasource}";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    pub uid: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub schema_version: u32,
    pub version: u32,
    pub editable: bool,
    pub graph_tooltip: u32,
    pub refresh: String,
    pub time: TimeRange,
    pub timezone: String,
    pub templating: Templating,
    pub annotations: Annotations,
    pub panels: Vec<Panel>,
}

impl Dashboard {
    /// Every query with its panel, in the dashboard's order: what a viewer
    /// that draws one query at a time shows.
    pub fn queries(&self) -> impl Iterator<Item = (&Panel, &Target)> {
        self.panels.iter().flat_map(|panel| panel.targets.iter().map(move |target| (panel, target)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Templating {
    pub list: Vec<Variable>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Annotations {
    pub list: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub label: String,
    /// `prometheus` for the datasource variable; a `label_values(...)` query otherwise.
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasource: Option<DatasourceRef>,
    /// 1: on dashboard load; 2: on time range change.
    pub refresh: u32,
    pub multi: bool,
    pub include_all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_value: Option<String>,
    pub hide: u32,
    pub sort: u32,
    pub regex: String,
    pub current: serde_json::Value,
    pub options: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasourceRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub uid: String,
}

impl DatasourceRef {
    pub fn variable() -> Self {
        DatasourceRef { kind: "prometheus".into(), uid: DATASOURCE.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Panel {
    pub id: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub description: String,
    pub grid_pos: GridPos,
    pub datasource: DatasourceRef,
    pub targets: Vec<Target>,
    pub field_config: FieldConfig,
    pub options: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridPos {
    pub h: u32,
    pub w: u32,
    pub x: u32,
    pub y: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub ref_id: String,
    pub datasource: DatasourceRef,
    pub expr: String,
    pub legend_format: String,
    pub instant: bool,
    pub range: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldConfig {
    pub defaults: FieldDefaults,
    pub overrides: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDefaults {
    pub unit: String,
}

/// What a panel shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    TimeSeries,
    Stat,
}

/// A panel as the dashboards below declare it: title, what it shows, its
/// unit, and its queries (PromQL, legend).
pub struct PanelSpec {
    pub title: &'static str,
    pub description: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub queries: Vec<(String, &'static str)>,
}

/// A dashboard as declared: its uid, title, variables and panels in reading order.
pub struct DashboardSpec {
    pub uid: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub variables: Vec<Variable>,
    pub panels: Vec<PanelSpec>,
}

/// The `datasource` variable every dashboard starts with.
pub fn datasource_variable() -> Variable {
    Variable {
        kind: "datasource".into(),
        name: "datasource".into(),
        label: "Data source".into(),
        query: "prometheus".into(),
        datasource: None,
        refresh: 1,
        multi: false,
        include_all: false,
        all_value: None,
        hide: 0,
        sort: 0,
        regex: String::new(),
        current: serde_json::json!({}),
        options: vec![],
    }
}

/// A query variable over `label_values(...)`, multi-valued with "All" (`.*`).
pub fn query_variable(name: &str, label: &str, query: &str) -> Variable {
    Variable {
        kind: "query".into(),
        name: name.into(),
        label: label.into(),
        query: query.into(),
        datasource: Some(DatasourceRef::variable()),
        refresh: 2,
        multi: true,
        include_all: true,
        all_value: Some(".*".into()),
        hide: 0,
        sort: 1,
        regex: String::new(),
        current: serde_json::json!({}),
        options: vec![],
    }
}

/// Panels laid out left to right: time series two to a row (8 high), stats
/// four to a row (4 high); a row is as high as its highest panel.
pub fn build(spec: DashboardSpec) -> Dashboard {
    let mut panels = vec![];
    let (mut x, mut y, mut row_height) = (0, 0, 0);
    for (index, panel) in spec.panels.into_iter().enumerate() {
        let (w, h) = match panel.kind {
            Kind::TimeSeries => (12, 8),
            Kind::Stat => (6, 4),
        };
        if x + w > 24 {
            x = 0;
            y += row_height;
            row_height = 0;
        }
        row_height = row_height.max(h);
        let instant = panel.kind == Kind::Stat;
        let targets = panel
            .queries
            .into_iter()
            .enumerate()
            .map(|(i, (expr, legend))| Target {
                ref_id: ((b'A' + i as u8) as char).to_string(),
                datasource: DatasourceRef::variable(),
                expr,
                legend_format: legend.into(),
                instant,
                range: !instant,
            })
            .collect();
        let options = match panel.kind {
            Kind::TimeSeries => serde_json::json!({
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
                "tooltip": {"mode": "multi", "sort": "desc"}
            }),
            Kind::Stat => serde_json::json!({
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                "colorMode": "value",
                "graphMode": "none"
            }),
        };
        panels.push(Panel {
            id: index as u32 + 1,
            kind: match panel.kind {
                Kind::TimeSeries => "timeseries",
                Kind::Stat => "stat",
            }
            .into(),
            title: panel.title.into(),
            description: panel.description.into(),
            grid_pos: GridPos { h, w, x, y },
            datasource: DatasourceRef::variable(),
            targets,
            field_config: FieldConfig {
                defaults: FieldDefaults { unit: panel.unit.into() },
                overrides: vec![],
            },
            options,
        });
        x += w;
    }
    let mut variables = vec![datasource_variable()];
    variables.extend(spec.variables);
    Dashboard {
        uid: spec.uid.into(),
        title: spec.title.into(),
        description: spec.description.into(),
        tags: vec!["vigil".into()],
        schema_version: SCHEMA_VERSION,
        version: 1,
        editable: true,
        graph_tooltip: 1,
        refresh: "30s".into(),
        time: TimeRange { from: "now-1h".into(), to: "now".into() },
        timezone: "browser".into(),
        templating: Templating { list: variables },
        annotations: Annotations::default(),
        panels,
    }
}

/// Grafana's provisioning: a Prometheus datasource at `url`, and a file
/// provider loading every dashboard under `path`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Datasources {
    api_version: u32,
    datasources: Vec<Datasource>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Datasource {
    name: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    access: &'static str,
    url: String,
    is_default: bool,
    editable: bool,
    basic_auth: bool,
    basic_auth_user: &'static str,
    secure_json_data: SecureJsonData,
}

/// Grafana keeps these encrypted; the password comes from Grafana's
/// environment, never from this file.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecureJsonData {
    basic_auth_password: String,
}

/// The variable Grafana's environment holds vigil's password in (the
/// content of the file `vigil status` names).
pub const PASSWORD_VARIABLE: &str = "VIGIL_PROMETHEUS_PASSWORD";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Providers {
    api_version: u32,
    providers: Vec<Provider>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Provider {
    name: &'static str,
    folder: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    disable_deletion: bool,
    update_interval_seconds: u32,
    allow_ui_updates: bool,
    options: ProviderOptions,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProviderOptions {
    path: &'static str,
    folders_from_files_structure: bool,
}

/// Where the provisioning expects the dashboards (mount `dashboards/` there).
pub const DASHBOARDS_PATH: &str = "/var/lib/grafana/dashboards/vigil";

/// `provisioning/datasources/vigil.yml`: vigil's Prometheus, by its
/// LoadBalancer address (`vigil status --json`: `addresses.prometheus`),
/// as user `vigil` with the password Grafana's provisioning reads from
/// its environment (`$VIGIL_PROMETHEUS_PASSWORD`).
pub fn datasource_provisioning(prometheus_url: &str) -> String {
    let file = Datasources {
        api_version: 1,
        datasources: vec![Datasource {
            name: "vigil-prometheus",
            kind: "prometheus",
            access: "proxy",
            url: prometheus_url.into(),
            is_default: true,
            editable: true,
            basic_auth: true,
            basic_auth_user: crate::credentials::API_USER,
            secure_json_data: SecureJsonData { basic_auth_password: format!("${{{PASSWORD_VARIABLE}}}") },
        }],
    };
    serde_yaml::to_string(&file).expect("serializes")
}

/// `provisioning/dashboards/vigil.yml`.
pub fn dashboard_provisioning() -> String {
    let file = Providers {
        api_version: 1,
        providers: vec![Provider {
            name: "vigil",
            folder: "vigil",
            kind: "file",
            disable_deletion: false,
            update_interval_seconds: 30,
            allow_ui_updates: false,
            options: ProviderOptions { path: DASHBOARDS_PATH, folders_from_files_structure: false },
        }],
    };
    serde_yaml::to_string(&file).expect("serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datasource_logs_in_with_a_password_from_grafanas_environment() {
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&datasource_provisioning("http://172.29.0.129:9090")).unwrap();
        let source = &yaml["datasources"][0];
        assert_eq!(source["basicAuth"], true);
        assert_eq!(source["basicAuthUser"], "vigil");
        assert_eq!(source["secureJsonData"]["basicAuthPassword"], "${VIGIL_PROMETHEUS_PASSWORD}");
        assert_eq!(source["url"], "http://172.29.0.129:9090");
    }
}
