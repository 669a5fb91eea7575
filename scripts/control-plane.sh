#!/usr/bin/env bash
# A throwaway Kubernetes control plane for the real-server tests and for testing by hand
# (docs/testing.md): etcd + kube-apiserver + kube-controller-manager, built from Go modules
# (tests/control-plane/), listening on free loopback ports, with their own CA and certificates,
# RBAC, the admission plugins (ValidatingAdmissionPolicy and the webhooks), a ServiceAccount issuer
# and signing key (TokenRequest works) and an audit log.
#
#   scripts/control-plane.sh build   build (or reuse) target/control-plane/bin/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler}
#                                    (kube-scheduler is not started here: the tests that run pods on a kwok node start it)
#   scripts/control-plane.sh start   build, start, wait for /readyz; the last line is KUBECONFIG=<admin kubeconfig>
#   scripts/control-plane.sh env     the running one's variables (KUBECONFIG, VWS_CONTROL_PLANE_AUDIT_LOG, ...)
#   scripts/control-plane.sh stop    stop exactly the processes `start` started (by their process group) and delete its data
#   scripts/control-plane.sh restart-apiserver | restart-etcd
#                                    stop one component of the running one and start it again on the same
#                                    ports and data (the fault tests, tests/it/control_plane/faults.rs)
#
# Exit codes: 0 done; 1 failed; 2 usage; 3 Go 1.26 not found; 4 Go modules cannot be downloaded (no module
# proxy); 5 already running (start) or not running (env); 6 the build failed. Where it cannot work the
# script says why in one line beginning with "control-plane:".
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/tests/control-plane"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/control-plane"
BIN="$OUT/bin"
STATE="$OUT/current" # the running instance's directory (one per checkout)
# The version the binaries report (kubectl and clients read it): the k8s.io/kubernetes module's.
KUBE_VERSION="$(sed -n 's|^[[:space:]]*k8s.io/kubernetes \(v[0-9][^ ]*\)$|\1|p' "$SRC/go.mod" | head -1)"
KUBE_MINOR="$(echo "$KUBE_VERSION" | cut -d. -f2)"
V=k8s.io/component-base/version
GO_BUILD_FLAGS=(-trimpath "-ldflags=-s -w -X $V.gitVersion=$KUBE_VERSION -X $V.gitMajor=1 -X $V.gitMinor=$KUBE_MINOR -X $V.gitTreeState=clean -X $V.buildDate=1970-01-01T00:00:00Z")

say() { echo "control-plane: $*" >&2; }

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "control-plane: Go is not installed (need Go 1.26.x on PATH); the real-server tests are skipped" >&2
    exit 3
  fi
  local v
  v="$(go env GOVERSION 2>/dev/null || true)"
  case "$v" in
    go1.26 | go1.26.*) ;;
    *)
      if [ "${VWS_CONTROL_PLANE_ANY_GO:-}" != 1 ]; then
        echo "control-plane: Go is $v, need go1.26.x (an apiserver built with Go 1.27 served a broken OpenAPI document; VWS_CONTROL_PLANE_ANY_GO=1 overrides); the real-server tests are skipped" >&2
        exit 3
      fi
      ;;
  esac
}

