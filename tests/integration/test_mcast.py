"""Multicast snooping (switch field `multicastSnooping`) with real traffic:
the pods' own kernels join and leave groups (IGMPv3, IGMPv2, MLDv2, MLDv1,
a Python joiner with IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP), another pod
streams UDP to the group, and what each pod receives is captured at L2 in
its network namespace (AF_PACKET, pkt.py)."""
import secrets
import socket
import subprocess
import sys
import time

import pytest

from conftest import nsexec

# What the joiner runs in a pod: joins GROUP on IFNAME, counts the datagrams
# that carry MARKER, leaves (explicitly) on "leave" or EOF on stdin, prints
# the count. Bounded: it gives up after 120 s.
JOINER = r"""
import select, socket, struct, sys, time
fam, ifname, group, port, marker = sys.argv[1:6]
idx = socket.if_nametoindex(ifname)
if fam == "4":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    level, join, leave = socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.IP_DROP_MEMBERSHIP
    mreq = socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("=i", idx)
else:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    level, join, leave = socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.IPV6_LEAVE_GROUP
    mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("=I", idx)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(port)))
s.setsockopt(level, join, mreq)
print("joined", flush=True)
got, end = 0, time.monotonic() + 120
while time.monotonic() < end:
    r, _, _ = select.select([s, sys.stdin], [], [], 1)
    if s in r and marker.encode() in s.recv(4096):
        got += 1
    if sys.stdin in r and sys.stdin.readline().strip() != "":
        break
s.setsockopt(level, leave, mreq)
print(got, flush=True)
"""

# Sends COUNT datagrams with MARKER to GROUP out of IFNAME, one every 30 ms.
SENDER = r"""
import socket, struct, sys, time
fam, ifname, group, port, marker, count = sys.argv[1:7]
idx = socket.if_nametoindex(ifname)
if fam == "4":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("=4s4si", bytes(4), bytes(4), idx))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
else:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
for i in range(int(count)):
    s.sendto(("%s-%d" % (marker, i)).encode(), (group, int(port)))
    time.sleep(0.03)
"""

PORT = 5007
COUNT = 20
FAMILIES = {
    # (address family, group, the sysctl that forces the protocol version,
    #  the IGMP/ICMPv6 type of the join's report)
    "igmpv3": ("4", "239.77.1.1", None, 0x22),
    "igmpv2": ("4", "239.77.1.2", "net.ipv4.conf.eth0.force_igmp_version=2", 0x16),
    "mldv2": ("6", "ff15::77:1", None, 143),
    "mldv1": ("6", "ff15::77:2", "net.ipv6.conf.eth0.force_mld_version=1", 131),
}


def report_type(frame_hex):
    """The IGMP or MLD message type of a captured (untagged) frame, if any."""
    f = bytes.fromhex(frame_hex)
    et = int.from_bytes(f[12:14], "big")
    if et == 0x0800 and f[23] == 2:
        return f[14 + (f[14] & 0x0f) * 4]
    if et == 0x86dd and f[20] == 0:  # hop-by-hop header, then ICMPv6
        return f[14 + 40 + (f[14 + 41] + 1) * 8] if f[14 + 40] == 58 else None
    return None


def prepare(pod, fam, n, force):
    """Addresses, and the host's protocol version; unsolicited reports
    repeated within 100 ms (not 1-10 s), so that aging is predictable."""
    w = lambda *kv: nsexec(pod.ns, "sysctl", "-qw", *kv)
    w("net.ipv4.conf.eth0.igmpv3_unsolicited_report_interval=100",
      "net.ipv4.conf.eth0.igmpv2_unsolicited_report_interval=100")
    if fam == "6":
        w("net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
          "net.ipv6.conf.eth0.accept_dad=0", "net.ipv6.conf.eth0.disable_ipv6=0",
          "net.ipv6.conf.eth0.mldv1_unsolicited_report_interval=100",
          "net.ipv6.conf.eth0.mldv2_unsolicited_report_interval=100")
        nsexec(pod.ns, "ip", "-6", "addr", "add", f"fd00:77::{n}/64", "dev", "eth0", "nodad")
    if force:
        w(force)


