#!/usr/bin/env bash
# An S3-compatible server for the archive tests: moto in server mode
# (PyPI `moto[server]`), which enforces conditional writes (If-None-Match:
# a put over an existing object is refused with 412) and Object Lock in
# compliance mode (deleting a locked object version is refused with
# AccessDenied). The tests start their own instance on a free port; this
# script installs it and can start one by hand.
#
#   scripts/s3-server.sh install                 pip-install moto[server] if missing
#   scripts/s3-server.sh start [PORT]            start it (default port 19000), wait until it listens
#   scripts/s3-server.sh bucket NAME [DAYS]      create a bucket (with Object Lock, compliance mode,
#                                                DAYS days of default retention, when DAYS is given)
#   scripts/s3-server.sh stop                    stop it
set -euo pipefail

MOTO_VERSION=5.2.1
PORT=${LIFELEDGER_S3_PORT:-19000}
STATE_DIR=${LIFELEDGER_S3_DIR:-${TMPDIR:-/tmp}/lifeledger-s3}
PIDFILE=$STATE_DIR/moto.pid
LOG=$STATE_DIR/moto.log

install() {
  if python3 -c 'import moto.server, boto3' 2>/dev/null; then
    return 0
  fi
  echo "installing moto[server] $MOTO_VERSION (an S3-compatible server for the archive tests)"
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

start() {
  install
  mkdir -p "$STATE_DIR"
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "moto already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    return 0
  fi
  python3 -m moto.server -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    if listening; then
      echo "moto listening on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
      return 0
    fi
    sleep 0.1
  done
  echo "moto did not start; see $LOG" >&2
  exit 1
}

bucket() {
  python3 "$(dirname "$0")/s3-bucket.py" "http://127.0.0.1:$PORT" "$@"
}

stop() {
  if [ -f "$PIDFILE" ]; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
}

case "${1:-}" in
  install) install ;;
  start) PORT=${2:-$PORT}; start ;;
  bucket) shift; bucket "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 install|start [PORT]|bucket NAME [DAYS]|stop" >&2; exit 2 ;;
esac
