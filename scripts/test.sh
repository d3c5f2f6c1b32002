#!/usr/bin/env bash
# Sets up what the tests need and runs every test. This is the README's test
# command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# The independent checks (scripts/check-vectors.py, check-ledger-dir.py)
# need Python's blake3, zstandard and cryptography (Ed25519) packages.
if ! python3 -c 'import blake3, zstandard, cryptography' 2>/dev/null; then
  echo "installing the Python blake3, zstandard and cryptography packages for the independent checks"
  python3 -m pip install --quiet --disable-pip-version-check blake3 zstandard cryptography
fi

# The report test renders the HTML report in Debian's headless chromium.
if [ -z "${LIFELEDGER_CHROMIUM:-}" ] && ! [ -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium for the report test"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi

# The Kafka tests start their own tansu brokers (a separate process on a
# free port each); build tansu once into ~/.cargo/bin if it is not there.
bash scripts/broker.sh install

# The archive tests start their own S3-compatible servers (moto, from
# PyPI); install it once if it is not there.
bash scripts/s3-server.sh install

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The auditor's side must build without librdkafka.
cargo clippy -p lifeledger --no-default-features --all-targets --locked -- -D warnings
cargo test --workspace --locked
python3 scripts/check-vectors.py ledger/testdata/entry-vectors.json ledger/testdata/audit-vectors.json tests/tamper-corpus
# A ledger directory verified from FORMAT.md alone agrees with `verify`.
python3 scripts/ledger-dir-agreement.py target/debug/lifeledger
# Benchmarks must keep compiling even when nobody runs them.
cargo bench --workspace --locked --no-run