class Joiner:
    """The joiner running in a pod: joined until `leave()`."""

    def __init__(self, topo, pod, fam, group, marker):
        self.p = subprocess.Popen(["ip", "netns", "exec", pod.ns, sys.executable, "-c", JOINER,
                                   fam, "eth0", group, str(PORT), marker],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        topo.procs.append(self.p)
        line = self.p.stdout.readline()
        assert line.strip() == "joined", f"joiner did not start: {line} {self.p.stderr.read()}"

    def leave(self):
        """Leaves the group; returns how many of the stream's datagrams the
        application received."""
        out, err = self.p.communicate("leave\n", timeout=10)
        assert self.p.returncode == 0, err
        return int(out.split()[-1])


def stream(topo, sender, fam, group, pods, phase):
    """C streams COUNT datagrams to the group; returns the frames each pod
    saw on its interface (AF_PACKET, so it counts what the switch sent,
    joined or not)."""
    marker = f"psw-{phase}-{secrets.token_hex(3)}"
    caps = {name: p.capture(2.0, marker.encode()) for name, p in pods.items()}
    nsexec(sender.ns, sys.executable, "-c", SENDER, fam, "eth0", group, str(PORT), marker, str(COUNT),
           timeout=20)
    return {name: len(done()) for name, done in caps.items()}


def members(node, switch, group):
    t = node.ok("GET", f"/v1/switches/{switch}/mdb")
    return sorted(m["port"] for g in t["groups"] if g["group"] == group for m in g["ports"])


def wait_members(node, switch, group, want, seconds=8):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = members(node, switch, group)
        if got == sorted(want):
            return
        time.sleep(0.05)
    assert members(node, switch, group) == sorted(want), node.ok("GET", f"/v1/switches/{switch}/mdb")


@pytest.mark.parametrize("proto", list(FAMILIES))
def test_only_joined_pods_receive_the_group(topo, proto):
    fam, group, force, join_type = FAMILIES[proto]
    node = topo.node().start()
    sw = node.ok("POST", "/v1/switches", {"name": "mc", "multicastSnooping": True})
    assert sw["multicastSnooping"] and sw["multicastFloodUnknown"] and sw["multicastMembershipSeconds"] == 260
    # The uplink's far end, to see the reports (they go to router ports only).
    fabric = topo.pod(node, "fab")
    node.ok("POST", "/v1/ports", {"switch": "mc", "nic": {"kind": "uplink", "ifname": fabric.host_if},
                                  "trunk": [{"id": 100}]})
    a, b, c = (topo.pod(node, n, f"10.77.0.{i}/24") for i, n in ((1, "a"), (2, "b"), (3, "c")))
    d = topo.pod(node, "d", "10.77.0.4/24")
    for i, p in enumerate((a, b, c), 1):
        p.attach(switch="mc", vlan=100)
        prepare(p, fam, i, force)
    d.attach(switch="mc", vlan=200)
    prepare(d, fam, 4, force)
    pods = {"a": a, "b": b, "d": d}
    ids = {n: p.port["id"] for n, p in (("a", a), ("b", b))}
    m = lambda: secrets.token_hex(4)

    # Nobody joined: the group is unknown and floods, within the VLAN only.
    got = stream(topo, c, fam, group, pods, "unknown")
    assert got["a"] >= COUNT * 0.8 and got["b"] >= COUNT * 0.8 and got["d"] == 0, got

    # A joins: its kernel reports in the forced version; only A receives.
    group_bytes = socket.inet_pton(socket.AF_INET if fam == "4" else socket.AF_INET6, group)
    reports = fabric.capture(1.5, group_bytes)
    ja = Joiner(topo, a, fam, group, m())
    wait_members(node, "mc", group, [ids["a"]])
    types = {report_type(f["hex"]) for f in reports()}
    assert join_type in types, (proto, types)
    assert group in node.ctl("switch", "mdb", "mc").stdout
    got = stream(topo, c, fam, group, pods, "a-joined")
    assert got["a"] >= COUNT * 0.8 and got["b"] == 0 and got["d"] == 0, got

    # B joins too: both receive.
    jb = Joiner(topo, b, fam, group, m())
    wait_members(node, "mc", group, [ids["a"], ids["b"]])
    got = stream(topo, c, fam, group, pods, "b-joined")
    assert got["a"] >= COUNT * 0.8 and got["b"] >= COUNT * 0.8 and got["d"] == 0, got

    # B leaves: removed at once (fast leave), and receives nothing more.
    t0 = time.monotonic()
    jb.leave()
    wait_members(node, "mc", group, [ids["a"]], seconds=2)
    left_after = time.monotonic() - t0
    got = stream(topo, c, fam, group, pods, "b-left")
    assert got["a"] >= COUNT * 0.8 and got["b"] == 0 and got["d"] == 0, (got, left_after)

    # Snooping off: the table is empty and the group floods to every pod of the VLAN.
    node.ok("PATCH", "/v1/switches/mc", {"multicastSnooping": False})
    t = node.ok("GET", "/v1/switches/mc/mdb")
    assert t["snooping"] is False and t["groups"] == [] and t["routers"] == [], t
    got = stream(topo, c, fam, group, pods, "off")
    assert got["a"] >= COUNT * 0.8 and got["b"] >= COUNT * 0.8 and got["d"] == 0, got

    # On again with a short membership: a fresh table; A joins again, then
    # (no querier here, so nobody reports again) its membership ages out
    # and the group floods once more.
    node.ok("PATCH", "/v1/switches/mc", {"multicastSnooping": True, "multicastMembershipSeconds": 5})
    ja.leave()
    ja = Joiner(topo, a, fam, group, m())
    wait_members(node, "mc", group, [ids["a"]])
    got = stream(topo, c, fam, group, pods, "rejoined")
    assert got["a"] >= COUNT * 0.8 and got["b"] == 0, got
    wait_members(node, "mc", group, [], seconds=8)
    got = stream(topo, c, fam, group, pods, "aged")
    assert got["a"] >= COUNT * 0.8 and got["b"] >= COUNT * 0.8 and got["d"] == 0, got
    ja.leave()

    metrics = nsexec(node.ns, "curl", "-sf", f"http://127.0.0.1:{node.metrics_port}/metrics").stdout
    value = lambda series: float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith(series)))
    assert value('podswitch_switch_mcast_filtered_total{switch="mc"}') >= COUNT * 2, metrics
    assert value('podswitch_switch_mcast_snooped_total{switch="mc",type="report"}') >= 3
    assert value('podswitch_switch_mcast_snooped_total{switch="mc",type="leave"}') >= 1
    assert value('podswitch_switch_mcast_snooping{switch="mc"}') == 1
    assert value('podswitch_switch_mcast_snooping{switch="default"}') == 0


