#!/usr/bin/env python3
"""Where a message's CPU goes in the wasmrule process, by pipeline stage.

Reads `perf script` output of a `perf record --call-graph dwarf` of the wasmrule process
(the e2e bench runs it so with E2E_WRAP, docs/performance.md section 2) and gives each
sample to the stage of the innermost frame of its stack that belongs to one: a sample in
a library or kernel function counts for the wasmrule stage that called it (a `memcpy`
called from the engine is the rule's, a `tcp_recvmsg` under rumqttc is MQTT's).

    perf script -i perf.data | runtime/benches/stages.py [--cpu-us US]

With --cpu-us (the bench's CPU per message), each stage's share is also given in
CPU-us per message.
"""

import argparse
import re
import sys
from collections import Counter

# (stage, pattern on a frame's symbol or object). A sample goes to the stage of the
# innermost frame of its stack that matches one of STAGES (first match wins for one
# frame); only a stack with none of them goes to the innermost match in GENERIC (code
# every stage calls: the allocator, tokio's scheduler and I/O driver).
STAGES = [
    ("rule: reset (dirty-page scan and restore)", r"engine::reuse::|dirty_pages|pagemap"),
    ("rule: host side (copy in, result decode, store set-up)", r"wasmrule::rules::engine|wasmrule::commands"),
    ("rule: wasmtime runtime", r"wasmtime|cranelift|pulley"),
    ("rule: compiled wasm code", r"/tmp/perf-\d+\.map|\[anon|//anon|jitted|wasm\["),
    ("dispatch (routing, worker rounds, batches)", r"(send|recv|push|block_on|try_recv)<.*wasmrule::event::Message"),
    ("event encoding", r"wasmrule::event::(?!Message\b)"),
    ("policy check (namespacing, command table)", r"wasmrule::tenancy"),
    ("dispatch (routing, worker rounds, batches)", r"wasmrule::dispatch|wasmrule::topic|wasmrule::sink::batch|wasmrule::runtime"),
    ("RESP encoding (redis::Cmd, pipeline packing)", r"redis::cmd|redis::pipeline|Cmd::|Pipeline::|cmd_of|write_command|pack"),
    ("Redis reply parsing", r"redis::parser|redis::types|combine::"),
    ("Redis I/O (writer, connection)", r"wasmrule::sink::redis|redis::aio|redis::"),
    ("ack", r"wasmrule::ack|wasmrule::source::mqtt::acker"),
    ("MQTT read and decode", r"rumqttc|mqttbytes|wasmrule::source"),
    ("metrics", r"wasmrule::ops"),
]
GENERIC = [
    ("allocator, no stage found", r"mi_|mimalloc"),
    ("tokio runtime (scheduling, wakeups, I/O driver)", r"tokio::|mio::"),
]
SPECIFIC = [(name, re.compile(p)) for name, p in STAGES]
GENERAL = [(name, re.compile(p)) for name, p in GENERIC]
KERNEL = "kernel, no wasmrule caller (interrupts, scheduler)"
OTHER = "other"


def frames(block):
    """The frames of one sample, innermost first: (symbol, object)."""
    for line in block[1:]:
        line = line.strip()
        m = re.match(r"[0-9a-f]+\s+(.*?)\s+\((.*)\)$", line)
        if m:
            yield m.group(1), m.group(2)


def stage_of(block):
    fs = list(frames(block))
    texts = [f"{sym} {obj}" if sym != "[unknown]" else obj for sym, obj in fs]
    for table in (SPECIFIC, GENERAL):
        for text in texts:
            for name, pat in table:
                if pat.search(text):
                    return name
    if fs and all("kernel" in obj for _, obj in fs):
        return KERNEL
    return OTHER


def samples(lines):
    block = []
    for line in lines:
        if line.strip() == "":
            if block:
                yield block
            block = []
        else:
            block.append(line.rstrip("\n"))
    if block:
        yield block


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-us", type=float, help="the bench's CPU-us per message")
    ap.add_argument("--comm", default=None, help="only samples of this thread name prefix")
    args = ap.parse_args()
    counts = Counter()
    for block in samples(sys.stdin):
        if args.comm and not block[0].lstrip().startswith(args.comm):
            continue
        counts[stage_of(block)] += 1
    total = sum(counts.values()) or 1
    print(f"| stage | share of wasmrule's CPU |" + (" CPU-us/msg |" if args.cpu_us else ""))
    print("|---|---|" + ("---|" if args.cpu_us else ""))
    for name, n in counts.most_common():
        row = f"| {name} | {100 * n / total:.1f}% |"
        if args.cpu_us:
            row += f" {args.cpu_us * n / total:.2f} |"
        print(row)
    print(f"\n{total} samples", file=sys.stderr)


if __name__ == "__main__":
    main()
