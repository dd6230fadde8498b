"""Helpers for tests and benchmarks that drive many pods through the real
podswitch CNI plugin (with the reference host-local IPAM): a Cni whose
subnet may be any size, bare pod namespaces, bounded parallel pings, and
leak checks. Builds on test_cni's Cni and PodNs; changes neither.
"""
import ipaddress
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import host_links, nsexec, sh
from test_cni import REF_CNI, Cni, PodNs


class NetCni(Cni):
    """test_cni.Cni for any subnet size: the gateway is the subnet's first
    address (test_cni.Cni only derives it for a /24 ending in .0)."""

    def __init__(self, topo, node, subnet="10.66.0.0/24", **extra):
        super().__init__(topo, node, subnet="10.66.0.0/24", **extra)
        net = ipaddress.ip_network(subnet)
        self.conf["ipam"]["ranges"] = [[{"subnet": str(net), "gateway": str(net.network_address + 1)}]]

    def delete(self, pod, cid=None, ifname="eth0"):
        rc, out, err = self.run("DEL", cid or pod.cid, pod.netns, ifname)
        assert rc == 0, f"DEL {cid or pod.cid} failed: {out} {err}"


class BridgeCni(NetCni):
    """The reference `bridge` plugin on the same node layout and IPAM as
    NetCni: the peer a benchmark compares podswitch with."""

    def __init__(self, topo, node, subnet, bridge):
        super().__init__(topo, node, subnet=subnet)
        self.plugin = REF_CNI / "bridge"
        self.conf = {k: v for k, v in self.conf.items() if k != "socket"}
        self.conf.update(type="bridge", bridge=bridge, isGateway=False, ipMasq=False)


class QuietPodNs(PodNs):
    """A bare pod netns (no interfaces) with IPv6 off, as conftest.Pod does,
    so that DAD/RS/MLD chatter of hundreds of pods does not flood the switch
    and blur what the test measures."""

    def __init__(self, topo, name):
        super().__init__(topo, name)
        nsexec(self.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        self.ip = None

    def __repr__(self):
        return f"<pod {self.ns} {self.ip}>"

    def add_to(self, cni, cid=None, **kw):
        """CNI ADD; remembers the pod's IPv4 address."""
        out = cni.add(self, cid=cid, **kw)
        self.ip = out["ips"][0]["address"].split("/")[0]
        self.port_id = out["interfaces"][0]["name"]  # switchd names the port after the host veth
        return out


def make_pods(topo, names, workers=4):
    """Bare pod namespaces, made with modest parallelism; in `names` order."""
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda n: QuietPodNs(topo, n), names))


def cni_add_all(cni, pods, workers=4):
    """ADD every pod (bounded parallelism); returns {pod.ns: error} of failures."""
    errors = {}
    lock = threading.Lock()

    def one(p):
        try:
            p.add_to(cni)
        except Exception as e:  # noqa: BLE001 - collected and reported by the caller
            with lock:
                errors[p.ns] = str(e)[:300]

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, pods))
    return errors


def cni_del_all(cni, pods, workers=4):
    errors = {}
    lock = threading.Lock()

    def one(p):
        rc, out, err = cni.run("DEL", p.cid, p.netns)
        if rc != 0:
            with lock:
                errors[p.ns] = f"{out} {err}"[:300]

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, pods))
    return errors


def ping_once(ns, ip, tries=3):
    """True if one of `tries` single pings (1 s wait each) from netns `ns` to
    `ip` gets an answer. Bounded: at most tries * ~1 s."""
    for _ in range(tries):
        r = nsexec(ns, "ping", "-c", "1", "-W", "1", "-q", ip, check=False, timeout=10)
        if r.returncode == 0:
            return True
    return False


def ping_matrix(src, targets, workers=8, tries=3):
    """Pings both ways between `src` and each target pod (each direction
    retried up to `tries` times). Returns (src_to_failed, failed_to_src):
    lists of the target pods that did not answer / could not reach src."""
    def out(p):
        return p, ping_once(src.ns, p.ip, tries)

    def back(p):
        return p, ping_once(p.ns, src.ip, tries)

    with ThreadPoolExecutor(workers) as ex:
        fwd = [p for p, ok in ex.map(out, targets) if not ok]
        rev = [p for p, ok in ex.map(back, targets) if not ok]
    return fwd, rev


def describe(pods, limit=300):
    """'name(ip), ...' of pods, for assertion messages (all of them up to `limit`)."""
    s = [f"{p.ns.split('-', 1)[1]}({p.ip})" for p in pods[:limit]]
    more = f" ... and {len(pods) - limit} more" if len(pods) > limit else ""
    return ", ".join(s) + more


def port_summary(node):
    """(ports, not attached [ids], total drops by reason) from GET /v1/ports."""
    ports = node.ok("GET", "/v1/ports")
    unattached = [p["id"] for p in ports if not (p.get("status") or {}).get("attached")]
    drops = {}
    for p in ports:
        for why, n in ((p.get("stats") or {}).get("drops") or {}).items():
            drops[why] = drops.get(why, 0) + n
    return ports, unattached, drops


def leaks(node, cni):
    """What is left behind on a node: host veths, IPAM allocations, ports."""
    return {"veths": host_links(node), "ipam": cni.allocations(),
            "ports": [p["id"] for p in node.ok("GET", "/v1/ports")]}


def log(*a):
    """A progress line on stderr, with the time of day (benchmarks)."""
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def pct(xs, p):
    """The p-th percentile of xs (nearest rank); NaN when empty."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def machine_note():
    """Load on the machine and other switchd processes (other benchmarks or
    tests running at the same time skew the numbers on a small machine)."""
    mine = os.getpid()
    others = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != mine:
            try:
                if open(f"/proc/{d}/comm").read().strip() == "switchd":
                    others.append(d)
            except OSError:
                pass
    return f"loadavg {open('/proc/loadavg').read().split()[0]}, {len(others)} switchd running"


class Timer:
    """Prints progress lines with the time since start. Given pytest's
    `capsys`, it prints past the capture, so the lines show in a normal
    (passing) `pytest -v` run too."""

    def __init__(self, capsys=None):
        self.t0 = time.monotonic()
        self.capsys = capsys
        self.marks = []

    def say(self, text):
        if self.capsys is not None:
            with self.capsys.disabled():
                print(f"\n    {text}", end="", flush=True)
        print(text, flush=True)  # captured too: shown with a failure's report

    def mark(self, what):
        now = time.monotonic()
        self.marks.append((what, now - self.t0))
        self.say(f"[{now - self.t0:7.1f}s] {what}")


class VmPod(QuietPodNs):
    """A VM pod: its netns gets a tap through a `"endpoint": "tap"` network
    (`add_vm`); remembers the VM's MAC, its address and its port."""

    def add_vm(self, cni, node, mac):
        out = cni.add(self, args=f"IgnoreUnknown=1;MAC={mac}")
        self.mac = mac
        self.ip = out["ips"][0]["address"].split("/")[0]
        self.port = [p for p in node.ok("GET", "/v1/ports")
                     if p["owner"]["containerID"] == self.cid][0]
        return out
