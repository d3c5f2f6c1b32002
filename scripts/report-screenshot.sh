#!/usr/bin/env bash
# Renders a retention report (default: the demo's, from scripts/demo.sh) in
# headless chromium and keeps a screenshot of its first screenful for the
# docs: docs/report-sample.png.
set -euo pipefail
cd "$(dirname "$0")/.."
page="${1:-target/demo-report.html}"
out="${2:-docs/report-sample.png}"
browser="${LIFELEDGER_CHROMIUM:-/usr/bin/chromium}"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" --window-size=1280,1900 \
  --screenshot="$out" "file://$(realpath "$page")" 2>/dev/null
echo "wrote $out"
