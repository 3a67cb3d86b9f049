//! `vigil dashboards render`: the time-series panels of vigil's dashboards
//! drawn as SVG from real range queries against the cluster's Prometheus.
//! Text is laid out with the metrics of DejaVu Sans, embedded in the binary
//! (its licence is `engine/addons/assets/DejaVuSans.copyright`), so drawing needs no
//! system font; the viewer draws the text in its own sans-serif. (SVG rather
//! than PNG: plotters 0.3.7's bitmap text ignores each glyph's left bearing,
//! which spaces digits unevenly.)

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::grafana::{Dashboard, Panel, Target};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Prometheus did not answer.
    #[error(
        "Prometheus at {url} did not answer: {message}: check `vigil status --json` (addresses.prometheus)"
    )]
    Unreachable { url: String, message: String },
    /// Prometheus answered with an error for a panel's query.
    #[error("{panel}: Prometheus refused the query {expr:?}: {message}")]
    Query { panel: String, expr: String, message: String },
    /// A chart could not be drawn or written.
    #[error("drawing {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
}

/// The font every chart's text is drawn in.
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
/// What a chart says when its window holds no point.
pub const NO_DATA: &str = "no data in this window";
const FONT_NAME: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 400);
/// More lines than this and a chart is unreadable: the highest are drawn, and the title says so.
const MOST_LINES: usize = 8;

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bytes are the TTF in the repository; a failure is a broken build, caught by the tests.
        plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans does not load"));
    });
}

/// A time window, in Unix seconds, and the step between points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
    pub step: f64,
}

impl Window {
    /// The last `minutes` up to now, about 200 points.
    pub fn last_minutes(minutes: u32) -> Self {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        Window::between(end - f64::from(minutes) * 60.0, end)
    }

    pub fn between(start: f64, end: f64) -> Self {
        Window { start, end, step: ((end - start) / 200.0).max(5.0).round() }
    }
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: a panel's title and unit, its lines over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub unit: String,
    pub window: Window,
    pub lines: Vec<Line>,
}

/// `{{label}}` of a legend filled from a series' labels (or all its labels when there is no legend).
fn legend(format: &str, metric: &serde_json::Map<String, serde_json::Value>) -> String {
    let label = |k: &str| metric.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    if format.is_empty() {
        let pairs: Vec<String> =
            metric.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}={v}")).collect();
        return format!("{{{}}}", pairs.join(", "));
    }
    let mut text = format.to_owned();
    while let Some(start) = text.find("{{") {
        let Some(len) = text[start..].find("}}") else { break };
        let value = label(text[start + 2..start + len].trim());
        text.replace_range(start..start + len + 2, &value);
    }
    text
}

/// A range query's answer as lines (NaN points left out).
pub fn lines_of(answer: &serde_json::Value, legend_format: &str) -> Result<Vec<Line>, String> {
    if answer["status"] != "success" {
        return Err(answer["error"].as_str().unwrap_or("no error given").to_owned());
    }
    let empty = vec![];
    let series = answer["data"]["result"].as_array().unwrap_or(&empty);
    let mut lines = vec![];
    for s in series {
        let metric = s["metric"].as_object().cloned().unwrap_or_default();
        let points = s["values"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|p| {
                let t = p[0].as_f64()?;
                let v: f64 = p[1].as_str()?.parse().ok()?;
                v.is_finite().then_some((t, v))
            })
            .collect();
        lines.push(Line { name: legend(legend_format, &metric), points });
    }
    Ok(lines)
}

/// The client the range queries go through: straight to the cluster's
/// address (no proxy), 20 s for one query, with vigil's credentials on
/// every request (marked sensitive: never in a log or an error).
pub fn client(credentials: &crate::credentials::Credentials) -> Result<reqwest::Client, reqwest::Error> {
    let mut authorization = reqwest::header::HeaderValue::from_str(&credentials.basic_header())
        .expect("base64 is a valid header value");
    authorization.set_sensitive(true);
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(20))
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            authorization,
        )]))
        .build()
}

/// The panel's queries, with the variables set (`vars`), over `window`.
pub async fn chart_of(
    http: &reqwest::Client,
    prometheus: &str,
    panel: &Panel,
    vars: &[(&str, &str)],
    window: Window,
) -> Result<Chart, Error> {
    let mut lines = vec![];
    for target in &panel.targets {
        let expr = expression(target, vars, window);
        let url = format!("{}/api/v1/query_range", prometheus.trim_end_matches('/'));
        let params = [
            ("query", expr.clone()),
            ("start", format!("{:.0}", window.start)),
            ("end", format!("{:.0}", window.end)),
            ("step", format!("{:.0}", window.step)),
        ];
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            url: url.clone(),
            message: vigil_telemetry::error_chain(&e),
        };
        let answer: serde_json::Value = http
            .get(&url)
            .query(&params)
            .send()
            .await
            .map_err(unreachable)?
            .json()
            .await
            .map_err(unreachable)?;
        let found = lines_of(&answer, &target.legend_format).map_err(|message| Error::Query {
            panel: panel.title.clone(),
            expr: expr.clone(),
            message,
        })?;
        lines.extend(found);
    }
    Ok(Chart { title: panel.title.clone(), unit: panel.field_config.defaults.unit.clone(), window, lines })
}

