"""One process of a fleet sharing a quota store, driven line by line over stdin/stdout.

    python store_worker.py --store URL [--flush-interval S] [--monitor S] [--alerts FILE]

Commands (one per line on stdin; each answered by one line on stdout):
    limit CONFIG LIMIT THRESHOLD [PERIOD]  -> "ok"
    record CONFIG COUNT TOKENS             -> "recorded COUNT" (COUNT records of TOKENS input
                                              tokens each; with --progress N also "progress K"
                                              every N records)
    flush                                  -> "flushed True|False"
    status CONFIG                          -> "status TOTAL LIMIT STATE LIFETIME_INPUT"
    wait-firing CONFIG                     -> "firing" once the status shows the alert firing
                                              (flushing meanwhile)
    serve-prometheus                       -> "serving PORT": the process's metrics at
                                              http://127.0.0.1:PORT/metrics
                                              (start_prometheus_server, a free port)
    offset S                               -> "ok": the clock reads time.time() + S from now on
    exit                                   -> closes the manager (final flush) and exits 0

Every alert the process's handler receives is appended as one JSON line to --alerts (O_APPEND:
lines of several processes never interleave). ``--clock-offset S`` shifts the process's clock
(all processes of a test share it, to cross a period boundary at a chosen real time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from otel_llm_quota import Alert, AlertState, LLMProviderManager


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--flush-interval", type=float, default=0.2)
    parser.add_argument("--monitor", type=float, default=0.0)
    parser.add_argument("--alerts", default="")
    parser.add_argument("--progress", type=int, default=0)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    parser.add_argument("--pace", type=float, default=0.0, help="records per second (0: flat out)")
    args = parser.parse_args()
    offset = [args.clock_offset]

    def clock() -> float:
        return time.time() + offset[0]

    manager = LLMProviderManager(
        store=args.store,
        flush_interval_seconds=args.flush_interval,
        clock=clock,
    )
    if args.alerts:
        fd = os.open(args.alerts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

        def handle(alert: Alert) -> None:
            line = {
                "pid": os.getpid(),
                "config": alert.config_id,
                "state": alert.state.value,
                "reason": alert.reason.value,
                "threshold": alert.threshold_percent,
                "total": alert.quota.total_tokens,
            }
            os.write(fd, (json.dumps(line) + "\n").encode())

        class Handler:
            name = "file"

            def handle_alert(self, alert: Alert) -> None:
                handle(alert)

        manager.add_alert_handler(Handler())
    if args.monitor:
        manager.start_monitoring_thread(args.monitor)
    out = sys.stdout
    print("ready", flush=True)
    for raw in sys.stdin:
        words = raw.split()
        if not words:
            continue
        cmd = words[0]
        if cmd == "limit":
            period = words[4] if len(words) > 4 else "month"
            manager.set_quota_limit_sync(
                words[1],
                int(words[2]),
                float(words[3]),
                period=None if period == "none" else period,
            )
            print("ok", file=out, flush=True)
        elif cmd == "record":
            config, count, tokens = words[1], int(words[2]), int(words[3])
            started = time.monotonic()
            for i in range(1, count + 1):
                manager.record_usage(config, input_tokens=tokens)
                if args.progress and i % args.progress == 0:
                    print(f"progress {i} {time.monotonic() - started:.6f}", file=out, flush=True)
                if args.pace:
                    pause = i / args.pace - (time.monotonic() - started)
                    if pause > 0:
                        time.sleep(pause)  # pacing the load, not synchronisation
            print(f"recorded {count}", file=out, flush=True)
        elif cmd == "record-until":
            # record-until CONFIG TOKENS END BOUNDARY: paced records until clock() >= END;
            # answers how many fell before and after BOUNDARY (by this process's clock).
            config, tokens, end, boundary = (
                words[1],
                int(words[2]),
                float(words[3]),
                float(words[4]),
            )
            before = after = 0
            started = time.monotonic()
            while True:
                now = clock()
                if now >= end:
                    break
                if abs(now - boundary) < 0.02:
                    # Near the boundary the manager's own clock reading (inside record_usage)
                    # could fall on the other side of it than ``now``: record nothing there.
                    time.sleep(0.001)
                    continue
                manager.record_usage(config, input_tokens=tokens)
                if now < boundary:
                    before += 1
                else:
                    after += 1
                if args.pace:
                    pause = (before + after) / args.pace - (time.monotonic() - started)
                    if pause > 0:
                        time.sleep(pause)  # pacing the load, not synchronisation
            print(f"recorded-until {before} {after}", file=out, flush=True)
        elif cmd == "offset":  # offset S: from now on the clock reads time.time() + S
            offset[0] = float(words[1])
            print("ok", file=out, flush=True)
        elif cmd == "check":
            found = asyncio.run(manager.check_quotas())
            print(f"checked {len(found)}", file=out, flush=True)
        elif cmd == "flush":
            print(f"flushed {manager.flush(10.0)}", file=out, flush=True)
        elif cmd == "status":
            print(f"status {status(manager, words[1])}", file=out, flush=True)
        elif cmd == "wait-firing":
            while True:
                manager.flush(10.0)
                quota = manager.ledger.get(words[1])
                if quota is not None and quota.alert_state is AlertState.FIRING:
                    break
            print("firing", file=out, flush=True)
        elif cmd == "serve-prometheus":
            from otel_llm_quota import start_prometheus_server

            endpoint = start_prometheus_server(manager, port=0, host="127.0.0.1")
            print(f"serving {endpoint.port}", file=out, flush=True)
        elif cmd == "exit":
            manager.close()
            print("bye", file=out, flush=True)
            return
    manager.close()


def status(manager: LLMProviderManager, config_id: str) -> str:
    quota = manager.ledger.get(config_id)
    if quota is None:
        return "none"
    state = quota.alert_state.value if quota.alert_state else "-"
    return f"{quota.total_tokens} {quota.quota_limit} {state} {quota.lifetime_input_tokens}"


if __name__ == "__main__":
    main()
