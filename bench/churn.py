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
    return ap.parse_args()


ARGS = parse_args()
os.environ["PODSWITCH_TARGET"] = str(Path(ARGS.target).resolve())
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from conftest import TARGET, Topo, nsexec, why_cannot_run  # noqa: E402
from cnihelp import NetCni, QuietPodNs, cni_del_all, leaks, log, machine_note, make_pods, pct, ping_once  # noqa: E402


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
    r = {"ping_sent": sent, "ping_lost": sent - recv, "rtts": rtts,
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


def nobuf(node, *pods):
    """no-buffer drops switchd counted on these pods' ports so far."""
    return sum(((node.ok("GET", f"/v1/ports/{p.port_id}").get("stats") or {}).get("drops") or {}).get("no-buffer", 0)
               for p in pods)


def fmt(x, nd=3):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.{nd}f}"
    return str(x)


def main():
    reason = why_cannot_run()
    if reason:
        sys.exit(f"churn bench cannot run: {reason}")
    topo = Topo()
    rows = []
    notes = [f"at start: {machine_note()}"]
    churn = None
    try:
        node = topo.node()
        node.start(*ARGS.switchd_args.split())
        cni = NetCni(topo, node, subnet="10.69.0.0/23")
        a, b = QuietPodNs(topo, "a"), QuietPodNs(topo, "b")
        a.add_to(cni)
        b.add_to(cni)
        if not (ping_once(a.ns, b.ip, tries=10) and ping_once(b.ns, a.ip, tries=10)):
            raise RuntimeError(f"pods A ({a.ip}) and B ({b.ip}) cannot ping each other:\n{node.log()}")
        churners = make_pods(topo, [f"c{i}" for i in range(ARGS.churn_pods)])
        log(f"switchd {TARGET}/switchd; A={a.ip} B={b.ip}; {len(churners)} churn namespaces ready")
        for rep in range(1, ARGS.reps + 1):
            for phase in ("idle", "churn"):
                churn = None
                if phase == "churn":
                    churn = Churn(cni, churners, ARGS.churn_threads, ARGS.max_churn_rounds)
                    churn.start()
                    time.sleep(0.5)  # churn under way before the traffic starts
                d0 = nobuf(node, a, b)
                r = measure(a, b)
                r["nobuf"] = nobuf(node, a, b) - d0
                if churn:
                    churn.finish()
                    errs = cni_del_all(cni, churners)  # whatever the stop left added
                    r["churn_ops"] = churn.ops["ADD"] + churn.ops["DEL"]
                    r["churn_rate"] = r["churn_ops"] / churn.secs
                    r["churn_errors"] = len(churn.errors) + len(errs)
                    if churn.errors:
                        log("churn errors:", *churn.errors[:5])
                    left = leaks(node, cni)
                    if len(left["ports"]) != 2 or len(left["ipam"]) != 2:
                        log(f"after churn: {len(left['ports'])} ports, {len(left['ipam'])} IPAM allocations (want 2)")
                r.update(rep=rep, phase=phase)
                rows.append(r)
                log(f"rep {rep} {phase}: ping lost {r['ping_lost']}/{r['ping_sent']} p50 {fmt(r['p50'])} "
                    f"p99 {fmt(r['p99'])} ms; A+B no-buffer drops {r['nobuf']}; udp lost {r['udp_lost']}/{r['udp_packets']} ooo {r['udp_ooo']}"
                    + (f"; churn {r['churn_ops']} CNI ops ({r['churn_rate']:.1f}/s), {r['churn_errors']} errors"
                       if churn else ""))
        notes.append(f"at end (ours included): {machine_note()}")
        ports = node.ok("GET", "/v1/ports")
        drops = {}
        for p in ports:
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
          f"-l {ARGS.udp_len} -t {ARGS.udp_secs}` (lost / out-of-order as the receiver counts them)")
    print(f"- churn: {ARGS.churn_threads} threads, each ADD-all then DEL-all over its share of the "
          f"{ARGS.churn_pods} pods, repeated until the traffic ends\n")
    print("| rep | phase | ping lost | RTT p50 ms | RTT p99 ms | RTT max ms | UDP lost | UDP out-of-order | UDP Mbit/s | switchd no-buffer drops (A+B) | CNI ops (ops/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ops = f"{r['churn_ops']} ({r['churn_rate']:.1f}/s)" if "churn_ops" in r else "-"
        print(f"| {r['rep']} | {r['phase']} | {r['ping_lost']}/{r['ping_sent']} | {fmt(r['p50'])} | {fmt(r['p99'])} | "
              f"{fmt(r['max'])} | {fmt(r['udp_lost'])}/{fmt(r['udp_packets'])} | {fmt(r['udp_ooo'])} | "
              f"{fmt(r['udp_mbps'], 1)} | {r['nobuf']} | {ops} |")
    print("\n**Pooled over reps**\n")
    print("| phase | ping lost | RTT p50 ms | RTT p99 ms | UDP lost | UDP out-of-order | switchd no-buffer drops (A+B) |")
    print("|---|---|---|---|---|---|---|")
    for phase in ("idle", "churn"):
        rs = [r for r in rows if r["phase"] == phase]
        rtts = [x for r in rs for x in r["rtts"]]
        lost = sum(r["ping_lost"] for r in rs)
        sent = sum(r["ping_sent"] for r in rs)
        ul = [r["udp_lost"] for r in rs if r["udp_lost"] is not None]
        up = [r["udp_packets"] for r in rs if r["udp_packets"] is not None]
        uo = [r["udp_ooo"] for r in rs if isinstance(r["udp_ooo"], int)]
        print(f"| {phase} | {lost}/{sent} | {fmt(pct(rtts, 50))} | {fmt(pct(rtts, 99))} | "
              f"{sum(ul)}/{sum(up)} | {sum(uo) if uo else 'n/a'} | {sum(r['nobuf'] for r in rs)} |")
    print(f"\nswitchd drop counters at the end (A and B): {drops or 'none'}")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root (it creates network namespaces)")
    main()
