#!/usr/bin/env -S sh -c 'exec "$(dirname "$0")/../.venv/bin/python" "$0" "$@"'
"""Traffic gap of a switchd crash restart (not a test; prints a Markdown
section), root, one run.

Two pods ping each other every 2 ms (`ping -i 0.002`) while switchd is
killed with SIGKILL and started again at once on the same state directory;
PORTS extra idle ports are attached too, to see how the re-attach scales.
The gap is the longest silence between two consecutive echo replies. switchd's own log (millisecond
timestamps) says where the time goes: SIGKILL until the process is gone
(the kernel closing its sockets), then exec to state read, to control
socket (XDP program loaded, UMEMs mapped), to ready (every stored port
re-attached).

    sudo bench/restart_gap.py [--reps 5] [--ports 0,50]
"""
import argparse
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from conftest import Topo  # noqa: E402

INTERVAL = 0.002


def log_times(text, since):
    """Seconds after `since` (epoch) of the first log lines of each phase."""
    marks = {"state": r"state .*stored", "socket": r"serving the control API", "ready": r"ready: "}
    out = {}
    for line in text.splitlines():
        m = re.match(r"\[(\S+Z)", line)
        if not m:
            continue
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        if t < since - 0.001:
            continue
        for k, pat in marks.items():
            if k not in out and re.search(pat, line):
                out[k] = t - since
    return out


def node_with_pods(topo, extra):
    """A node with pods a and b on VLAN 3 reaching each other, and `extra`
    idle ports on VLAN 4 (bench/upgrade_gap.py uses it too)."""
    node = topo.node().start()
    a = topo.pod(node, "a", "10.98.0.1/24")
    b = topo.pod(node, "b", "10.98.0.2/24")
    a.attach(vlan=3, mac=a.mac)
    b.attach(vlan=3, mac=b.mac)
    for i in range(extra):
        q = topo.pod(node, f"x{i}", f"10.98.1.{i + 1}/24")
        q.attach(vlan=4, mac=q.mac)
    assert a.ping(b, count=1)
    return node, a, b


def one(node, a, b, sig):
    """One kill -9 + restart under a 2 ms ping; (gap ms, phases)."""
    count = 2500  # 5 s
    p = subprocess.Popen(["ip", "netns", "exec", a.ns, "ping", "-D", "-i", str(INTERVAL), "-c", str(count),
                          "-W", "1", b.addr], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)
    tk = time.time()
    node.kill(sig)
    t0 = time.time()
    node.start(wait_ready=False)
    out, _ = p.communicate(timeout=60)
    # The gap: the longest silence between two consecutive replies.
    stamps = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\].*icmp_seq=", out, re.M)]
    gap = max(b - a for a, b in zip(stamps, stamps[1:])) if len(stamps) > 1 else float("nan")
    phases = log_times(node.log_path.read_text(errors="replace"), t0)
    phases["exit"] = t0 - tk
    deadline = time.monotonic() + 30
    while node.api("GET", "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    return gap * 1000, phases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ports", default="0,50", help="extra idle ports to attach, per case")
    ap.add_argument("--signal", default="KILL", help="KILL (a crash) or TERM (a planned stop)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    print(f"## Restart gap: SIG{args.signal} and an immediate restart ({args.reps} reps, "
          f"{os.cpu_count()} CPUs, {os.uname().release})\n")
    print("| ports | gap ms median [min-max] | signal → process gone ms | exec → state read ms | "
          "→ control socket ms | → ready ms |")
    print("|---|---|---|---|---|---|")
    for extra in (int(x) for x in args.ports.split(",")):
        topo = Topo()
        try:
            node, a, b = node_with_pods(topo, extra)
            gaps, ph = [], []
            for _ in range(args.reps):
                g, p = one(node, a, b, signal.Signals["SIG" + args.signal])
                gaps.append(g)
                ph.append(p)
            med = lambda k: statistics.median(x.get(k, float("nan")) * 1000 for x in ph)  # noqa: E731
            print(f"| {extra + 2} | {statistics.median(gaps):.0f} [{min(gaps):.0f}-{max(gaps):.0f}] | "
                  f"{med('exit'):.0f} | {med('state'):.0f} | {med('socket'):.0f} | {med('ready'):.0f} |", flush=True)
        finally:
            topo.cleanup()


if __name__ == "__main__":
    main()
