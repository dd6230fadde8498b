#!/usr/bin/env -S sh -c 'exec "$(dirname "$0")/../.venv/bin/python" "$0" "$@"'
"""TCP through switchd with the receive-side settings a pod's veth can keep
(not a test; prints numbers), root. Compares, in ONE run with interleaved
repetitions, every variant below against today's CNI default (pod end: TX
checksum offload off, RPS off switchd's poll CPU) and against a Linux
bridge with pod offloads off and on.

    sudo .venv/bin/python bench/tcp_offloads.py                 # 1 run, 3 reps
    sudo .venv/bin/python bench/tcp_offloads.py --runs 2 --out bench/RESULTS-offloads.md
    sudo .venv/bin/python bench/tcp_offloads.py --reps 7 --rtt --only default,sg+gso,gro+notso+thr,bridge-off,bridge-on
    .venv/bin/python bench/tcp_offloads.py --from-raw RAW.json [RAW2.json] --out FILE   # re-render only

Binaries: $PODSWITCH_TARGET (default /tmp/podswitch-offl, a frozen copy of
target/release; falls back to target/release when that is missing).

Each measurement builds its own topology (node netns with switchd, or a
bridge; two pod netns with one veth each, 1 rx / 1 tx queue), runs one
iperf3 TCP stream A->B for --secs, and tears it down. All names carry one
per-run prefix; everything is removed on any failure, SIGINT or SIGTERM.
The only setting outside those namespaces is the global sysctl
net.core.gro_normal_batch (variant `...+batch64`), restored afterwards.

Per measurement it records, besides receiver Gbit/s and retransmits:
- napi: share of B's received frames that went through the veth NAPI
  (ethtool -S rx_queue_0_xdp_packets on B's end / frames switchd sent);
  0 means the plain netif_rx (backlog) path, so GRO cannot happen.
- skb KB: mean size of the iperf3 data skbs reaching B's IP layer, from
  an nftables counter (`iptables -A INPUT -p tcp --dport 5301`) in B,
  present in every variant (bridge too); > 1.5 means GRO merged.
- csum errors (Tcp/Udp InCsumErrors on B), stalled 1-s intervals (< 10 %
  of the run's median interval), frames dropped at B's veth ring
  (rx_queue_0_drops: NAPI mode only) and switchd CPU s.
- with --rtt: sockperf UDP ping-pong p50 (3 s, both ends on CPU 0, as
  bench/run.sh does), after the TCP run, same topology.
"""
import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PODSWITCH_TARGET", "/tmp/podswitch-offl"
                      if Path("/tmp/podswitch-offl/switchd").exists() else str(ROOT / "target" / "release"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from conftest import SWITCHD, Topo, cpu_seconds, nsexec, sh, why_cannot_run  # noqa: E402

IPERF_PORT = 5301
GRO_BATCH = "/proc/sys/net/core/gro_normal_batch"

# ------------------------------------------------------------------ variants
# Every switchd variant starts from the CNI default: pod end `tx off`
# (takes TSO with it; SG and software GSO stay on) and RPS to every CPU
# but switchd's poll CPU. Settings apply to BOTH pods (a CNI default
# would), "host" = the host end of each pod's veth (carries the XDP
# program). Keys: pod_k / host_k = `ethtool -K` args, pod_sysfs = files
# under /sys/class/net/eth0, pod_sysctl, gro_batch = global sysctl.
NOTSO = {"pod_k": ["gro", "on"], "host_k": ["tso", "off"]}
THR = {"pod_sysfs": {"threaded": "1"}}
FLUSH = {"pod_sysfs": {"gro_flush_timeout": "50000", "napi_defer_hard_irqs": "2"}}


def merge(*parts):
    v = {"pod_k": [], "host_k": [], "pod_sysfs": {}, "pod_sysctl": {}}
    for p in parts:
        v["pod_k"] += p.get("pod_k", [])
        v["host_k"] += p.get("host_k", [])
        v["pod_sysfs"].update(p.get("pod_sysfs", {}))
        v["pod_sysctl"].update(p.get("pod_sysctl", {}))
        if "gro_batch" in p:
            v["gro_batch"] = p["gro_batch"]
    return v


VARIANTS = {
    "default": ("tx off (CNI today)", merge()),
    "nogso": ("tx off, sg off, gso off (no software GSO in the sender)",
              merge({"pod_k": ["sg", "off", "gso", "off"]})),
    "sg+gso": ("tx off, sg on, gso on stated explicitly (= default state, checked)",
               merge({"pod_k": ["sg", "on", "gso", "on"]})),
    "rx-off": ("+ pod rx off (RX checksum)", merge({"pod_k": ["rx", "off"]})),
    "gro": ("+ pod gro on", merge({"pod_k": ["gro", "on"]})),
    "gro+udpfwd": ("+ pod gro on, rx-udp-gro-forwarding on",
                   merge({"pod_k": ["gro", "on", "rx-udp-gro-forwarding", "on"]})),
    "gro+notso": ("+ pod gro on, host end tso off", merge(NOTSO)),
    "gro+notso+flush": ("+ pod gro on, host tso off, gro_flush_timeout 50 us, napi_defer_hard_irqs 2",
                        merge(NOTSO, FLUSH)),
    "gro+notso+thr": ("+ pod gro on, host tso off, threaded NAPI", merge(NOTSO, THR)),
    "gro+notso+thr+flush": ("+ pod gro on, host tso off, threaded NAPI, gro_flush_timeout 50 us, defer 2",
                            merge(NOTSO, THR, FLUSH)),
    "gro+notso+thr+grolist": ("+ pod gro on, host tso off, threaded NAPI, rx-gro-list on",
                              merge(NOTSO, THR, {"pod_k": ["rx-gro-list", "on"]})),
    "gro+notso+thr+batch64": ("+ pod gro on, host tso off, threaded NAPI, net.core.gro_normal_batch=64 (global)",
                              merge(NOTSO, THR, {"gro_batch": "64"})),
    "rmem": ("+ pod net.ipv4.tcp_rmem=4096 1048576 67108864",
             merge({"pod_sysctl": {"net.ipv4.tcp_rmem": "4096 1048576 67108864"}})),
    "bridge-off": ("Linux bridge, pod tx off (same conditions)", None),
    "bridge-on": ("Linux bridge, pod offloads on (kernel defaults)", None),
}


# ------------------------------------------------------------------ run state
class Run:
    """Every Topo this process made, for cleanup on any exit."""

    def __init__(self):
        self.tag = secrets.token_hex(2)
        self.prefix = f"pof{self.tag}"          # namespaces: pof<tag>-<n>-<name>
        self.topos = []
        self.n = 0
        self.gro_batch_orig = Path(GRO_BATCH).read_text().strip()

    def topo(self):
        self.n += 1
        t = Topo()
        t.prefix = f"{self.prefix}-{self.n}"
        t.short = f"o{self.tag}{self.n:03d}"     # host ifnames: o<tag><n><pod> <= 15 chars
        self.topos.append(t)
        return t

    def release(self, t):
        t.cleanup()
        if t in self.topos:
            self.topos.remove(t)

    def cleanup(self):
        for t in list(self.topos):
            self.release(t)
        Path(GRO_BATCH).write_text(self.gro_batch_orig)
        # Anything left under our prefix (e.g. a Topo that failed half-built).
        for ns in sh("ip", "netns", "list", check=False).stdout.split("\n"):
            name = ns.split(" ")[0]
            if name.startswith(self.prefix + "-"):
                sh("ip", "netns", "del", name, check=False)


def ethtool_k(ns, dev, args):
    if args:
        nsexec(ns, "ethtool", "-K", dev, *args)


def features(ns, dev):
    out = nsexec(ns, "ethtool", "-k", dev).stdout
    f = {}
    for line in out.splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            f[k.strip()] = v.strip()
    return f


def check_features(ns, dev, args):
    """ethtool -K silently leaves fixed features; verify what we asked for."""
    names = {"gro": "generic-receive-offload", "tso": "tcp-segmentation-offload", "sg": "scatter-gather",
             "gso": "generic-segmentation-offload", "rx": "rx-checksumming", "tx": "tx-checksumming"}
    f = features(ns, dev)
    bad = []
    for k, v in zip(args[::2], args[1::2]):
        got = f.get(names.get(k, k), "?").split(" ")[0]
        if got != v:
            bad.append(f"{k}={got} (wanted {v})")
    return bad


def snmp(ns):
    lines = nsexec(ns, "cat", "/proc/net/snmp").stdout.splitlines()
    d = {}
    for i in range(0, len(lines) - 1, 2):
        keys, vals = lines[i].split(), lines[i + 1].split()
        for k, v in zip(keys[1:], vals[1:]):
            d[keys[0].rstrip(":") + "." + k] = int(v)
    return d


def eth_stats(ns, dev="eth0"):
    d = {}
    for line in nsexec(ns, "ethtool", "-S", dev).stdout.splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            d[k.strip()] = int(v)
    return d


def link_stat(ns, dev, what):
    return int(nsexec(ns, "cat", f"/sys/class/net/{dev}/statistics/{what}").stdout)


def input_counter(ns):
    """(packets, bytes) of the iperf3 data counter in B's INPUT chain."""
    for line in nsexec(ns, "iptables", "-w", "-nvxL", "INPUT").stdout.splitlines():
        if f"dpt:{IPERF_PORT}" in line:
            f = line.split()
            return int(f[0]), int(f[1])
    return 0, 0


def wait_listen(ns, port, seconds=5):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if nsexec(ns, "ss", "-Hltn", f"sport = :{port}", check=False).stdout.strip():
            return True
        time.sleep(0.05)
    return False


def stop(p):
    """Stops a server we started (its PID is the tool itself: ip netns exec and taskset exec)."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def rtt_p50(t, a, b, secs=3):
    """sockperf ping-pong p50 in µs (None if it failed)."""
    srv = subprocess.Popen(["ip", "netns", "exec", b.ns, "taskset", "-c", "0",
                            "sockperf", "sr", "-i", b.addr, "-p", "11111"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t.procs.append(srv)
    try:
        end = time.monotonic() + 5
        while time.monotonic() < end and not nsexec(b.ns, "ss", "-Hlun", "sport = :11111",
                                                     check=False).stdout.strip():
            time.sleep(0.05)
        # subprocess.run kills the client itself on timeout (no `timeout` wrapper that
        # would orphan it when killed).
        r = nsexec(a.ns, "taskset", "-c", "0", "sockperf", "ping-pong", "-i", b.addr,
                   "-p", "11111", "-t", str(secs), "--full-rtt", check=False, timeout=secs + 15)
    finally:
        stop(srv)
    for line in r.stdout.splitlines():
        if "percentile 50.000" in line:
            return float(line.split()[-1])
    return None


def iperf(t, a, b, secs):
    """One TCP stream a -> b; returns the parsed iperf3 JSON (client side)."""
    srv = subprocess.Popen(["ip", "netns", "exec", b.ns, "iperf3", "-s", "-1", "-B", b.addr, "-p", str(IPERF_PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t.procs.append(srv)
    try:
        if not wait_listen(b.ns, IPERF_PORT):
            raise RuntimeError("iperf3 server did not listen")
        r = nsexec(a.ns, "iperf3", "-c", b.addr, "-p", str(IPERF_PORT), "-t", str(secs), "-J",
                   check=False, timeout=secs + 20)
        try:
            srv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    finally:
        stop(srv)
    try:
        j = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError(f"iperf3 gave no JSON (rc {r.returncode}): {r.stdout[-300:]} {r.stderr[-300:]}")
    if "error" in j:
        raise RuntimeError(f"iperf3: {j['error']}")
    return j


# ------------------------------------------------------------------ topologies
def build_bridge(run, name, ips):
    t = run.topo()
    node = t.node("n")
    a = t.pod(node, "a", ips[0])
    b = t.pod(node, "b", ips[1])    # Pod() turns pod tx off
    nsexec(node.ns, "ip", "link", "add", "br0", "type", "bridge")
    for p in (a, b):
        nsexec(node.ns, "ip", "link", "set", p.host_if, "master", "br0")
        nsexec(node.ns, "ip", "link", "set", p.host_if, "up")
    nsexec(node.ns, "ip", "link", "set", "br0", "up")
    if name == "bridge-on":
        for p in (a, b):
            nsexec(p.ns, "ethtool", "-K", "eth0", "tx", "on", "sg", "on", "tso", "on", "gso", "on")
    return t, node, a, b


def build_switchd(run, v, ips):
    """The CNI's order: pod end configured before switchd attaches the host end."""
    t = run.topo()
    node = t.node("n").start()
    a = t.pod(node, "a", ips[0])
    b = t.pod(node, "b", ips[1])    # Pod(): veth, pod tx off, address, up
    notes = []
    for p in (a, b):
        ethtool_k(p.ns, "eth0", v["pod_k"])
        ethtool_k(node.ns, p.host_if, v["host_k"])
        for k, val in v["pod_sysctl"].items():
            nsexec(p.ns, "sysctl", "-qw", f"{k}={val}")
    for p in (a, b):
        p.attach(vlan=100)
    # RPS as the CNI does it: every CPU but switchd's poll CPU.
    poll = node.ok("GET", "/v1/datapath").get("pollCpu")
    ncpu = os.cpu_count()
    if poll is not None and ncpu > 1:
        mask = ((1 << ncpu) - 1) & ~(1 << poll)
        for p in (a, b):
            nsexec(p.ns, "sh", "-c", f"echo {mask:x} > /sys/class/net/eth0/queues/rx-0/rps_cpus")
    for p in (a, b):
        for f, val in v["pod_sysfs"].items():
            nsexec(p.ns, "sh", "-c", f"echo {val} > /sys/class/net/eth0/{f}")
    # After the attach (XDP on the host end changes the pod end's features).
    for p in (a, b):
        notes += [f"pod {x}" for x in check_features(p.ns, "eth0", ["tx", "off"] + v["pod_k"])]
        notes += [f"host {x}" for x in check_features(node.ns, p.host_if, v["host_k"])]
    return t, node, a, b, sorted(set(notes))


def measure(run, name, secs, rep, rtt=False):
    desc, v = VARIANTS[name]
    ips = ("10.203.0.1/24", "10.203.0.2/24")
    rec = {"variant": name, "rep": rep}
    t = None
    try:
        if v is None:
            t, node, a, b = build_bridge(run, name, ips)
            rec["notes"] = []
        else:
            t, node, a, b, rec["notes"] = build_switchd(run, v, ips)
        nsexec(b.ns, "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", str(IPERF_PORT), "-j", "ACCEPT")
        if not a.ping_until(b, 10):
            raise RuntimeError("A cannot ping B")
        fb = features(b.ns, "eth0")
        rec["b_features"] = {k: fb.get(k, "?") for k in (
            "tx-checksumming", "scatter-gather", "tcp-segmentation-offload", "generic-segmentation-offload",
            "generic-receive-offload", "rx-checksumming", "rx-gro-list", "rx-udp-gro-forwarding")}
        if v is not None and "gro_batch" in v:
            Path(GRO_BATCH).write_text(v["gro_batch"])
        s0, e0 = snmp(b.ns), eth_stats(b.ns)
        rx0 = link_stat(b.ns, "eth0", "rx_packets")
        ic0 = input_counter(b.ns)
        c0 = cpu_seconds(node.proc.pid) if node.proc else None
        try:
            j = iperf(t, a, b, secs)
        finally:
            Path(GRO_BATCH).write_text(run.gro_batch_orig)
        c1 = cpu_seconds(node.proc.pid) if node.proc else None
        s1, e1 = snmp(b.ns), eth_stats(b.ns)
        rx1 = link_stat(b.ns, "eth0", "rx_packets")
        ic1 = input_counter(b.ns)
        d = {k: s1[k] - s0.get(k, 0) for k in s1}
        ints = [i["sum"]["bits_per_second"] / 1e9 for i in j["intervals"]]
        med_i = statistics.median(ints) if ints else 0
        rec.update(
            gbps=j["end"]["sum_received"]["bits_per_second"] / 1e9,
            retr=j["end"]["sum_sent"]["retransmits"],
            stalls=sum(1 for x in ints if x < 0.1 * med_i),
            min_interval=min(ints) if ints else 0,
            csum_err=d.get("Tcp.InCsumErrors", 0) + d.get("Udp.InCsumErrors", 0),
            ring_drops=e1.get("rx_queue_0_drops", 0) - e0.get("rx_queue_0_drops", 0),
            napi=(e1.get("rx_queue_0_xdp_packets", 0) - e0.get("rx_queue_0_xdp_packets", 0)) / max(1, rx1 - rx0),
            skb_kb=(ic1[1] - ic0[1]) / max(1, ic1[0] - ic0[0]) / 1000,
            switchd_cpu=(c1 - c0) if c0 is not None else None,
            ok=True)
        if rtt:
            rec["rtt_us"] = rtt_p50(t, a, b)
    except Exception as e:  # a failed measurement is a result too
        rec.update(ok=False, error=str(e)[-400:])
        if t is not None:
            for n in t.nodes:
                if n.proc:
                    rec["switchd_log"] = n.log()[-1500:]
    finally:
        if t is not None:
            run.release(t)
    return rec


# ------------------------------------------------------------------ report
def med(xs):
    return statistics.median(xs) if xs else None


def fmt_rng(xs, f="{:.2f}"):
    if not xs:
        return "-"
    if len(xs) == 1:
        return f.format(xs[0])
    return f"{f.format(statistics.median(xs))} [{f.format(min(xs))}–{f.format(max(xs))}]"


def report_run(recs, names, idx):
    by = {n: [r for r in recs if r["variant"] == n] for n in names}
    ok = {n: [r for r in by[n] if r["ok"]] for n in names}
    g = {n: [r["gbps"] for r in ok[n]] for n in names}
    ref = {k: med(g.get(k, [])) for k in ("bridge-off", "bridge-on", "default")}
    per_rep = {n: {r["rep"]: r["gbps"] for r in ok[n]} for n in names}
    out = [f"### Run {idx}\n",
           "| variant | n | TCP Gbit/s, median [min–max] | retransmits | ÷ bridge-off | ÷ bridge-on "
           "| ÷ default (per rep) | napi | skb KB | stalls | ring drops | csum err | switchd CPU s | RTT p50 µs |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        rs = ok[n]
        fails = len(by[n]) - len(rs)
        m = med(g[n])
        ratio = lambda k: f"{m / ref[k]:.2f}" if m and ref[k] else "-"  # noqa: E731
        dr = per_rep.get("default", {})
        paired = [per_rep[n][k] / dr[k] for k in sorted(per_rep[n]) if k in dr and dr[k]]
        pr = (f"{med(paired):.2f} ({', '.join(f'{x:.2f}' for x in paired)})" if paired and n != "default" else
              ("1.00" if n == "default" else "-"))
        cpu = [r["switchd_cpu"] for r in rs if r.get("switchd_cpu") is not None]
        rtt = [r["rtt_us"] for r in rs if r.get("rtt_us") is not None]
        out.append(
            f"| `{n}` | {len(rs)}{f' ({fails} failed)' if fails else ''} | {fmt_rng(g[n])} "
            f"| {fmt_rng([r['retr'] for r in rs], '{:.0f}')} | {ratio('bridge-off')} | {ratio('bridge-on')} "
            f"| {pr} | {fmt_rng([r['napi'] for r in rs], '{:.2f}') if rs else '-'} "
            f"| {fmt_rng([r['skb_kb'] for r in rs], '{:.1f}') if rs else '-'} "
            f"| {sum(r['stalls'] for r in rs)} | {sum(r.get('ring_drops', 0) for r in rs) if all('ring_drops' in r for r in rs) else '-'} "
            f"| {sum(r['csum_err'] for r in rs)} | {fmt_rng(cpu) if cpu else '-'} | {fmt_rng(rtt, '{:.1f}') if rtt else '-'} |")
    out.append("")
    for n in names:
        for r in by[n]:
            if not r["ok"]:
                out.append(f"- **`{n}` rep {r['rep']} failed**: {r['error']}")
        notes = sorted({x for r in by[n] for x in r.get("notes", [])})
        if notes:
            out.append(f"- `{n}`: settings that did not stick: {', '.join(notes)}")
    return "\n".join(out) + "\n", {n: med(g[n]) for n in names}, per_rep


def header(args, names):
    sw = Path(os.environ["PODSWITCH_TARGET"]) / "switchd"
    git = sh("git", "-C", str(ROOT), "describe", "--always", "--dirty", check=False).stdout.strip()
    return [
        f"date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}; host: nproc={os.cpu_count()}, kernel {os.uname().release}",
        f"switchd: {sw} (file time {time.strftime('%Y-%m-%d %H:%M', time.localtime(sw.stat().st_mtime))}; "
        f"repo at start of run: {git}); {sh('iperf3', '--version', check=False).stdout.splitlines()[0]}",
        f"settings: runs={args.runs} reps={args.reps} tcp={args.secs}s rtt={'sockperf 3s' if args.rtt else 'off'}, "
        f"1 stream A->B, iperf3 unpinned, switchd default flags (native XDP, poll CPU = last CPU), "
        f"VLAN 100 access ports, MTU 1500",
        f"variants ({len(names)}), interleaved: rep 1 of each, then rep 2 ...; the order rotates by one each rep",
    ]


def render(metas, runs):
    """metas: header lines per source; runs: [(label, records)]."""
    names = [n for n in VARIANTS if any(r["variant"] == n for _, recs in runs for r in recs)]
    out = ["# TCP through switchd: receive-side settings of the pod's veth\n"]
    for m in metas:
        out += [f"- {x}" for x in m]
    out += ["",
            "Taken on a shared 2-vCPU machine **while other work ran** (another engineer compiling at "
            "times): absolute numbers swing; compare ratios within a run, and the runs with each other.\n",
            LEGEND]
    out += ["| variant | what |", "|---|---|"] + [f"| `{n}` | {VARIANTS[n][0]} |" for n in names] + [""]
    summary = {}
    for label, recs in runs:
        rnames = [n for n in names if any(r["variant"] == n for r in recs)]
        text, meds, _ = report_run(recs, rnames, label)
        out.append(text)
        summary[label] = meds
    if len(runs) > 1:
        out.append("### Across runs: median Gbit/s: ÷ same-run `default` (÷ `bridge-off`, ÷ `bridge-on`)\n")
        out.append("| variant | " + " | ".join(f"run {i}" for i in summary) + " |")
        out.append("|---|" + "---|" * len(summary))
        for n in names:
            cells = []
            for meds in summary.values():
                m, d = meds.get(n), meds.get("default")
                bo, bn = meds.get("bridge-off"), meds.get("bridge-on")
                if m is None:
                    cells.append("-")
                    continue
                f = lambda x: f"{m / x:.2f}" if x else "-"  # noqa: E731
                cells.append(f"{m:.2f}: {f(d)} ({f(bo)}, {f(bn)})")
            out.append(f"| `{n}` | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


LEGEND = """Columns: receiver-side goodput (iperf3 `sum_received`); ratios are of medians
within the run (`÷ default` also per rep, paired in time); `napi` = share of B's
received frames that went through the veth's NAPI (0 = netif_rx backlog path, no
GRO possible); `skb KB` = mean size of the data skbs reaching B's IP layer
(nftables counter in B, all variants; > 1.5: GRO merged, or TSO skbs kept
whole); `stalls` = 1-s intervals under 10 % of the run's median interval
(summed over reps); `ring drops` = B's veth ring drops (summed); `csum err` =
Tcp/Udp InCsumErrors on B (summed); `RTT p50` only with --rtt.
All switchd variants include the CNI's defaults (pod `tx off`, RPS off the
poll CPU); settings apply to both pods' veths; "host" = the host end (XDP).
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--secs", type=int, default=8)
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--rtt", action="store_true", help="also sockperf ping-pong p50 per measurement")
    ap.add_argument("--out", default="", help="write the Markdown report here too")
    ap.add_argument("--raw", default="", help="raw JSON records (default /tmp/tcp_offloads-<tag>.json)")
    ap.add_argument("--from-raw", nargs="+", metavar="RAW", help="only re-render a report from raw JSON files")
    args = ap.parse_args()
    if args.from_raw:
        metas, runs = [], []
        for k, f in enumerate(args.from_raw, 1):
            d = json.loads(Path(f).read_text())
            recs = d["records"] if isinstance(d, dict) else d
            metas.append(d.get("meta", []) if isinstance(d, dict) else [f"{f}: no metadata recorded"])
            for i in sorted({r["run"] for r in recs}):
                runs.append((f"{i}" if len(args.from_raw) == 1 else f"{k}.{i}", [r for r in recs if r["run"] == i]))
        text = render(metas, runs)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return
    if not (1 <= args.runs <= 5 and 1 <= args.reps <= 10 and 2 <= args.secs <= 30):
        sys.exit("--runs 1..5, --reps 1..10, --secs 2..30")
    names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - set(VARIANTS)
    if unknown or not names:
        sys.exit(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    reason = why_cannot_run()
    if reason:
        sys.exit(f"cannot run: {reason}")
    for tool in ("iperf3", "ethtool", "ss", "iptables") + (("sockperf", "taskset") if args.rtt else ()):
        if sh("sh", "-c", f"command -v {tool}", check=False).returncode:
            sys.exit(f"missing {tool}")

    run = Run()

    def on_signal(sig, _):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    raw = args.raw or f"/tmp/tcp_offloads-{run.tag}.json"
    all_recs = []
    meta = header(args, names)
    print(f"# prefix {run.prefix}, switchd {SWITCHD}, raw -> {raw}", file=sys.stderr, flush=True)
    try:
        for ri in range(1, args.runs + 1):
            for rep in range(1, args.reps + 1):
                k = (rep - 1) % len(names)
                for n in names[k:] + names[:k]:
                    r = measure(run, n, args.secs, rep, args.rtt)
                    r["run"] = ri
                    all_recs.append(r)
                    msg = (f"{r['gbps']:.2f} Gbit/s retr {r['retr']} napi {r['napi']:.2f} "
                           f"skb {r['skb_kb']:.1f} KB csum_err {r['csum_err']} stalls {r['stalls']} "
                           f"drops {r['ring_drops']}" + (f" rtt {r.get('rtt_us')} us" if args.rtt else "")
                           if r["ok"] else f"FAILED {r['error']}")
                    print(f"run {ri} rep {rep} {n:>24}: {msg}", file=sys.stderr, flush=True)
                    Path(raw).write_text(json.dumps({"meta": meta, "records": all_recs}, indent=1))
    finally:
        run.cleanup()
    text = render([meta], [(i, [r for r in all_recs if r["run"] == i]) for i in range(1, args.runs + 1)])
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        print(f"# report: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
