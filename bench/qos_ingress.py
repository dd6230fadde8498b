#!/usr/bin/env -S sh -c 'exec "$(dirname "$0")/../.venv/bin/python" "$0" "$@"'
"""Ingress (to-pod) rate limits against the reference plugins (not a test;
prints a Markdown section), root, one run:

One TCP stream (iperf3, 6 s, the first second skipped) into a pod whose
limit comes from the CNI runtimeConfig.bandwidth capability (what
Kubernetes' `kubernetes.io/ingress-bandwidth` annotation becomes), at 50
and 500 Mbit/s, burst 10 ms of the rate, interleaved, REPS times:

- podswitch: the podswitch plugin (host-local IPAM) and switchd, shaping;
- bridge+bandwidth: the reference `bridge` plugin with the reference
  `bandwidth` plugin chained after it (a TBF on the host veth);
- podswitch-policed (optional): the switchd binary given by --policed, the
  release before shaping, pods attached through the API with the same qos.

Reports goodput (median [min-max]), retransmits, and the ping RTT through
the saturated limit (median of 50 pings at 20 Hz during the stream).

    sudo bench/qos_ingress.py [REPS] [--policed PATH/TO/OLD/switchd]
"""
import argparse
import copy
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import conftest  # noqa: E402
from conftest import Topo, nsexec  # noqa: E402
from cnihelp import BridgeCni, NetCni, QuietPodNs  # noqa: E402
from test_cni import REF_CNI  # noqa: E402

PORT = 5377
SECONDS = 6


def iperf_into(client_ns, server_ns, server_ip):
    """One TCP stream client → server; (goodput bit/s after 1 s, retransmits, RTT ms)."""
    import json
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", str(PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.4)
    rtts = []

    def pinger():
        time.sleep(1.5)
        r = nsexec(client_ns, "ping", "-c", "50", "-i", "0.02", "-W", "1", server_ip, check=False, timeout=20)
        rtts.extend(float(x) for x in re.findall(r"time=([\d.]+)", r.stdout))

    t = threading.Thread(target=pinger)
    t.start()
    r = nsexec(client_ns, "timeout", str(SECONDS + 15), "iperf3", "-c", server_ip, "-p", str(PORT),
               "-t", str(SECONDS), "-J", timeout=SECONDS + 20)
    t.join()
    srv.wait(timeout=10)
    rep = json.loads(r.stdout)
    ints = rep["intervals"][1:]
    bps = sum(i["sum"]["bytes"] * 8 for i in ints) / sum(i["sum"]["seconds"] for i in ints)
    return bps, rep["end"]["sum_sent"]["retransmits"], statistics.median(rtts) if rtts else float("nan")


def bandwidth(rate):
    return {"ingressRate": rate, "ingressBurst": rate // 100}


class PodswitchSetup:
    name = "podswitch"

    def __init__(self, topo):
        node = topo.node("ps").start()
        self.cni = NetCni(topo, node, subnet="10.97.1.0/24", vlan=7, capabilities={"bandwidth": True})
        self.a, self.b = QuietPodNs(topo, "psa"), QuietPodNs(topo, "psb")
        self.a.add_to(self.cni)

    def limit(self, rate):
        """(Re)attaches the receiver with the limit, as a runtime would."""
        if self.b.ip:
            self.cni.delete(self.b)
        self.b.add_to(self.cni, conf={**self.cni.conf, "runtimeConfig": {"bandwidth": bandwidth(rate)}})
        assert self.a.ping(self.b.ip)


class BridgeSetup:
    name = "bridge+bandwidth"

    def __init__(self, topo):
        node = topo.node("br").start()
        self.cni = BridgeCni(topo, node, "10.97.2.0/24", f"{topo.short}br")
        self.bw = copy.copy(self.cni)
        self.bw.plugin = REF_CNI / "bandwidth"
        self.a, self.b = QuietPodNs(topo, "bra"), QuietPodNs(topo, "brb")
        self.a.add_to(self.cni)
        self.prev = None

    def limit(self, rate):
        conf = {"cniVersion": self.cni.conf["cniVersion"], "name": self.cni.conf["name"], "type": "bandwidth",
                "capabilities": {"bandwidth": True}}
        if self.prev:
            rc, out, err = self.bw.run("DEL", self.b.cid, self.b.netns, conf={**conf, "prevResult": self.prev})
            assert rc == 0, (out, err)
            self.cni.delete(self.b)
        self.prev = self.b.add_to(self.cni)
        rc, out, err = self.bw.run("ADD", self.b.cid, self.b.netns,
                                   conf={**conf, "runtimeConfig": {"bandwidth": bandwidth(rate)},
                                         "prevResult": self.prev})
        assert rc == 0, f"bandwidth ADD failed: {out} {err}"
        assert self.a.ping(self.b.ip)


class PolicedSetup:
    name = "podswitch-policed (before)"

    def __init__(self, topo, binary):
        saved = conftest.SWITCHD
        conftest.SWITCHD = Path(binary)
        try:
            self.node = topo.node("old").start()
        finally:
            conftest.SWITCHD = saved
        self.a = topo.pod(self.node, "oa", "10.97.3.1/24")
        self.b = topo.pod(self.node, "ob", "10.97.3.2/24")
        self.a.attach(vlan=7, mac=self.a.mac)
        self.b.attach(vlan=7, mac=self.b.mac)

    def limit(self, rate):
        self.node.ok("PATCH", f"/v1/ports/{self.b.port['id']}", {"qos": bandwidth(rate)})
        assert self.a.ping(self.b, count=1)


def endpoints(s):
    if isinstance(s, PolicedSetup):
        return s.a.ns, s.b.ns, s.b.addr
    return s.a.ns, s.b.ns, s.b.ip


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reps", nargs="?", type=int, default=3)
    ap.add_argument("--policed", help="switchd binary of the release before shaping")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    topo = Topo()
    try:
        setups = [PodswitchSetup(topo), BridgeSetup(topo)]
        if args.policed:
            setups.append(PolicedSetup(topo, args.policed))
        print(f"## Ingress limit: one TCP stream into a limited pod ({args.reps} reps, interleaved, "
              f"{os.cpu_count()} CPUs, {os.uname().release})\n")
        print("Limit from runtimeConfig.bandwidth, burst 10 ms of the rate. Goodput is TCP payload "
              "(at most 1448/1514 = 95.6 % of an Ethernet-bit limit). RTT: ping through the saturated limit.\n")
        print("| limit | setup | goodput Mbit/s median [min-max] | % of limit | retransmits median | RTT ms median |")
        print("|---|---|---|---|---|---|")
        for mbit in (50, 500):
            res = {s.name: [] for s in setups}
            for _ in range(args.reps):
                for s in setups:
                    s.limit(mbit * 1_000_000)
                    res[s.name].append(iperf_into(*endpoints(s)))
            for s in setups:
                r = res[s.name]
                g = [x[0] / 1e6 for x in r]
                med = statistics.median(g)
                print(f"| {mbit} Mbit/s | {s.name} | {med:.1f} [{min(g):.1f}-{max(g):.1f}] | "
                      f"{100 * med / mbit:.0f} % | {statistics.median(x[1] for x in r):.0f} | "
                      f"{statistics.median(x[2] for x in r):.1f} |", flush=True)
    finally:
        topo.cleanup()


if __name__ == "__main__":
    main()
