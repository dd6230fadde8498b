#!/usr/bin/env -S sh -c 'exec "$(dirname "$0")/../.venv/bin/python" "$0" "$@"'
"""Scrape cost of /metrics at 250 ports (not a test; prints a Markdown
section), root, one run.

250 pods are added through the podswitch CNI plugin (reference host-local
IPAM) to one node. Then switchd binaries take turns on the same state
directory (each restart re-attaches the same 250 ports): this build (the
`prometheus` crate's encoder) and, with --baseline, an older binary (the
hand-written text renderer). Each turn: 20 warm-up scrapes, then SCRAPES
sequential scrapes timed from inside the node; reports the median and p95
latency, the body size, and switchd's CPU time per scrape. Turns are
interleaved ROUNDS times.

    sudo bench/metrics_scrape.py [--pods 250] [--scrapes 200] [--rounds 3] [--baseline OLD/switchd]
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import conftest  # noqa: E402
from conftest import Topo, cpu_seconds, nsexec  # noqa: E402
from cnihelp import NetCni, cni_add_all, make_pods  # noqa: E402

SCRAPER = r"""
import http.client, json, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
def once():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t = time.perf_counter()
    c.request("GET", "/metrics")
    body = c.getresponse().read()
    dt = time.perf_counter() - t
    c.close()
    return dt, len(body)
for _ in range(20):
    once()
print(json.dumps([once() for _ in range(n)]))
"""


def turn(node, binary, scrapes):
    node.kill()
    saved = conftest.SWITCHD
    conftest.SWITCHD = Path(binary)
    try:
        node.start()
    finally:
        conftest.SWITCHD = saved
    ports = node.ok("GET", "/v1/ports")
    attached = sum(1 for p in ports if p.get("status", {}).get("attached"))
    time.sleep(1)
    # switchd runs under `ip netns exec`, which execs it: same pid.
    c0 = cpu_seconds(node.proc.pid)
    r = nsexec(node.ns, sys.executable, "-c", SCRAPER, str(node.metrics_port), str(scrapes), timeout=600)
    c1 = cpu_seconds(node.proc.pid)
    res = json.loads(r.stdout)
    lat = sorted(x[0] * 1000 for x in res)
    return {"median": statistics.median(lat), "p95": lat[int(len(lat) * 0.95) - 1], "bytes": res[-1][1],
            "cpu_ms": (c1 - c0) * 1000 / scrapes, "ports": len(ports), "attached": attached}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=250)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", help="an older switchd binary (hand-written renderer)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    topo = Topo()
    try:
        node = topo.node().start()
        cni = NetCni(topo, node, subnet="10.69.0.0/23", vlan=9)
        pods = make_pods(topo, [f"m{i}" for i in range(args.pods)])
        errors = cni_add_all(cni, pods, workers=4)
        assert not errors, errors
        builds = [("prometheus crate (this build)", str(conftest.SWITCHD))]
        if args.baseline:
            builds.append(("hand-written (baseline)", args.baseline))
        res = {name: [] for name, _ in builds}
        for _ in range(args.rounds):
            for name, binary in builds:
                res[name].append(turn(node, binary, args.scrapes))
        print(f"## /metrics scrape cost at {args.pods} ports ({args.rounds} rounds x {args.scrapes} scrapes, "
              f"interleaved, {os.cpu_count()} CPUs, {os.uname().release})\n")
        print("| renderer | latency ms median [rounds min-max] | p95 ms | body KiB | switchd CPU ms per scrape |")
        print("|---|---|---|---|---|")
        for name, _ in builds:
            r = res[name]
            assert all(x["attached"] == args.pods for x in r), f"{name}: not every port re-attached: {r}"
            med = [x["median"] for x in r]
            print(f"| {name} | {statistics.median(med):.2f} [{min(med):.2f}-{max(med):.2f}] | "
                  f"{statistics.median(x['p95'] for x in r):.2f} | {r[0]['bytes'] / 1024:.0f} | "
                  f"{statistics.median(x['cpu_ms'] for x in r):.2f} |", flush=True)
    finally:
        topo.cleanup()


if __name__ == "__main__":
    main()
