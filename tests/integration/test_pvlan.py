"""Private VLANs (RFC 5517; Hyper-V's Set-VMNetworkAdapterVlan -Isolated,
-Community, -Promiscuous) with real pods and ping: the reachability matrix
on one node and across two nodes joined by an uplink trunk, the tags on the
cable between them, a live PATCH, the CNI config field and bad input.

Primary VLAN 100; isolated secondary 101; communities 102 and 103."""
import json
import re
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from conftest import BROADCAST, PKT, frame, nsexec
from test_hardening import metrics_text

ISO = {"mode": "isolated", "primaryID": 100, "secondaryID": 101}
COM = {"mode": "community", "primaryID": 100, "secondaryID": 102}
COM2 = {"mode": "community", "primaryID": 100, "secondaryID": 103}
PROMISC = {"mode": "promiscuous", "primaryID": 100, "secondaryIDs": [101, 102, 103]}
UPLINK_TRUNK = [{"minID": 100, "maxID": 103}]


def pvlan_drops(node, port_id):
    return node.ok("GET", f"/v1/ports/{port_id}")["stats"]["drops"].get("pvlan", 0)


def reach(pairs, allowed):
    """Pings every pair (a, b) from a, in parallel (bounded: 4 at a time).
    An allowed pair gets up to 8 s to answer (the first ARP), a forbidden
    one two echoes. Returns the pairs whose outcome was not the expected."""
    def one(pair):
        a, b = pair
        ok = a.ping_until(b, 8) if allowed(a, b) else a.ping(b, count=2, timeout=1)
        return pair, ok
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(one, pairs))
    return [f"{a.ns.rsplit('-', 1)[1]}->{b.ns.rsplit('-', 1)[1]}: {'reached' if ok else 'failed'}"
            for (a, b), ok in got if ok != allowed(a, b)]


def pin_neighbours(pairs):
    """Static ARP entries, so a forbidden pair's echoes are known unicasts
    (their MACs are learned) and the switch must drop them, not flood."""
    for a, b in pairs:
        nsexec(a.ns, "ip", "neigh", "replace", b.addr, "lladdr", b.mac, "dev", "eth0", "nud", "permanent")


def kind(p):
    return p.pvlan["mode"], p.pvlan.get("secondaryID")


def rfc5517(a, b):
    """Whether RFC 5517 lets a and b talk."""
    (ka, sa), (kb, sb) = kind(a), kind(b)
    if "promiscuous" in (ka, kb):
        return True
    return ka == kb == "community" and sa == sb


def make(topo, node, name, ip, pvlan):
    p = topo.pod(node, name, ip)
    p.attach(pvlan=pvlan)
    p.pvlan = pvlan
    return p


def test_ping_matrix_on_one_node_and_forbidden_unicasts_are_dropped(topo):
    node = topo.node().start()
    pods = [
        make(topo, node, "i1", "10.91.0.1/24", ISO),
        make(topo, node, "i2", "10.91.0.2/24", ISO),
        make(topo, node, "c1", "10.91.0.3/24", COM),
        make(topo, node, "c2", "10.91.0.4/24", COM),
        make(topo, node, "d1", "10.91.0.5/24", COM2),
        make(topo, node, "p", "10.91.0.9/24", PROMISC),
    ]
    pairs = [(a, b) for i, a in enumerate(pods) for b in pods[i + 1:]]
    assert len(pairs) == 15
    bad = reach(pairs, rfc5517)
    assert not bad, bad
    forbidden = [(a, b) for a, b in pairs if not rfc5517(a, b)]
    assert len(forbidden) == 9, [(a.ns, b.ns) for a, b in forbidden]

    # Every MAC is learned now (everyone reached the promiscuous pod), so
    # with pinned neighbours a forbidden echo is a known unicast: dropped
    # at the sender's port under reason pvlan, not flooded.
    before = {p.port["id"]: pvlan_drops(node, p.port["id"]) for p in pods}
    pin_neighbours(forbidden)
    bad = reach(forbidden, rfc5517)
    assert not bad, bad
    for a in {a for a, _ in forbidden}:
        echoes = 2 * sum(1 for x, _ in forbidden if x is a)
        after = pvlan_drops(node, a.port["id"])
        assert after >= before[a.port["id"]] + echoes, (a.ns, before, after)
    # The promiscuous pod never drops, and it still reaches everyone.
    assert pvlan_drops(node, pods[-1].port["id"]) == 0
    assert not reach([(pods[-1], p) for p in pods[:-1]], rfc5517)
    # The drop reason is in /metrics and switchctl's view.
    i1 = pods[0].port["id"]
    assert re.search(rf'^podswitch_port_drops_total{{port="{i1}",reason="pvlan"}} [1-9]',
                     metrics_text(node), re.M)
    show = node.ctl("port", "show", i1).stdout
    assert "pvlan isolated:100:101" in show and "pvlan=" in show, show
    listing = node.ctl("ports").stdout
    assert "pvlan promiscuous:100:101,102,103" in listing, listing