def test_reports_go_to_router_ports_and_a_query_makes_one(topo):
    """The uplink is always a router port: it gets the group's stream and
    the pods' reports, which no other pod sees (so hosts never suppress
    their own). A pod that sends a query becomes a router port too."""
    group = "239.78.1.1"
    marker_ip = bytes([239, 78, 1, 1])
    node = topo.node().start()
    node.ok("POST", "/v1/switches", {"name": "mc", "multicastSnooping": True,
                                     "multicastFloodUnknown": False})
    fabric = topo.pod(node, "fab")
    up = node.ok("POST", "/v1/ports", {"switch": "mc", "nic": {"kind": "uplink", "ifname": fabric.host_if},
                                       "trunk": [{"id": 100}]})
    a, b, c = (topo.pod(node, n, f"10.78.0.{i}/24") for i, n in ((1, "a"), (2, "b"), (3, "c")))
    for i, p in enumerate((a, b, c), 1):
        p.attach(switch="mc", vlan=100)
        prepare(p, "4", i, None)
    t = node.ok("GET", "/v1/switches/mc/mdb")
    assert t["routers"] == [{"port": up["id"], "kind": "uplink"}], t

    # A's report (IGMPv3, to 224.0.0.22, naming the group) reaches the
    # fabric, tagged with VLAN 100, and not B.
    fab_cap = fabric.capture(2.0, marker_ip)
    b_cap = b.capture(2.0, marker_ip)
    ja = Joiner(topo, a, "4", group, "x")
    fab, seen_b = fab_cap(), b_cap()
    assert any(f["dst"] == "01:00:5e:00:00:16" and f["vlan"] == 100 for f in fab), fab
    assert seen_b == [], seen_b
    wait_members(node, "mc", group, [a.port["id"]])

    # The stream goes to A and the uplink; with unknown groups not flooded,
    # B gets nothing.
    got = stream(topo, c, "4", group, {"a": a, "b": b, "fab": fabric}, "routers")
    assert got["a"] >= COUNT * 0.8 and got["fab"] >= COUNT * 0.8 and got["b"] == 0, got

    # B sends a general IGMPv2 query: it floods (A answers it with a
    # report), and B becomes a router port on VLAN 100 that gets the stream
    # and A's reports.
    b_cap = b.capture(4.0, marker_ip)
    b.send(igmp_query_frame(b.mac, "10.78.0.2"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        t = node.ok("GET", "/v1/switches/mc/mdb")
        if any(r["port"] == b.port["id"] for r in t["routers"]):
            break
        time.sleep(0.05)
    r = [r for r in t["routers"] if r["port"] == b.port["id"]]
    assert r and r[0]["kind"] == "query" and r[0]["vlan"] == 100 and r[0]["expiresSeconds"] > 0, t
    reports = b_cap()
    assert any(f["src"] == a.mac for f in reports), f"A's answer to the query did not reach B: {reports}"
    got = stream(topo, c, "4", group, {"a": a, "b": b}, "querier")
    assert got["a"] >= COUNT * 0.8 and got["b"] >= COUNT * 0.8, got
    ja.leave()

    # Bad input is a 4xx with a JSON error, and changes nothing.
    for bad in ({"multicastMembershipSeconds": 0}, {"multicastSnooping": "yes"}, {"nope": 1}):
        status, body = node.api("PATCH", "/v1/switches/mc", bad)
        assert status == 400 and body["code"] == "invalid" and body["message"], (bad, status, body)
    status, body = node.api("PATCH", "/v1/switches/nope", {"multicastSnooping": True})
    assert status == 404 and body["code"] == "not-found"
    assert node.ok("GET", "/v1/switches/mc")["multicastSnooping"] is True
    out = node.ctl("switch", "set", "mc", "--multicast-snooping", "off").stdout
    assert "multicast snooping off" in out, out
    assert node.ctl("switch", "mdb", "mc").stdout.startswith("switch mc: multicast snooping is off")


def csum(b):
    s = sum(int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b) - 1, 2)) + (b[-1] << 8 if len(b) % 2 else 0)
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s & 0xffff).to_bytes(2, "big")


def igmp_query_frame(src_mac, src_ip):
    """A general IGMPv2 query (max response 2 s) to 224.0.0.1."""
    q = bytearray([0x11, 20, 0, 0, 0, 0, 0, 0])
    q[2:4] = csum(bytes(q))
    ip = bytearray([0x45, 0, 0, 28, 0, 0, 0, 0, 1, 2, 0, 0]) + socket.inet_aton(src_ip) + socket.inet_aton("224.0.0.1")
    ip[10:12] = csum(bytes(ip))
    eth = bytes.fromhex("01005e000001") + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    return eth + bytes(ip) + bytes(q) + bytes(18)
