#!/usr/bin/env bash
# A Kafka-protocol broker for the tests: tansu (an Apache-Kafka-compatible
# broker written in Rust) with in-memory storage, as a separate process on
# 127.0.0.1.
#
#   scripts/broker.sh install        build tansu into ~/.cargo/bin once (~18 min on 2 cores)
#   scripts/broker.sh start [PORT]   start it (default port 19092), wait until it listens
#   scripts/broker.sh stop           stop it
#
# The binary is cached outside the repository and reused when present.
set -euo pipefail

TANSU_VERSION=0.6.0
PORT=${2:-${LIFELEDGER_BROKER_PORT:-19092}}
STATE_DIR=${LIFELEDGER_BROKER_DIR:-${TMPDIR:-/tmp}/lifeledger-broker}
PIDFILE=$STATE_DIR/tansu.pid
LOG=$STATE_DIR/tansu.log
BIN=${CARGO_HOME:-$HOME/.cargo}/bin/tansu

install() {
  if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return 0
  fi
  echo "building tansu $TANSU_VERSION into $BIN (one time, about 18 minutes on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --features dynostore --locked
}

listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

start() {
  install
  mkdir -p "$STATE_DIR"
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "tansu already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    return 0
  fi
  "$BIN" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "memory://tansu/" >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    if listening; then
      echo "tansu $TANSU_VERSION listening on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), log $LOG)"
      return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "tansu exited while starting; its log:" >&2
      cat "$LOG" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "tansu did not listen on 127.0.0.1:$PORT within 10 s; its log:" >&2
  cat "$LOG" >&2
  return 1
}

stop() {
  if [ -f "$PIDFILE" ]; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start [PORT]|stop" >&2; exit 2 ;;
esac