def capture_on(topo, ns, ifname, seconds, marker):
    """pkt.py capture in any netns; returns a function that waits for the frames."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(PKT), "capture",
                          ifname, str(seconds), marker.hex()],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    topo.procs.append(p)
    line = p.stdout.readline()
    assert line.strip() == "ready", f"capture did not start: {line} {p.stderr.read()}"

    def done():
        out, err = p.communicate(timeout=seconds + 10)
        assert p.returncode == 0, err
        return [json.loads(l) for l in out.splitlines() if l.strip()]
    return done


def two_nodes_with_a_tapped_cable(topo):
    """Two nodes whose uplinks (trunking 100-103) meet at a Linux bridge in
    a third netns, the fabric: the cable's frames can be captured there
    (the nodes' own ends belong to AF_XDP, where a packet socket sees
    nothing). Returns (n1, n2, fabric side of n1's cable, of n2's, fabric ns)."""
    n1 = topo.node("n1").start()
    n2 = topo.node("n2").start()
    fab = topo.node("fab")  # a netns only: the fabric switch
    nsexec(fab.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    up1, f1 = topo.cable(n1, fab, "u1")
    up2, f2 = topo.cable(n2, fab, "u2")
    nsexec(fab.ns, "ip", "link", "add", "br0", "type", "bridge")
    for f in (f1, f2):
        # Tags in the frame bytes, not in skb metadata, when the bridge
        # sends toward a node (its XDP program reads the bytes).
        nsexec(fab.ns, "ethtool", "-K", f, "txvlan", "off", "tx", "off", check=False)
        nsexec(fab.ns, "ip", "link", "set", f, "master", "br0", "up")
    nsexec(fab.ns, "ip", "link", "set", "br0", "up")
    for n, up in ((n1, up1), (n2, up2)):
        n.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": up}, "trunk": UPLINK_TRUNK})
    return n1, n2, f1, f2, fab.ns


def test_ping_matrix_across_two_nodes_and_the_tags_on_the_cable(topo):
    n1, n2, f1, f2, fab = two_nodes_with_a_tapped_cable(topo)
    p1 = make(topo, n1, "p1", "10.92.0.1/24", PROMISC)
    i1 = make(topo, n1, "i1", "10.92.0.2/24", ISO)
    c1 = make(topo, n1, "c1", "10.92.0.3/24", COM)
    p2 = make(topo, n2, "p2", "10.92.0.11/24", PROMISC)
    i2 = make(topo, n2, "i2", "10.92.0.12/24", ISO)
    c2 = make(topo, n2, "c2", "10.92.0.13/24", COM)
    up2 = [p for p in n2.ok("GET", "/v1/ports") if p["nic"]["kind"] == "uplink"][0]["id"]

    # The wire: what crosses carries the tag of the VLAN it was classified
    # on (RFC 5517 §3): the secondary from isolated and community pods, the
    # primary from promiscuous ones; each way.
    m = b"PSW-" + secrets.token_hex(6).encode()
    cap1 = capture_on(topo, fab, f1, 2.5, m)
    cap2 = capture_on(topo, fab, f2, 2.5, m)
    for p in (p1, i1, c1, p2, i2, c2):
        p.send(frame(BROADCAST, p.mac, m))
    seen1 = {f["src"]: f["vlan"] for f in cap1()}
    seen2 = {f["src"]: f["vlan"] for f in cap2()}
    assert seen1 == {p1.mac: 100, i1.mac: 101, c1.mac: 102}, seen1
    assert seen2 == {p2.mac: 100, i2.mac: 101, c2.mac: 102}, seen2

    # The matrix across the nodes (and on each node).
    ones, twos = (p1, i1, c1), (p2, i2, c2)
    across = [(a, b) for a in ones for b in twos]
    bad = reach(across + [(c1, p1), (i1, p1), (c2, p2), (i2, p2)], rfc5517)
    assert not bad, bad
    forbidden = [(a, b) for a, b in across if not rfc5517(a, b)]
    assert len(forbidden) == 3

    # A forbidden known unicast crosses tagged with its secondary (the
    # other node cannot tell it from an allowed one before its lookup) and
    # is dropped there, at the uplink, as pvlan.
    before = pvlan_drops(n2, up2)
    m = b"PSW-" + secrets.token_hex(6).encode()
    cap = capture_on(topo, fab, f1, 2.0, m)
    i1.send(frame(i2.mac, i1.mac, m))
    # A promiscuous pod's unicast to an isolated one crosses on the primary.
    p1.send(frame(i2.mac, p1.mac, m))
    got = sorted((f["src"], f["dst"], f["vlan"]) for f in cap())
    assert got == sorted([(i1.mac, i2.mac, 101), (p1.mac, i2.mac, 100)]), got
    pin_neighbours(forbidden)
    bad = reach(forbidden, rfc5517)
    assert not bad, bad
    after = n2.ok("GET", f"/v1/ports/{up2}")["stats"]
    assert after["drops"].get("pvlan", 0) >= before + 1 + 2 * len(forbidden), after


def test_patch_isolated_to_community_is_live(topo):
    node = topo.node().start()
    p = make(topo, node, "p", "10.93.0.9/24", PROMISC)
    i1 = make(topo, node, "i1", "10.93.0.1/24", ISO)
    c1 = make(topo, node, "c1", "10.93.0.2/24", COM)
    assert i1.ping_until(p, 8) and c1.ping_until(p, 8)
    assert not i1.ping(c1, count=2)
    status = node.ok("GET", f"/v1/ports/{i1.port['id']}")["status"]

    # switchctl: isolated → community 102, live.
    node.ctl("port", "set", i1.port["id"], "--pvlan", "community:100:102")
    assert i1.ping_until(c1, 8), "the same community now"
    now = node.ok("GET", f"/v1/ports/{i1.port['id']}")
    assert now["pvlan"] == {"mode": "community", "primaryID": 100, "secondaryID": 102}, now
    assert now["status"]["attached"] and now["status"]["ifindex"] == status["ifindex"], "not re-attached"
    assert "pvlan community:100:102" in node.ctl("port", "show", i1.port["id"]).stdout

    # The API: back to isolated; the pair is forbidden again.
    node.ok("PATCH", f"/v1/ports/{i1.port['id']}", {"pvlan": ISO})
    pin_neighbours([(i1, c1)])
    before = pvlan_drops(node, i1.port["id"])
    assert not i1.ping(c1, count=2)
    assert pvlan_drops(node, i1.port["id"]) >= before + 2
    assert i1.ping_until(p, 8)

    # Removing it: an ordinary port may not sit on a private VLAN, but on
    # another VLAN it is an ordinary access port (and alone there).
    st, body = node.api("PATCH", f"/v1/ports/{i1.port['id']}", {"pvlan": None, "vlan": 100})
    assert st == 400 and "ordinary port" in body["message"], body
    node.ok("PATCH", f"/v1/ports/{i1.port['id']}", {"pvlan": None, "vlan": 200})
    assert not i1.ping(p, count=2)
    node.ctl("port", "set", i1.port["id"], "--pvlan", "isolated:100:101")
    now = node.ok("GET", f"/v1/ports/{i1.port['id']}")
    assert "vlan" not in now and now["pvlan"] == ISO, now
    assert i1.ping_until(p, 8)


def test_bad_pvlan_settings_are_refused(topo):
    node = topo.node().start()
    a = make(topo, node, "a", "10.94.0.1/24", ISO)
    b = topo.pod(node, "b")
    nic = {"kind": "veth", "ifname": b.host_if}
    # The field's own rules: refused on POST and on PATCH.
    for pv, words in [
        ({"mode": "isolated", "primaryID": 100, "secondaryID": 100}, "differs from its primary"),
        ({"mode": "isolated", "primaryID": 100, "secondaryID": 4095}, "outside 1..4094"),
        ({"mode": "isolated", "primaryID": 0, "secondaryID": 101}, "outside 1..4094"),
        ({"mode": "promiscuous", "primaryID": 100, "secondaryIDs": []}, "needs secondaryIDs"),
        ({"mode": "promiscuous", "primaryID": 100}, "needs secondaryIDs"),
        ({"mode": "community", "primaryID": 100}, "needs secondaryID"),
        ({"mode": "private", "primaryID": 100, "secondaryID": 101}, "unknown variant"),
    ]:
        for method, path, body in [("POST", "/v1/ports", {"nic": nic, "pvlan": pv}),
                                   ("PATCH", f"/v1/ports/{a.port['id']}", {"pvlan": pv})]:
            st, got = node.api(method, path, body)
            assert st == 400 and words in got["message"], (method, pv, st, got)
    # The switch's rules, against port a (isolated secondary 101 of 100).
    for pv, words in [
        ({"mode": "community", "primaryID": 100, "secondaryID": 101}, "isolated secondary VLAN"),
        ({"mode": "isolated", "primaryID": 200, "secondaryID": 101}, "primary 100"),
        ({"mode": "community", "primaryID": 101, "secondaryID": 300}, "primary"),
    ]:
        st, got = node.api("POST", "/v1/ports", {"nic": nic, "pvlan": pv})
        assert st == 400 and words in got["message"], (pv, st, got)
    for extra in ({"vlan": 5}, {"trunk": [{"id": 5}]}):
        st, got = node.api("POST", "/v1/ports", {"nic": nic, "pvlan": ISO, **extra})
        assert st == 400 and "excludes vlan and trunk" in got["message"], (extra, st, got)
    st, body = node.api("POST", "/v1/ports", {"nic": nic, "vlan": 101})
    assert st == 400 and "ordinary port" in body["message"], body
    st, body = node.api("PATCH", f"/v1/ports/{a.port['id']}", {"vlan": 7})
    assert st == 400 and "excludes vlan" in body["message"], body
    assert node.ok("GET", f"/v1/ports/{a.port['id']}")["pvlan"] == ISO, "unchanged"
    assert len(node.ok("GET", "/v1/ports")) == 1, "nothing half-made"
    r = node.ctl("port", "set", a.port["id"], "--pvlan", "isolated:100", check=False)
    assert r.returncode != 0 and "isolated:PRIMARY:SECONDARY" in r.stderr, r.stderr
    # Still serving: the good port works.
    b.attach(pvlan=COM)
    assert [p["pvlan"]["mode"] for p in node.ok("GET", "/v1/ports")] in (["isolated", "community"],
                                                                         ["community", "isolated"])


def test_pvlan_from_the_cni_config(topo):
    from cnihelp import NetCni, QuietPodNs
    node = topo.node().start()
    iso = NetCni(topo, node, subnet="10.95.0.0/24", pvlan=ISO)
    promisc = NetCni(topo, node, subnet="10.95.0.0/24", pvlan=PROMISC)
    pods = [QuietPodNs(topo, n) for n in ("ci1", "ci2", "cp")]
    pods[0].add_to(iso)
    pods[1].add_to(iso)
    pods[2].add_to(promisc)
    ports = {p["owner"]["containerID"]: p for p in node.ok("GET", "/v1/ports")}
    assert ports[pods[0].cid]["pvlan"] == ISO and ports[pods[2].cid]["pvlan"] == PROMISC, ports
    assert pods[0].ping(pods[2].ip) and pods[1].ping(pods[2].ip), "isolated pods reach the promiscuous one"
    assert not pods[0].ping(pods[1].ip), "isolated pods do not reach each other"
    bad = QuietPodNs(topo, "bad")
    for conf, words in [({**iso.conf, "pvlan": {**ISO, "secondaryID": 100}}, "differs from its primary"),
                        ({**iso.conf, "vlan": 100}, "pvlan excludes vlan and trunk")]:
        rc, out, _ = iso.run("ADD", bad.cid, bad.netns, conf=conf)
        assert rc != 0 and out["code"] == 7 and words in out["msg"], out
