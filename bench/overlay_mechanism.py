#!/usr/bin/env -S sh -c 'exec "$(dirname "$0")/../.venv/bin/python" "$0" "$@"'
"""Overlay mechanism for issue 13, measured (not a test; prints a Markdown
section), root.

Two "nodes" (network namespaces) joined by a veth underlay, each with a pod
on VLAN 100, in four modes built side by side and measured interleaved
(rep 1 of every mode, then rep 2, ...):

  direct   each node's switchd has the underlay veth as an uplink trunk
           (allowed VLAN 100): today's 802.1Q mode. Pod MTU 1500.
  overlay  the shipped overlay: one {"nic": {"kind": "vxlan"}} port per
           node carrying VLAN 100 (switchd's veth, the TC programs, one
           external VXLAN netdev). Pod MTU 1450.
  vxlan-sw mechanism A: each node has a kernel `vx100` (VNI 100, local
           192.0.2.x, dstport 4789, dev <underlay>, MTU 1450, an all-zero
           FDB entry to the peer) attached to its switchd as an uplink
           access port on VLAN 100; the underlay veth carries 192.0.2.1/24
           and 192.0.2.2/24 and is NOT attached (the kernel routes the UDP).
           Pod MTU 1450.
  vxlan-br the kernel alone: the same vx100 and a Linux bridge per node, no
           switchd, to separate the kernel's encapsulation cost from
           switchd's. Pod MTU 1450.

Pods have TX checksum offload off in every mode (the AF_XDP path needs it;
it also turns TSO off), so the kernel bridge runs under the same conditions.
Per mode: iperf3 TCP pod->pod (median of the reps), iperf3 UDP with 64-byte
datagrams (`-u -l 64 -b 0`, received packets/s, and where the lost ones
went), the same at a fixed --fixed-rate (CPU per packet without loss), ping
RTT (200 at 10 ms, median / p99). Before each mode's run the script waits
(at most --quiet-wait s) for the machine's other work to drop below 0.25
busy CPUs, and reports what it found. CPU: the machine's busy CPU time (/proc/stat, all CPUs:
user, system, softirq) per packet the receiving pod got, and for the switchd
modes the poll threads' own CPU (`switchd-poll*` in /proc/PID/task/*/stat,
user and system apart) per frame they transmitted (GET /v1/datapath): the
cost of the kernel's vxlan transmit path lands in the poll thread's system
time (its `sendto()` kick runs the vxlan device's xmit), the receive path in
softirq. Then: a tcpdump of mode vxlan-sw's underlay, decoded (VNI, inner
frame tagged or not); the counters the kernel gives for A (`ip -s -d link
show vx100`, `bridge -s fdb show dev vx100`, before and after a datagram
for an unmapped VNI).

    sudo bench/overlay_mechanism.py [--reps 3] [--tcp-seconds 5] [--udp-seconds 3] [--quiet-wait 60]
    PODSWITCH_TARGET=/path/to/bin ...     # other switchd binaries
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from cnihelp import machine_note, pct  # noqa: E402
from conftest import SWITCHD, Topo, nsexec, sh  # noqa: E402

MODES = ("direct", "overlay", "vxlan-sw", "vxlan-br")
VNI = 100
UNDERLAY = ("192.0.2.1", "192.0.2.2")
IPERF_PORT = 5201


def quiet_node(node):
    """No IPv6 in the node (no ND/MLD chatter over the overlay)."""
    for k in ("all", "default"):
        nsexec(node.ns, "sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1")


def underlay(topo, n1, n2, name, addresses):
    ifs = topo.cable(n1, n2, name)
    for node, ifname, ip in zip((n1, n2), ifs, UNDERLAY):
        if addresses:
            nsexec(node.ns, "ip", "addr", "add", f"{ip}/24", "dev", ifname)
        nsexec(node.ns, "ip", "link", "set", ifname, "up")
    return ifs


def vxlan_dev(node, ul, local, peer):
    nsexec(node.ns, "ip", "link", "add", "vx100", "type", "vxlan", "id", str(VNI), "local", local,
           "dstport", "4789", "dev", ul)
    nsexec(node.ns, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx100", "dst", peer)
    nsexec(node.ns, "ip", "link", "set", "vx100", "mtu", "1450")
    nsexec(node.ns, "ip", "link", "set", "vx100", "up")


def set_mtu(pod, mtu):
    nsexec(pod.ns, "ip", "link", "set", pod.ifname, "mtu", str(mtu))
    nsexec(pod.node.ns, "ip", "link", "set", pod.host_if, "mtu", str(mtu))


def build(topo, mode, switchd_args):
    """One mode's two nodes and two pods; returns a dict describing it."""
    tag = {"direct": "d", "overlay": "o", "vxlan-sw": "x", "vxlan-br": "k"}[mode]
    n1, n2 = topo.node(f"{tag}n1"), topo.node(f"{tag}n2")
    for n in (n1, n2):
        quiet_node(n)
    m = {"mode": mode, "nodes": (n1, n2), "switchd": mode != "vxlan-br"}
    if m["switchd"]:
        for n in (n1, n2):
            n.start(*switchd_args)
    ul = underlay(topo, n1, n2, f"u{tag}", addresses=mode != "direct")
    m["underlay"] = ul
    a = topo.pod(n1, f"p{tag}a", "10.90.0.1/24")
    b = topo.pod(n2, f"p{tag}b", "10.90.0.2/24")
    m["pods"] = (a, b)
    if mode == "direct":
        for n, u in zip((n1, n2), ul):
            n.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": u}, "trunk": [{"id": 100}]})
        for p in (a, b):
            p.attach(vlan=100, mac=p.mac)
    elif mode == "overlay":
        for n, u, local, peer in ((n1, ul[0], UNDERLAY[0], UNDERLAY[1]), (n2, ul[1], UNDERLAY[1], UNDERLAY[0])):
            n.ok("POST", "/v1/ports", {"id": "overlay", "trunk": [{"id": 100}], "nic": {
                "kind": "vxlan", "ifname": "psovl0",
                "vxlan": {"local": local, "underlay": u, "peers": [peer]}}})
        for p in (a, b):
            set_mtu(p, 1450)
            p.attach(vlan=100, mac=p.mac)
    else:
        for n, u, local, peer in ((n1, ul[0], UNDERLAY[0], UNDERLAY[1]), (n2, ul[1], UNDERLAY[1], UNDERLAY[0])):
            vxlan_dev(n, u, local, peer)
        for p in (a, b):
            set_mtu(p, 1450)
        if mode == "vxlan-sw":
            for n in (n1, n2):
                n.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": "vx100"}, "vlan": 100})
            for p in (a, b):
                p.attach(vlan=100, mac=p.mac)
        else:
            for n, p in ((n1, a), (n2, b)):
                nsexec(n.ns, "ip", "link", "add", "br0", "type", "bridge")
                nsexec(n.ns, "ip", "link", "set", "vx100", "master", "br0")
                nsexec(n.ns, "ip", "link", "set", p.host_if, "master", "br0")
                nsexec(n.ns, "ip", "link", "set", p.host_if, "up")
                nsexec(n.ns, "ip", "link", "set", "br0", "up")
    if not a.ping_until(b, 10):
        raise RuntimeError(f"{mode}: pods do not ping each other" +
                           "".join(f"\n--- {n.ns} ---\n{n.log()}" for n in (n1, n2) if m["switchd"]))
    return m


