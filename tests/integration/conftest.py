"""Harness for podswitch integration tests: real network namespaces, real
veths, a real switchd per "node" namespace, real AF_XDP.

Every name carries a per-run prefix; everything a test creates is removed
when it ends, pass or fail. Tests that need root or a kernel feature this
machine lacks are skipped with the reason printed.
"""
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("PODSWITCH_TARGET", ROOT / "target" / "release"))
SWITCHD = TARGET / "switchd"
SWITCHCTL = TARGET / "switchctl"
PKT = Path(__file__).with_name("pkt.py")


def sh(*args, check=True, timeout=30, **kw):
    """Runs a command; raises with its output if it fails and check is set."""
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def nsexec(ns, *args, **kw):
    return sh("ip", "netns", "exec", ns, *args, **kw)


def why_cannot_run():
    """None if privileged network tests can run here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veths, XDP)"
    if not SWITCHD.exists():
        return f"{SWITCHD} is missing: run `cargo build --release` first"
    try:
        s = socket.socket(44, socket.SOCK_RAW, 0)  # AF_XDP
        s.close()
    except OSError as e:
        return f"this kernel has no AF_XDP sockets ({e})"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("switchd", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Node:
    """A node: a network namespace running its own switchd."""

    def __init__(self, topo, name):
        self.topo = topo
        self.ns = f"{topo.prefix}-{name}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.ns}-"))
        self.socket = str(self.dir / "switchd.sock")
        self.state_dir = str(self.dir / "state")
        self.log_path = self.dir / "switchd.log"
        self.proc = None
        sh("ip", "netns", "add", self.ns)
        nsexec(self.ns, "ip", "link", "set", "lo", "up")
        topo.namespaces.append(self.ns)
        topo.dirs.append(self.dir)

    def start(self, *extra, wait_ready=True):
        log = open(self.log_path, "ab")
        if not hasattr(self, "metrics_port"):
            # switchd runs in the node netns: its loopback is its own, so
            # the default port would do, but a free one keeps it unambiguous.
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.metrics_port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, str(SWITCHD), "--socket", self.socket,
             "--state-dir", self.state_dir, "--metrics-addr", f"127.0.0.1:{self.metrics_port}", *extra],
            stdout=log, stderr=subprocess.STDOUT)
        self.topo.procs.append(self.proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"switchd exited ({self.proc.returncode}):\n{self.log()}")
            try:
                status, _ = self.api("GET", "/readyz" if wait_ready else "/healthz")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"switchd did not become ready:\n{self.log()}")

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def api(self, method, path, body=None, raw=None):
        """Returns (status, decoded JSON body)."""
        c = UnixHTTPConnection(self.socket)
        try:
            data = raw if raw is not None else (json.dumps(body) if body is not None else None)
            headers = {"Content-Type": "application/json"} if data is not None else {}
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            payload = r.read()
            try:
                return r.status, json.loads(payload) if payload else None
            except ValueError:
                return r.status, payload.decode(errors="replace")
        finally:
            c.close()

    def ok(self, method, path, body=None):
        status, data = self.api(method, path, body)
        assert 200 <= status < 300, f"{method} {path} -> {status} {data}"
        return data

    def ctl(self, *args, check=True):
        return sh(str(SWITCHCTL), "--socket", self.socket, *args, check=check)


class Pod:
    def __init__(self, topo, node, name, ip=None, mac=None):
        self.topo = topo
        self.node = node
        self.ns = f"{topo.prefix}-{name}"
        # Host-end names must fit IFNAMSIZ (15): short prefix + pod name.
        self.host_if = f"{topo.short}{name}"[:15]
        self.ifname = "eth0"
        self.ip = ip
        sh("ip", "netns", "add", self.ns)
        topo.namespaces.append(self.ns)
        nsexec(self.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        nsexec(self.ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        nsexec(self.ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", self.host_if, "netns", node.ns, "numtxqueues", "1", "numrxqueues", "1",
           "type", "veth", "peer", "name", self.ifname, "netns", self.ns, "numtxqueues", "1", "numrxqueues", "1")
        if mac:
            nsexec(self.ns, "ip", "link", "set", self.ifname, "address", mac)
        # The AF_XDP path needs the pod's TX checksum offload off (see README).
        nsexec(self.ns, "ethtool", "-K", self.ifname, "tx", "off", check=False)
        if ip:
            nsexec(self.ns, "ip", "addr", "add", ip, "dev", self.ifname)
        nsexec(self.ns, "ip", "link", "set", self.ifname, "up")
        self.mac = json.loads(nsexec(self.ns, "ip", "-j", "link", "show", self.ifname).stdout)[0]["address"]
        self.port = None

    @property
    def addr(self):
        return self.ip.split("/")[0]

    def attach(self, **port):
        body = {"nic": {"kind": "veth", "ifname": self.host_if}, **port}
        self.port = self.node.ok("POST", "/v1/ports", body)
        return self.port

    def ping(self, other, count=3, timeout=1, interval=0.2):
        target = other.addr if isinstance(other, Pod) else other
        r = nsexec(self.ns, "ping", "-c", str(count), "-i", str(interval), "-W", str(timeout), target,
                   check=False, timeout=count * (timeout + interval) + 10)
        return r.returncode == 0

    def ping_until(self, other, seconds=10):
        """True once one ping gets through, within `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.ping(other, count=1, timeout=1):
                return True
        return False

    def capture(self, seconds, marker):
        """Starts a raw capture; returns a function that waits and yields frames."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, str(PKT), "capture",
                              self.ifname, str(seconds), marker.hex()],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.topo.procs.append(p)
        line = p.stdout.readline()
        assert line.strip() == "ready", f"capture did not start: {line} {p.stderr.read()}"

        def done():
            out, err = p.communicate(timeout=seconds + 10)
            assert p.returncode == 0, err
            return [json.loads(l) for l in out.splitlines() if l.strip()]
        return done

    def send(self, frame: bytes, count=1):
        nsexec(self.ns, sys.executable, str(PKT), "send", self.ifname, frame.hex(), str(count))

    def stats(self):
        return self.node.ok("GET", f"/v1/ports/{self.port['id']}")["stats"]


def mac_bytes(mac):
    return bytes.fromhex(mac.replace(":", ""))


def frame(dst, src, payload, vlan=None, ethertype=0x88B5, tpid=0x8100):
    """An Ethernet frame (local experimental EtherType by default)."""
    f = mac_bytes(dst) + mac_bytes(src)
    if vlan is not None:
        f += tpid.to_bytes(2, "big") + vlan.to_bytes(2, "big")
    f += ethertype.to_bytes(2, "big") + payload
    return f + b"\x00" * max(0, 60 - len(f))


BROADCAST = "ff:ff:ff:ff:ff:ff"


def cpu_seconds(pid):
    """User + system CPU seconds a process has used."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def host_links(node):
    """The podswitch host-side veths (psw…) in a node's netns."""
    links = json.loads(nsexec(node.ns, "ip", "-j", "link", "show").stdout)
    return sorted(l["ifname"] for l in links if l["ifname"].startswith("psw"))


def ipam_allocations(data_dir, network):
    """Addresses host-local holds for `network` under its dataDir."""
    d = Path(data_dir) / network
    return sorted(x.name for x in d.iterdir() if x.name[0].isdigit()) if d.exists() else []


class Topo:
    """Everything one test creates, removed at the end."""

    def __init__(self):
        tag = secrets.token_hex(2)
        self.prefix = f"pst{tag}"
        self.short = f"s{tag}"
        self.namespaces = []
        self.procs = []
        self.dirs = []
        self.nodes = []

    def node(self, name="node"):
        n = Node(self, name)
        self.nodes.append(n)
        return n

    def pod(self, node, name, ip=None, mac=None):
        return Pod(self, node, name, ip, mac)

    def cable(self, a, b, name):
        """A veth between two nodes (e.g. their uplinks); returns the two names."""
        ia, ib = f"{self.short}{name}a", f"{self.short}{name}b"
        sh("ip", "link", "add", ia, "netns", a.ns, "numtxqueues", "1", "numrxqueues", "1",
           "type", "veth", "peer", "name", ib, "netns", b.ns, "numtxqueues", "1", "numrxqueues", "1")
        return ia, ib

    def cleanup(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def topo(request):
    reason = why_cannot_run()
    if reason:
        print(f"SKIP {request.node.name}: {reason}", file=sys.stderr)
        pytest.skip(reason)
    t = Topo()
    yield t
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for n in t.nodes:
            print(f"--- switchd log of {n.ns} ---\n{n.log()}", file=sys.stderr)
    t.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item (the topo fixture prints the
    switchd logs of a failed test). With PODSWITCH_NO_SKIP set (CI), a
    skipped test fails: on a machine the project's setup prepared, every
    test must run."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if os.environ.get("PODSWITCH_NO_SKIP") and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = f"skipped, but PODSWITCH_NO_SKIP is set (every test must run here): {rep.longrepr}"
