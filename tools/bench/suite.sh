#!/bin/bash
# Runs BENCHMARKS.md's scenarios and the machine's limits in one session, on a fresh broker
# per run: broker pinned to core 0, bench and clients to core 1, data in $DATA (default
# /tmp/mq-bench-data, on the filesystem under test). Needs root (drop_caches), iperf3 and
# python3 (pingpong.py and fsync_floor.py: the latency floors of a round trip and of a durable
# append). Usage: tools/bench/suite.sh [scenario...]
# Scenarios: limits batch1 batch1-all batch1-all-4k e2e produce consume sustained sustained-all
# (default: all, in this order). produce and consume run $REPEAT times (default 5), each run beside a loopback
# measured just before it, and print each run's ratio and the median: one run of a throughput
# scenario on this shared VM says little.
#
# The page cache's state decides what a 2 GB write costs on this VM, which hands memory that
# stays free for about two seconds back to its host (free page reporting; the next write into
# it faults it in again, at a tenth of the speed). MEMORY=full (the default) runs produce and
# consume as on a server that has been up for a while: the page cache is first filled with
# clean file data (RAM + 2 GiB, written once, about a minute), and no run deletes its data or
# drops the cache until the scenario ends, so the broker's writes reuse memory the guest
# holds, reclaiming old pages as a long-running broker does. That needs RAM + 2 GiB of free
# disk, plus 4 GB per produce run and 2 GB per consume run. MEMORY=cold drops the page cache before each run instead, and
# measures a page-cache dd before and after each acks=1 run. The other scenarios always drop
# the cache first, after waiting for the guest to finish handing back what the full page cache
# held (it slows the machine meanwhile: batch1's p99 was 5-8 ms right after, 0.12 ms later).
set -u
cd "$(dirname "$0")/../.."
BIN=./target/release
DATA=${DATA:-/tmp/mq-bench-data}
PORT=9760
BROKER_PID=
REPEAT=${REPEAT:-5}
MEMORY=${MEMORY:-full}
FILLED=
RUNS=0
ALL="limits batch1 batch1-all batch1-all-4k e2e produce consume sustained sustained-all"
SCENARIOS=${*:-$ALL}

