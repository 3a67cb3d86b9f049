//! Issue 20's measurement of the log pipeline next to the workload it
//! ships, in one run on one cluster (`vigil-logs-bench`): `web` is made to
//! log 100 lines/s (100 requests/s through the LoadBalancer, each answered
//! with a 404 that `web` logs once) for `--seconds` (default 60), bounded.
//!
//! Reported:
//! - the pipeline's cost: CPU (cores) and the sum of RSS of every vlagent
//!   (one per node) and VictoriaLogs, idle (before the load, the anchor,
//!   after the cluster has settled for two minutes) and under the load; beside them the workload's own, `web`'s three
//!   processes under the same load, and the pipeline's cost as a ratio of
//!   the workload's;
//! - end-to-end latency from `web`'s answer to the first query that finds
//!   its line, for every tenth request, p50 and p99, over a second window
//!   of the same load (its queries, five a second, would otherwise count
//!   in VictoriaLogs' CPU). The store is polled every [`POLL`]: the figures
//!   are that coarse.
//!
//! `cargo bench -p vigil-e2e --bench log_pipeline [-- --seconds N] [--keep]`
//! creates (or reuses) the cluster and removes it at the end unless `--keep`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use vigil::{addons::web, cluster::ClusterSpec};
use vigil_e2e::{Cluster, cpu_seconds, host_processes, median, proc_status_kib};

const RATE: u32 = 100;
/// Every this many requests, one whose line's arrival is timed.
const TIMED_EVERY: u64 = 10;
const POLL: Duration = Duration::from_millis(200);
/// Before the load: what the pipeline costs with only the cluster's own lines.
const IDLE: Duration = Duration::from_secs(30);
/// A cluster just made logs more than the load adds (its pods starting,
/// the first scrapes): let it settle first, or idle costs more than loaded.
const SETTLE: Duration = Duration::from_secs(120);
/// A timed line not found by then counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(30);

fn spec() -> ClusterSpec {
    ClusterSpec {
        name: "vigil-logs-bench".into(),
        node_subnet: "172.29.247.0/24".parse().expect("valid"),
        ..ClusterSpec::default()
    }
}

struct Args {
    seconds: u64,
    keep: bool,
}

fn args() -> Result<Args> {
    let mut args = Args { seconds: 60, keep: false };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--seconds" => {
                args.seconds = given.next().context("--seconds N")?.parse().context("--seconds N")?;
                if !(10..=600).contains(&args.seconds) {
                    bail!("--seconds takes 10 to 600");
                }
            }
            "--keep" => args.keep = true,
            "--bench" => {}
            other => bail!("unknown argument {other:?} (--seconds N, --keep)"),
        }
    }
    Ok(args)
}

/// The processes measured, by host PID: which part each is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Part {
    Vlagent,
    VictoriaLogs,
    Web,
}

fn processes(c: &Cluster) -> Result<Vec<(Part, u32)>> {
    let mut found = vec![];
    for node in c.nodes() {
        for (pid, args) in host_processes(&node.name)? {
            let part = match args.split_whitespace().next() {
                Some("/vlagent-prod") => Part::Vlagent,
                Some("/victoria-logs-prod") => Part::VictoriaLogs,
                Some(program) if program == format!("/{}", web::NAME) => Part::Web,
                _ => continue,
            };
            found.push((part, pid));
        }
    }
    let count = |part| found.iter().filter(|(p, _)| *p == part).count();
    let nodes = c.nodes().len();
    if count(Part::Vlagent) != nodes || count(Part::VictoriaLogs) != 1 || count(Part::Web) != 3 {
        bail!(
            "expected {nodes} vlagent, 1 VictoriaLogs and 3 web processes; found {} {} {}",
            count(Part::Vlagent),
            count(Part::VictoriaLogs),
            count(Part::Web)
        );
    }
    Ok(found)
}

/// CPU (cores, over the window) and peak summed RSS (MiB, sampled each second) per part.
#[derive(Default, Debug)]
struct Cost {
    cores: BTreeMap<Part, f64>,
    rss_mib: BTreeMap<Part, f64>,
}

impl Cost {
    fn pipeline(&self) -> (f64, f64) {
        let sum = |m: &BTreeMap<Part, f64>| {
            [Part::Vlagent, Part::VictoriaLogs].iter().map(|p| m.get(p).copied().unwrap_or(0.0)).sum::<f64>()
        };
        (sum(&self.cores), sum(&self.rss_mib))
    }

