#!/usr/bin/env -S sh -c 'exec "$(dirname "$0")/../.venv/bin/python" "$0" "$@"'
"""QoS benchmark (not a test; prints numbers), root, one run:

1. Limiter accuracy: TCP (iperf3, 4 s) from a pod whose port has
   qos.egressRate of 10, 100 and 1000 Mbit/s; reports the measured Ethernet
   rate (goodput x 1514/1448) against the limit, over REPS repetitions.
2. Forwarding cost of a port with QoS and 20 ACL rules against one
   without, same run, interleaved: TCP throughput (limit far above the
   line rate, so only the per-frame work shows) and switchd CPU seconds.

    sudo bench/qos.py [REPS]      (default 3)
"""
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from conftest import Topo, cpu_seconds  # noqa: E402
from test_qos_security import iperf, received_bps  # noqa: E402

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
WIRE = 1514 / 1448  # Ethernet bytes per TCP payload byte (MSS 1448)


ACLS = [{"direction": "outbound", "action": "allow", "protocol": "udp", "remotePorts": str(1000 + i)}
        for i in range(19)] + [{"direction": "both", "action": "meter", "protocol": "tcp"}]


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    topo = Topo()
    try:
        node = topo.node().start()
        a = topo.pod(node, "a", "10.95.0.1/24")
        b = topo.pod(node, "b", "10.95.0.2/24")
        a.attach(vlan=5, mac=a.mac)
        b.attach(vlan=5, mac=b.mac)
        assert a.ping(b, count=1)
        pid = a.port["id"]
        print(f"# QoS benchmark, {REPS} reps, {os.cpu_count()} CPUs, {os.uname().release}\n")
        print("## Limiter accuracy (TCP through qos.egressRate, Ethernet bits)\n")
        print("| limit | measured median [min-max] | error of median |")
        print("|---|---|---|")
        for mbit in (10, 100, 1000):
            got = []
            for _ in range(REPS):
                node.ok("PATCH", f"/v1/ports/{pid}", {"qos": {"egressRate": mbit * 1_000_000}})
                got.append(received_bps(iperf(topo, a, b, 4)) * WIRE / 1e6)
            med = statistics.median(got)
            print(f"| {mbit} Mbit/s | {med:.1f} [{min(got):.1f}-{max(got):.1f}] | {100 * (med - mbit) / mbit:+.1f} % |",
                  flush=True)
        print("\n## Forwarding cost: QoS + 20 ACL rules on both ports vs none (TCP, interleaved)\n")
        res = {"plain": [], "qos+acl": []}
        cpu = {"plain": [], "qos+acl": []}
        for _ in range(REPS):
            for mode in ("plain", "qos+acl"):
                body = {"qos": None, "acls": []} if mode == "plain" else \
                    {"qos": {"egressRate": 40_000_000_000, "ingressRate": 40_000_000_000}, "acls": ACLS}
                for p in (a, b):
                    node.ok("PATCH", f"/v1/ports/{p.port['id']}", body)
                c0 = cpu_seconds(node.proc.pid)
                res[mode].append(received_bps(iperf(topo, a, b, 4)) / 1e9)
                cpu[mode].append(cpu_seconds(node.proc.pid) - c0)
        print("| ports | TCP Gbit/s median [min-max] | switchd CPU s per run |")
        print("|---|---|---|")
        for mode in ("plain", "qos+acl"):
            r = res[mode]
            print(f"| {mode} | {statistics.median(r):.2f} [{min(r):.2f}-{max(r):.2f}] | "
                  f"{statistics.median(cpu[mode]):.2f} |")
        ratio = statistics.median(res["qos+acl"]) / statistics.median(res["plain"])
        print(f"\nqos+acl / plain throughput = {ratio:.2f}")
    finally:
        topo.cleanup()


if __name__ == "__main__":
    main()
