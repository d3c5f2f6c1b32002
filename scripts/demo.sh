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
echo "== sign a checkpoint, export, and verify the export offline as an auditor would"
rm -f target/demo-signer.key target/demo-signer.pub
"$bin" keygen --name demo-signer --out target/demo-signer
"$bin" --ledger "$ledger" checkpoint --key target/demo-signer.key --origin lifeledger.invalid/demo
"$bin" --ledger "$ledger" export --out target/demo.bundle
"$bin" verify target/demo.bundle --key target/demo-signer.pub
echo
echo "== one item's evidence, checked offline"
"$bin" --ledger "$ledger" prove item-2-6 --out target/demo-item-2-6.proof.json
"$bin" verify-proof target/demo-item-2-6.proof.json --key target/demo-signer.pub --as-of 2026-11-24T00:00:00Z
echo
echo "Ledger left in $ledger; try: $bin --ledger $ledger findings --as-of 2026-11-24"