    fn workload(&self) -> (f64, f64) {
        (
            self.cores.get(&Part::Web).copied().unwrap_or(0.0),
            self.rss_mib.get(&Part::Web).copied().unwrap_or(0.0),
        )
    }
}

/// Measures `processes` while `during` runs.
async fn measure<F: std::future::Future<Output = Result<T>>, T>(
    processes: &[(Part, u32)],
    during: F,
) -> Result<(Cost, T)> {
    let cpu = |processes: &[(Part, u32)]| -> Result<BTreeMap<Part, f64>> {
        let mut total = BTreeMap::new();
        for (part, pid) in processes {
            *total.entry(*part).or_insert(0.0) += cpu_seconds(*pid)?;
        }
        Ok(total)
    };
    let started = Instant::now();
    let before = cpu(processes)?;
    let peak: Arc<Mutex<BTreeMap<Part, f64>>> = Arc::default();
    let sampler = {
        let (peak, processes) = (peak.clone(), processes.to_vec());
        tokio::spawn(async move {
            loop {
                let mut now: BTreeMap<Part, f64> = BTreeMap::new();
                for (part, pid) in &processes {
                    *now.entry(*part).or_insert(0.0) += proc_status_kib(*pid, "VmRSS:") as f64 / 1024.0;
                }
                {
                    let mut highest = peak.lock().expect("not poisoned");
                    for (part, mib) in now {
                        let entry = highest.entry(part).or_insert(0.0);
                        *entry = entry.max(mib);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let outcome = during.await;
    sampler.abort();
    let after = cpu(processes)?;
    let elapsed = started.elapsed().as_secs_f64();
    let cores = after.iter().map(|(part, end)| (*part, (end - before[part]) / elapsed)).collect();
    let rss_mib = peak.lock().expect("not poisoned").clone();
    Ok((Cost { cores, rss_mib }, outcome?))
}

/// `RATE` requests/s to `web` for `seconds`, each for `/{prefix}-{i}` (or
/// `/{prefix}-timed-{i}` every [`TIMED_EVERY`]th); when each timed one was
/// answered, by `i`; and how many failed.
async fn load(web_url: &str, prefix: &str, seconds: u64) -> Result<(BTreeMap<u64, Instant>, usize)> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
    let answered: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let mut requests = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..seconds * u64::from(RATE) {
        tick.tick().await;
        let timed = i % TIMED_EVERY == 0;
        let url =
            if timed { format!("{web_url}{prefix}-timed-{i}") } else { format!("{web_url}{prefix}-{i}") };
        let (http, answered) = (http.clone(), answered.clone());
        requests.spawn(async move {
            let ok = http.get(url).send().await.is_ok_and(|r| r.status() == 404);
            if ok && timed {
                answered.lock().expect("not poisoned").insert(i, Instant::now());
            }
            ok
        });
    }
    let mut failed = 0;
    while let Some(ok) = requests.join_next().await {
        failed += usize::from(!ok.unwrap_or(false));
    }
    let answered = answered.lock().expect("not poisoned").clone();
    Ok((answered, failed))
}

/// Polls the store for the timed lines of `prefix` until all of
/// `expected` are found or [`LOST_AFTER`] has passed since the load ended;
/// when each was first seen, by `i`.
async fn arrivals(
    c: &Cluster,
    prefix: &str,
    expected: u64,
    load_done: Arc<Mutex<Option<Instant>>>,
) -> Result<BTreeMap<u64, Instant>> {
    let marker = format!("{prefix}-timed-");
    let query = format!("{marker:?} AND _time:10m | fields _msg");
    let mut seen = BTreeMap::new();
    loop {
        let polled = Instant::now();
        for line in c.logs(&query, 100_000).await? {
            let text = line["_msg"].as_str().unwrap_or_default();
            let Some(at) = text.find(&marker) else { continue };
            let digits: String = text[at + marker.len()..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(i) = digits.parse::<u64>() {
                seen.entry(i).or_insert(polled);
            }
        }
        let over = load_done.lock().expect("not poisoned").is_some_and(|t| t.elapsed() > LOST_AFTER);
        if seen.len() as u64 >= expected || over {
            return Ok(seen);
        }
        tokio::time::sleep(POLL.saturating_sub(polled.elapsed())).await;
    }
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1;
    values[index]
}

fn print_cost(label: &str, cost: &Cost) {
    let part = |p: Part| {
        format!(
            "{:.3} cores, {:.1} MiB",
            cost.cores.get(&p).copied().unwrap_or(0.0),
            cost.rss_mib.get(&p).copied().unwrap_or(0.0)
        )
    };
    println!(
        "{label:<28} vlagent (all nodes): {} | VictoriaLogs: {} | web (3 pods): {}",
        part(Part::Vlagent),
        part(Part::VictoriaLogs),
        part(Part::Web)
    );
}

async fn run(c: &Cluster, args: &Args) -> Result<()> {
    let web_url = c.web_url()?.to_owned();
    let processes = processes(c)?;
    let run = format!(
        "logbench-{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs()
    );

    println!("settling for {} s, then idle for {} s (the anchor)…", SETTLE.as_secs(), IDLE.as_secs());
    tokio::time::sleep(SETTLE).await;
    let (idle, ()) = measure(&processes, async {
        tokio::time::sleep(IDLE).await;
        Ok(())
    })
    .await?;

    println!("{RATE} lines/s from web for {} s, costs measured…", args.seconds);
    let (loaded, (_, failed)) =
        measure(&processes, load(&web_url, &format!("{run}-a"), args.seconds)).await?;

    println!("{RATE} lines/s from web for {} s, latency measured…", args.seconds);
    let prefix = format!("{run}-b");
    let expected = args.seconds * u64::from(RATE) / TIMED_EVERY;
    let load_done: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (loaded_answers, poll) = tokio::join!(
        async {
            let outcome = load(&web_url, &prefix, args.seconds).await;
            *load_done.lock().expect("not poisoned") = Some(Instant::now());
            outcome
        },
        arrivals(c, &prefix, expected, load_done.clone())
    );
    let (answered, failed_b) = loaded_answers?;
    let seen = poll?;
    let latencies: Vec<f64> = answered
        .iter()
        .filter_map(|(i, at)| Some(seen.get(i)?.saturating_duration_since(*at).as_secs_f64() * 1000.0))
        .collect();
    let lost = answered.keys().filter(|i| !seen.contains_key(i)).count();
    if latencies.is_empty() {
        bail!("no timed line of {} answered was found in VictoriaLogs", answered.len());
    }

    let nodes = c.nodes().len();
    println!(
        "\nlog pipeline next to the workload ({nodes} nodes; {RATE} lines/s from web; CPU as cores over the window, RSS the peak of the summed processes)"
    );
    print_cost(&format!("idle ({} s)", IDLE.as_secs()), &idle);
    print_cost(&format!("{RATE} lines/s ({} s)", args.seconds), &loaded);
    let (cpu, rss) = loaded.pipeline();
    let (idle_cpu, idle_rss) = idle.pipeline();
    let (web_cpu, web_rss) = loaded.workload();
    println!(
        "pipeline under load: {cpu:.3} cores ({:.2}x idle), {rss:.1} MiB ({:.2}x idle)",
        cpu / idle_cpu.max(1e-3),
        rss / idle_rss.max(1e-3)
    );
    println!(
        "pipeline / workload at {RATE} lines/s: CPU {:.2}x, RSS {:.2}x",
        cpu / web_cpu.max(1e-3),
        rss / web_rss.max(1e-3)
    );
    println!(
        "latency from web's answer to a query hit ({} timed lines, polled every {} ms): p50 {:.0} ms, p99 {:.0} ms, median {:.0} ms; {lost} not found within {} s; goal: found within 10 s",
        latencies.len(),
        POLL.as_millis(),
        percentile(latencies.clone(), 0.50),
        percentile(latencies.clone(), 0.99),
        median(latencies.clone()),
        LOST_AFTER.as_secs()
    );
    println!("failed requests: {} of {}", failed + failed_b, 2 * args.seconds * u64::from(RATE));
    let store_rows = c.logs(&format!("{:?} | stats count() lines", format!("{run}-a")), 1).await?;
    let stored = store_rows.first().and_then(|r| r["lines"].as_str()).unwrap_or("0");
    println!(
        "lines of the cost window stored: {stored} of {} requests answered",
        args.seconds * u64::from(RATE) - failed as u64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let args = args()?;
    let spec = spec();
    let target = vigil::app::Target::containers(&spec.name);
    let c = Cluster::up_on(spec.clone(), target).await.context("vigil up of the bench's cluster")?;
    let outcome = tokio::select! {
        outcome = run(&c, &args) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if !args.keep {
        vigil_e2e::down(&spec).await?;
    } else {
        println!("kept: `vigil --name {} down` removes it", spec.name);
    }
    outcome
}
