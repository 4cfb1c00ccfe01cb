"""Where the time goes: `perf script -F pid,comm,ip,sym,dso` on stdin, attributed per
process role, with each role's hottest functions (self time).

    perf script ... | python3 bench/profile_report.py BENCH_STDERR TOP FREQ

A process is named by the bench's own "started NAME (pid N)" lines in BENCH_STDERR (the
broker, the gRPC sink, nats-server); any other by the executable most of its samples ran
in (folio-bench is the bench's client; s3s-fs, etcd). Roles are summed over processes, so
a broker restarted per run counts as one role.
"""

import collections
import os
import re
import sys

SAMPLE = re.compile(r"^\s*(.*?)\s+(\d+)\s+([0-9a-f]+)\s+(.*)\s+\((.*)\)\s*$")
STARTED = re.compile(r"started (.+?) \(pid (\d+)\)")
# Executables that are the harness itself rather than something measured.
# Names for executables that are servers of the rig.
SERVERS = {"node": "azurite (node)", "s3s-fs": "S3 test server (s3s-fs)", "etcd": "etcd"}
# What a function is, for the summary table: first match wins (kernel samples are
# counted by their DSO before these apply).
CATEGORIES = [
    ("copying", re.compile(r"memmove|memcpy|memset|copy_user|_copy_(to|from)_iter|copy_folio")),
    ("hashing", re.compile(r"sha1|sha256|md5|Md5|Sha1|Sha256|crc32|xxh", re.I)),
    ("compression", re.compile(r"zstd|ZSTD|snap|deflate|inflate|lz4", re.I)),
    ("allocator", re.compile(r"malloc|free|_int_|realloc|mi_|tcache|unlink_chunk|jemalloc|cfree")),
    ("h2/tonic/prost", re.compile(r"h2::|tonic::|prost::|hyper::|http::|tower::")),
    ("tokio", re.compile(r"tokio::|mio::|parking_lot|futex|Mutex|Condvar|std::sync")),
]
HARNESS = {"bash", "python3", "cargo", "sleep", "perf", "tee", "sed", "grep", "curl", "timeout"}


def categorize(sym, dso):
    if dso == "[kernel]":
        # Copies to and from sockets and the page cache are copying, not kernel overhead.
        return "copying" if CATEGORIES[0][1].search(sym) else "kernel"
    for name, pattern in CATEGORIES:
        if pattern.search(sym):
            return name
    return "other"


def main():
    stderr_path, top, freq = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    named = {}
    with open(stderr_path, errors="replace") as f:
        for line in f:
            for name, pid in STARTED.findall(line):
                named[pid] = name
    per_pid = collections.defaultdict(collections.Counter)
    exes = collections.defaultdict(collections.Counter)
    total = 0
    for line in sys.stdin:
        m = SAMPLE.match(line)
        if not m:
            continue
        _comm, pid, _ip, sym, dso = m.groups()
        total += 1
        base = os.path.basename(dso)
        if dso.startswith("[kernel"):
            base = "[kernel]"
        elif ".so" not in base and not base.startswith("["):
            exes[pid][base] += 1
        sym = sym.strip() or "[unknown]"
        sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
        if len(sym) > 88:
            sym = sym[:85] + "..."
        per_pid[pid][(sym, base)] += 1
    if total == 0:
        print("no samples were recorded")
        return
    roles = collections.defaultdict(collections.Counter)
    for pid, counts in per_pid.items():
        if pid in named:
            role = named[pid]
        elif exes[pid]:
            exe = exes[pid].most_common(1)[0][0]
            role = "bench client (folio-bench)" if exe == "folio-bench" else SERVERS.get(exe, exe)
            if exe in HARNESS:
                role = "harness (shell, python, perf)"
        else:
            role = "harness (shell, python, perf)"
        roles[role].update(counts)
    ordered = sorted(roles, key=lambda r: -sum(roles[r].values()))
    names = ["kernel"] + [name for name, _ in CATEGORIES] + ["other"]
    print(f"where the time goes: {total} samples at {freq:g} Hz (all processes of the scenario)")
    print()
    print("| process | share of samples | CPU s | " + " | ".join(names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for role in ordered:
        n = sum(roles[role].values())
        split = collections.Counter()
        for (sym, dso), c in roles[role].items():
            split[categorize(sym, dso)] += c
        cells = " | ".join(f"{100 * split[name] / n:.0f}%" for name in names)
        print(f"| {role} | {100 * n / total:.1f}% | {n / freq:.1f} | {cells} |")
    print()
    print("(categories are shares of that process's own samples)")
    for role in ordered:
        n = sum(roles[role].values())
        if n < total * 0.01:
            continue
        print()
        print(f"## {role}: {n} samples, hottest functions (self time, share of this process)")
        print()
        for (sym, dso), c in roles[role].most_common(top):
            print(f"  {100 * c / n:5.1f}%  {sym}  [{dso}]")


if __name__ == "__main__":
    main()