# ---- CPU accounting ----

def machine_cpu():
    """Busy jiffies of all CPUs: (user+nice, system, irq+softirq)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return f[0] + f[1], f[2], f[5] + f[6]


def poll_cpu(pid):
    """(utime, stime) jiffies and run time in ns (schedstat: exact, where the
    tick-sampled utime/stime only give the split) of a switchd's poll threads."""
    u = s = run = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            if not open(f"/proc/{pid}/task/{t}/comm").read().startswith("switchd-poll"):
                continue
            f = open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
            ss = open(f"/proc/{pid}/task/{t}/schedstat").read().split()
        except OSError:
            continue
        u += int(f[11])
        s += int(f[12])
        run += int(ss[0])
    return u, s, run


def pod_rx(pod):
    st = json.loads(nsexec(pod.ns, "ip", "-j", "-s", "link", "show", pod.ifname).stdout)[0]["stats64"]
    return st["rx"]["packets"], st["rx"]["bytes"]


def rcvbuf_errors(pod):
    for line in nsexec(pod.ns, "nstat", "-az", "UdpRcvbufErrors").stdout.splitlines():
        f = line.split()
        if f and f[0] == "UdpRcvbufErrors":
            return int(f[1])
    return 0


def switchd_drops(nodes):
    """Drops by reason, summed over every port of the nodes' switchds."""
    out = {}
    for node in nodes:
        for p in node.ok("GET", "/v1/ports"):
            for k, v in (p.get("stats") or {}).get("drops", {}).items():
                out[k] = out.get(k, 0) + v
    return out


