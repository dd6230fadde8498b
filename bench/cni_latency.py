#!/usr/bin/env python3
"""CNI ADD/DEL latency: podswitch (+ switchd) against the reference `bridge`
plugin, both with the reference `host-local` IPAM, in one run, interleaved
(pod i on podswitch, then pod i on bridge). Not a test: it prints numbers.

    sudo bench/cni_latency.py [PODS]     (default 30 pods per plugin)
    sudo PODSWITCH_BASELINE=/path/to/older/podswitch bench/cni_latency.py 120

With PODSWITCH_BASELINE, an older podswitch binary runs as a third plugin
("podswitch-base", same switchd, its own network name, subnet and pod
interface eth2), interleaved with the other two. The order of the plugins
rotates from pod to pod, so none always runs first. With PODSWITCH_CNI_TIMING
set, a second table gives the medians of the podswitch ADD steps (the
plugin's own timing marks), for each podswitch binary.

Everything lives in namespaces named pcl<pid>-*, removed at the end.
"""
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "target" / "release"
REF = Path("/usr/lib/cni")
PODS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
P = f"pcl{os.getpid()}"
TMP = Path(tempfile.mkdtemp(prefix=f"{P}-"))
NODE = f"{P}-node"
namespaces = []
BASELINE = os.environ.get("PODSWITCH_BASELINE")
KINDS = ["podswitch", "bridge"] + (["podswitch-base"] if BASELINE else [])
SUBNET = {"podswitch": "10.123.0.0/16", "bridge": "10.124.0.0/16", "podswitch-base": "10.125.0.0/16"}
IFNAME = {"podswitch": "eth0", "bridge": "eth1", "podswitch-base": "eth2"}
steps = {k: [] for k in KINDS}  # podswitch ADDs: {mark: ms since start}


def sh(*a, **kw):
    return subprocess.run(a, check=True, capture_output=True, text=True, **kw)


def netns(name):
    sh("ip", "netns", "add", name)
    namespaces.append(name)
    return f"/var/run/netns/{name}"


def plugin_conf(kind):
    ipam = {"type": "host-local", "dataDir": str(TMP / "ipam"),
            "ranges": [[{"subnet": SUBNET[kind]}]]}
    if kind.startswith("podswitch"):
        name = f"{P}-ps" if kind == "podswitch" else f"{P}-psb"
        return {"cniVersion": "1.0.0", "name": name, "type": "podswitch",
                "socket": str(TMP / "s.sock"), "vlan": 100, "ipam": ipam}
    return {"cniVersion": "1.0.0", "name": f"{P}-br", "type": "bridge", "bridge": f"{P[:8]}br",
            "isGateway": False, "ipam": ipam}


