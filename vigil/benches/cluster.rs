//! `vigil up`, warm (every image built), before and after the engine was
//! reshaped into a list of steps (issue 9), in one run on one machine: the
//! cluster alone (`--cluster-only`) and the whole default deployment.
//!
//! The anchor is vigil itself at the commit before the step list
//! (`BASELINE`): the bench checks it out in a git worktree under `target/`,
//! builds it, and runs both binaries in turn against the same Docker Engine.
//! The baseline tags its images under its own repository (`vigil-baseline.local`),
//! so neither variant's images are rebuilt between runs. Each variant first
//! runs one untimed `up`, which builds whatever it lacks.
//!
//! `cargo bench -p vigil --bench cluster [-- --runs N] [-- --baseline REV | --no-baseline] [-- --cold]`
//! (`--cold`: also time `vigil build` from empty Go, vigil and image caches.)

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

const CURRENT: &str = env!("CARGO_BIN_EXE_vigil");
/// The last commit before the step list: `up` as two hand-written functions.
const BASELINE: &str = "74bfe53";
const BASELINE_REPOSITORY: &str = "vigil-baseline.local";
const CLUSTER: &str = "vigil-bench";
const SUBNET: &str = "172.29.249.0/24";
const CLUSTER_GOAL_SECS: f64 = 30.0;
const FULL_GOAL_SECS: f64 = 45.0;

struct Variant {
    name: &'static str,
    binary: PathBuf,
    /// `--image-repository` for build and up.
    repository: Option<&'static str>,
    /// Whether its `up` takes `--json` (the baseline writes a report file instead).
    json: bool,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the vigil crate sits in the workspace").to_owned()
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// The baseline's binary: a worktree of `rev`, built in release like the bench's own.
fn build_baseline(rev: &str) -> PathBuf {
    let root = workspace();
    let tree = root.join("target").join("bench-baseline").join(rev);
    if !tree.join("Cargo.toml").exists() {
        run(Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["worktree", "add", "--detach", "--force"])
            .arg(&tree)
            .arg(rev));
    }
    eprintln!("building the baseline vigil ({rev}) in {}", tree.display());
    run(Command::new("cargo")
        .args(["build", "--quiet", "--release", "--locked", "-p", "vigil"])
        .current_dir(&tree)
        .env("CARGO_TARGET_DIR", tree.join("target")));
    tree.join("target/release/vigil")
}

