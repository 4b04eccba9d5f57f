#!/bin/bash
# Runs BENCHMARKS.md's scenarios and the machine's limits in one session, on a fresh broker
# per scenario: broker pinned to core 0, bench and clients to core 1, data in $DATA (default
# /tmp/mq-bench-data, on the filesystem under test), page cache dropped before each run.
# Needs root (drop_caches), iperf3 and python3 (pingpong.py and fsync_floor.py: the latency
# floors of a round trip and of a durable append). Usage: tools/bench/suite.sh [scenario...]
# Scenarios: limits produce produce-all consume batch1 batch1-all batch1-all-4k e2e sustained
# sustained-all (default: all).
set -u
cd "$(dirname "$0")/../.."
BIN=./target/release
DATA=${DATA:-/tmp/mq-bench-data}
PORT=9760
BROKER_PID=
ALL="limits produce produce-all consume batch1 batch1-all batch1-all-4k e2e sustained sustained-all"
SCENARIOS=${*:-$ALL}

start_broker() {
    stop_broker
    rm -rf "$DATA"
    sync
    echo 3 > /proc/sys/vm/drop_caches
    taskset -c 0 "$BIN/mq-broker" --data-dir "$DATA" --listen 127.0.0.1:$PORT > /dev/null 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 50); do
        "$BIN/mq-admin" -b 127.0.0.1:$PORT cluster status > /dev/null 2>&1 && return
        sleep 0.1
    done
    echo "broker did not start" >&2
    exit 1
}

stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        echo "  broker peak RSS: $(grep VmHWM /proc/$BROKER_PID/status | awk '{print $2, $3}')"
        kill "$BROKER_PID" 2> /dev/null
        wait "$BROKER_PID" 2> /dev/null
        BROKER_PID=
    fi
}
trap stop_broker EXIT

# Writing 2 GiB into the page cache right after dropping it. On this VM it varies from
# 0.6 to 5 GB/s from one moment to the next (freed memory is handed back to the host and
# faulted in again), which is the main source of the produce figures' spread.
pagecache_dd() {
    mkdir -p "$DATA"
    rm -f "$DATA/dd"; sync; echo 3 > /proc/sys/vm/drop_caches
    printf '  page-cache write, 2 GiB: '
    taskset -c 0 dd if=/dev/zero of="$DATA/dd" bs=1M count=2048 2>&1 | tail -1
    rm -f "$DATA/dd"
}

bench() {
    echo "\$ mq-bench $*"
    taskset -c 1 "$BIN/mq-bench" "$@" -b 127.0.0.1:$PORT --json 2> /dev/null
}

for scenario in $SCENARIOS; do
    echo "== $scenario"
    case $scenario in
    limits)
        iperf3 -s -1 -p 5299 > /dev/null 2>&1 &
        sleep 0.5
        taskset -c 1 iperf3 -c 127.0.0.1 -p 5299 -t 5 -A 1,0 | grep -E "sender|receiver"
        mkdir -p "$DATA"
        dd if=/dev/zero of="$DATA/dd" bs=1M count=4096 conv=fdatasync 2>&1 | tail -1
        rm -f "$DATA/dd"; sync; echo 3 > /proc/sys/vm/drop_caches
        dd if=/dev/zero of="$DATA/dd" bs=1M count=4096 2>&1 | tail -1
        rm -f "$DATA/dd"
        # The device itself, past the page cache.
        dd if=/dev/zero of="$DATA/dd" bs=4M count=1024 oflag=direct 2>&1 | tail -1
        rm -f "$DATA/dd"
        pagecache_dd
        dd if=/dev/zero of=/dev/null bs=1M count=20000 2>&1 | tail -1
        python3 tools/bench/pingpong.py
        python3 tools/bench/fsync_floor.py "$DATA"
        ;;
    produce)
        start_broker
        bench produce --messages 2000000 --size 1024 --batch-bytes 1048576 --acks 1
        stop_broker
        pagecache_dd ;;
    produce-all)
        start_broker
        bench produce --messages 2000000 --size 1024 --batch-bytes 1048576 --acks all
        stop_broker ;;
    consume)
        start_broker
        bench produce --messages 2000000 --size 1024 --batch-bytes 1048576 --acks 1 > /dev/null
        bench consume --messages 2000000
        stop_broker ;;
    batch1)
        start_broker
        bench produce --rate 2000 --linger-ms 0 --acks 1 --duration 10 --warmup 1
        stop_broker ;;
    batch1-all)
        start_broker
        bench produce --rate 2000 --linger-ms 0 --acks all --duration 10 --warmup 1
        stop_broker ;;
    batch1-all-4k)
        # Twice the rate: headroom above 2,000 durable records/s from one producer.
        start_broker
        bench produce --rate 4000 --linger-ms 0 --acks all --duration 10 --warmup 1
        stop_broker ;;
    e2e)
        start_broker
        bench e2e --rate 10000 --linger-ms 0 --acks 1 --duration 10 --warmup 2
        stop_broker ;;
    sustained)
        mkdir -p "$DATA"
        dd if=/dev/zero of="$DATA/dd" bs=1M count=8192 conv=fdatasync 2>&1 | tail -1
        rm -f "$DATA/dd"
        start_broker
        bench produce --messages 10000000 --size 1024 --batch-bytes 1048576 --acks 1
        stop_broker ;;
    sustained-all)
        # Durable before each acknowledgement: every byte reaches the disk within the run,
        # where with acks=1 much of 10 GB can still sit in the page cache at its end.
        mkdir -p "$DATA"
        dd if=/dev/zero of="$DATA/dd" bs=1M count=8192 conv=fdatasync 2>&1 | tail -1
        rm -f "$DATA/dd"
        start_broker
        bench produce --messages 10000000 --size 1024 --batch-bytes 1048576 --acks all
        stop_broker ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
    esac
done
