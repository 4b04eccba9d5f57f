#!/usr/bin/env python3
"""The machine's floor for a durable one-record append: append 1,100 bytes (a 1 KiB record
in its batch) to a file and fdatasync it, paced like `mq-bench --rate 2000 --acks all`
(one every 0.5 ms, so the disk idles between them as under an open loop), on core 0 where
the broker runs. Prints p50/p99/p99.9 of the write plus fdatasync in microseconds. Used by
BENCHMARKS.md as the latency limit that batch-of-1 figures with an fsync per record are
compared with. Usage: fsync_floor.py [DIRECTORY] (default: /tmp/mq-bench-data)."""
import os
import sys
import time

ROUNDS = 5000
PERIOD = 0.0005
RECORD = b"x" * 1100

directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp/mq-bench-data"
os.makedirs(directory, exist_ok=True)
path = os.path.join(directory, "fsync-floor")
os.sched_setaffinity(0, {0})
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
latencies = []
try:
    next_at = time.perf_counter()
    for _ in range(ROUNDS):
        next_at += PERIOD
        start = time.perf_counter()
        os.write(fd, RECORD)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - start)
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
finally:
    os.close(fd)
    os.unlink(path)
latencies.sort()


def percentile(fraction):
    return round(latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1e6)


print(
    "append + fdatasync (us): p50 %d p99 %d p99.9 %d"
    % (percentile(0.5), percentile(0.99), percentile(0.999))
)
