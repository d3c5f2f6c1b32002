#!/usr/bin/env bash
# Builds lifeledger and runs its main job on the embedded default: publish the
# shipped retention policy, ingest the shipped sample of lifecycle events into
# a fresh ledger, verify it, and judge every item.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p lifeledger
bin=target/release/lifeledger
ledger=target/demo-ledger
rm -rf "$ledger"

echo "== publish the retention policy (its hash goes on the chain)"
"$bin" --ledger "$ledger" policy publish ledger/policies/retention-2026-11.toml
echo
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
echo "== retention status as of 2026-11-24"
"$bin" --ledger "$ledger" status --as-of 2026-11-24
echo
echo "== one item in full"
"$bin" --ledger "$ledger" item item-2-6 --as-of 2026-11-24
echo
echo "Ledger left in $ledger; try: $bin --ledger $ledger findings --as-of 2026-11-24"
