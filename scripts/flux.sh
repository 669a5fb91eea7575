#!/usr/bin/env bash
# The consumers of what the operator writes, for the real-server tests (docs/testing.md): Flux
# source-controller and helm-controller, and kwok (a simulated node whose pods complete), built from
# Go modules (tests/flux/source-controller, tests/flux/helm-controller, tests/kwok), cached under
# target/flux/bin by a digest of what they are built from, like scripts/control-plane.sh builds the
# control plane. The tests start and stop the binaries themselves (each in its own process group).
#
#   scripts/flux.sh build   build (or reuse) target/flux/bin/{source-controller,helm-controller,kwok},
#                           copy the controllers' CRDs (from the same modules) to target/flux/crds
#                           and kwok's fast stages to target/flux/kwok-stages;
#                           the last line is VWS_TEST_FLUX_BIN=<bin directory>
#
# Exit codes: 0 done; 2 usage; 3 Go 1.26 not found; 4 Go modules cannot be downloaded (no module
# proxy); 6 the build failed. Where it cannot work the script says why in one line beginning with "flux:".
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/flux"
BIN="$OUT/bin"
GO_BUILD_FLAGS=(-trimpath "-ldflags=-s -w")
# name:module directory:package
TARGETS=(
  "source-controller:tests/flux/source-controller:github.com/fluxcd/source-controller"
  "helm-controller:tests/flux/helm-controller:github.com/fluxcd/helm-controller"
  "kwok:tests/kwok:sigs.k8s.io/kwok/cmd/kwok"
)

say() { echo "flux: $*" >&2; }

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    say "Go is not installed (need Go 1.26.x on PATH); the Flux and kwok tests are skipped"
    exit 3
  fi
  case "$(go env GOVERSION 2>/dev/null || true)" in
    go1.26 | go1.26.*) ;;
    *)
      say "Go is $(go env GOVERSION), need go1.26.x; the Flux and kwok tests are skipped"
      exit 3
      ;;
  esac
}

# A digest of one module: its go.mod/go.sum (the sources are the modules they pin), Go, flags.
module_digest() {
  {
    go env GOVERSION GOOS GOARCH
    printf '%s\n' "${GO_BUILD_FLAGS[@]}"
    (cd "$ROOT/$1" && sha256sum go.mod go.sum)
  } | sha256sum | cut -d' ' -f1
}

build_one() {
  local name="$1" dir="$2" pkg="$3" digest start
  digest="$(module_digest "$dir")"
  if [ -x "$BIN/$name" ] && [ "$(cat "$BIN/$name.digest" 2>/dev/null)" = "$digest" ]; then
    return 0
  fi
  if ! (cd "$ROOT/$dir" && go mod download) >"$OUT/$name.download.log" 2>&1; then
    say "cannot download the Go modules of $name (is the Go module proxy reachable? $(go env GOPROXY)); see $OUT/$name.download.log; the Flux and kwok tests are skipped"
    exit 4
  fi
  say "building $name from Go modules (the first build takes minutes)"
  start=$SECONDS
  if ! (cd "$ROOT/$dir" && go build "${GO_BUILD_FLAGS[@]}" -o "$BIN/$name.new" "$pkg") >"$OUT/$name.build.log" 2>&1; then
    say "the Go build of $name failed; see $OUT/$name.build.log"
    tail -20 "$OUT/$name.build.log" >&2
    exit 6
  fi
  mv "$BIN/$name.new" "$BIN/$name"
  echo "$digest" >"$BIN/$name.digest"
  say "built $name in $((SECONDS - start)) s"
}

# The CRDs of the Flux controllers, from the very modules built (the source-controller serves
# GitRepository, Bucket and ExternalArtifact too, and will not start without their CRDs).
copy_crds() {
  mkdir -p "$OUT/crds"
  local module dir
  for module in tests/flux/source-controller:github.com/fluxcd/source-controller \
    tests/flux/helm-controller:github.com/fluxcd/helm-controller; do
    dir="$(cd "$ROOT/${module%%:*}" && go list -m -f '{{.Dir}}' "${module#*:}")"
    cp "$dir"/config/crd/bases/*.yaml "$OUT/crds/"
    chmod u+w "$OUT"/crds/*.yaml
  done
  # kwok's own "fast" stages (a node that becomes Ready, pods that run, Job pods that complete).
  mkdir -p "$OUT/kwok-stages"
  dir="$(cd "$ROOT/tests/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  local stage
  for stage in "$dir"/kustomize/stage/node/fast/*.yaml "$dir"/kustomize/stage/pod/fast/*.yaml; do
    [ "$(basename "$stage")" = kustomization.yaml ] || cp -f "$stage" "$OUT/kwok-stages/"
  done
  rm -f "$OUT"/kwok-stages/kustomization.yaml
  chmod u+w "$OUT"/kwok-stages/*.yaml
}

build() {
  need_go
  mkdir -p "$BIN"
  export GOFLAGS=-buildvcs=false
  local t
  for t in "${TARGETS[@]}"; do
    IFS=: read -r name dir pkg <<<"$t"
    build_one "$name" "$dir" "$pkg"
  done
  copy_crds
  echo "VWS_TEST_FLUX_BIN=$BIN"
}

case "${1:-}" in
  build) build ;;
  *)
    echo "usage: scripts/flux.sh build" >&2
    exit 2
    ;;
esac
