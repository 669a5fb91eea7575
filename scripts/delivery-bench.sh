#!/usr/bin/env bash
# The delivery bench of issue 22 against the real Flux, in one command:
#
#   scripts/delivery-bench.sh [ROUNDS]     # signed releases measured, default 7
#
# Builds (or reuses) the control plane and the Flux controllers (scripts/control-plane.sh,
# scripts/flux.sh), starts a control plane unless this checkout has one running (and then stops it),
# and runs the ignored test `control_plane::delivery_bench::delivery_bench`
# (tests/it/control_plane/delivery_bench.rs), which prints one line per release and the medians.
# Method and results: docs/testing.md ("The delivery bench").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
owned=0
if ! scripts/control-plane.sh env >/dev/null 2>&1; then
  owned=1
fi
stop() { if [ "$owned" = 1 ]; then scripts/control-plane.sh stop >/dev/null 2>&1 || true; fi; }
trap stop EXIT
flux_bin="$(scripts/flux.sh build | sed -n 's/^VWS_TEST_FLUX_BIN=//p')"
cargo test --test it --no-run
if [ "$owned" = 1 ]; then
  scripts/control-plane.sh start >/dev/null
fi
envs="$(scripts/control-plane.sh env)"
VWS_TEST_KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' <<<"$envs")" \
  VWS_TEST_AUDIT_LOG="$(sed -n 's/^VWS_CONTROL_PLANE_AUDIT_LOG=//p' <<<"$envs")" \
  VWS_TEST_FLUX_BIN="$flux_bin" VWS_DELIVERY_BENCH_ROUNDS="${1:-7}" \
  cargo test --test it control_plane::delivery_bench::delivery_bench -- --ignored --nocapture --exact
