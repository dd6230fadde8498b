#!/usr/bin/env -S sh -c 'exec "$(dirname "$0")/../.venv/bin/python" "$0" "$@"'
"""Traffic gap of a planned upgrade (a second switchd taking the data path
over from the running one, issue 12) against an ordinary restart (SIGTERM,
then a new switchd from the state directory), in the same run (not a test;
prints a Markdown section), root.

Two pods ping each other every 2 ms (`ping -i 0.002`) while, on their node,
either a successor switchd takes over (`upgrade`) or switchd is stopped with
SIGTERM and started again at once (`restart`); the two alternate, rep by
rep. PORTS extra idle ports are attached too. Per event: the gap, the
longest silence between two consecutive echo replies, and the pings lost
(sent before the last reply and never answered); for the upgrade also the
takeover time the new switchd logs (`took over from pid N in X ms`).

    sudo bench/upgrade_gap.py [--reps 20] [--ports 0,50]
"""
import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from cnihelp import machine_note, pct  # noqa: E402
from conftest import Topo  # noqa: E402
from test_handover import PingStream, take_over  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from restart_gap import node_with_pods  # noqa: E402

LEAD, TAIL = 1.0, 1.0  # seconds of ping before the event and after ready


def wait_ready(node, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if node.api("GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"switchd not ready after {seconds} s:\n{node.log()}")


def measure(topo, node, a, b, event):
    """One event under a 2 ms ping: (gap ms, lost pings, logged takeover ms)."""
    ping = PingStream(topo, a, b, seconds=LEAD + TAIL + 10)
    time.sleep(LEAD)
    logged = None
    try:
        if event == "upgrade":
            h = take_over(node)
            if f"handed over to pid {h.new.pid}" not in h.old.log():
                raise RuntimeError(f"no handover: {h.describe()}")
            logged = h.logged_ms
        else:
            node.kill(signal.SIGTERM)
            node.start(wait_ready=False)
            wait_ready(node)
        time.sleep(TAIL)
    finally:
        ping.stop()
    return ping.gap_ms(), len(ping.missing()), logged


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.median(xs):.0f} / {pct(xs, 95):.0f} / {max(xs):.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--ports", default="0,50", help="extra idle ports to attach, per case")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    print(f"## Upgrade (handover) against restart (SIGTERM + start): traffic gap, {args.reps} reps "
          f"({os.cpu_count()} CPUs, {os.uname().release}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"at start: {machine_note()})\n")
    print("| ports | event | gap ms median / p95 / max | lost pings median / p95 / max | "
          "takeover logged ms median / p95 / max |")
    print("|---|---|---|---|---|")
    for extra in (int(x) for x in args.ports.split(",")):
        topo = Topo()
        try:
            node, a, b = node_with_pods(topo, extra)
            res = {"upgrade": [], "restart": []}
            errors = {}
            for rep in range(args.reps):
                for event in ("upgrade", "restart"):
                    if event in errors:
                        continue
                    try:
                        res[event].append(measure(topo, node, a, b, event))
                    except (AssertionError, RuntimeError) as e:
                        errors[event] = str(e).splitlines()[0][:300]
                        print(f"rep {rep + 1} {event}: {e}", file=sys.stderr, flush=True)
                        if node.proc is None or node.proc.poll() is not None:
                            node.start()
                print(f"ports {extra + 2} rep {rep + 1}: "
                      + ", ".join(f"{k} {v[-1][0]:.0f} ms/{v[-1][1]} lost" for k, v in res.items() if v),
                      file=sys.stderr, flush=True)
            for event in ("upgrade", "restart"):
                r = res[event]
                if not r:
                    print(f"| {extra + 2} | {event} | failed: {errors.get(event, '?')} | | |", flush=True)
                    continue
                print(f"| {extra + 2} | {event} ({len(r)}) | {stats([x[0] for x in r])} | "
                      f"{stats([x[1] for x in r])} | {stats([x[2] for x in r])} |", flush=True)
        finally:
            topo.cleanup()
    print(f"\nAt end: {machine_note()}.")


if __name__ == "__main__":
    main()
