#!/usr/bin/env bash
# The project's test command (README.md). Installs what the tests need when it is missing, then runs
# the formatter check, clippy with warnings denied, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v age >/dev/null 2>&1 || need+=(age)
command -v age-keygen >/dev/null 2>&1 || need+=(age)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v git >/dev/null 2>&1 || need+=(git)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The SSH source tests start a real OpenSSH server on loopback (tests/it/ssh_source.rs).
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v jq >/dev/null 2>&1 || need+=(jq)
# Gitea (scripts/go-tools.sh build gitea) links SQLite through cgo.
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test tools: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# A full disk shows up as a linker's "no space left on device" deep in some build; say it first.
# A cold run writes about 21 GiB (target/ 5, Go's build cache 9, Go's module cache 6, Cargo's
# registry 0.5: docs/testing.md, "Disk"); with the Go tools and caches in place, about 5.
free_mib=$(df -Pm . | awk 'NR == 2 { print $4 }')
if [ -n "$free_mib" ] && [ "$free_mib" -lt 8192 ]; then
  echo "test.sh: only $free_mib MiB free on the disk of $(pwd); a cold run writes about 21 GiB, a warm one about 5 GiB (docs/testing.md, \"Disk\")" >&2
fi

cargo fmt --all -- --check
# The core crate links no Kubernetes client, async runtime or HTTP stack (tests/it/layers.rs checks
# its manifest and that no file or folder imports in a cycle; this checks what cargo resolves).
heavy=$(cargo tree --locked -p vworkspace-core -e normal --prefix none | awk '{print $1}' | sort -u |
  grep -E '^(kube|kube-client|kube-runtime|tokio|hyper|hyper-util|reqwest)$' || true)
if [ -n "$heavy" ]; then
  echo "vworkspace-core depends on: $heavy" >&2
  exit 1
fi
cargo clippy --workspace --all-targets --locked -- -D warnings
# The benches run once at a smoke size (they cannot rot), then every test; the closing line sums up.
cargo test --workspace --locked --benches
log=$(mktemp)
cp_err=$(mktemp)
cp_started=""
cleanup() {
  rm -f "$log" "$cp_err" "$cp_err.env"
  if [ -n "$cp_started" ]; then ./scripts/control-plane.sh stop || true; fi
}
trap cleanup EXIT

# Tools the tests compare with or check with, built from Go modules on first use (cached under
# target/go-tools/ by scripts/go-tools.sh): helm (tests/it/chart.rs renders the chart with it),
# promtool (tests/it/monitoring.rs checks and unit-tests the alert rules) and Gitea (the real forge of
# tests/it/control_plane/gitea.rs; cgo, so gcc). Set VWS_HELM/VWS_PROMTOOL/VWS_GITEA to use others.
# Without Go or the Go module proxy those tests are skipped with the script's one-line reason; a failed
# build fails the run.
for tool in helm promtool gitea; do
  var="VWS_$(echo "$tool" | tr '[:lower:]' '[:upper:]')"
  [ -z "${!var:-}" ] || continue
  set +e
  path="$(./scripts/go-tools.sh build "$tool" 2>"$cp_err")"
  rc=$?
  set -e
  cat "$cp_err" >&2
  if [ "$rc" -eq 0 ]; then
    export "$var=$path"
  elif [ "$rc" -eq 3 ] || [ "$rc" -eq 4 ]; then
    export "${var}_SKIP=$(grep '^go-tools:' "$cp_err" | tail -1)"
  else
    echo "scripts/go-tools.sh build $tool failed (exit $rc)" >&2
    exit 1
  fi
done

# The operator's SBOM (tests/it/sbom.rs): cargo-cyclonedx at the version scripts/sbom.sh pins,
# installed from crates.io on first use and cached under target/cargo-tools/ (about 3.5 CPU-minutes
# cold). Without cargo's registry the SBOM tests are skipped with the script's one-line reason; a
# failed install fails the run.
if [ -z "${VWS_CARGO_CYCLONEDX:-}" ]; then
  set +e
  path="$(./scripts/sbom.sh tool 2>"$cp_err")"
  rc=$?
  set -e
  cat "$cp_err" >&2
  if [ "$rc" -eq 0 ]; then
    export VWS_CARGO_CYCLONEDX="$path"
  elif [ "$rc" -eq 3 ] || [ "$rc" -eq 4 ]; then
    VWS_CARGO_CYCLONEDX_SKIP="$(grep '^sbom:' "$cp_err" | tail -1)"
    export VWS_CARGO_CYCLONEDX_SKIP
  else
    echo "scripts/sbom.sh tool failed (exit $rc)" >&2
    exit 1
  fi
