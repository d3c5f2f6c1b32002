#!/usr/bin/env python3
"""`lifeledger verify` and the independent scripts/check-ledger-dir.py agree.

Builds a ledger with the binary (two ingests, small segments are not
needed: the sample spans many frames), then checks it intact with both, and
for bytes flipped at many offsets of the segment file checks that both
fail and name the same first bad seq.

usage: ledger-dir-agreement.py PATH_TO_LIFELEDGER
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

BIN = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def verify_binary(ledger):
    out = subprocess.run([BIN, "--ledger", ledger, "verify", "--json"], capture_output=True, text=True)
    report = json.loads(out.stdout)
    seqs = [f["first_bad_seq"] for f in report["findings"]]
    return out.returncode, seqs


def verify_script(ledger):
    out = subprocess.run([sys.executable, os.path.join(HERE, "check-ledger-dir.py"), ledger], capture_output=True, text=True)
    seqs = [int(m) for m in re.findall(r"BROKEN at seq (\d+)", out.stdout)]
    return out.returncode, seqs


def offsets_to_flip(path, size):
    """Bytes spread over the whole file, and every byte of the framing of
    one frame in the middle (its header and checksum; record lengths and
    stored hashes if it is stored as is, every 7th byte if compressed),
    where a lenient parser and a strict one would part ways."""
    offsets = set(range(0, size, max(1, size // 150)))
    data = open(path, "rb").read()
    (n,) = struct.unpack(">H", data[8:10])
    pos, frames = 8 + 2 + n + 8 + 32, []
    while pos + 17 <= size:
        body_len, codec, _, count = struct.unpack(">IBQI", data[pos : pos + 17])
        frames.append((pos, codec, count))
        pos += 17 + body_len + 32
    start, codec, count = frames[len(frames) // 2]
    offsets.update(range(start, start + 17))
    (body_len,) = struct.unpack(">I", data[start : start + 4])
    r = start + 17
    if codec == 0:
        for _ in range(count):
            (length,) = struct.unpack(">I", data[r : r + 4])
            offsets.update(range(r, r + 36))
            r += 36 + length
    else:
        offsets.update(range(r, r + body_len, 7))
        r += body_len
    offsets.update(range(r, r + 32))
    return sorted(offsets)


def main():
    work = tempfile.mkdtemp(prefix="ledger-agreement-")
    try:
        clean = os.path.join(work, "clean")
        for sample, batch in (("schemas/samples/lifecycle-sample.jsonl", "7"), ("schemas/v1/invalid/cases.jsonl", "5")):
            subprocess.run([BIN, "--ledger", clean, "ingest", os.path.join(ROOT, sample), "--batch-size", batch], check=True, capture_output=True)
        assert verify_binary(clean) == (0, []), verify_binary(clean)
        assert verify_script(clean) == (0, []), verify_script(clean)
        folder = os.path.join(clean, "segments", "c-file")
        (segment,) = os.listdir(folder)
        size = os.path.getsize(os.path.join(folder, segment))
        checked = 0
        for offset in offsets_to_flip(os.path.join(folder, segment), size):
            ledger = os.path.join(work, "damaged")
            shutil.rmtree(ledger, ignore_errors=True)
            shutil.copytree(clean, ledger)
            path = os.path.join(ledger, "segments", "c-file", segment)
            data = bytearray(open(path, "rb").read())
            data[offset] ^= 0x01
            open(path, "wb").write(data)
            binary, script = verify_binary(ledger), verify_script(ledger)
            if binary[0] != 1 or script[0] != 1 or binary[1][:1] != script[1][:1]:
                print(f"disagreement after a flip at byte {offset}: binary {binary}, script {script}")
                return 1
            checked += 1
        print(f"ledger directory: verify and check-ledger-dir.py agree on the intact ledger and {checked} damaged copies")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
