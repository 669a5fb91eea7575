#!/usr/bin/env bash
# The scale bench of issue 14 against the real control plane, in one command:
#
#   scripts/scale.sh [SIZES]        # SIZES: comma-separated instance counts, default 1000,5000,10000
#
# Uses the control plane of this checkout if one runs (scripts/control-plane.sh), else starts one and
# stops it at the end. Builds the operator in release mode and runs the ignored test
# `control_plane::scale::scale_bench` (tests/it/control_plane/scale.rs), which prints a table
# (also written to target/scale.md). VWS_SCALE_REST_SECONDS (default 30) is how long the long-running
# `run` is watched at rest after every child exists. Method and results: docs/performance.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SIZES="${1:-1000,5000,10000}"
started=0
if ! envs="$(scripts/control-plane.sh env 2>/dev/null)"; then
  scripts/control-plane.sh start
  started=1
  envs="$(scripts/control-plane.sh env)"
fi
stop() { if [ "$started" = 1 ]; then scripts/control-plane.sh stop; fi; }
trap stop EXIT
kubeconfig="$(sed -n 's/^KUBECONFIG=//p' <<<"$envs")"
audit="$(sed -n 's/^VWS_CONTROL_PLANE_AUDIT_LOG=//p' <<<"$envs")"
VWS_TEST_KUBECONFIG="$kubeconfig" VWS_TEST_AUDIT_LOG="$audit" VWS_SCALE_SIZES="$SIZES" \
  VWS_SCALE_OUT="${CARGO_TARGET_DIR:-$ROOT/target}/scale.md" \
  cargo test --release --test it control_plane::scale::scale_bench -- --ignored --nocapture --exact