fi

# The real-server tests (tests/it/control_plane.rs) need a throwaway control plane: built from Go modules
# on first use (cached under target/control-plane/), started here, stopped on exit. One already
# started by hand (scripts/control-plane.sh start) is used as it is. Without Go 1.26 or the Go module
# proxy they are skipped with the script's one-line reason; any other failure fails the run.
if [ -z "${VWS_TEST_KUBECONFIG:-}" ]; then
  set +e
  ./scripts/control-plane.sh env >"$cp_err.env" 2>/dev/null
  running=$?
  if [ "$running" -ne 0 ]; then
    ./scripts/control-plane.sh start >"$cp_err.env" 2>"$cp_err"
    rc=$?
  else
    rc=0
  fi
  set -e
  cat "$cp_err" >&2
  if [ "$rc" -eq 0 ]; then
    [ "$running" -eq 0 ] || cp_started=1
    VWS_TEST_KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$cp_err.env")"
    VWS_TEST_AUDIT_LOG="$(sed -n 's/^VWS_CONTROL_PLANE_AUDIT_LOG=//p' "$cp_err.env")"
    export VWS_TEST_KUBECONFIG VWS_TEST_AUDIT_LOG
  elif [ "$rc" -eq 3 ] || [ "$rc" -eq 4 ]; then
    VWS_TEST_CONTROL_PLANE_SKIP="$(grep '^control-plane:' "$cp_err" | tail -1)"
    export VWS_TEST_CONTROL_PLANE_SKIP
    echo "real-server tests will be skipped: $VWS_TEST_CONTROL_PLANE_SKIP"
  else
    echo "scripts/control-plane.sh start failed (exit $rc)" >&2
    exit 1
  fi
  rm -f "$cp_err.env"
fi

# The consumers of what the operator writes (tests/it/control_plane/delivery.rs, operations_run.rs):
# Flux source-controller and helm-controller, and kwok, built from Go modules on first use (cached
# under target/flux/), started and stopped by the tests themselves. Without Go 1.26 or the module
# proxy those tests are skipped with the script's one-line reason; a failed build fails the run.
if [ -z "${VWS_TEST_FLUX_BIN:-}" ]; then
  set +e
  flux_out="$(./scripts/flux.sh build 2>"$cp_err")"
  rc=$?
  set -e
  cat "$cp_err" >&2
  if [ "$rc" -eq 0 ]; then
    VWS_TEST_FLUX_BIN="$(echo "$flux_out" | sed -n 's/^VWS_TEST_FLUX_BIN=//p')"
    export VWS_TEST_FLUX_BIN
  elif [ "$rc" -eq 3 ] || [ "$rc" -eq 4 ]; then
    VWS_TEST_FLUX_SKIP="$(grep '^flux:' "$cp_err" | tail -1)"
    export VWS_TEST_FLUX_SKIP
    echo "Flux and kwok tests will be skipped: $VWS_TEST_FLUX_SKIP"
  else
    echo "scripts/flux.sh build failed (exit $rc)" >&2
    exit 1
  fi
fi

set +e
cargo test --workspace --locked --lib --bins --tests "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# Stopped before the summary, so that the closing line stays the last one.
if [ -n "$cp_started" ]; then
  ./scripts/control-plane.sh stop
  cp_started=""
fi
if [ "$rc" -ne 0 ]; then
  # A failing test's panic message sits above its backtrace and the other tests' output, where a
  # log cut to its head and tail loses it: repeat each message (at most 12 lines) last.
  echo "why each failing test failed:"
  awk '/^---- .* stdout ----$/ { name = $2; n = 0; next }
       /panicked at / && name != "" { print "  " name ": " $0; n = 12; next }
       n > 0 && /^(stack backtrace:|note: |   [0-9]+: )/ { n = 0 }
       n > 0 { print "    " substr($0, 1, 300); n-- }' "$log"
  exit "$rc"
fi
# A test that could not run says so in a line "SKIPPED <test>: <why>"; it still counts as passed for
# cargo, so the closing line subtracts it and shows it.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i + 1) ~ /^passed/) p += $i; if ($(i + 1) ~ /^failed/) f += $i } }
     /^SKIPPED / { s++ }
     END { if (s > 0) printf "tests: %d passed, %d failed, %d skipped\n", p - s, f, s; else printf "tests: %d passed, %d failed\n", p, f }' "$log"
