#!/usr/bin/env python3
"""Control-plane responsiveness while pods are being added: how long do
`GET /v1/ports` (control socket) and `GET /metrics` (metrics TCP port) take
while 20 CNI ADDs run at once?

One switchd. Two prober threads time requests back to back (a 1 ms pause
between them): one `GET /v1/ports` over the Unix socket, one `GET /metrics`
over TCP to switchd's metrics address inside the node netns (the thread
enters that netns itself, so no process start is timed). Phases:
  * idle:  nothing else happens (--idle-secs);
  * adds:  20 threads, each one CNI ADD of a fresh pod, released together;
  * dels:  the 20 pods deleted again (also 20 threads), so the next round
           starts from the same state.
Repeated --rounds times; samples pooled per phase. Not a test: numbers only.

    sudo .venv/bin/python bench/api_latency.py [--target DIR] [--rounds 10]

Progress on stderr, a Markdown report on stdout. Everything lives in
namespaces named pst<hex>-*, removed at the end (also on failure).
"""
import argparse
import ctypes
import http.client
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default=str(ROOT / "target" / "release"),
                    help="directory with switchd, switchctl, podswitch (default target/release)")
    ap.add_argument("--adds", type=int, default=20, help="parallel CNI ADDs per round (default 20)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--idle-secs", type=float, default=3.0)
    ap.add_argument("--resident", type=int, default=0,
                    help="pods added (and kept) before measuring, so GET /v1/ports lists more ports")
    ap.add_argument("--switchd-args", default="", help="extra switchd flags, space separated")
    return ap.parse_args()


ARGS = parse_args()
os.environ["PODSWITCH_TARGET"] = str(Path(ARGS.target).resolve())
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from conftest import TARGET, Topo, UnixHTTPConnection, why_cannot_run  # noqa: E402
from cnihelp import NetCni, cni_add_all, cni_del_all, leaks, log, machine_note, make_pods, pct  # noqa: E402

CLONE_NEWNET = 0x40000000


class Prober(threading.Thread):
    """Times one request kind back to back; tags samples with the phase."""

    def __init__(self, name, request, phase, netns=None):
        super().__init__(name=name, daemon=True)
        self.request, self.phase, self.netns = request, phase, netns
        self.samples = {}  # phase -> [ms]
        self.errors = {}
        self.stop = threading.Event()

    def run(self):
        if self.netns:
            # setns(CLONE_NEWNET) moves only this thread into the node netns.
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(self.netns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
        while not self.stop.is_set():
            ph = self.phase[0]
            t0 = time.perf_counter()
            try:
                self.request()
                dt = (time.perf_counter() - t0) * 1000
                if self.phase[0] == ph:  # a sample that straddles phases counts for neither
                    self.samples.setdefault(ph, []).append(dt)
            except Exception as e:  # noqa: BLE001 - counted and reported
                self.errors.setdefault(ph, []).append(str(e)[:200])
                time.sleep(0.05)
            time.sleep(0.001)


def get(conn_factory, path):
    c = conn_factory()
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path} -> {r.status}: {body[:200]!r}")
        return body
    finally:
        c.close()


def main():
    reason = why_cannot_run()
    if reason:
        sys.exit(f"api latency bench cannot run: {reason}")
    topo = Topo()
    phase = ["setup"]
    probers = []
    add_ms = []
    notes = [f"at start: {machine_note()}"]
    try:
        node = topo.node()
        node.start(*ARGS.switchd_args.split())
        cni = NetCni(topo, node, subnet="10.70.0.0/22")
        if ARGS.resident:
            res = make_pods(topo, [f"r{i}" for i in range(ARGS.resident)])
            errs = cni_add_all(cni, res)
            if errs:
                raise RuntimeError(f"resident ADDs failed: {errs}")
        pods = make_pods(topo, [f"p{i}" for i in range(ARGS.adds)])
        ports = Prober("ports", lambda: get(lambda: UnixHTTPConnection(node.socket), "/v1/ports"), phase)
        metrics = Prober("metrics", lambda: get(lambda: http.client.HTTPConnection(
            "127.0.0.1", node.metrics_port, timeout=10), "/metrics"), phase, netns=f"/var/run/netns/{node.ns}")
        probers = [ports, metrics]
        for p in probers:
            p.start()
        log(f"switchd {TARGET}/switchd; {ARGS.resident} resident pods; {ARGS.adds} ADDs x {ARGS.rounds} rounds")
        phase[0] = "idle"
        time.sleep(ARGS.idle_secs)
        for rnd in range(1, ARGS.rounds + 1):
            for p in pods:
                p.cid = f"{topo.prefix}-{p.ns}-r{rnd}"
            barrier = threading.Barrier(len(pods))
            times, errors = [], []

            def one(p):
                barrier.wait()
                t0 = time.perf_counter()
                try:
                    p.add_to(cni)
                    times.append((time.perf_counter() - t0) * 1000)
                except Exception as e:  # noqa: BLE001
                    errors.append(str(e)[:300])

            threads = [threading.Thread(target=one, args=(p,)) for p in pods]
            phase[0] = "adds"
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            wall = time.perf_counter() - t0
            phase[0] = "between"
            add_ms.extend(times)
            log(f"round {rnd}: {len(times)} ADDs in {wall:.2f}s (slowest {max(times, default=0):.0f} ms), "
                f"{len(errors)} failed")
            if errors:
                raise RuntimeError(f"ADDs failed: {errors[:3]}")
            phase[0] = "dels"
            errs = cni_del_all(cni, pods, workers=len(pods))
            phase[0] = "between"
            if errs:
                raise RuntimeError(f"DELs failed: {errs}")
            left = leaks(node, cni)
            if len(left["ports"]) != ARGS.resident or len(left["ipam"]) != ARGS.resident:
                log(f"after DEL: {len(left['ports'])} ports, {len(left['ipam'])} IPAM allocations "
                    f"(want {ARGS.resident})")
            time.sleep(0.3)
        notes.append(f"at end (ours included): {machine_note()}")
    finally:
        for p in probers:
            p.stop.set()
        for p in probers:
            p.join(timeout=15)
        topo.cleanup()
    report(probers, add_ms, notes)


def report(probers, add_ms, notes):
    print(f"## API latency while {ARGS.adds} CNI ADDs run in parallel\n")
    print(f"- binaries: `{TARGET}`; {ARGS.rounds} rounds of {ARGS.adds} parallel ADDs (then DELs); "
          f"{ARGS.resident} resident pods; host: nproc={os.cpu_count()}, kernel {os.uname().release}")
    print(f"- machine: {'; '.join(notes)}")
    print("- probes back to back (1 ms pause), one thread each; a sample that straddles two phases is dropped\n")
    print("| phase | request | samples | p50 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|")
    names = {"ports": "GET /v1/ports (unix socket)", "metrics": "GET /metrics (TCP)"}
    for ph in ("idle", "adds", "dels"):
        for p in probers:
            xs = p.samples.get(ph, [])
            errs = p.errors.get(ph, [])
            print(f"| {ph} | {names[p.name]} | {len(xs)} | {pct(xs, 50):.2f} | {pct(xs, 99):.2f} | "
                  f"{max(xs) if xs else float('nan'):.2f} | {len(errs)}{' (' + errs[0] + ')' if errs else ''} |")
    print(f"\nCNI ADD latency (each of {len(add_ms)} ADDs, {ARGS.adds} at a time): p50 {pct(add_ms, 50):.0f} ms, "
          f"p99 {pct(add_ms, 99):.0f} ms, max {max(add_ms, default=float('nan')):.0f} ms")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root (it creates network namespaces)")
    main()
