#!/usr/bin/env bash
# Tools the tests compare with or check with, built from Go modules at pinned versions and cached
# under target/go-tools/<tool>/ by a digest of what they are built from (Go version, platform, module
# and version, flags), the way scripts/control-plane.sh builds the control plane (docs/testing.md).
#
#   scripts/go-tools.sh build helm       build (or reuse) helm (helm.sh/helm/v4); prints its path
#   scripts/go-tools.sh build promtool   build (or reuse) promtool (github.com/prometheus/prometheus); prints its path
#   scripts/go-tools.sh build gitea      build (or reuse) Gitea (code.gitea.io/gitea, SQLite); prints its path.
#                                        Its source tree stays beside it (bin/../src): Gitea built without
#                                        `bindata` reads its locales and templates from there at run time
#   scripts/go-tools.sh path TOOL        the cached binary's path, if it is built and current (exit 5 otherwise)
#
# Exit codes: 0 done; 2 usage; 3 Go not found; 4 the module cannot be downloaded; 5 not built (path);
# 6 the build failed. Where it cannot work the script says why in one line beginning with "go-tools:".
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT_ROOT="${CARGO_TARGET_DIR:-$ROOT/target}/go-tools"

# module@version and the package of the command, per tool. The versions are the approved ones
# (helm.sh/helm/v3 v3.22.0 is served but not approved).
package_of() {
  case "$1" in
    helm) echo "helm.sh/helm/v4/cmd/helm@v4.3.2" ;;
    promtool) echo "github.com/prometheus/prometheus/cmd/promtool@v0.316.0" ;;
    # The module's go.mod names it gitea.dev and carries replace directives, so it is built in a copy
    # of its source (go install module@version refuses both). Tags: SQLite (cgo) for the tests' one-file
    # database.
    gitea) echo "code.gitea.io/gitea@v1.27.3" ;;
    *)
      echo "usage: scripts/go-tools.sh build|path helm|promtool|gitea" >&2
      exit 2
      ;;
  esac
}

GO_BUILD_FLAGS=(-trimpath "-ldflags=-s -w")
GITEA_TAGS="sqlite sqlite_unlock_notify"

need_go() {
  command -v go >/dev/null 2>&1 || {
    echo "go-tools: Go is not installed (need Go on PATH); $1 cannot be built" >&2
    exit 3
  }
}

digest_of() {
  {
    go env GOVERSION GOOS GOARCH
    printf '%s\n' "$1" "${GO_BUILD_FLAGS[@]}"
    [ "$1" != "$(package_of gitea)" ] || printf 'tags %s\n' "$GITEA_TAGS"
  } | sha256sum | cut -d' ' -f1
}

current() {
  local tool="$1" bin="$OUT_ROOT/$1/bin"
  [ -x "$bin/$tool" ] && [ -f "$bin/.digest" ] && [ "$(cat "$bin/.digest")" = "$(digest_of "$(package_of "$tool")")" ]
}

build() {
  local tool="$1" package out bin
  package="$(package_of "$tool")"
  need_go "$tool"
  out="$OUT_ROOT/$tool"
  bin="$out/bin"
  if current "$tool"; then
    echo "$bin/$tool"
    return 0
  fi
  mkdir -p "$bin"
  rm -f "$bin/.digest"
  # GOFLAGS from the environment (e.g. -mod=vendor) would change what is built.
  export GOFLAGS=-buildvcs=false
  local module="${package%%@*}"
  module="${module%/cmd/*}"
  if ! go mod download -x "$module@${package##*@}" >"$out/download.log" 2>&1; then
    echo "go-tools: cannot download $module@${package##*@} (is the Go module proxy reachable? $(go env GOPROXY)); see $out/download.log" >&2
    exit 4
  fi
  echo "go-tools: building $tool from $package" >&2
  local start=$SECONDS
  if [ "$tool" = gitea ]; then
    if ! build_in_source "$module@${package##*@}" "$out" >"$out/build.log" 2>&1; then
      echo "go-tools: the Go build of $tool failed; see $out/build.log" >&2
      tail -20 "$out/build.log" >&2
      exit 6
    fi
  elif ! GOBIN="$bin" go install "${GO_BUILD_FLAGS[@]}" "$package" >"$out/build.log" 2>&1; then
    echo "go-tools: the Go build of $tool failed; see $out/build.log" >&2
    tail -20 "$out/build.log" >&2
    exit 6
  fi
  digest_of "$package" >"$bin/.digest"
  echo "go-tools: built $tool in $((SECONDS - start)) s" >&2
  echo "$bin/$tool"
}

# Builds module@version ($1) from a writable copy of its source in $2/src into $2/bin/gitea.
build_in_source() {
  local dir
  dir="$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -n "$dir" ] || return 1
  rm -rf "$2/src"
  cp -r "$dir" "$2/src"
  chmod -R u+w "$2/src"
  (cd "$2/src" && CGO_ENABLED=1 go build "${GO_BUILD_FLAGS[@]}" -tags "$GITEA_TAGS" -o "$2/bin/gitea" .)
}

case "${1:-}" in
  build) build "${2:-}" ;;
  path)
    package_of "${2:-}" >/dev/null
    need_go "$2"
    if current "$2"; then
      echo "$OUT_ROOT/$2/bin/$2"
    else
      echo "go-tools: $2 is not built (scripts/go-tools.sh build $2)" >&2
      exit 5
    fi
    ;;
  *)
    echo "usage: scripts/go-tools.sh build|path helm|promtool|gitea" >&2
    exit 2
    ;;
esac
