#!/usr/bin/env bash
# Builds lifeledger and runs its main job on an embedded default: a realistic
# synthetic stream of lifecycle events is produced to an in-process mock
# Kafka cluster and consumed by the real consumer into a fresh ledger, which
# is verified and judged under the shipped retention policy; then a signed
# checkpoint, an export verified offline, one item's proof, and the
# write-once archive (a local directory here; S3 in production), restored
# and verified from the archive alone.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p lifeledger
bin=target/release/lifeledger
ledger=target/demo-ledger
rm -rf "$ledger" target/demo-signer.key target/demo-signer.pub target/demo-archive target/demo-restored

echo "== the streaming consumer over a mock Kafka cluster"
"$bin" demo --events 100000 --keep "$ledger"
echo
echo "== sign a checkpoint, export, and verify the export offline as an auditor would"
"$bin" keygen --name demo-signer --out target/demo-signer
"$bin" --ledger "$ledger" checkpoint --key target/demo-signer.key --origin lifeledger.invalid/demo
"$bin" --ledger "$ledger" export --out target/demo.bundle
"$bin" verify target/demo.bundle --key target/demo-signer.pub
echo
echo "== the write-once archive: sealed segments, checkpoints and policy texts copied to target/demo-archive"
"$bin" --ledger "$ledger" archive --to target/demo-archive
echo "   verified straight from the archive, with nothing but the archive and the public key:"
"$bin" verify --from-archive target/demo-archive --key target/demo-signer.pub | tail -n 2
echo "   the ledger restored from the archive alone has the same chain heads:"
"$bin" --ledger target/demo-restored restore --from-archive target/demo-archive --key target/demo-signer.pub | tail -n 1
diff <("$bin" --ledger "$ledger" head) <("$bin" --ledger target/demo-restored head) && echo "   (identical heads)"
echo
echo "== one item's evidence, checked offline"
"$bin" --ledger "$ledger" prove a2-c6 --out target/demo-a2-c6.proof.json
"$bin" verify-proof target/demo-a2-c6.proof.json --key target/demo-signer.pub
echo
echo "== what the deadline monitor says (alerts to a JSON Lines file here; to a Kafka topic in consume)"
rm -f target/demo-alerts.jsonl
"$bin" --ledger "$ledger" monitor --once --alerts-file target/demo-alerts.jsonl | tail -n 4
echo "   ($(wc -l < target/demo-alerts.jsonl) alerts in target/demo-alerts.jsonl, one per item that is due soon or overdue)"
echo
echo "== the retention report"
"$bin" --ledger "$ledger" report --out target/demo-report.html
echo
echo "== replay: what changed in the last 1,000 entries of one partition"
"$bin" --ledger "$ledger" diff --from "kafka:lifecycle:0@$(( $("$bin" --ledger "$ledger" head --json | python3 -c 'import json,sys; print([h["last_seq"] for h in json.load(sys.stdin) if h["chain"]=="kafka:lifecycle:0"][0])') - 1000 ))" --limit 5
echo
echo "== the same from a file: the shipped sample, with its bad lines"
rm -rf target/demo-file-ledger
"$bin" --ledger target/demo-file-ledger policy publish ledger/policies/retention-2026-11.toml
"$bin" --ledger target/demo-file-ledger ingest schemas/samples/lifecycle-sample.jsonl
"$bin" --ledger target/demo-file-ledger log | grep REJECTED || true
echo
echo "Ledgers left in $ledger and target/demo-file-ledger; the report in target/demo-report.html; try: $bin --ledger $ledger findings"
