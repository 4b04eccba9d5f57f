#!/usr/bin/env python3
"""The machine's floor for a request/response round trip: a 64-byte TCP ping-pong on
127.0.0.1 between core 0 (echo) and core 1 (client), paced like `mq-bench --rate 2000`
(a pause of 0.5 ms between round trips, so the cores go idle as they do under an open
loop). Prints p50/p99/p99.9 in microseconds. Used by BENCHMARKS.md as the latency limit
that batch-of-1 figures are compared with."""
import os
import socket
import time

PORT = 9799
ROUNDS = 5000

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", PORT))
server.listen(1)
child = os.fork()
if child == 0:
    os.sched_setaffinity(0, {0})
    connection, _ = server.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = connection.recv(100)
        if not data:
            break
        connection.sendall(data)
    os._exit(0)
os.sched_setaffinity(0, {1})
client = socket.create_connection(("127.0.0.1", PORT))
client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
latencies = []
for _ in range(ROUNDS):
    started = time.perf_counter()
    client.sendall(b"x" * 64)
    client.recv(100)
    latencies.append((time.perf_counter() - started) * 1e6)
    time.sleep(0.0005)
client.close()
os.waitpid(child, 0)
latencies.sort()
print(
    "tcp round trip (us): p50 %.0f p99 %.0f p99.9 %.0f"
    % (latencies[ROUNDS // 2], latencies[ROUNDS * 99 // 100], latencies[ROUNDS * 999 // 1000])
)