# A digest of everything the binaries are built from: sources, go.mod/go.sum, Go version, flags.
source_digest() {
  {
    go env GOVERSION GOOS GOARCH
    printf '%s\n' "${GO_BUILD_FLAGS[@]}"
    (cd "$SRC" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

build() {
  need_go
  local digest
  digest="$(source_digest)"
  if [ -f "$BIN/.digest" ] && [ "$(cat "$BIN/.digest")" = "$digest" ] &&
    [ -x "$BIN/etcd" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] &&
    [ -x "$BIN/kube-scheduler" ]; then
    return 0
  fi
  mkdir -p "$BIN"
  # GOFLAGS from the environment (e.g. -mod=vendor) would change what is built; the module proxy
  # comes from `go env` as the machine configures it.
  export GOFLAGS=-buildvcs=false
  if ! (cd "$SRC" && go mod download) >"$OUT/download.log" 2>&1; then
    echo "control-plane: cannot download the Go modules (is the Go module proxy reachable? $(go env GOPROXY)); see $OUT/download.log; the real-server tests are skipped" >&2
    exit 4
  fi
  say "building etcd, kube-apiserver, kube-controller-manager, kube-scheduler from Go modules (the first build takes many minutes)"
  local start=$SECONDS
  if ! (cd "$SRC" && go build "${GO_BUILD_FLAGS[@]}" -o "$BIN/" ./etcd ./kube-apiserver ./kube-controller-manager ./kube-scheduler) >"$OUT/build.log" 2>&1; then
    echo "control-plane: the Go build failed; see $OUT/build.log" >&2
    tail -20 "$OUT/build.log" >&2
    exit 6
  fi
  echo "$digest" >"$BIN/.digest"
  say "built in $((SECONDS - start)) s"
}

# free_port VAR: sets VAR to a TCP port nobody listens on, on 127.0.0.1, not among those already picked.
picked=()
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + RANDOM % 30000))
    [[ " ${picked[*]-} " == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      picked+=("$p")
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  say "no free port found"
  exit 1
}

# pid_alive PID BINARY: the process exists and is the binary we started (not a reused pid).
# No pipeline here: under pipefail a SIGPIPE in `tr | head` would read as "not alive", and stop would
# then leave the process running and delete its data.
pid_alive() {
  local pid="$1" bin="$2" first=""
  [ -r "/proc/$pid/cmdline" ] || return 1
  IFS= read -r -d '' first <"/proc/$pid/cmdline" 2>/dev/null || true
  [ "$first" = "$bin" ]
}

# started PID: a process this script just started is still there (it may not have exec'd its binary
# yet, so its command line is not checked; its pid cannot have been reused in these seconds).
started() {
  kill -0 "$1" 2>/dev/null
}

running_dir() {
  [ -f "$STATE" ] || return 1
  local dir
  dir="$(cat "$STATE")"
  [ -d "$dir" ] || return 1
  local name
  for name in etcd kube-apiserver kube-controller-manager; do
    [ -f "$dir/$name.pid" ] && pid_alive "$(cat "$dir/$name.pid")" "$BIN/$name" && {
      echo "$dir"
      return 0
    }
  done
  return 1
}

# Stops the process group of $dir/$name.pid (started with setsid: pid == pgid), TERM then KILL.
stop_one() {
  local dir="$1" name="$2" pid i
  [ -f "$dir/$name.pid" ] || return 0
  pid="$(cat "$dir/$name.pid")"
  if pid_alive "$pid" "$BIN/$name"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      pid_alive "$pid" "$BIN/$name" || break
      sleep 0.1
    done
    if pid_alive "$pid" "$BIN/$name"; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  fi
  rm -f "$dir/$name.pid"
}

stop() {
  [ -f "$STATE" ] || {
    say "not running"
    return 0
  }
  local dir
  dir="$(cat "$STATE")"
  if [ -d "$dir" ]; then
    stop_one "$dir" kube-controller-manager
    stop_one "$dir" kube-apiserver
    stop_one "$dir" etcd
    if [ "${VWS_CONTROL_PLANE_KEEP:-}" = 1 ]; then
      say "stopped; data and logs kept in $dir"
    else
      rm -rf "$dir"
      say "stopped"
    fi
  fi
  rm -f "$STATE"
}

env_of() {
  local dir="$1"
  echo "VWS_CONTROL_PLANE_DIR=$dir"
  echo "VWS_CONTROL_PLANE_AUDIT_LOG=$dir/audit.log"
  echo "VWS_CONTROL_PLANE_SERVER=$(cat "$dir/server")"
  echo "KUBECONFIG=$dir/admin.kubeconfig"
}

# kubeconfig FILE SERVER CERT KEY: a client-certificate kubeconfig trusting the control plane's CA.
kubeconfig() {
  local file="$1" server="$2" cert="$3" key="$4" dir="$5"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: control-plane
    cluster:
      server: $server
      certificate-authority: $dir/pki/ca.crt
users:
  - name: user
    user:
      client-certificate: $cert
      client-key: $key
contexts:
  - name: control-plane
    context: {cluster: control-plane, user: user}
current-context: control-plane
EOF
}

pki() {
  local d="$1/pki"
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=vws-control-plane-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    # issue NAME SUBJECT [SAN]: a leaf signed by the CA (client and server usage).
    issue() {
      local ext
      ext="$(mktemp)"
      {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        [ -n "${3:-}" ] && echo "subjectAltName=$3"
      } >"$ext"
      openssl req -new -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile "$ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$ext"
    }
    issue apiserver "/CN=kube-apiserver" \
      "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    issue admin "/O=system:masters/CN=control-plane-admin"
    issue kube-controller-manager "/CN=system:kube-controller-manager"
    issue kcm-serving "/CN=kube-controller-manager" "IP:127.0.0.1,DNS:localhost"
    # The ServiceAccount token signing key.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

# start_etcd DIR: etcd on DIR's ports and data (kept across a restart), until it reports ready.
# The previous log is kept as etcd.log.prev.
start_etcd() {
  local dir="$1" etcd_port peer_port api_port kcm_port
  # shellcheck disable=SC1091
  . "$dir/ports"
  [ -f "$dir/etcd.log" ] && mv "$dir/etcd.log" "$dir/etcd.log.prev"
  setsid "$BIN/etcd" -data-dir "$dir/etcd" -client-url "http://127.0.0.1:$etcd_port" \
    -peer-url "http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 </dev/null &
  echo $! >"$dir/etcd.pid"
  # etcd first, on its own: the API server must never reach another instance's etcd (a port taken
  # between the check and the bind makes ours exit, and that is seen here).
  local i ready=""
  for i in $(seq 1 300); do
    if grep -q "etcd: ready on" "$dir/etcd.log" 2>/dev/null; then
      ready=1
      break
    fi
    started "$(cat "$dir/etcd.pid")" || {
      say "etcd exited; $(tail -3 "$dir/etcd.log" | tr '\n' ' ')"
      return 1
    }
    sleep 0.2
  done
  [ -n "$ready" ] || {
    say "etcd not ready after 60 s"
    return 1
  }
}

# start_apiserver DIR: kube-apiserver on DIR's ports, certificates and etcd, until /readyz answers.
start_apiserver() {
  local dir="$1" etcd_port peer_port api_port kcm_port
  # shellcheck disable=SC1091
  . "$dir/ports"
  [ -f "$dir/kube-apiserver.log" ] && mv "$dir/kube-apiserver.log" "$dir/kube-apiserver.log.prev"
  local server="https://127.0.0.1:$api_port"
  setsid "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,NodeRestriction,PodSecurity,DefaultStorageClass,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=false \
    --profiling=false \
    --audit-policy-file="$dir/audit-policy.yaml" --audit-log-path="$dir/audit.log" \
    --audit-log-format=json --audit-log-mode=blocking --audit-log-maxsize=0 \
    >"$dir/kube-apiserver.log" 2>&1 </dev/null &
  echo $! >"$dir/kube-apiserver.pid"

  local i ready="" curl_admin=(curl -sf --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key")
  for i in $(seq 1 600); do
    if "${curl_admin[@]}" "$server/readyz" >/dev/null 2>&1; then
      ready=1
      break
    fi
    started "$(cat "$dir/etcd.pid")" || {
      say "etcd exited; $(tail -3 "$dir/etcd.log" | tr '\n' ' ')"
      return 1
    }
    started "$(cat "$dir/kube-apiserver.pid")" || {
      say "kube-apiserver exited; $(tail -3 "$dir/kube-apiserver.log" | tr '\n' ' ')"
      return 1
    }
    sleep 0.2
  done
  [ -n "$ready" ] || {
    say "kube-apiserver not ready after 120 s"
    return 1
  }
}

# restart NAME: stops one component of the running control plane (TERM, then KILL) and starts it
# again on the same ports and data: a fault for the tests (kube-apiserver or etcd restarted mid-pass).
restart() {
  local dir name="$1"
  case "$name" in
    etcd | kube-apiserver) ;;
    *)
      echo "usage: scripts/control-plane.sh restart-apiserver|restart-etcd" >&2
      exit 2
      ;;
  esac
  dir="$(running_dir)" || {
    echo "control-plane: not running (scripts/control-plane.sh start)" >&2
    exit 5
  }
  local t0=$SECONDS
  stop_one "$dir" "$name"
  local rc=0
  if [ "$name" = etcd ]; then start_etcd "$dir" || rc=$?; else start_apiserver "$dir" || rc=$?; fi
  if [ "$rc" -ne 0 ]; then
    say "restart of $name failed; logs in $dir"
    exit 1
  fi
  say "$name restarted in $((SECONDS - t0)) s"
}

start() {
  if dir="$(running_dir)"; then
    echo "control-plane: already running in $dir (stop it first: scripts/control-plane.sh stop); $(env_of "$dir" | tail -1)" >&2
    exit 5
  fi
  # A previous instance that died without `stop`: its processes are gone (checked above); its data goes.
  if [ -f "$STATE" ]; then
    local stale
    stale="$(cat "$STATE")"
    case "$stale" in */vws-control-plane.*) [ -d "$stale" ] && rm -rf "$stale" ;; esac
    rm -f "$STATE"
  fi
  build
  command -v openssl >/dev/null || {
    echo "control-plane: openssl is not installed" >&2
    exit 1
  }
  command -v curl >/dev/null || {
    echo "control-plane: curl is not installed" >&2
    exit 1
  }
  local dir t0=$SECONDS
  dir="$(mktemp -d "${TMPDIR:-/tmp}/vws-control-plane.XXXXXX")"
  echo "$dir" >"$STATE"
  echo "$dir" >"$OUT/last-start"
  # A failure from here on stops what was started.
  trap 'say "start failed; logs in $dir (kept)"; VWS_CONTROL_PLANE_KEEP=1 stop' ERR
  pki "$dir"
  local etcd_port peer_port api_port kcm_port
  free_port etcd_port
  free_port peer_port
  free_port api_port
  free_port kcm_port
  local server="https://127.0.0.1:$api_port"
  echo "$server" >"$dir/server"

  cat >"$dir/audit-policy.yaml" <<'EOF'
# One event per request (ResponseComplete), metadata only: who did what to which object. The tests
# count the operator's write requests from it.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:apiserver"]
  - level: Metadata
EOF

  printf 'etcd_port=%s\npeer_port=%s\napi_port=%s\nkcm_port=%s\n' "$etcd_port" "$peer_port" "$api_port" "$kcm_port" >"$dir/ports"
  # The functions return 1 on failure (an ERR trap does not reach into them): stop what was started.
  start_etcd "$dir" || false
  kubeconfig "$dir/admin.kubeconfig" "$server" "$dir/pki/admin.crt" "$dir/pki/admin.key" "$dir"
  kubeconfig "$dir/kube-controller-manager.kubeconfig" "$server" \
    "$dir/pki/kube-controller-manager.crt" "$dir/pki/kube-controller-manager.key" "$dir"
  start_apiserver "$dir" || false
  local i ready="" curl_admin=(curl -sf --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key")
  setsid "$BIN/kube-controller-manager" \
    --kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --tls-cert-file="$dir/pki/kcm-serving.crt" --tls-private-key-file="$dir/pki/kcm-serving.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$dir/pki/sa.key" \
    --root-ca-file="$dir/pki/ca.crt" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --leader-elect=false \
    --profiling=false \
    >"$dir/kube-controller-manager.log" 2>&1 </dev/null &
  echo $! >"$dir/kube-controller-manager.pid"

  # The controller-manager is working once the ServiceAccount controller made `default`.
  ready=""
  for i in $(seq 1 600); do
    if "${curl_admin[@]}" "$server/api/v1/namespaces/default/serviceaccounts/default" >/dev/null 2>&1; then
      ready=1
      break
    fi
    started "$(cat "$dir/kube-controller-manager.pid")" || {
      say "kube-controller-manager exited; $(tail -3 "$dir/kube-controller-manager.log" | tr '\n' ' ')"
      false
    }
    sleep 0.2
  done
  [ -n "$ready" ] || {
    say "kube-controller-manager did not create the default ServiceAccount within 120 s"
    false
  }
  trap - ERR
  say "ready in $((SECONDS - t0)) s: $server (data and logs in $dir)"
  env_of "$dir"
}

case "${1:-}" in
  build) build ;;
  start)
    # Free ports are picked before they are bound: on a busy machine another process can take one in
    # between. That start fails cleanly (nothing left running); try again with other ports.
    for attempt in 1 2 3; do
      rc=0
      (start) || rc=$?
      [ "$rc" -eq 0 ] && exit 0
      last="$(cat "$OUT/last-start" 2>/dev/null || true)"
      if [ "$rc" -eq 1 ] && [ -n "$last" ] && grep -qs "address already in use" "$last"/*.log; then
        say "a port was taken between the check and the bind (attempt $attempt); trying other ports"
        case "$last" in */vws-control-plane.*) rm -rf "$last" ;; esac
        continue
      fi
      exit "$rc"
    done
    exit 1
    ;;
  stop) stop ;;
  restart-apiserver) restart kube-apiserver ;;
  restart-etcd) restart etcd ;;
  env)
    if dir="$(running_dir)"; then
      env_of "$dir"
    else
      echo "control-plane: not running (scripts/control-plane.sh start)" >&2
      exit 5
    fi
    ;;
  *)
    echo "usage: scripts/control-plane.sh build|start|stop|env|restart-apiserver|restart-etcd" >&2
    exit 2
    ;;
esac
