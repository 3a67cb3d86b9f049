#!/usr/bin/env bash
# vigil's one entry point on a fresh machine. It installs what the machine
# lacks (Docker Engine, debootstrap), starts dockerd when none answers, builds
# the workspace, then:
#   ./vigil.sh up      build everything from upstream, create the cluster, print what to run
#   ./vigil.sh test    run every test (unit tests and the end-to-end cluster tests)
#   ./vigil.sh bench [cluster|web|exporter|drill|alerter-memory|ssh|logs] [ARGS]
#                      run the benchmarks (figures for the issues' closing notes)
#   ./vigil.sh ARGS    any other vigil command (status, down, node stop NAME, ...)
set -o errexit -o nounset -o pipefail
cd "$(dirname "$0")"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'vigil.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
  if [[ -z "$apt_updated" ]]; then
    as_root apt-get update -qq || die "apt-get update failed: check this machine's Debian package sources"
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v iptables >/dev/null || missing+=(iptables)
  [[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || missing+=(libc6-dev)
  command -v cc >/dev/null || missing+=(gcc)
  # The SSH provider's tests run a real sshd on loopback.
  [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
  if (( ${#missing[@]} )); then
    say "installing ${missing[*]} from Debian"
    apt_install "${missing[@]}"
  fi
  command -v go >/dev/null || die "Go is not installed: vigil builds Kubernetes and its peers with the machine's Go (1.25 or newer)"
  command -v cargo >/dev/null || die "Rust is not installed: install it with rustup"
  command -v npx >/dev/null && command -v npm >/dev/null \
    || die "Node.js (npm, npx) is not installed: vigil builds Prometheus's and Alertmanager's web UIs with their own package managers (Node 20.19 or newer)"
}

# Room for the workspace's build (its target directory grows to about 4 GiB)
# before it starts: a full disk shows up far from its cause, as a linker
# killed by SIGBUS. The upstream build checks its own (20 GiB) when it has
# something to build.
ensure_disk() {
  local dir=${CARGO_TARGET_DIR:-target} need_gib=4 free_kib
  mkdir -p "$dir"
  free_kib=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
  (( free_kib >= need_gib * 1024 * 1024 )) || die "only $(( free_kib / 1024 )) MiB free on the filesystem of $dir; building the workspace needs about $need_gib GiB: free some space (cargo clean removes $dir; docker system prune removes unused images) and run again"
}

ensure_dockerd() {
  if docker info >/dev/null 2>&1; then return; fi
  say "starting dockerd (log: /var/log/dockerd.log)"
  as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  tail -20 /var/log/dockerd.log >&2 || true
  die "dockerd did not answer within 60 s; its log is /var/log/dockerd.log"
}

vigil() {
  cargo run --quiet --locked -p vigil -- "$@"
}

# The host's kubectl, for `kubectl --context vigil`: the same multi-call
# Kubernetes binary the nodes run, taken from the built image (vigil names it).
ensure_kubectl() {
  command -v kubectl >/dev/null && return
  say "installing kubectl (the cluster's own binary) as /usr/local/bin/kubectl"
  local image
  image=$(vigil images kubectl)
  as_root sh -c "docker run --rm --entrypoint cat $image /usr/local/bin/kube > /usr/local/bin/kube.tmp \
    && chmod 755 /usr/local/bin/kube.tmp && mv /usr/local/bin/kube.tmp /usr/local/bin/kube \
    && ln -sf kube /usr/local/bin/kubectl"
}

# cargo-deny, for `test`: licences, bans and sources of the dependency tree
# (deny.toml). Built from source when missing, unoptimised: its release
# profile (fat LTO, one codegen unit) cost about 250 s of CPU, the debug
# build 160 s, and a check of this tree then takes 5 s instead of 2.
ensure_cargo_deny() {
  cargo deny --version >/dev/null 2>&1 && return
  say "installing cargo-deny (cargo install --locked --debug; a few minutes)"
  cargo install --quiet --locked --debug --version 0.20.2 cargo-deny || die "cargo install cargo-deny failed"
}

# What `test` runs cargo through for the workspace's build and tests: clippy's
# lints with warnings denied, on the workspace's own crates, as they compile.
# This is what `cargo clippy` does (clippy-driver as the workspace's rustc
# wrapper, its arguments in CLIPPY_ARGS), with code generated as well, so the
# dependencies compile once instead of once more for a separate check pass
# (about 5 minutes of a cold run's two cores). Empty for the other commands.
linted=()

lint_while_building() {
  local driver canary
  driver="$(rustc --print sysroot)/bin/clippy-driver"
  [[ -x "$driver" ]] || die "clippy is not installed: rustup component add clippy"
  linted=(env RUSTC_WORKSPACE_WRAPPER="$driver" CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")
  # Were the protocol to change, the lints would be skipped in silence: a
  # warn-by-default lint must fail this one-line crate.
  canary=$(mktemp -d)
  echo 'fn main() { let v = vec![1]; if v.len() == 0 { println!("empty") } }' >"$canary/canary.rs"
  if "${linted[@]}" "$driver" "$(rustup which rustc 2>/dev/null || command -v rustc)" --edition 2024 \
      --crate-type bin --emit=metadata -o "$canary/canary.rmeta" "$canary/canary.rs" 2>/dev/null; then
    rm -rf "$canary"
    die "clippy-driver passed a crate with a warning under CLIPPY_ARGS=-D warnings; run \`cargo clippy --workspace --all-targets -- -D warnings\` instead"
  fi
  rm -rf "$canary"
}

setup() {
  # A CI run builds a fresh clone once: incremental artefacts would only
  # cost disk (several GB) and time.
  if [[ "${CI:-}" == true ]]; then export CARGO_INCREMENTAL=0; fi
  ensure_packages
  ensure_dockerd
  ensure_disk
  if (( ${#linted[@]} )); then say "building the vigil workspace, with clippy's lints (warnings denied)"; else say "building the vigil workspace"; fi
  "${linted[@]}" cargo build --quiet --locked --workspace --all-targets
}

case "${1:-up}" in
  up)
    shift || true
    setup
    vigil build
    ensure_kubectl
    vigil up "$@"
    ;;
  test)
    shift
    lint_while_building
    setup
    # The images take most of a cold run, and the checks below leave cores
    # idle at times (links, downloads, apt): build them meanwhile, then
    # follow the build's progress until it ends.
    build_log=$(mktemp --suffix=-vigil-build.log)
    say "building the images in the background (progress after the checks below; log: $build_log)"
    # The binary itself (setup built it), so that stopping it on a failed
    # check stops the build and not only cargo.
    "${CARGO_TARGET_DIR:-target}/debug/vigil" build >"$build_log" 2>&1 &
    build_pid=$!
    trap 'kill "$build_pid" 2>/dev/null || true' EXIT
    say "checking formatting (the lints ran with the build)"
    cargo fmt --all --check
    say "checking the dependency tree's licences, bans and sources (cargo deny)"
    ensure_cargo_deny
    # Advisories are left out: their database is a git repository on GitHub,
    # which this machine cannot reach (deny.toml says more).
    cargo deny --locked check --hide-inclusion-graph bans licenses sources
    # The end-to-end checks open the addresses `vigil up` prints in a real browser.
    command -v chromium >/dev/null || { say "installing chromium from Debian"; apt_install chromium; }
    say "the image build (log: $build_log)"
    tail -n +1 -f --pid="$build_pid" "$build_log" >&2
    wait "$build_pid" || die "vigil build failed (its output above, and in $build_log)"
    say "running the tests (unit, then end to end on a real cluster)"
    # The end-to-end checks run only when asked (a plain `cargo test` lists
    # them as ignored); here they must all run, or the test command fails.
    report=$(mktemp)
    trap 'rm -f "$report"' EXIT  # (the build has ended)
    VIGIL_E2E=1 VIGIL_E2E_REPORT="$report" "${linted[@]}" cargo test --locked --workspace -- --nocapture "$@"
    python3 - "$report" <<'PY' || die "the end-to-end checks did not all run (report: $(cat "$report" 2>/dev/null))"
import json, sys
r = json.load(open(sys.argv[1]))
ran = r["passed"] + r["failed"]
print(f"end to end: {r['passed']} of {r['checks']} checks passed, {r['failed']} failed, {r['ignored']} ignored, {r['filtered_out']} filtered out")
sys.exit(0 if r["checks"] > 0 and ran + r["filtered_out"] == r["checks"] and r["failed"] == 0 else 1)
PY
    ;;
  bench)
    shift
    setup
    command -v wrk >/dev/null || apt_install wrk
    which="${1:-all}"; shift || true
    if [[ "$which" == all || "$which" == cluster ]]; then
      cargo bench --locked -p vigil --bench cluster -- "$@"
    fi
    if [[ "$which" == all || "$which" == web ]]; then
      cargo bench --locked -p vigil-e2e --bench web_vs_seed -- "$@"
    fi
    if [[ "$which" == all || "$which" == exporter ]]; then
      cargo bench --locked -p vigil-e2e --bench exporter_vs_cadvisor -- "$@"
    fi
    if [[ "$which" == all || "$which" == drill ]]; then
      command -v stress-ng >/dev/null || apt_install stress-ng
      cargo bench --locked -p vigil-e2e --bench drill -- "$@"
    fi
    if [[ "$which" == all || "$which" == alerter-memory ]]; then
      cargo bench --locked -p vigil-e2e --bench alerter_memory -- "$@"
    fi
    if [[ "$which" == all || "$which" == ssh ]]; then
      cargo bench --locked -p vigil-e2e --bench ssh_up -- "$@"
    fi
    if [[ "$which" == all || "$which" == logs ]]; then
      cargo bench --locked -p vigil-e2e --bench log_pipeline -- "$@"
    fi
    ;;
  *)
    ensure_dockerd
    vigil "$@"
    ;;
esac
