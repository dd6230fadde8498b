#!/usr/bin/env python3
"""Forwarding under control-plane churn: does adding and deleting pods
disturb the traffic of pods that are already there?

Two pods A and B on one switchd (both added through the podswitch CNI with
the reference host-local IPAM). Each measurement runs, concurrently for the
same few seconds:
  * `ping -i 0.002 -c 2500` A -> B (per-packet RTTs parsed: lost, p50, p99);
  * an iperf3 UDP stream B -> A (`-u -b 50M -l 1000 -t 5`): lost datagrams
    and out-of-order datagrams as the receiver (A) counts them.
Phase "idle": nothing else happens. Phase "churn": meanwhile 100 other pods
are ADDed then DELeted through the CNI, over and over (bounded rounds and
time). Phases alternate for --reps repetitions. Not a test: numbers only.

With --plugins podswitch,bridge (the default) the same is measured, in
the same run and interleaved, on a second node whose pods the reference
`bridge` plugin connects through a Linux bridge: how much of what churn
does to the traffic is the machine (CPU taken by the CNI calls, veth
creation, the pods' own stacks) rather than the switch.

    sudo .venv/bin/python bench/churn.py [--target DIR] [--reps 3]

Progress goes to stderr, a Markdown report to stdout. Everything lives in
namespaces named pst<hex>-*, removed at the end (also on failure).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default=str(ROOT / "target" / "release"),
                    help="directory with switchd, switchctl, podswitch (default target/release)")
    ap.add_argument("--reps", type=int, default=3, help="idle/churn repetitions, interleaved (default 3)")
    ap.add_argument("--pings", type=int, default=2500)
    ap.add_argument("--interval", default="0.002", help="ping -i (seconds)")
    ap.add_argument("--udp-rate", default="50M", help="iperf3 -b")
    ap.add_argument("--udp-len", type=int, default=1000, help="iperf3 -l")
    ap.add_argument("--udp-secs", type=int, default=5, help="iperf3 -t")
    ap.add_argument("--churn-pods", type=int, default=100, help="pods added and deleted during churn")
    ap.add_argument("--churn-threads", type=int, default=2)
    ap.add_argument("--max-churn-rounds", type=int, default=20,
                    help="bound on add-all/delete-all rounds of one churn phase")
    ap.add_argument("--switchd-args", default="", help="extra switchd flags, space separated")
    ap.add_argument("--plugins", default="podswitch,bridge",
                    help="CNI plugins to compare, interleaved: podswitch and/or bridge (the reference plugin)")
    return ap.parse_args()


ARGS = parse_args()
os.environ["PODSWITCH_TARGET"] = str(Path(ARGS.target).resolve())
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from conftest import TARGET, Topo, nsexec, why_cannot_run  # noqa: E402
from cnihelp import BridgeCni, NetCni, QuietPodNs, cni_del_all, leaks, log, machine_note, make_pods, pct, ping_once  # noqa: E402


RTT = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")
SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


class Churn:
    """ADD then DEL of `pods`, round after round, in a few threads, until
    stopped (or the round bound is hit)."""

    def __init__(self, cni, pods, threads, max_rounds):
        self.cni, self.pods, self.threads, self.max_rounds = cni, pods, threads, max_rounds
        self.stop = threading.Event()
        self.ops = {"ADD": 0, "DEL": 0}
        self.errors = []
        self.lock = threading.Lock()
        self.seq = 0
        self.workers = []

    def _lane(self, k):
        mine = self.pods[k::self.threads]
        for rnd in range(self.max_rounds):
            for cmd in ("ADD", "DEL"):
                for p in mine:
                    if self.stop.is_set() and cmd == "ADD":
                        return
                    rc, out, err = self.cni.run(cmd, p.cid, p.netns)
                    with self.lock:
                        self.ops[cmd] += 1
                        if rc != 0:
                            self.errors.append(f"{cmd} {p.ns}: {out} {err[-200:]}")
                    if len(self.errors) > 20:
                        return

    def start(self):
        self.t0 = time.monotonic()
        self.workers = [threading.Thread(target=self._lane, args=(k,), daemon=True) for k in range(self.threads)]
        for w in self.workers:
            w.start()

    def finish(self):
        self.stop.set()
        for w in self.workers:
            w.join(timeout=120)
        self.secs = time.monotonic() - self.t0


def measure(a, b):
    """Concurrent ping A->B and iperf3 UDP B->A; returns a dict of numbers."""
    srv = subprocess.Popen(["ip", "netns", "exec", a.ns, "timeout", str(ARGS.udp_secs + 30), "iperf3", "-s", "-1",
                            "-B", a.ip, "-p", "5201", "-J"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if ":5201" in nsexec(a.ns, "ss", "-Hlun", check=False).stdout + nsexec(a.ns, "ss", "-Hltn", check=False).stdout:
                break
            time.sleep(0.05)
        ping_budget = int(ARGS.pings * float(ARGS.interval)) + 20
        pinger = subprocess.Popen(["ip", "netns", "exec", a.ns, "timeout", str(ping_budget), "ping", "-n",
                                   "-i", ARGS.interval, "-c", str(ARGS.pings), "-W", "1", b.ip],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        client = subprocess.run(["ip", "netns", "exec", b.ns, "timeout", str(ARGS.udp_secs + 20), "iperf3", "-u",
                                 "-c", a.ip, "-p", "5201", "-b", ARGS.udp_rate, "-l", str(ARGS.udp_len),
                                 "-t", str(ARGS.udp_secs), "-J"], capture_output=True, text=True)
        pout, perr = pinger.communicate(timeout=ping_budget + 10)
        sout, serr = srv.communicate(timeout=30)
    finally:
        for p in (srv,):
            if p.poll() is None:
                p.kill()
                p.wait()
    rtts = [float(m.group(2)) for m in RTT.finditer(pout)]
    m = SUMMARY.search(pout)
    sent, recv = (int(m.group(1)), int(m.group(2))) if m else (ARGS.pings, len(rtts))
    r = {"rcvbuf_errors": None, "ping_sent": sent, "ping_lost": sent - recv, "rtts": rtts,
         "p50": pct(rtts, 50), "p99": pct(rtts, 99), "max": max(rtts) if rtts else float("nan")}
    try:
        end = json.loads(sout)["end"]  # the receiver's (server's) view
        s = end["sum_received"]
        ooo = sum(st["udp"].get("out_of_order", 0) for st in end["streams"])
        r.update(udp_packets=s["packets"], udp_lost=s["lost_packets"], udp_ooo=ooo,
                 udp_mbps=s["bits_per_second"] / 1e6)
    except (ValueError, KeyError, TypeError) as e:
        err = ""
        try:
            err = json.loads(client.stdout).get("error", "")
        except ValueError:
            err = client.stdout[-300:] + client.stderr[-300:]
        log(f"iperf3 gave no receiver summary ({e}): {err} {serr[-300:]}")
        r.update(udp_packets=None, udp_lost=None, udp_ooo=None, udp_mbps=None)
    return r


RESOURCE_DROPS = ("no-buffer", "rx-overrun", "tx-full")


def nobuf(node, *pods):
    """Drops for want of frames or ring space (no-buffer, rx-overrun,
    tx-full) switchd counted on these pods' ports so far."""
    return sum(((node.ok("GET", f"/v1/ports/{p.port_id}").get("stats") or {}).get("drops") or {}).get(r, 0)
               for r in RESOURCE_DROPS
               for p in pods)