start_broker() {
    stop_broker
    RUNS=$((RUNS + 1))
    local dir="$DATA/run-$RUNS"
    if [ -z "$FILLED" ]; then
        rm -rf "$DATA"
        sync
        echo 3 > /proc/sys/vm/drop_caches
    fi
    taskset -c 0 "$BIN/mq-broker" --data-dir "$dir" --listen 127.0.0.1:$PORT > /dev/null 2>&1 &
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
trap 'stop_broker; empty_memory' EXIT

# MEMORY=full: fills the page cache with clean file data, once, for the scenarios that follow
# until empty_memory.
fill_memory() {
    [ "$MEMORY" = full ] && [ -z "$FILLED" ] || return 0
    rm -rf "$DATA"
    mkdir -p "$DATA"
    local mib
    mib=$(awk '/MemTotal/ {printf "%d", $2 / 1024 + 2048}' /proc/meminfo)
    printf '  filling the page cache: '
    dd if=/dev/zero of="$DATA/fill" bs=1M count="$mib" 2>&1 | tail -1
    sync
    echo "  free memory: $(awk '/MemFree/ {print $2, $3}' /proc/meminfo)"
    FILLED=1
}

empty_memory() {
    [ -n "$FILLED" ] || return 0
    stop_broker
    rm -rf "$DATA"
    sync
    FILLED=
    settle_memory
}

# Waits (at most 60 s) until the guest's count of memory handed back to the host has stood
# still for 3 s; 5 s where the kernel has no free page reporting.
settle_memory() {
    local counter=/sys/module/page_reporting/parameters/reported_kib
    if [ ! -r "$counter" ]; then
        sleep 5
        return
    fi
    local last=-1 now still=0 waited
    for waited in $(seq 60); do
        now=$(cat "$counter")
        if [ "$now" = "$last" ]; then
            still=$((still + 1))
            if [ "$still" -ge 3 ]; then
                echo "  memory handed back to the host within $waited s"
                return
            fi
        else
            still=0
        fi
        last=$now
        sleep 1
    done
    echo "  memory still being handed back to the host after 60 s"
}

# Writing 2 GiB into the page cache right after dropping it. On this VM it varies from
# 0.6 to 5 GB/s from one moment to the next (freed memory is handed back to the host and
# faulted in again), which is the main source of the produce figures' spread.
pagecache_dd() {
    mkdir -p "$DATA"
    rm -f "$DATA/dd"; sync; echo 3 > /proc/sys/vm/drop_caches
    local line
    line=$(taskset -c 0 dd if=/dev/zero of="$DATA/dd" bs=1M count=2048 2>&1 | tail -1)
    rm -f "$DATA/dd"
    echo "  page-cache write, 2 GiB: $line"
    # dd's "N bytes (...) copied, S s, R" as MB/s, in PAGECACHE_MB.
    PAGECACHE_MB=$(echo "$line" | awk '{printf "%.0f", $1 / $(NF-3) / 1e6}')
}

bench() {
    echo "\$ mq-bench $*"
    taskset -c 1 "$BIN/mq-bench" "$@" -b 127.0.0.1:$PORT --json 2> /dev/null | tee /tmp/mq-suite-last.json
}

# Loopback TCP bandwidth in MB/s over 2 seconds, bench core sending to broker core.
loopback_mb_per_sec() {
    iperf3 -s -1 -p 5299 > /dev/null 2>&1 &
    sleep 0.3
    taskset -c 1 iperf3 -c 127.0.0.1 -p 5299 -t 2 -A 1,0 -J |
        python3 -c 'import json, sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6))'
}

# The last bench run's MB/s.
last_mb_per_sec() {
    python3 -c 'import json; print(json.load(open("/tmp/mq-suite-last.json"))["mb_per_sec"])'
}

# Prints $1 as a percentage of $2 and appends it to the file $3.
ratio() {
    python3 -c 'import sys; r = 100 * float(sys.argv[1]) / float(sys.argv[2]); print(f"{r:.1f}"); open(sys.argv[3], "a").write(f"{r:.1f}\n")' "$1" "$2" "$3"
}

# The median and range of the ratios in file $1, labelled $2.
summary() {
    python3 -c 'import statistics, sys; v = [float(x) for x in open(sys.argv[1])]; print(f"  {sys.argv[2]}: median {statistics.median(v):.1f}% over {len(v)} runs, range {min(v):.1f}-{max(v):.1f}%")' "$1" "$2"
    rm -f "$1"
}

rm -f /tmp/mq-suite-produce /tmp/mq-suite-produce-pc /tmp/mq-suite-produce-all /tmp/mq-suite-consume
for scenario in $SCENARIOS; do
    echo "== $scenario (MEMORY=$MEMORY)"
    case $scenario in
    produce | consume) fill_memory ;;
    *) empty_memory ;;
    esac
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
        # The same write into memory freed a moment before, then after a 5-second pause (in
        # which the guest hands free memory back to the host).
        taskset -c 0 dd if=/dev/zero of="$DATA/dd" bs=1M count=2048 2> /dev/null
        rm -f "$DATA/dd"
        printf '  page-cache write, 2 GiB, into memory freed just before: '
        taskset -c 0 dd if=/dev/zero of="$DATA/dd" bs=1M count=2048 2>&1 | tail -1
        rm -f "$DATA/dd"
        sleep 5
        printf '  page-cache write, 2 GiB, after a 5 s pause: '
        taskset -c 0 dd if=/dev/zero of="$DATA/dd" bs=1M count=2048 2>&1 | tail -1
        rm -f "$DATA/dd"
        dd if=/dev/zero of=/dev/null bs=1M count=20000 2>&1 | tail -1
        python3 tools/bench/pingpong.py
        python3 tools/bench/fsync_floor.py "$DATA"
        ;;
    produce)
        # acks=1 against the loopback measured just before it (with MEMORY=cold, also against
        # the mean of a page-cache write just before and just after it); acks=all against the
        # acks=1 run just before it.
        for run in $(seq "$REPEAT"); do
            echo "-- run $run of $REPEAT"
            loopback=$(loopback_mb_per_sec)
            echo "  loopback: $loopback MB/s"
            if [ -z "$FILLED" ]; then
                pagecache_dd
                before=$PAGECACHE_MB
            fi
            start_broker
            bench produce --messages 2000000 --size 1024 --batch-bytes 1048576 --acks 1
            one=$(last_mb_per_sec)
            stop_broker
            echo "  acks=1: $(ratio "$one" "$loopback" /tmp/mq-suite-produce)% of loopback"
            if [ -z "$FILLED" ]; then
                pagecache_dd
                pagecache=$(( (before + PAGECACHE_MB) / 2 ))
                echo "  acks=1: $(ratio "$one" "$pagecache" /tmp/mq-suite-produce-pc)% of the page-cache writes' mean ($pagecache MB/s)"
            fi
            start_broker
            bench produce --messages 2000000 --size 1024 --batch-bytes 1048576 --acks all
            all=$(last_mb_per_sec)
            stop_broker
            echo "  acks=all: $(ratio "$all" "$one" /tmp/mq-suite-produce-all)% of acks=1"
        done
        summary /tmp/mq-suite-produce "acks=1, of loopback"
        [ -f /tmp/mq-suite-produce-pc ] && summary /tmp/mq-suite-produce-pc "acks=1, of the page-cache write"
        summary /tmp/mq-suite-produce-all "acks=all, of acks=1" ;;
    consume)
        for run in $(seq "$REPEAT"); do
            echo "-- run $run of $REPEAT"
            start_broker
            bench produce --messages 2000000 --size 1024 --batch-bytes 1048576 --acks 1 > /dev/null
            loopback=$(loopback_mb_per_sec)
            echo "  loopback: $loopback MB/s"
            bench consume --messages 2000000
            stop_broker
            echo "  consume: $(ratio "$(last_mb_per_sec)" "$loopback" /tmp/mq-suite-consume)% of loopback"
        done
        summary /tmp/mq-suite-consume "consume, of loopback" ;;
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
