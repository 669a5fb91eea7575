#!/usr/bin/env bash
# The scale bench of issue 14 against the real control plane, in one command:
#
#   scripts/scale.sh [SIZES]        # SIZES: comma-separated instance counts, default 1000,5000,10000
#
# Without a running control plane of this checkout (scripts/control-plane.sh), each size gets a fresh
# one, started before and stopped after it: every size then meets an empty etcd, and nothing waits
# for the last size's thousands of namespaces to be deleted. With one running, every size uses it
# (and waits for the last size's namespaces to go). Builds the operator in release mode and runs the
# ignored test `control_plane::scale::scale_bench` (tests/it/control_plane/scale.rs) once per size;
# the rows are printed and written to target/scale.md. VWS_SCALE_REST_SECONDS (default 30) is how
# long the long-running `run` is watched at rest after every child exists. VWS_SCALE_BASELINE_BIN (an
# operator binary built from another commit) times that binary's fresh no-op pass after each of
# ours on the same estate and prints both medians. VWS_SCALE_WITHOUT_WEBHOOK=1 runs the first apply with
# the admission webhook's configuration removed (put back after it): the webhook's share of the
# Write step. VWS_SCALE_CARGO_FLAGS adds cargo flags to the build (`--features system-allocator`:
# libc's malloc, which heaptrack sees, for VWS_SCALE_RUN_WRAPPER="heaptrack -o FILE");
# VWS_SCALE_RUN_STOP_SIGNAL=KILL stops the wrapped operator without freeing, so heaptrack's "leaked"
# is what it held at rest. The operator is the binary the image ships (profile `deploy`, built here;
# VWS_SCALE_PROFILE=release for the test build's), run with deploy/'s allocator settings. Method and results:
# docs/performance.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SIZES="${1:-1000,5000,10000}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET/scale.md"
owned=0
if ! scripts/control-plane.sh env >/dev/null 2>&1; then
  owned=1
fi
stop() { if [ "$owned" = 1 ]; then scripts/control-plane.sh stop >/dev/null 2>&1 || true; fi; }
trap stop EXIT
# Build first, and run the binary built here: no size's control plane idles through a compile, and
# a source edited during a long run does not change what the later sizes measure.
# shellcheck disable=SC2086 # the flags are words
exe="$(cargo test --release --test it --no-run --message-format=json ${VWS_SCALE_CARGO_FLAGS:-} | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "it" and m.get("executable"):
        print(m["executable"])
' | tail -1)"
[ -x "$exe" ] || { echo "scale: the test binary was not built" >&2; exit 1; }
# The operator the bench runs: the binary the image ships, built with the `deploy` profile (fat LTO;
# minutes the first time). VWS_SCALE_PROFILE=release runs the test build's instead.
profile="${VWS_SCALE_PROFILE:-deploy}"
if [ "$profile" != release ]; then
  # shellcheck disable=SC2086 # the flags are words
  cargo build --profile "$profile" --bin vworkspace-operator ${VWS_SCALE_CARGO_FLAGS:-}
  export VWS_SCALE_OPERATOR_BIN="$TARGET/$profile/vworkspace-operator"
fi
run_sizes() {
  local sizes="$1" out="$2" envs kubeconfig audit
  envs="$(scripts/control-plane.sh env)"
  kubeconfig="$(sed -n 's/^KUBECONFIG=//p' <<<"$envs")"
  audit="$(sed -n 's/^VWS_CONTROL_PLANE_AUDIT_LOG=//p' <<<"$envs")"
  VWS_TEST_KUBECONFIG="$kubeconfig" VWS_TEST_AUDIT_LOG="$audit" VWS_SCALE_SIZES="$sizes" \
    VWS_SCALE_OUT="$out" \
    "$exe" control_plane::scale::scale_bench --ignored --nocapture --exact
}
if [ "$owned" = 0 ]; then
  run_sizes "$SIZES" "$OUT"
  exit 0
fi
: >"$OUT"
IFS=',' read -ra each <<<"$SIZES"
for size in "${each[@]}"; do
  scripts/control-plane.sh start >/dev/null
  run_sizes "$size" "$OUT.$size"
  scripts/control-plane.sh stop >/dev/null
  if [ -s "$OUT" ]; then tail -n +3 "$OUT.$size" >>"$OUT"; else cat "$OUT.$size" >>"$OUT"; fi
  rm -f "$OUT.$size"
done
echo
cat "$OUT"
