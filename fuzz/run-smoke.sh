#!/usr/bin/env bash
# Runs every fuzz target for a short smoke time (default 30 s each). Longer: SECONDS_PER_TARGET=3600.
# cargo-fuzz needs nightly-only compiler flags; on a stable-only machine RUSTC_BOOTSTRAP=1 unlocks them.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
seconds=${SECONDS_PER_TARGET:-30}
for target in $(cargo fuzz list); do
  echo "== $target (${seconds}s)"
  # fuzz/corpus/<target> is the (ignored) working corpus; fuzz/seeds/<target> the committed seeds.
  mkdir -p "corpus/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