def snapshot(m):
    a, b = m["pods"]
    s = {"machine": machine_cpu(), "t": time.monotonic(), "rx_b": pod_rx(b), "rx_a": pod_rx(a),
         "rcvbuf": rcvbuf_errors(b)}
    if m["switchd"]:
        s["poll"] = [poll_cpu(n.proc.pid) for n in m["nodes"]]
        s["fwd"] = sum(t["txPackets"] for n in m["nodes"] for t in n.ok("GET", "/v1/datapath")["threads"])
        s["drops"] = switchd_drops(m["nodes"])
    return s


def cpu_delta(m, before, after, idle=0.0):
    """CPU per packet: machine-wide ns per packet the pods received, and the
    poll threads' user / system ns per frame they transmitted."""
    hz = os.sysconf("SC_CLK_TCK")
    pkts = sum(after[k][0] - before[k][0] for k in ("rx_a", "rx_b"))
    kbytes = sum(after[k][1] - before[k][1] for k in ("rx_a", "rx_b")) / 1000
    mach = [(x - y) / hz for x, y in zip(after["machine"], before["machine"])]
    r = {"pkts": pkts, "mach_ns": sum(mach) / pkts * 1e9 if pkts else float("nan"),
         "mach_split": [x / pkts * 1e9 if pkts else float("nan") for x in mach],
         "mach_ns_kb": sum(mach) / kbytes * 1e9 if kbytes else float("nan"),
         "mach_split_kb": [x / kbytes * 1e9 if kbytes else float("nan") for x in mach],
         "rcvbuf": after["rcvbuf"] - before["rcvbuf"], "rx_b": after["rx_b"][0] - before["rx_b"][0],
         "wall": after["t"] - before["t"], "busy_cpus": sum(mach) / (after["t"] - before["t"])}
    net = sum(mach) - idle * r["wall"]
    r["net_ns"] = net / pkts * 1e9 if pkts else float("nan")
    r["net_ns_kb"] = net / kbytes * 1e9 if kbytes else float("nan")
    if m["switchd"]:
        r["drops"] = {k: v - before["drops"].get(k, 0) for k, v in after["drops"].items()
                      if v != before["drops"].get(k, 0)}
    if m["switchd"]:
        fwd = after["fwd"] - before["fwd"]
        u = sum(x[0] - y[0] for x, y in zip(after["poll"], before["poll"]))
        s = sum(x[1] - y[1] for x, y in zip(after["poll"], before["poll"]))
        run = sum(x[2] - y[2] for x, y in zip(after["poll"], before["poll"]))
        share = u / (u + s) if u + s else 0.5
        r.update(fwd=fwd, poll_user_ns=run * share / fwd if fwd else float("nan"),
                 poll_sys_ns=run * (1 - share) / fwd if fwd else float("nan"))
    return r