def fmt(x, nd=3):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.{nd}f}"
    return str(x)


def rcvbuf_errors(ns):
    """UDP datagrams the kernel dropped in `ns` because a socket's receive
    buffer was full (the receiving process did not keep up)."""
    lines = [ln.split() for ln in nsexec(ns, "cat", "/proc/net/snmp").stdout.splitlines() if ln.startswith("Udp:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))["RcvbufErrors"])


class Setup:
    """One node under test: its CNI plugin, pods A and B, churn pods."""

    def __init__(self, topo, plugin, k):
        self.plugin = plugin
        tag = "" if plugin == "podswitch" else plugin[0]
        self.node = topo.node(f"node{tag}")
        subnet = f"10.{69 + 2 * k}.0.0/23"
        if plugin == "podswitch":
            self.node.start(*ARGS.switchd_args.split())
            self.cni = NetCni(topo, self.node, subnet=subnet)
        else:
            self.cni = BridgeCni(topo, self.node, subnet, bridge=f"{topo.prefix}br")
        self.a, self.b = QuietPodNs(topo, f"{tag}a"), QuietPodNs(topo, f"{tag}b")
        self.a.add_to(self.cni)
        self.b.add_to(self.cni)
        if not (ping_once(self.a.ns, self.b.ip, tries=10) and ping_once(self.b.ns, self.a.ip, tries=10)):
            raise RuntimeError(f"{plugin}: pods A ({self.a.ip}) and B ({self.b.ip}) cannot ping each other")
        self.churners = make_pods(topo, [f"{tag}c{i}" for i in range(ARGS.churn_pods)])
        log(f"{plugin}: A={self.a.ip} B={self.b.ip}; {len(self.churners)} churn namespaces ready")

    def drops(self):
        return nobuf(self.node, self.a, self.b) if self.plugin == "podswitch" else None


def main():
    reason = why_cannot_run()
    if reason:
        sys.exit(f"churn bench cannot run: {reason}")
    plugins = ARGS.plugins.split(",")
    if not plugins or set(plugins) - {"podswitch", "bridge"}:
        sys.exit(f"--plugins: podswitch and/or bridge, not {ARGS.plugins!r}")
    topo = Topo()
    rows = []
    notes = [f"at start: {machine_note()}"]
    churn = None
    drops = {}
    try:
        setups = [Setup(topo, p, k) for k, p in enumerate(plugins)]
        log(f"switchd {TARGET}/switchd")
        for rep in range(1, ARGS.reps + 1):
            for st in setups:
                for phase in ("idle", "churn"):
                    churn = None
                    if phase == "churn":
                        churn = Churn(st.cni, st.churners, ARGS.churn_threads, ARGS.max_churn_rounds)
                        churn.start()
                        time.sleep(0.5)  # churn under way before the traffic starts
                    d0, e0 = st.drops(), rcvbuf_errors(st.a.ns)
                    r = measure(st.a, st.b)
                    r["nobuf"] = None if d0 is None else st.drops() - d0
                    r["rcvbuf_errors"] = rcvbuf_errors(st.a.ns) - e0
                    if churn:
                        churn.finish()
                        errs = cni_del_all(st.cni, st.churners)  # whatever the stop left added
                        r["churn_ops"] = churn.ops["ADD"] + churn.ops["DEL"]
                        r["churn_rate"] = r["churn_ops"] / churn.secs
                        r["churn_errors"] = len(churn.errors) + len(errs)
                        if churn.errors:
                            log("churn errors:", *churn.errors[:5])
                        if st.plugin == "podswitch":
                            left = leaks(st.node, st.cni)
                            if len(left["ports"]) != 2 or len(left["ipam"]) != 2:
                                log(f"after churn: {len(left['ports'])} ports, "
                                    f"{len(left['ipam'])} IPAM allocations (want 2)")
                        churn = None
                    r.update(rep=rep, phase=phase, plugin=st.plugin)
                    rows.append(r)
                    log(f"rep {rep} {st.plugin} {phase}: ping lost {r['ping_lost']}/{r['ping_sent']} "
                        f"p50 {fmt(r['p50'])} p99 {fmt(r['p99'])} ms; A+B buffer/ring drops {fmt(r['nobuf'])}; "
                        f"udp lost {r['udp_lost']}/{r['udp_packets']} (socket buffer {r['rcvbuf_errors']}) "
                        f"ooo {r['udp_ooo']}"
                        + (f"; churn {r['churn_ops']} CNI ops ({r['churn_rate']:.1f}/s), {r['churn_errors']} errors"
                           if "churn_ops" in r else ""))
        notes.append(f"at end (ours included): {machine_note()}")
        for st in setups:
            if st.plugin == "podswitch":
                for p in st.node.ok("GET", "/v1/ports"):
                    for k, v in ((p.get("stats") or {}).get("drops") or {}).items():
                        drops[k] = drops.get(k, 0) + v
    finally:
        if churn is not None:
            churn.finish()  # no CNI calls into namespaces being deleted
        topo.cleanup()
    report(rows, drops, notes)


def report(rows, drops, notes):
    print(f"## churn bench: forwarding A<->B while {ARGS.churn_pods} other pods are added and deleted\n")
    print(f"- binaries: `{TARGET}`; {ARGS.reps} interleaved reps; host: nproc={os.cpu_count()}, "
          f"kernel {os.uname().release}; {'; '.join(notes)}")
    print(f"- ping A->B: `-i {ARGS.interval} -c {ARGS.pings}`; iperf3 UDP B->A: `-u -b {ARGS.udp_rate} "
          f"-l {ARGS.udp_len} -t {ARGS.udp_secs}` (lost / out-of-order as the receiver counts them; "
          "\"socket\": of those, dropped by A's kernel because iperf3's receive buffer was full)")
    print(f"- churn: {ARGS.churn_threads} threads, each ADD-all then DEL-all over its share of the "
          f"{ARGS.churn_pods} pods, repeated until the traffic ends; `bridge`: the reference bridge plugin "
          "and a Linux bridge, same IPAM, same pods\n")
    print("| rep | plugin | phase | ping lost | RTT p50 ms | RTT p99 ms | RTT max ms | UDP lost (socket) | "
          "UDP out-of-order | UDP Mbit/s | switchd buffer/ring drops (A+B) | CNI ops (ops/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ops = f"{r['churn_ops']} ({r['churn_rate']:.1f}/s)" if "churn_ops" in r else "-"
        print(f"| {r['rep']} | {r['plugin']} | {r['phase']} | {r['ping_lost']}/{r['ping_sent']} | {fmt(r['p50'])} | "
              f"{fmt(r['p99'])} | {fmt(r['max'])} | {fmt(r['udp_lost'])}/{fmt(r['udp_packets'])} "
              f"({fmt(r['rcvbuf_errors'])}) | {fmt(r['udp_ooo'])} | {fmt(r['udp_mbps'], 1)} | {fmt(r['nobuf'])} | {ops} |")
    print("\n**Pooled over reps**\n")
    print("| plugin | phase | ping lost | RTT p50 ms | RTT p99 ms | p99 churn / idle | UDP lost (socket) | "
          "UDP out-of-order | switchd buffer/ring drops (A+B) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for plugin in dict.fromkeys(r["plugin"] for r in rows):
        p99 = {}
        for phase in ("idle", "churn"):
            rs = [r for r in rows if r["phase"] == phase and r["plugin"] == plugin]
            rtts = [x for r in rs for x in r["rtts"]]
            p99[phase] = pct(rtts, 99)
            lost = sum(r["ping_lost"] for r in rs)
            sent = sum(r["ping_sent"] for r in rs)
            ul = [r["udp_lost"] for r in rs if r["udp_lost"] is not None]
            up = [r["udp_packets"] for r in rs if r["udp_packets"] is not None]
            uo = [r["udp_ooo"] for r in rs if isinstance(r["udp_ooo"], int)]
            sock = sum(r["rcvbuf_errors"] or 0 for r in rs)
            nb = [r["nobuf"] for r in rs if r["nobuf"] is not None]
            ratio = fmt(p99["churn"] / p99["idle"], 1) if phase == "churn" and p99["idle"] else "-"
            print(f"| {plugin} | {phase} | {lost}/{sent} | {fmt(pct(rtts, 50))} | {fmt(p99[phase])} | {ratio} | "
                  f"{sum(ul)}/{sum(up)} ({sock}) | {sum(uo) if uo else 'n/a'} | {sum(nb) if nb else '-'} |")
    print(f"\nswitchd drop counters at the end (A and B): {drops or 'none'}")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root (it creates network namespaces)")
    main()
