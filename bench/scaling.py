#!/usr/bin/env python3
"""Poll-thread scaling: switchd with T poll threads (--poll-cpus 0-(T-1))
forwarding P flow pairs at once (default P = T), for each T in --threads
where the cores exist. Pods are real namespaces whose veths have T queues
(what the CNI creates for a T-thread switchd); pair i sends on queue i mod T
(set with XPS, so that P >= T flows cover every thread, as many flows do
by hashing); flows are iperf3 UDP (64-byte
frames, as fast as the sender goes) and TCP (one stream per pair). Reps are
interleaved (rep 1 of every T, then rep 2, ...); medians are printed.

Per row: aggregate received Mpps (UDP) and Gbit/s (TCP), out-of-order
datagrams, and CPU per packet: the poll threads' CPU time (from
GET /v1/datapath) over the frames they forwarded.

    sudo .venv/bin/python bench/scaling.py                   # T = 1,2,4,8 where cores exist
    sudo .venv/bin/python bench/scaling.py --threads 1,2 --pairs 2   # 4 pods, 2 flows
    PODSWITCH_TARGET=/path/to/bin ...                         # other binaries

A benchmark, not a test: it prints numbers.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from conftest import Topo, nsexec, sh  # noqa: E402

PORT0 = 5400


def pods(topo, node, pairs, queues):
    out = []
    for i in range(pairs * 2):
        name = f"p{i}"
        ns = f"{topo.prefix}-{name}"
        host = f"{topo.short}{name}"
        sh("ip", "netns", "add", ns)
        topo.namespaces.append(ns)
        nsexec(ns, "ip", "link", "set", "lo", "up")
        nsexec(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        sh("ip", "link", "add", host, "netns", node.ns, "numtxqueues", str(queues), "numrxqueues", str(queues),
           "type", "veth", "peer", "name", "eth0", "netns", ns, "numtxqueues", str(queues), "numrxqueues", str(queues))
        nsexec(ns, "ethtool", "-K", "eth0", "tx", "off")
        ip = f"10.212.{i // 250}.{i % 250 + 1}"
        nsexec(ns, "ip", "addr", "add", f"{ip}/16", "dev", "eth0")
        nsexec(ns, "ip", "link", "set", "eth0", "up")
        if queues > 1:
            # Pair i sends on queue i % queues (XPS: every CPU maps to it),
            # so the flows spread over the poll threads as many flows do
            # by hashing; left to the hash, 2 flows share a queue half the time.
            q = (i // 2) % queues
            every = format((1 << os.cpu_count()) - 1, "x")
            script = "; ".join(f"echo {every if k == q else 0} > /sys/class/net/eth0/queues/tx-{k}/xps_cpus"
                               for k in range(queues))
            nsexec(ns, "sh", "-c", script)
        node.ok("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": host}, "vlan": 100})
        out.append((ns, ip))
    return out


def run_flows(pairs, args, seconds):
    """iperf3 on every pair at once; returns the client JSON reports."""
    servers, reports, ths = [], [None] * len(pairs), []
    for i, (_, (sns, _)) in enumerate(pairs):
        servers.append(subprocess.Popen(["ip", "netns", "exec", sns, "iperf3", "-s", "-1", "-p", str(PORT0 + i)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)

    def client(i, cns, sip):
        r = subprocess.run(["ip", "netns", "exec", cns, "timeout", str(seconds + 15), "iperf3", "-c", sip,
                            "-p", str(PORT0 + i), "-t", str(seconds), "-J", *args],
                           capture_output=True, text=True, timeout=seconds + 20)
        try:
            reports[i] = json.loads(r.stdout)
        except ValueError:
            reports[i] = {"error": r.stdout[-300:] + r.stderr[-300:]}
    for i, ((cns, _), (_, sip)) in enumerate(pairs):
        t = threading.Thread(target=client, args=(i, cns, sip))
        t.start()
        ths.append(t)
    for t in ths:
        t.join(seconds + 30)
    for s in servers:
        try:
            s.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s.kill()
    return reports


def dp(node):
    return node.ok("GET", "/v1/datapath")["threads"]


def measure(threads, npairs, seconds, extra=()):
    topo = Topo()
    try:
        node = topo.node()
        node.start("--poll-cpus", f"0-{threads - 1}" if threads > 1 else "0", *extra)
        ps = pods(topo, node, npairs, threads)
        pairs = [(ps[2 * i], ps[2 * i + 1]) for i in range(npairs)]
        for (cns, _), (_, sip) in pairs:
            nsexec(cns, "ping", "-c", "2", "-i", "0.2", "-W", "1", sip, check=False)
        res = {}
        for kind, args in (("udp", ["-u", "-b", "0", "-l", "18"]), ("tcp", [])):
            before = dp(node)
            reps = run_flows(pairs, args, seconds)
            after = dp(node)
            cpu = sum(a["cpuSeconds"] - b["cpuSeconds"] for a, b in zip(after, before))
            fwd = sum(a["txPackets"] - b["txPackets"] for a, b in zip(after, before))
            bad = [r.get("error") for r in reps if "error" in r]
            if bad:
                raise RuntimeError(f"iperf3 failed: {bad}")
            if kind == "udp":
                pkts = sum(r["end"]["sum"]["packets"] - r["end"]["sum"]["lost_packets"] for r in reps)
                ooo = sum(s["udp"].get("out_of_order", 0) for r in reps for s in r["end"]["streams"])
                res["udp_mpps"] = pkts / seconds / 1e6
                res["udp_ooo"] = ooo
                res["udp_ns_per_pkt"] = cpu / fwd * 1e9 if fwd else float("nan")
            else:
                res["tcp_gbps"] = sum(r["end"]["sum_received"]["bits_per_second"] for r in reps) / 1e9
                res["tcp_retr"] = sum(r["end"]["sum_sent"]["retransmits"] for r in reps)
                res["tcp_ns_per_pkt"] = cpu / fwd * 1e9 if fwd else float("nan")
            res[f"{kind}_threads_busy"] = sum(1 for a, b in zip(after, before) if a["rxPackets"] - b["rxPackets"] > 1000)
        return res
    finally:
        topo.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2,4,8")
    ap.add_argument("--pairs", type=int, default=0, help="flow pairs per row (default: as many as threads)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--switchd-args", default="", help="extra switchd flags, space separated")
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    want = [int(x) for x in a.threads.split(",")]
    counts = [t for t in want if t <= cores]
    skipped = [t for t in want if t > cores]
    if skipped:
        print(f"# skipped {skipped} poll threads: this machine has {cores} CPUs", file=sys.stderr)
    rows = {t: [] for t in counts}
    for rep in range(a.reps):
        for t in counts:
            r = measure(t, a.pairs or t, a.seconds, a.switchd_args.split())
            print(f"# rep {rep + 1} threads {t}: {r}", file=sys.stderr)
            rows[t].append(r)
    med = lambda t, k: statistics.median(x[k] for x in rows[t])
    print(f"\n{cores} CPUs; {a.reps} interleaved reps, medians; {a.seconds} s per measurement\n")
    print("| poll threads | flow pairs | UDP 64 B Mpps | out of order | poll CPU ns/pkt (UDP) | threads busy | "
          "TCP Gbit/s | retransmits | poll CPU ns/pkt (TCP) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in counts:
        print(f"| {t} | {a.pairs or t} | {med(t, 'udp_mpps'):.3f} | {max(x['udp_ooo'] for x in rows[t])} | "
              f"{med(t, 'udp_ns_per_pkt'):.0f} | {med(t, 'udp_threads_busy'):.0f} | {med(t, 'tcp_gbps'):.2f} | "
              f"{med(t, 'tcp_retr'):.0f} | {med(t, 'tcp_ns_per_pkt'):.0f} |")
    if len(counts) > 1:
        base = counts[0]
        for t in counts[1:]:
            print(f"\n{t} threads / {base}: UDP {med(t, 'udp_mpps') / med(base, 'udp_mpps'):.2f}x, "
                  f"TCP {med(t, 'tcp_gbps') / med(base, 'tcp_gbps'):.2f}x")


if __name__ == "__main__":
    main()