/// `target`'s query as Prometheus runs it over `window`: the dashboard's
/// variables set to `vars`, and Grafana's `$__rate_interval` given its
/// value (at least a minute, four 15 s scrapes; else a step and a scrape).
fn expression(target: &Target, vars: &[(&str, &str)], window: Window) -> String {
    let rate_interval = format!("{}s", (window.step + 15.0).max(60.0) as u64);
    let mut expr = target.expr.replace("$__rate_interval", &rate_interval);
    for (name, value) in vars {
        expr = expr.replace(&format!("${name}"), value);
    }
    expr
}

/// The dashboard's query variables, each set to every value ("All").
fn every_value(dashboard: &Dashboard) -> Vec<(&str, &str)> {
    dashboard.templating.list.iter().filter(|v| v.kind == "query").map(|v| (v.name.as_str(), ".*")).collect()
}

/// What Prometheus's own UI (its query page, at `prometheus_ui`) shows of
/// `dashboard` over the last `minutes`: a panel per query, in the
/// dashboard's order, each headed by a PromQL comment naming the
/// dashboard's panel; a graph for a time-series panel (at the renderer's
/// step), a table for the others. The variables are set to All.
pub fn prometheus_link(prometheus_ui: &str, dashboard: &Dashboard, minutes: u32) -> String {
    let window = Window::last_minutes(minutes);
    let vars = every_value(dashboard);
    let mut params: Vec<(String, String)> = vec![];
    for (i, (panel, target)) in dashboard.queries().enumerate() {
        let title = panel.title.replace('\n', " ");
        let mut set = |key: &str, value: String| params.push((format!("g{i}.{key}"), value));
        set("expr", format!("# {title}\n{}", expression(target, &vars, window)));
        if panel.kind == "timeseries" {
            set("tab", "graph".into());
            set("range_input", format!("{minutes}m"));
            set("res_type", "fixed".into());
            set("res_step", format!("{}", window.step));
        } else {
            set("tab", "table".into());
        }
    }
    let base = format!("{}/query", prometheus_ui.trim_end_matches('/'));
    reqwest::Url::parse_with_params(&base, &params).map(String::from).unwrap_or(base)
}