/// Runs `vigil ARGS` of a variant; its wall time and stdout.
fn vigil(variant: &Variant, args: &[&str], kubeconfig: &Path) -> (f64, String) {
    let mut cmd = Command::new(&variant.binary);
    // Its progress goes to the bench's own stderr; its stdout is the report.
    cmd.args(["--name", CLUSTER])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if args.first() == Some(&"up") {
        cmd.args(["--subnet", SUBNET]);
        if variant.json {
            cmd.arg("--json");
        }
    }
    if let Some(repository) = variant.repository
        && matches!(args.first(), Some(&"up") | Some(&"build"))
    {
        cmd.args(["--image-repository", repository]);
    }
    let started = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{} {args:?}: {e}", variant.name));
    assert!(out.status.success(), "{} vigil {} failed", variant.name, args.join(" "));
    (started.elapsed().as_secs_f64(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `up`'s step timings: from `--json` (the step list), else the baseline's report file.
fn steps(json: &str) -> String {
    let from_stdout: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let report = match from_stdout["steps"].is_array() {
        true => from_stdout,
        false => {
            let path = vigil::build::default_cache_dir().join("logs").join(CLUSTER).join("up-report.json");
            serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).unwrap_or_default()
        }
    };
    let steps = report["steps"].as_array().cloned().unwrap_or_default();
    steps
        .iter()
        .filter_map(|s| match (s["name"].as_str(), s["seconds"].as_f64()) {
            (Some(name), Some(secs)) => Some(format!("{name} {secs:.1}")),
            // The baseline's report: [name, seconds] pairs.
            _ => Some(format!("{} {:.1}", s[0].as_str()?, s[1].as_f64()?)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Empty Go caches, an empty vigil cache, no vigil images: everything is
/// downloaded through the module proxy and the Debian mirror and built.
fn cold(current: &Variant, kubeconfig: &Path) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (gocache, gomodcache, cache) =
        (tmp.path().join("go-build"), tmp.path().join("go-mod"), tmp.path().join("vigil-cache"));
    let images = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=vigil.local/*"])
        .output()
        .expect("docker images");
    for image in String::from_utf8_lossy(&images.stdout).lines() {
        let _ = Command::new("docker").args(["rmi", "-f", image]).status();
    }
    let started = Instant::now();
    run(Command::new(&current.binary)
        .arg("build")
        .env("KUBECONFIG", kubeconfig)
        .env("GOCACHE", &gocache)
        .env("GOMODCACHE", &gomodcache)
        .env("VIGIL_CACHE_DIR", &cache));
    println!(
        "vigil build from empty caches (Go modules, Go build cache, debootstrap, images): {:.0}s",
        started.elapsed().as_secs_f64()
    );
    // The Go module cache is read-only by design; make it removable.
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&gomodcache).status();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = value("--runs").and_then(|n| n.parse().ok()).unwrap_or(3);
    let tmp = tempfile::tempdir().expect("temp dir");
    let kubeconfig = tmp.path().join("kubeconfig");
    let current = Variant { name: "current", binary: CURRENT.into(), repository: None, json: true };
    if args.iter().any(|a| a == "--cold") {
        cold(&current, &kubeconfig);
    }
    let mut variants = vec![];
    if !args.iter().any(|a| a == "--no-baseline") {
        let rev = value("--baseline").unwrap_or_else(|| BASELINE.into());
        variants.push(Variant {
            name: "baseline",
            binary: build_baseline(&rev),
            repository: Some(BASELINE_REPOSITORY),
            json: false,
        });
    }
    variants.push(current);

    for variant in &variants {
        eprintln!("{}: an untimed up, building what it lacks", variant.name);
        vigil(variant, &["down"], &kubeconfig);
        vigil(variant, &["up"], &kubeconfig);
        vigil(variant, &["down"], &kubeconfig);
    }
    // (variant, cluster-only times, full times), runs alternating between variants.
    let mut times: Vec<(Vec<f64>, Vec<f64>)> = variants.iter().map(|_| (vec![], vec![])).collect();
    for run in 1..=runs {
        for (variant, (cluster, full)) in variants.iter().zip(times.iter_mut()) {
            let (secs, out) = vigil(variant, &["up", "--cluster-only"], &kubeconfig);
            println!("{} run {run}, cluster only: {secs:.1}s ({})", variant.name, steps(&out));
            cluster.push(secs);
            vigil(variant, &["down"], &kubeconfig);
            let (secs, out) = vigil(variant, &["up"], &kubeconfig);
            println!("{} run {run}, whole deployment: {secs:.1}s ({})", variant.name, steps(&out));
            full.push(secs);
            vigil(variant, &["down"], &kubeconfig);
        }
    }
    let medians: Vec<(f64, f64)> = times.iter().map(|(c, f)| (median(c), median(f))).collect();
    for (variant, (cluster, full)) in variants.iter().zip(&medians) {
        println!(
            "{}: warm up, median of {runs}: cluster only {cluster:.1}s (goal {CLUSTER_GOAL_SECS:.0}s: {:.2}), whole deployment {full:.1}s (goal {FULL_GOAL_SECS:.0}s: {:.2})",
            variant.name,
            cluster / CLUSTER_GOAL_SECS,
            full / FULL_GOAL_SECS
        );
    }
    if let [(base_cluster, base_full), (cluster, full)] = medians[..] {
        println!(
            "current against the baseline: cluster only {:.2}x the time ({:.1}s -> {:.1}s), whole deployment {:.2}x ({:.1}s -> {:.1}s)",
            cluster / base_cluster,
            base_cluster,
            cluster,
            full / base_full,
            base_full,
            full
        );
    }
}
