#!/usr/bin/env bash
# The operator's SBOM: CycloneDX 1.5 JSON of the vworkspace-operator binary's dependency graph as
# Cargo.lock resolves it, written by cargo-cyclonedx (crates.io, CycloneDX's own Rust tool) at a pinned
# version. The tool is installed with `cargo install --locked` into target/cargo-tools/ and reused
# while the digest of its version, the Rust toolchain and the platform is unchanged (the way
# scripts/go-tools.sh caches the Go tools). docs/operating.md, "The image", and docs/testing.md.
#
#   scripts/sbom.sh tool                   install (or reuse) cargo-cyclonedx; prints its path
#   scripts/sbom.sh generate OUT [TARGET]  write the SBOM of the binary built for TARGET (default: the
#                                          host's triple) to OUT
#
# The release workflow (examples/ci/release.yml), the image (deploy/Dockerfile) and the test that
# checks the SBOM (tests/it/sbom.rs, run by scripts/test.sh) all call `scripts/sbom.sh generate`.
# VWS_CARGO_CYCLONEDX=<path> uses that binary instead of installing one.
#
# Exit codes: 0 done; 2 usage; 3 cargo not found; 4 crates.io cannot be reached; 6 the install failed;
# 7 cargo-cyclonedx failed. Where it cannot work the script says why in one line beginning "sbom:".
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOL_VERSION=0.5.9
OUT_ROOT="${CARGO_TARGET_DIR:-$ROOT/target}/cargo-tools/cargo-cyclonedx"
# The SBOM names this package's binary; the other workspace members are its libraries (or dev-only).
PACKAGE=vworkspace-operator

usage() {
  echo "usage: scripts/sbom.sh tool | generate OUT [TARGET]" >&2
  exit 2
}

need_cargo() {
  command -v cargo >/dev/null 2>&1 || {
    echo "sbom: cargo is not installed (need cargo on PATH)" >&2
    exit 3
  }
}

digest() {
  {
    echo "cargo-cyclonedx@$TOOL_VERSION"
    rustc -vV
  } | sha256sum | cut -d' ' -f1
}

current() {
  local bin="$OUT_ROOT/bin"
  [ -x "$bin/cargo-cyclonedx" ] && [ -f "$bin/.digest" ] && [ "$(cat "$bin/.digest")" = "$(digest)" ]
}

install_tool() {
  need_cargo
  if [ -n "${VWS_CARGO_CYCLONEDX:-}" ]; then
    echo "$VWS_CARGO_CYCLONEDX"
    return 0
  fi
  if current; then
    echo "$OUT_ROOT/bin/cargo-cyclonedx"
    return 0
  fi
  mkdir -p "$OUT_ROOT"
  rm -f "$OUT_ROOT/bin/.digest"
  echo "sbom: installing cargo-cyclonedx $TOOL_VERSION into $OUT_ROOT" >&2
  local start=$SECONDS
  # Its own build directory (not this workspace's target/), deleted afterwards; --locked builds the
  # tool with the Cargo.lock it was published with.
  local build_dir
  build_dir="$(mktemp -d)"
  if ! CARGO_TARGET_DIR="$build_dir" CARGO_INCREMENTAL=0 cargo install --locked --quiet \
    --root "$OUT_ROOT" --version "=$TOOL_VERSION" cargo-cyclonedx >"$OUT_ROOT/install.log" 2>&1; then
    rm -rf "$build_dir"
    if grep -qiE 'failed to (download|query|update|fetch|get)|could not resolve|network|timed out' "$OUT_ROOT/install.log"; then
      echo "sbom: cannot download cargo-cyclonedx $TOOL_VERSION from crates.io; see $OUT_ROOT/install.log" >&2
      exit 4
    fi
    echo "sbom: cargo install cargo-cyclonedx $TOOL_VERSION failed; see $OUT_ROOT/install.log" >&2
    tail -20 "$OUT_ROOT/install.log" >&2
    exit 6
  fi
  rm -rf "$build_dir"
  digest >"$OUT_ROOT/bin/.digest"
  echo "sbom: installed cargo-cyclonedx $TOOL_VERSION in $((SECONDS - start)) s" >&2
  echo "$OUT_ROOT/bin/cargo-cyclonedx"
}

generate() {
  local out="$1" target="${2:-}" tool file log
  [ -n "$out" ] || usage
  tool="$(install_tool)"
  [ -n "$target" ] || target="$(rustc -vV | sed -n 's/^host: //p')"
  # cargo-cyclonedx reads `cargo metadata` and writes <package>_bin.cdx.json next to the package's
  # Cargo.toml (it has no output path): one run at a time per checkout, the file moved to OUT.
  mkdir -p "$OUT_ROOT"
  exec 9>"$OUT_ROOT/generate.lock"
  flock 9
  file="$ROOT/${PACKAGE}_bin.cdx.json"
  log="$OUT_ROOT/generate.log"
  rm -f "$file"
  # --describe binaries: the SBOM of the vworkspace-operator binary (normal and build dependencies
  # of the target's resolved graph; dev-dependencies are not in it). SOURCE_DATE_EPOCH, when set,
  # is the SBOM's timestamp.
  if ! (cd "$ROOT" && "$tool" cyclonedx --manifest-path "$ROOT/Cargo.toml" --format json \
    --spec-version 1.5 --describe binaries --target "$target" >"$log" 2>&1); then
    echo "sbom: cargo-cyclonedx failed:" >&2
    cat "$log" >&2
    rm -f "$file"
    exit 7
  fi
  mkdir -p "$(dirname "$out")"
  mv "$file" "$out"
  echo "sbom: wrote $out ($target)" >&2
}

case "${1:-}" in
  tool) install_tool ;;
  generate) generate "${2:-}" "${3:-}" ;;
  *) usage ;;
esac