/// A value in the panel's unit, short.
fn format_value(unit: &str, v: f64) -> String {
    let scaled = |v: f64, base: f64, names: &[&str]| {
        let mut v = v;
        let mut i = 0;
        while v.abs() >= base && i + 1 < names.len() {
            v /= base;
            i += 1;
        }
        format!("{v:.1} {}", names[i])
    };
    match unit {
        "bytes" => scaled(v, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"]),
        "Bps" => scaled(v, 1024.0, &["B/s", "KiB/s", "MiB/s", "GiB/s"]),
        "s" if v.abs() < 1.0 && v != 0.0 => format!("{:.0} ms", v * 1000.0),
        "s" => format!("{v:.1} s"),
        "reqps" => format!("{v:.1}/s"),
        "ops" => format!("{v:.1}/s"),
        _ if v.fract() == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

/// `HH:MM` (UTC) of a Unix time.
fn clock(t: f64) -> String {
    let s = t.rem_euclid(86_400.0) as u64;
    format!("{:02}:{:02}", s / 3600, (s % 3600) / 60)
}

/// `HH:MM:SS` (UTC), for windows of minutes.
fn clock_seconds(t: f64) -> String {
    format!("{}:{:02}", clock(t), t.rem_euclid(60.0) as u64)
}

/// The chart as an SVG at `path`.
pub fn draw(chart: &Chart, path: &Path) -> Result<(), Error> {
    register_font();
    let err = |e: &dyn std::fmt::Display| Error::Draw { path: path.to_owned(), message: e.to_string() };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut lines: Vec<&Line> = chart.lines.iter().filter(|l| !l.points.is_empty()).collect();
    let peak = |l: &Line| l.points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    lines.sort_by(|a, b| peak(b).total_cmp(&peak(a)));
    let shown = if lines.len() > MOST_LINES {
        format!(", the {MOST_LINES} highest of {}", lines.len())
    } else {
        String::new()
    };
    lines.truncate(MOST_LINES);
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // From zero (or below), with headroom; a flat line still gets a scale.
    let (lo, hi) =
        if lo.is_finite() { (lo.min(0.0), if hi > lo { hi * 1.1 } else { lo + 1.0 }) } else { (0.0, 1.0) };
    let title =
        format!("{} (UTC {}-{}{shown})", chart.title, clock(chart.window.start), clock(chart.window.end));
    let short = chart.window.end - chart.window.start < 600.0;
    let mut plot = ChartBuilder::on(&root)
        .caption(title, (FONT_NAME, 18))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(80)
        .build_cartesian_2d(chart.window.start..chart.window.end, lo..hi)
        .map_err(|e| err(&e))?;
    plot.configure_mesh()
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|t| if short { clock_seconds(*t) } else { clock(*t) })
        .y_label_formatter(&|v| format_value(&chart.unit, *v))
        .label_style((FONT_NAME, 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    if lines.is_empty() {
        root.draw(&Text::new(NO_DATA, (SIZE.0 as i32 / 2 - 80, SIZE.1 as i32 / 2), (FONT_NAME, 16)))
            .map_err(|e| err(&e))?;
    }
    for (i, line) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        plot.draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(line.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    if !lines.is_empty() {
        plot.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT_NAME, 11))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A file name for a panel: `<dashboard uid>--<title in lower case, dashes>.svg`.
pub fn file_name(dashboard: &Dashboard, panel: &Panel) -> String {
    let slug: String = panel
        .title
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    format!("{}--{slug}.svg", dashboard.uid)
}

/// Every time-series panel of `dashboard`, drawn under `dir`, the variables
/// set to every value ("All").
pub async fn dashboard(
    http: &reqwest::Client,
    prometheus: &str,
    dashboard: &Dashboard,
    window: Window,
    dir: &Path,
) -> Result<Vec<PathBuf>, Error> {
    let vars = every_value(dashboard);
    std::fs::create_dir_all(dir).map_err(|e| Error::Draw { path: dir.to_owned(), message: e.to_string() })?;
    let mut written = vec![];
    for panel in dashboard.panels.iter().filter(|p| p.kind == "timeseries") {
        let chart = chart_of(http, prometheus, panel, &vars, window).await?;
        let path = dir.join(file_name(dashboard, panel));
        draw(&chart, &path)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dashboard_opens_in_prometheus_ui_as_one_panel_per_query() {
        for (_, dashboard) in super::super::dashboards::all() {
            let link = prometheus_link("http://10.0.0.2:9090/", &dashboard, 60);
            let url = reqwest::Url::parse(&link).unwrap();
            assert_eq!(url.path(), "/query");
            let params: std::collections::BTreeMap<String, String> = url.query_pairs().into_owned().collect();
            let queries: Vec<_> = dashboard.queries().collect();
            for (i, (panel, _)) in queries.iter().enumerate() {
                let expr = &params[&format!("g{i}.expr")];
                assert!(expr.starts_with(&format!("# {}\n", panel.title)), "{expr}");
                assert!(!expr.contains('$'), "a variable left in {expr}");
                let tab = if panel.kind == "timeseries" { "graph" } else { "table" };
                assert_eq!(params[&format!("g{i}.tab")], tab);
            }
            assert!(!params.contains_key(&format!("g{}.expr", queries.len())), "{link}");
        }
    }

    #[test]
    fn legends_fill_labels_and_values_read_short() {
        let metric = serde_json::json!({"node": "vigil-worker", "sink": "webhook"});
        assert_eq!(legend("{{node}} / {{ sink }}", metric.as_object().unwrap()), "vigil-worker / webhook");
        assert_eq!(format_value("bytes", 3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(format_value("s", 0.25), "250 ms");
        assert_eq!(clock(86_400.0 * 3.0 + 3_723.0), "01:02");
        assert_eq!(clock_seconds(86_400.0 * 3.0 + 3_723.0), "01:02:03");
    }

    #[test]
    fn a_range_answer_becomes_lines_without_nan_and_an_error_is_named() {
        let answer = serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"node": "a"}, "values": [[100.0, "1"], [115.0, "NaN"], [130.0, "3"]]}
        ]}});
        let lines = lines_of(&answer, "{{node}}").unwrap();
        assert_eq!(lines, vec![Line { name: "a".into(), points: vec![(100.0, 1.0), (130.0, 3.0)] }]);
        let refused = serde_json::json!({"status": "error", "error": "parse error at char 3"});
        assert_eq!(lines_of(&refused, "").unwrap_err(), "parse error at char 3");
    }

    #[test]
    fn a_chart_is_drawn_as_an_svg_laid_out_with_the_embedded_font() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let window = Window::between(1_000.0, 1_600.0);
        let chart = Chart {
            title: "Memory by node".into(),
            unit: "bytes".into(),
            window,
            lines: vec![Line { name: "vigil-worker".into(), points: vec![(1_000.0, 1e8), (1_600.0, 2e8)] }],
        };
        draw(&chart, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("\nMemory by node (UTC 00:16-00:26)\n"), "{svg}");
        assert!(svg.contains("\nvigil-worker\n") && svg.contains("<polyline"), "{svg}");
        assert!(svg.contains(" MiB\n"), "the axis is in the panel's unit: {svg}");
        assert!(!svg.contains(NO_DATA));
        draw(&Chart { lines: vec![], ..chart }, &path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains(NO_DATA));
    }
}
