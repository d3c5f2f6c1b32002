#!/usr/bin/env bash
# Builds lifeledger and runs its main job on the embedded default: ingest the
# shipped sample of lifecycle events into a fresh ledger, then verify it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p lifeledger
bin=target/release/lifeledger
ledger=target/demo-ledger
rm -rf "$ledger"

echo "== ingest schemas/samples/lifecycle-sample.jsonl"
"$bin" --ledger "$ledger" ingest schemas/samples/lifecycle-sample.jsonl
echo
echo "== verify"
"$bin" --ledger "$ledger" verify
echo
echo "== head"
"$bin" --ledger "$ledger" head
echo
echo "== rejected entries (kept in the chain with their reasons)"
"$bin" --ledger "$ledger" log | grep REJECTED || true
echo
echo "Ledger left in $ledger; try: $bin --ledger $ledger log --from 0 --to 5"
