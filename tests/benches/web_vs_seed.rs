//! Issue 4's measurement, side by side in one run on loopback: the `web` +
//! `probe-server` pair against the seed's Go net/http hostname server
//! (`bench/seed-go`, the assignment's program as written). Load comes from
//! wrk (bounded: fixed connections and duration), alternating servers over
//! several rounds. Reported: requests/s, p99 latency, resident memory (the
//! pair's sum against the Go process), and their ratios against the goals
//! (throughput >= 1.2x, p99 no worse, memory <= 0.5x).
//!
//! `cargo bench -p vigil-e2e --bench web_vs_seed` (needs wrk and go).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use vigil_e2e::{median, proc_status_kib};

const ROUNDS: usize = 3;
const SECONDS: u32 = 8;
const CONNECTIONS: u32 = 64;

struct Server {
    name: &'static str,
    url: String,
    children: Vec<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    fn rss_kib(&self) -> u64 {
        self.children.iter().map(|c| proc_status_kib(c.id(), "VmRSS:")).sum()
    }
    fn peak_kib(&self) -> u64 {
        self.children.iter().map(|c| proc_status_kib(c.id(), "VmHWM:")).sum()
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed");
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn wait_answering(url: &str) {
    for _ in 0..100 {
        if Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "1", url])
            .status()
            .is_ok_and(|s| s.success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} never answered");
}

/// (requests/s, p99 in ms) from one bounded wrk run.
fn wrk(url: &str, seconds: u32) -> (f64, f64) {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s"), "--latency", url])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("wrk rps");
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_latency(v.trim()))
        .expect("wrk p99");
    (rps, p99)
}

fn parse_latency(v: &str) -> f64 {
    let (number, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
    let n: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = workspace();
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed-go");
    run(Command::new("go").args(["build", "-o"]).arg(&seed).arg(".").current_dir(root.join("bench/seed-go")));
    // The very binaries the images carry.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let binaries = runtime
        .block_on(vigil::build::workload::build_binaries(
            &["web", "probe-server"],
            &vigil::build::default_cache_dir(),
            &Default::default(),
        ))
        .expect("the workload binaries build");
    let (web, probe_server) = (binaries["web"].clone(), binaries["probe-server"].clone());
    let config = tmp.path().join("probe.json");
    std::fs::write(
        &config,
        r#"{"listen": "127.0.0.1:18081", "admin_listen": "127.0.0.1:19091",
            "workload": {"name": "web", "http": "http://127.0.0.1:18000/", "timeout": "500ms"},
            "dependencies": [{"name": "hosts", "dns": "localhost", "timeout": "500ms"}]}"#,
    )
    .unwrap();

    let go = Server {
        name: "seed Go net/http",
        url: "http://127.0.0.1:18080/".into(),
        children: vec![spawn(Command::new(&seed).env("PORT", "18080"))],
    };
    let pair = Server {
        name: "web + probe-server",
        url: "http://127.0.0.1:18000/".into(),
        children: vec![
            spawn(Command::new(&web).env("PORT", "18000")),
            spawn(Command::new(&probe_server).arg("--config").arg(&config)),
        ],
    };
    for s in [&go, &pair] {
        wait_answering(&s.url);
        wrk(&s.url, 2); // warm-up
    }
    wait_answering("http://127.0.0.1:18081/readyz");

    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]), (vec![], vec![])];
    for round in 1..=ROUNDS {
        for (i, s) in [&go, &pair].iter().enumerate() {
            let (rps, p99) = wrk(&s.url, SECONDS);
            println!("round {round} {:<20} {rps:>10.0} req/s  p99 {p99:.2} ms", s.name);
            results[i].0.push(rps);
            results[i].1.push(p99);
        }
    }
    let (go_rps, go_p99) = (median(results[0].0.clone()), median(results[0].1.clone()));
    let (pair_rps, pair_p99) = (median(results[1].0.clone()), median(results[1].1.clone()));
    let (go_rss, pair_rss) = (go.rss_kib(), pair.rss_kib());
    let (go_peak, pair_peak) = (go.peak_kib(), pair.peak_kib());
    println!("\n{:<22}{:>12}{:>12}{:>14}{:>14}", "", "req/s", "p99 ms", "RSS KiB", "peak RSS KiB");
    println!("{:<22}{go_rps:>12.0}{go_p99:>12.2}{go_rss:>14}{go_peak:>14}", go.name);
    println!("{:<22}{pair_rps:>12.0}{pair_p99:>12.2}{pair_rss:>14}{pair_peak:>14}", pair.name);
    println!(
        "\nratios (pair / Go): throughput {:.2}x (goal >= 1.2), p99 {:.2}x (goal <= 1.0), memory {:.2}x after load, {:.2}x peak (goal <= 0.5)",
        pair_rps / go_rps,
        pair_p99 / go_p99,
        pair_rss as f64 / go_rss as f64,
        pair_peak as f64 / go_peak as f64
    );
}