# ---- traffic ----

def iperf(m, args, seconds):
    a, b = m["pods"]
    srv = subprocess.Popen(["ip", "netns", "exec", b.ns, "timeout", str(seconds + 20), "iperf3", "-s", "-1",
                            "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m["topo"].procs.append(srv)
    try:
        time.sleep(0.3)
        before = snapshot(m)
        r = nsexec(a.ns, "timeout", str(seconds + 15), "iperf3", "-c", b.addr, "-p", str(IPERF_PORT),
                   "-t", str(seconds), "-J", *args, check=False, timeout=seconds + 20)
        after = snapshot(m)
    finally:
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
    try:
        rep = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError(f"iperf3 gave no JSON: {r.stdout[-300:]} {r.stderr[-300:]}")
    if "error" in rep:
        raise RuntimeError(f"iperf3: {rep['error']}")
    return rep, cpu_delta(m, before, after, m.get("idle", 0.0))


def tcp(m, seconds):
    rep, cpu = iperf(m, [], seconds)
    return {"gbps": rep["end"]["sum_received"]["bits_per_second"] / 1e9,
            "retr": rep["end"]["sum_sent"].get("retransmits", 0), "cpu": cpu}


def idle_rate(seconds=1.0):
    """Busy CPUs of the machine while no benchmark traffic runs (other work)."""
    a, t = machine_cpu(), time.monotonic()
    time.sleep(seconds)
    b, t2 = machine_cpu(), time.monotonic()
    return sum(y - x for x, y in zip(a, b)) / os.sysconf("SC_CLK_TCK") / (t2 - t)


def udp(m, seconds, rate="0"):
    rep, cpu = iperf(m, ["-u", "-l", "64", "-b", rate], seconds)
    s = rep["end"]["sum"]
    got = s["packets"] - s["lost_packets"]
    return {"kpps": got / s["seconds"] / 1e3, "sent_kpps": s["packets"] / s["seconds"] / 1e3,
            "loss": s["lost_percent"], "sent": s["packets"], "lost": s["lost_packets"], "rcvbuf": cpu["rcvbuf"],
            "arrived": cpu["rx_b"], "swdrops": cpu.get("drops", {}), "cpu": cpu}


def ping(m, count=200):
    a, b = m["pods"]
    r = nsexec(a.ns, "ping", "-c", str(count), "-i", "0.01", "-W", "1", b.addr, check=False,
               timeout=count * 0.01 + 30)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
    return {"p50": statistics.median(rtts) if rtts else float("nan"), "p99": pct(rtts, 99),
            "lost": count - len(rtts)}


# ---- wire check and counters (mode vxlan-sw) ----

def decode_vxlan(hexlines):
    """Decodes one captured frame (tcpdump -xx hex) on the underlay."""
    data = bytes.fromhex("".join(re.sub(r"^\s*0x[0-9a-f]+:\s*", "", l).replace(" ", "") for l in hexlines))
    et = int.from_bytes(data[12:14], "big")
    ihl = (data[14] & 0xF) * 4
    ip = data[14:14 + ihl]
    udp_ = data[14 + ihl:14 + ihl + 8]
    vx = data[14 + ihl + 8:14 + ihl + 16]
    inner = data[14 + ihl + 16:]
    iet = int.from_bytes(inner[12:14], "big")
    return {
        "outer": f"{data[6:12].hex(':')} > {data[0:6].hex(':')} ethertype 0x{et:04x}",
        "ip": f"{socket.inet_ntoa(ip[12:16])} > {socket.inet_ntoa(ip[16:20])} proto {ip[9]}",
        "udp": f"sport {int.from_bytes(udp_[0:2], 'big')} dport {int.from_bytes(udp_[2:4], 'big')} "
               f"checksum 0x{int.from_bytes(udp_[6:8], 'big'):04x}",
        "vxlan": f"flags 0x{vx[0]:02x} VNI {int.from_bytes(vx[4:7], 'big')}",
        "inner": f"{inner[6:12].hex(':')} > {inner[0:6].hex(':')} ethertype 0x{iet:04x} "
                 + ("(802.1Q TAGGED, VID %d)" % (int.from_bytes(inner[14:16], 'big') & 0xFFF) if iet == 0x8100
                    else "(untagged)"),
        "outer_len": len(data), "inner_len": len(inner),
    }


def wire_check(m):
    n1 = m["nodes"][0]
    ul = m["underlay"][0]
    a, b = m["pods"]
    cap = subprocess.Popen(["ip", "netns", "exec", n1.ns, "timeout", "15", "tcpdump", "-nn", "-e", "-xx", "-l",
                            "-i", ul, "-c", "5", "udp", "port", "4789"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    m["topo"].procs.append(cap)
    time.sleep(1.0)
    nsexec(a.ns, "ping", "-c", "5", "-i", "0.2", "-W", "1", b.addr, check=False)
    out, err = cap.communicate(timeout=20)
    frames, cur = [], None
    text = []
    for line in out.splitlines():
        if re.match(r"^\s*0x[0-9a-f]+:", line):
            cur[1].append(line)
        else:
            text.append(line)
            cur = (line, [])
            frames.append(cur)
    return text, [decode_vxlan(h) for _, h in frames if h], err.strip().splitlines()[-1:]


def kernel_counters(m):
    n1, n2 = m["nodes"]
    out = {}
    out["ip -s -s -d link show vx100 (node 2)"] = nsexec(n2.ns, "ip", "-s", "-s", "-d", "link", "show",
                                                          "vx100").stdout
    out["bridge -s fdb show dev vx100 (node 2)"] = nsexec(n2.ns, "bridge", "-s", "fdb", "show", "dev",
                                                           "vx100").stdout
    out["nstat UDP (node 2)"] = "\n".join(l for l in nsexec(n2.ns, "nstat", "-az", "Udp*").stdout.splitlines()
                                           if not re.match(r"^Udp(Lite|6)|^UdpLite", l))
    port = [p for p in n2.ok("GET", "/v1/ports") if p["nic"]["ifname"] == "vx100"][0]
    st = port["stats"]
    out["switchd's own counters of the vx100 port (node 2, GET /v1/ports)"] = (
        f"rxPackets {st['rxPackets']} txPackets {st['txPackets']} drops {st.get('drops', {})}")
    return out


def unmapped_vni(m):
    """Sends 5 VXLAN datagrams for VNI 999 (no device) from node 1 to node 2;
    returns the counters of node 2 that moved."""
    n1, n2 = m["nodes"]

    def counters():
        c = {}
        for ifname in ("vx100", m["underlay"][1]):
            st = json.loads(nsexec(n2.ns, "ip", "-j", "-s", "-s", "link", "show", ifname).stdout)[0]["stats64"]
            for d in ("rx", "tx"):
                for k, v in st[d].items():
                    c[f"{ifname} {d}.{k}"] = v
        for line in nsexec(n2.ns, "nstat", "-az").stdout.splitlines()[1:]:
            f = line.split()
            if len(f) >= 2 and f[1].isdigit():
                c[f"nstat {f[0]}"] = int(f[1])
        return c
    inner = bytes.fromhex("ffffffffffff" "020000000999" "88b5") + b"unmapped-vni".ljust(46, b"\0")
    hdr = bytes([0x08, 0, 0, 0]) + (999).to_bytes(3, "big") + b"\0"
    script = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
              f"[s.sendto(bytes.fromhex('{(hdr + inner).hex()}'),('{UNDERLAY[1]}',4789)) for _ in range(5)]")
    before = counters()
    nsexec(n1.ns, sys.executable, "-c", script)
    time.sleep(0.5)
    after = counters()
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


# ---- mechanism B's user-space work ----

def encap_cost(runs=5):
    """{inner frame length: (encap ns, decap ns)}, medians; None without a C compiler."""
    import shutil
    import tempfile
    cc = shutil.which("cc") or shutil.which("clang") or shutil.which("gcc")
    if not cc:
        return None
    src = Path(__file__).with_name("overlay_encap_cost.c")
    with tempfile.TemporaryDirectory(prefix="ovb-") as d:
        exe = Path(d) / "encap"
        sh(cc, "-O2", "-o", str(exe), str(src))
        out = {}
        for ln in (106, 1464):
            e, dd = [], []
            for _ in range(runs):
                kv = dict(line.split() for line in sh(str(exe), "20000000", str(ln)).stdout.splitlines())
                if kv["bad"] != "0":
                    raise RuntimeError(f"encap bench decoded badly: {kv}")
                e.append(float(kv["encap_ns"]))
                dd.append(float(kv["decap_ns"]))
            out[ln] = (statistics.median(e), statistics.median(dd))
        return out


# ---- report ----

def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def rng(xs, fmt):
    return f"{fmt.format(med(xs))} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tcp-seconds", type=int, default=5)
    ap.add_argument("--udp-seconds", type=int, default=3)
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--quiet-wait", type=float, default=60, help="seconds to wait, before each mode's run, for "
                    "the machine's other work to drop below 0.25 busy CPUs")
    ap.add_argument("--fixed-rate", default="10M", help="iperf3 -b of the fixed-rate UDP 64 B run (CPU per packet "
                    "without loss)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--switchd-args", default="", help="extra switchd flags, space separated")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    modes = args.modes.split(",")
    topo = Topo()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    start_note = machine_note()
    try:
        built = {}
        for mode in modes:
            built[mode] = build(topo, mode, args.switchd_args.split())
            built[mode]["topo"] = topo
        res = {mode: {"tcp": [], "udp": [], "udpfix": [], "ping": [], "idle": []} for mode in modes}
        for rep in range(args.reps):
            for mode in modes:
                m = built[mode]
                r = res[mode]
                # Other work on the machine skews every number: wait (at most
                # --quiet-wait s) until the CPUs are idle before each run.
                deadline = time.monotonic() + args.quiet_wait
                idle = idle_rate()
                while idle > 0.25 and time.monotonic() < deadline:
                    idle = idle_rate()
                r["idle"].append(idle)
                m["idle"] = idle
                r["tcp"].append(tcp(m, args.tcp_seconds))
                r["udp"].append(udp(m, args.udp_seconds))
                r["udpfix"].append(udp(m, args.udp_seconds, args.fixed_rate))
                r["ping"].append(ping(m, args.pings))
                print(f"# rep {rep + 1} {mode}: TCP {r['tcp'][-1]['gbps']:.2f} Gbit/s, UDP "
                      f"{r['udp'][-1]['kpps']:.0f} kpps, RTT p50 {r['ping'][-1]['p50']:.3f} ms", file=sys.stderr,
                      flush=True)
        wire = wire_check(built["vxlan-sw"]) if "vxlan-sw" in built else None
        counters = kernel_counters(built["vxlan-sw"]) if "vxlan-sw" in built else None
        unmapped = unmapped_vni(built["vxlan-sw"]) if "vxlan-sw" in built else None
        counters_after = kernel_counters(built["vxlan-sw"]) if "vxlan-sw" in built else None
        end_note = machine_note()
        encap = encap_cost()
    finally:
        topo.cleanup()

    print(f"## Overlay mechanism (issue 13): direct 802.1Q, kernel vxlan under switchd (A), kernel vxlan + "
          f"Linux bridge\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"kernel {os.uname().release}, switchd {SWITCHD} (default poll thread: one, on the last CPU); "
          f"{args.reps} interleaved reps, median [min-max]; TCP {args.tcp_seconds} s, UDP {args.udp_seconds} s, "
          f"{args.pings} pings at 10 ms (RTT of the median rep). Pods' TX checksum offload and TSO off in every "
          f"mode. At start: {start_note}; at end: {end_note}.\n")
    print("| mode | pod MTU | TCP Gbit/s | TCP retransmits | UDP 64 B received kpps | UDP sent kpps | UDP loss % | "
          "RTT p50 ms | RTT p99 ms | pings lost |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        r = res[mode]
        print(f"| {mode} | {1500 if mode == 'direct' else 1450} | {rng([x['gbps'] for x in r['tcp']], '{:.2f}')} | "
              f"{med([x['retr'] for x in r['tcp']]):.0f} | {rng([x['kpps'] for x in r['udp']], '{:.0f}')} | "
              f"{med([x['sent_kpps'] for x in r['udp']]):.0f} | {med([x['loss'] for x in r['udp']]):.1f} | "
              f"{rng([x['p50'] for x in r['ping']], '{:.3f}')} | {rng([x['p99'] for x in r['ping']], '{:.3f}')} | "
              f"{sum(x['lost'] for x in r['ping'])} |")
    print("\nUDP 64 B at full speed, where the datagrams went (median per run): sent by iperf3, arrived at the "
          "receiving pod's eth0 (interface counter), dropped in its socket buffer (`UdpRcvbufErrors`), dropped "
          "and counted by the switchds (all ports, by reason).\n")
    print("| mode | sent | arrived at the pod | lost before the pod | receiver socket buffer drops | "
          "switchd drops |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        u = res[mode]["udp"]
        if built[mode]["switchd"]:
            reasons = sorted({k for x in u for k in x["swdrops"]})
            sw = ", ".join(f"{k} {med([x['swdrops'].get(k, 0) for x in u]):.0f}" for k in reasons) or "0"
        else:
            sw = "- (no switchd)"
        print(f"| {mode} | {med([x['sent'] for x in u]):.0f} | {med([x['arrived'] for x in u]):.0f} | "
              f"{med([x['sent'] - x['arrived'] for x in u]):.0f} | {med([x['rcvbuf'] for x in u]):.0f} | {sw} |")
    print("\nCPU (medians). Machine: all CPUs' busy time (user / system / irq+softirq), per packet both pods "
          "received (UDP) or per KB they received (TCP: the kernel-only mode hands GRO-merged packets to the pods, "
          "so its packet counts are not frames). Poll threads: both switchds' `switchd-poll*` threads' run time "
          "(schedstat), split into user and system in the ratio of their tick-sampled utime/stime, per frame they "
          "transmitted (a pod-to-pod frame is transmitted twice, once per node; "
          "the system time is the `sendto()` kick, where the kernel builds the skb and runs the egress "
          "device's xmit: the veth, or in vxlan-sw the whole vxlan encapsulation and the IP output).\n")
    print("Busy CPUs while idle before each mode's runs (other work on the machine; each run waited up to "
          f"{args.quiet_wait:.0f} s for it to drop below 0.25), median [max]: " + ", ".join(
        f"{mode} {med(res[mode]['idle']):.2f} [{max(res[mode]['idle']):.2f}]" for mode in modes) + "; the machine columns include it, the net column subtracts the idle rate measured just before "
          "the mode's runs.\n")
    print("| mode | traffic | busy CPUs | machine ns/unit | of which user / sys / softirq | machine net of idle ns/unit | "
          "poll frames | poll user ns/frame | poll sys ns/frame | poll total ns/frame |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    names = {"udp": "UDP 64 B full speed", "udpfix": f"UDP 64 B at {args.fixed_rate}bit/s", "tcp": "TCP"}
    for mode in modes:
        for kind in ("udpfix", "udp", "tcp"):
            cs = [x["cpu"] for x in res[mode][kind]]
            k, sk, unit = ("mach_ns", "mach_split", "pkt") if kind != "tcp" else ("mach_ns_kb", "mach_split_kb", "KB")
            split = [med([c[sk][i] for c in cs]) for i in range(3)]
            row = (f"| {mode} | {names[kind]} | {med([c['busy_cpus'] for c in cs]):.2f} | "
                   f"{med([c[k] for c in cs]):.0f} /{unit} | {split[0]:.0f} / {split[1]:.0f} / {split[2]:.0f} | "
                   f"{med([c['net_ns' if kind != 'tcp' else 'net_ns_kb'] for c in cs]):.0f} | ")
            if built[mode]["switchd"]:
                u, s_ = med([c["poll_user_ns"] for c in cs]), med([c["poll_sys_ns"] for c in cs])
                row += f"{med([c['fwd'] for c in cs]):.0f} | {u:.0f} | {s_:.0f} | {u + s_:.0f} |"
            else:
                row += "- | - | - | - |"
            print(row)
    if "direct" in modes and "vxlan-sw" in modes:
        for kind in ("udpfix", "udp", "tcp"):
            d = [med([x["cpu"][f"poll_{w}_ns"] for x in res[mm][kind]]) for mm in ("direct", "vxlan-sw") for w in ("user", "sys")]
            print(f"\n{names[kind]}: the poll threads spend {d[2] + d[3] - d[0] - d[1]:.0f} "
                  f"ns/frame more with the kernel vxlan device as egress than with the veth uplink "
                  f"(user {d[2] - d[0]:+.0f}, system {d[3] - d[1]:+.0f}).", end="")
        print()
    if encap:
        print("\n### Mechanism B's own work per frame, in user space (`bench/overlay_encap_cost.c`, cc -O2, "
              "median of 5 runs of 20 M frames over 4096 UMEM-like 4 KiB buffers)\n")
        print("| inner frame bytes | encap ns/frame (50-byte header into headroom, IPv4 checksum, flow-hashed "
              "source port, VNI) | decap ns/frame (checks, VNI->VLAN, peer lookup and count, strip) |")
        print("|---|---|---|")
        for ln, (e, dd) in encap.items():
            print(f"| {ln} | {e:.1f} | {dd:.1f} |")
    if wire:
        text, decoded, err = wire
        print("\n### On the wire (vxlan-sw): `tcpdump -nn -e -i <node 1 underlay> -c 5 udp port 4789` during a "
              "ping\n\n```")
        print("\n".join(text))
        print(f"```\n\n{' '.join(err)}\n\nDecoded from the same frames' bytes (`-xx`):\n")
        print("| # | outer Ethernet | outer IPv4 | UDP | VXLAN | inner frame | outer / inner bytes |")
        print("|---|---|---|---|---|---|---|")
        for i, d in enumerate(decoded, 1):
            print(f"| {i} | {d['outer']} | {d['ip']} | {d['udp']} | {d['vxlan']} | {d['inner']} | "
                  f"{d['outer_len']} / {d['inner_len']} |")
    if counters:
        print("\n### Counters the kernel gives for mechanism A (node 2, after the runs)\n")
        for k, v in counters.items():
            print(f"`{k}`:\n\n```\n{v.rstrip()}\n```\n")
        print("5 VXLAN datagrams for VNI 999 (no device for it) sent from node 1 to node 2; node 2's counters "
              "that moved (interface stats64 of vx100 and the underlay, `nstat -az`):\n")
        print("```")
        for k, v in sorted(unmapped.items()):
            print(f"{k} +{v}")
        print("```")
        print(f"\nvx100 on node 2 afterwards:\n\n```\n{counters_after['ip -s -s -d link show vx100 (node 2)'].rstrip()}\n```")


if __name__ == "__main__":
    main()
