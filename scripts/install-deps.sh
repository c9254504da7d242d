#!/usr/bin/env bash
# Installs what isometer needs on Debian that is missing: clickhouse-server, zookeeper
# (for the cluster test), the wasm32-wasip1 Rust target, rustfmt and clippy; with the
# argument `bench`, also bubblewrap (the benchmarks' sandbox peer); with the argument
# `test`, also what the browser and API-document tests drive: Chromium, Node.js with
# playwright-core (tests/browser/node_modules) and schemathesis (target/venv). Does
# nothing when all are present.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "install-deps: need root (or sudo) to run: $*" >&2; exit 1
  fi
}

have_clickhouse() {
  command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || [ -x /usr/bin/clickhouse-server ]
}

if ! have_clickhouse; then
  echo "install-deps: installing clickhouse-server (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server >/dev/null
fi

if [ ! -f /usr/share/java/zookeeper.jar ]; then
  # The cluster test runs ON CLUSTER migrations, which ClickHouse coordinates through ZooKeeper.
  echo "install-deps: installing zookeeper (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null
fi

if ! command -v setpriv >/dev/null; then
  # setpriv ties the managed ClickHouse's life to isometer's (util-linux).
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux >/dev/null
fi

if command -v rustup >/dev/null; then
  if ! rustup target list --installed | grep -qx wasm32-wasip1; then
    echo "install-deps: adding the wasm32-wasip1 Rust target"
    rustup target add wasm32-wasip1
  fi
  for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^$component"; then
      rustup component add "$component"
    fi
  done
fi

if [ "${1:-}" = bench ] && ! command -v bwrap >/dev/null; then
  echo "install-deps: installing bubblewrap (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
fi

if [ "${1:-}" = test ]; then
  if ! command -v chromium >/dev/null; then
    echo "install-deps: installing chromium (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install-deps: installing nodejs and npm (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  root="$(cd "$(dirname "$0")/.." && pwd)"
  if [ ! -d "$root/tests/browser/node_modules/playwright-core" ]; then
    echo "install-deps: installing playwright-core (npm ci, tests/browser)"
    (cd "$root/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  if [ ! -x "$root/target/venv/bin/st" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "install-deps: installing schemathesis (pip, target/venv)"
    rm -rf "$root/target/venv"
    python3 -m venv "$root/target/venv"
    "$root/target/venv/bin/pip" install -q "schemathesis==4.32.5"
  fi
fi