def cni(kind, cmd, cid, ns):
    binary = {"podswitch": TARGET / "podswitch", "bridge": REF / "bridge", "podswitch-base": BASELINE}[kind]
    env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": ns, "CNI_IFNAME": IFNAME[kind],
           "CNI_PATH": f"{REF}:{TARGET}", "PATH": os.environ["PATH"]}
    data = json.dumps(plugin_conf(kind)).encode()
    # Both run inside the node namespace, entered once by this process.
    t0 = time.perf_counter()
    if os.environ.get("PODSWITCH_CNI_TIMING"):
        env["PODSWITCH_CNI_TIMING"] = "1"
    r = subprocess.run([str(binary)], input=data, env=env, capture_output=True)
    dt = time.perf_counter() - t0
    if r.stderr and kind == "podswitch" and cmd == "ADD":
        sys.stderr.write(r.stderr.decode() + f"   wall {dt * 1000:.2f} ms\n")
    if r.stderr and kind.startswith("podswitch") and cmd == "ADD" and r.returncode == 0:
        marks = {}
        for line in r.stderr.decode().splitlines():
            w = line.split(None, 3)  # "podswitch:", "1.23", "ms", what
            if len(w) == 4 and w[0] == "podswitch:" and w[2] == "ms":
                marks[w[3]] = float(w[1])
        if marks:
            steps[kind].append(marks)
    if r.returncode != 0:
        raise RuntimeError(f"{kind} {cmd} failed: {r.stdout} {r.stderr}")
    return dt * 1000


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    try:
        run()
    finally:
        for ns in reversed(namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(TMP, ignore_errors=True)


def run():
    netns(NODE)
    fd = os.open(f"/var/run/netns/{NODE}", os.O_RDONLY)
    # This process (single-threaded) now lives in the node netns (os.setns is 3.12+).
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")
    sh("ip", "link", "set", "lo", "up")
    switchd = subprocess.Popen([str(TARGET / "switchd"), "--socket", str(TMP / "s.sock"),
                                "--state-dir", str(TMP / "state")], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run([str(TARGET / "switchctl"), "--socket", str(TMP / "s.sock"), "status"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        pods = [netns(f"{P}-p{i}") for i in range(PODS)]
        lat = {(k, c): [] for k in KINDS for c in ("ADD", "DEL")}
        # Warm-up: one of each (page cache, first bridge creation).
        for kind in KINDS:
            cni(kind, "ADD", f"warm-{kind}", pods[0])
            cni(kind, "DEL", f"warm-{kind}", pods[0])

        def rotated(i):
            return KINDS[i % len(KINDS):] + KINDS[:i % len(KINDS)]
        for i, ns in enumerate(pods):
            for kind in rotated(i):
                lat[(kind, "ADD")].append(cni(kind, "ADD", f"{kind}-{i}", ns))
        for i, ns in enumerate(pods):
            for kind in rotated(i):
                lat[(kind, "DEL")].append(cni(kind, "DEL", f"{kind}-{i}", ns))
        print(f"CNI latency, {PODS} pods per plugin, interleaved, host-local IPAM for all (ms)\n")
        print("| plugin | ADD p50 | ADD p90 | ADD p99 | DEL p50 | DEL p90 | DEL p99 |")
        print("|---|---|---|---|---|---|---|")
        for kind in KINDS:
            a, d = lat[(kind, "ADD")], lat[(kind, "DEL")]
            print(f"| `{kind}` | {statistics.median(a):.1f} | {pct(a, 90):.1f} | {pct(a, 99):.1f} | "
                  f"{statistics.median(d):.1f} | {pct(d, 90):.1f} | {pct(d, 99):.1f} |")
        for kind in KINDS:
            if kind == "bridge":
                continue
            ra = statistics.median(lat[(kind, "ADD")]) / statistics.median(lat[("bridge", "ADD")])
            rd = statistics.median(lat[(kind, "DEL")]) / statistics.median(lat[("bridge", "DEL")])
            print(f"\n{kind}/bridge ADD p50 = {ra:.2f}, DEL p50 = {rd:.2f}", end="")
        print()
        if any(steps.values()):
            names = ["switchd ready", "veth created", "port registered", "IPAM done",
                     "addresses and routes set"]
            print("\nADD steps, medians of the plugin's own marks (ms): time to reach each mark, "
                  "and the two steps that make netlink requests")
            print("| plugin | " + " | ".join(names) + " | veth step | addresses step |")
            print("|---|" + "---|" * (len(names) + 2))
            for kind, runs in steps.items():
                if not runs:
                    continue
                med = [statistics.median(r.get(n, float("nan")) for r in runs) for n in names]
                veth = statistics.median(r["veth created"] - r["switchd ready"] for r in runs)
                addr = statistics.median(r["addresses and routes set"] - r["IPAM done"] for r in runs)
                print(f"| `{kind}` | " + " | ".join(f"{m:.2f}" for m in med) + f" | {veth:.2f} | {addr:.2f} |")
        if os.environ.get("CNI_LATENCY_RAW"):
            with open(os.environ["CNI_LATENCY_RAW"], "w") as f:
                json.dump({"latency": {f"{k} {c}": v for (k, c), v in lat.items()}, "steps": steps}, f)
    finally:
        switchd.terminate()
        switchd.wait(timeout=10)


if __name__ == "__main__":
    main()
