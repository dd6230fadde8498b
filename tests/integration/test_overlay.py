"""Overlay across nodes without a VLAN fabric (issue 13): one port per node
whose NIC is `"kind": "vxlan"`. switchd makes a veth (its end is the
port) and an external VXLAN netdev behind it; two TC programs map the
port's VLANs to VNIs, pick the peer, and count. "Nodes" are namespaces,
each with its own switchd, joined by an L3 underlay (a veth, or veths into
a bridge). Real namespaces, veths, VXLAN, TC/tcx, AF_XDP, ping, tcpdump
and Python's UDP sockets for the frames no switchd would send."""
import os
import struct
import subprocess
import time

import secrets

from conftest import BROADCAST, frame, nsexec, sh
from test_metrics import scrape, value

UNDERLAY = {"n1": "192.0.2.1", "n2": "192.0.2.2", "n3": "192.0.2.3"}


def overlay(node, name, peers, underlay, vlans=(100, 200), vnis=None):
    """The node's overlay port, carrying `vlans` (tagged) with the VNI
    overrides `vnis`."""
    vx = {"local": UNDERLAY[name], "underlay": underlay, "peers": [UNDERLAY[p] for p in peers]}
    if vnis:
        vx["vni"] = [{"vlan": k, "vni": v} for k, v in vnis.items()]
    return node.ok("POST", "/v1/ports", {
        "id": "overlay",
        "nic": {"kind": "vxlan", "ifname": "psovl0", "vxlan": vx},
        "trunk": [{"id": v} for v in vlans]})


def status(node):
    return node.ok("GET", "/v1/ports/overlay/overlay")


def peer(st, addr):
    return next(p for p in st["peers"] if p["address"] == addr)


def vxlan_packet(ns, src, dst, vni, inner, port=4789):
    """Sends one VXLAN packet from `src` (bound) to `dst`:4789 in `ns`,
    the way a rogue or misconfigured node would."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        f"s.bind(({src!r},0))\n"
        f"s.sendto(bytes.fromhex(sys.argv[1]),({dst!r},{port}))\n")
    hdr = struct.pack("!II", 0x08000000, vni << 8)
    nsexec(ns, "python3", "-c", code, (hdr + inner).hex())


def test_vlans_cross_nodes_over_vxlan_and_stay_apart(topo):
    n1, n2 = topo.node("n1").start(), topo.node("n2").start()
    u1, u2 = topo.cable(n1, n2, "ul")
    for node, ul, name in ((n1, u1, "n1"), (n2, u2, "n2")):
        nsexec(node.ns, "ip", "addr", "add", f"{UNDERLAY[name]}/24", "dev", ul)
        nsexec(node.ns, "ip", "link", "set", ul, "up")
    a1 = topo.pod(n1, "a1", "10.80.0.1/24")
    b1 = topo.pod(n1, "b1", "10.80.0.11/24")
    a2 = topo.pod(n2, "a2", "10.80.0.2/24")
    b2 = topo.pod(n2, "b2", "10.80.0.12/24")
    for p, vlan in ((a1, 100), (a2, 100), (b1, 200), (b2, 200)):
        # The overlay carries 1450 bytes (1500 less VXLAN's 50).
        nsexec(p.ns, "ip", "link", "set", p.ifname, "mtu", "1450")
        p.attach(vlan=vlan)
    # VLAN 100 travels as VNI 100 (the default), VLAN 200 as VNI 5200.
    for node, ul, name, other in ((n1, u1, "n1", "n2"), (n2, u2, "n2", "n1")):
        port = overlay(node, name, [other], ul, vnis={200: 5200})
        assert port["nic"]["vxlan"]["vni"] == [{"vlan": 200, "vni": 5200}], port
        link = nsexec(node.ns, "ip", "-d", "link", "show", "psovl0-vx").stdout
        assert "external" in link and f"local {UNDERLAY[name]}" in link and "mtu 1450" in link, link
        assert "mtu 1450" in nsexec(node.ns, "ip", "link", "show", "psovl0").stdout
    # Within a VLAN, across nodes; never across VLANs.
    assert a1.ping_until(a2, 10), "VLAN 100 does not cross the overlay"
    assert b1.ping_until(b2, 10), "VLAN 200 does not cross the overlay"
    assert not a1.ping(b2, count=2, timeout=1), "VLAN 100 reached VLAN 200 across the overlay"
    assert not a1.ping(b1, count=2, timeout=1), "VLAN 100 reached VLAN 200 on the node"
    # On the wire: the VNI of each VLAN, and no 802.1Q tag inside or out.
    cap = subprocess.Popen(["ip", "netns", "exec", n2.ns, "tcpdump", "-nn", "-e", "-l", "-c", "8", "-i", u2,
                            "udp port 4789"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.5)
    a1.ping(a2, count=2, interval=0.2)
    b1.ping(b2, count=2, interval=0.2)
    try:
        out = cap.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        cap.kill()
        out = cap.communicate()[0]
    print(out)
    assert "vni 100" in out and "vni 5200" in out, out
    assert "10.80.0.1 > 10.80.0.2" in out or "10.80.0.2 > 10.80.0.1" in out, out
    assert "10.80.0.11 > 10.80.0.12" in out or "10.80.0.12 > 10.80.0.11" in out, out
    assert "802.1Q" not in out and "vlan 100" not in out and "vlan 200" not in out, out
    # The operator's view: the map, and per-peer counters both ways.
    st = status(n1)
    assert st["vnis"] == {"100": 100, "200": 5200}, st
    p2 = peer(st, UNDERLAY["n2"])
    assert p2["txPackets"] >= 8 and p2["rxPackets"] >= 8 and p2["reachable"], p2
    assert p2["learnedMacs"] >= 2 and p2["lastRxSecondsAgo"] < 10, p2
    m = scrape(n1)
    assert value(m, "podswitch_overlay_peer_tx_packets_total", port="overlay", peer=UNDERLAY["n2"]) >= 8, m
    assert value(m, "podswitch_overlay_peer_rx_packets_total", port="overlay", peer=UNDERLAY["n2"]) >= 8, m
    assert value(m, "podswitch_overlay_peer_unreachable", port="overlay", peer=UNDERLAY["n2"]) == 0, m
    ctl = n1.ctl("overlay", "overlay").stdout
    assert UNDERLAY["n2"] in ctl and "5200" in ctl, ctl

    # An unmapped VNI from a peer, and any VNI from a stranger, are dropped
    # and counted; neither reaches a pod.
    marker = secrets.token_bytes(8)
    caps = [p.capture(2, marker) for p in (a1, b1)]
    inner = frame(BROADCAST, "02:00:00:00:00:99", marker)
    vxlan_packet(n2.ns, UNDERLAY["n2"], UNDERLAY["n1"], 999, inner)
    nsexec(n2.ns, "ip", "addr", "add", "192.0.2.99/24", "dev", u2)
    vxlan_packet(n2.ns, "192.0.2.99", UNDERLAY["n1"], 100, inner)
    assert [len(c()) for c in caps] == [0, 0]
    st = status(n1)
    assert st["drops"]["unmappedVni"] == 1 and st["lastUnmappedVni"] == 999, st
    assert st["drops"]["notAPeer"] == 1 and st["lastStranger"] == "192.0.2.99", st
    m = scrape(n1)
    assert value(m, "podswitch_overlay_dropped_frames_total", port="overlay", reason="unmapped-vni") == 1, m
    assert value(m, "podswitch_overlay_dropped_frames_total", port="overlay", reason="not-a-peer") == 1, m

    # The plugin gives a pod on this switch the overlay's MTU (1450), and
    # a frame too big for the overlay is counted, not silently lost.
    from test_cni import Cni, PodNs
    cni = Cni(topo, n1)
    pod = PodNs(topo, "cnip")
    cni.add(pod)
    link = nsexec(pod.ns, "ip", "-j", "link", "show", "eth0").stdout
    assert '"mtu":1450' in link.replace(" ", ""), link
    big = topo.pod(n1, "big", "10.80.0.21/24")  # MTU 1500, attached by hand
    big.attach(vlan=100)
    assert big.ping_until(a2, 10)

    def oversize():
        return sum(p["stats"].get("drops", {}).get("oversize", 0) for p in n1.ok("GET", "/v1/ports"))

    before = oversize()
    r = nsexec(big.ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-M", "dont", "-s", "1472", a2.addr, check=False)
    assert r.returncode != 0, "a 1500-byte frame crossed a 1450-byte overlay"
    assert oversize() >= before + 3, f"oversized frames were not counted: {before} -> {oversize()}"

    # VLAN 200 leaves the port live (PATCH trunk): it stops crossing, and
    # comes back.
    n1.ok("PATCH", "/v1/ports/overlay", {"trunk": [{"id": 100}]})
    assert status(n1)["vnis"] == {"100": 100}
    assert not b1.ping(b2, count=2, timeout=1), "VLAN 200 crosses after leaving the overlay port"
    assert a1.ping(a2, count=2), "VLAN 100 stopped crossing when VLAN 200 left"
    n1.ok("PATCH", "/v1/ports/overlay", {"trunk": [{"id": 100}, {"id": 200}]})
    assert b1.ping_until(b2, 10), "VLAN 200 does not cross again"

    # Deleting the overlay port removes the netdevs switchd made.
    n1.ok("DELETE", "/v1/ports/overlay")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "psovl0" in nsexec(n1.ns, "ip", "link", "show").stdout:
        time.sleep(0.1)
    links = nsexec(n1.ns, "ip", "link", "show").stdout
    assert "psovl0" not in links, links
    assert not a1.ping(a2, count=2, timeout=1), "VLAN 100 still crosses with its overlay port gone"


def test_a_vxlan_nic_is_checked(topo):
    n = topo.node().start()
    vx = {"local": "192.0.2.1"}
    bad = [
        ({"kind": "vxlan", "ifname": "psx1"}, {"vlan": 100}, "needs nic.vxlan"),
        ({"kind": "vxlan", "ifname": "psx1", "vxlan": {**vx, "peers": ["224.0.0.5"]}}, {"vlan": 100},
         "not another node"),
        ({"kind": "vxlan", "ifname": "psx1", "vxlan": {**vx, "peers": ["2001:db8::2"]}}, {"vlan": 100},
         "address family"),
        ({"kind": "veth", "ifname": "x", "vxlan": vx}, {"vlan": 100}, "vxlan NICs only"),
        ({"kind": "vxlan", "ifname": "psx1", "vxlan": {**vx, "vni": [{"vlan": 100, "vni": 0}]}}, {"vlan": 100}, "VNI 0"),
        ({"kind": "vxlan", "ifname": "psx1", "vxlan": {**vx, "vni": [{"vlan": 100, "vni": 200}]}},
         {"trunk": [{"id": 100}, {"id": 200}]}, "both travel as VNI 200"),
        ({"kind": "vxlan", "ifname": "psovl0overlay", "vxlan": vx}, {"vlan": 100}, "1 to 12 characters"),
        ({"kind": "vxlan", "ifname": "psx1", "vxlan": {**vx, "vni": [{"vlan": 100, "vni": 5}, {"vlan": 100, "vni": 6}]}},
         {"vlan": 100}, "mapped twice"),
        ({"kind": "vxlan", "ifname": "psx1", "vxlan": {**vx, "vnis": {"100": 5}}}, {"vlan": 100}, "unknown field"),
    ]
    for nic, vlans, why in bad:
        status_code, body = n.api("POST", "/v1/ports", {"nic": nic, **vlans})
        assert status_code == 400 and why in body["message"], (nic, status_code, body)
    assert n.ok("GET", "/v1/ports") == []
    assert "psx1" not in nsexec(n.ns, "ip", "link", "show").stdout
    # A PATCH that would give two VLANs one VNI is refused, and changes nothing.
    n.ok("POST", "/v1/ports", {"id": "overlay", "nic": {"kind": "vxlan", "ifname": "psovl0", "vxlan": {
        **vx, "vni": [{"vlan": 100, "vni": 200}]}}, "vlan": 100})
    status_code, body = n.api("PATCH", "/v1/ports/overlay", {"trunk": [{"id": 100}, {"id": 200}]})
    assert status_code == 400 and "VNI 200" in body["message"], body
    assert n.ok("GET", "/v1/ports/overlay/overlay")["vnis"] == {"100": 200}
    # The overlay view of a port that is not an overlay is a 404.
    pod = topo.pod(n, "p", "10.80.1.1/24")
    port = pod.attach(vlan=100)
    status_code, body = n.api("GET", f"/v1/ports/{port['id']}/overlay")
    assert status_code == 404 and "not an overlay" in body["message"], body


def underlay_bridge(topo, nodes):
    """An L3 underlay: each node's veth into one bridge in a namespace of
    its own (the fabric), 192.0.2.0/24. Returns ({node name: its underlay
    netdev}, the fabric's namespace)."""
    fabric = f"{topo.prefix}-fab"
    sh("ip", "netns", "add", fabric)
    topo.namespaces.append(fabric)
    nsexec(fabric, "ip", "link", "add", "br0", "type", "bridge")
    nsexec(fabric, "ip", "link", "set", "br0", "up")
    out = {}
    for name, node in nodes.items():
        mine, theirs = f"{topo.short}{name}u", f"{topo.short}{name}f"
        sh("ip", "link", "add", mine, "netns", node.ns, "type", "veth", "peer", "name", theirs, "netns", fabric)
        nsexec(fabric, "ip", "link", "set", theirs, "master", "br0", "up")
        nsexec(node.ns, "ip", "addr", "add", f"{UNDERLAY[name]}/24", "dev", mine)
        nsexec(node.ns, "ip", "link", "set", mine, "up")
        out[name] = mine
    return out, fabric


def test_three_nodes_broadcast_once_per_peer_and_peers_change_live(topo):
    """Three nodes on one L3 underlay, pods on VLAN 100 and 200 on each.
    Pods ping across nodes within their VLAN and never across VLANs; a
    broadcast reaches each other node's pod on its VLAN exactly once (head-
    end replication: one copy per peer), which tcpdump on the fabric sees
    as one VXLAN packet per peer; a peer removed live (PUT
    /v1/ports/{id}/peers) stops receiving, and added back receives again;
    a peer nobody answers for is shown unreachable."""
    nodes = {n: topo.node(n).start() for n in ("n1", "n2", "n3")}
    ul, fabric = underlay_bridge(topo, nodes)
    pods = {}
    for i, (name, node) in enumerate(nodes.items(), start=1):
        for vlan in (100, 200):
            p = topo.pod(node, f"{name}v{vlan}", f"10.81.0.{i + (10 if vlan == 200 else 0)}/24")
            nsexec(p.ns, "ip", "link", "set", p.ifname, "mtu", "1450")
            p.attach(vlan=vlan)
            pods[(name, vlan)] = p
        overlay(node, name, [o for o in nodes if o != name], ul[name], vnis={100: 5100, 200: 5200})
    for vlan in (100, 200):
        for a in ("n1", "n2", "n3"):
            for b in ("n1", "n2", "n3"):
                if a < b:
                    assert pods[(a, vlan)].ping_until(pods[(b, vlan)], 10), f"VLAN {vlan}: {a} -> {b}"
    for a in ("n1", "n2", "n3"):
        for b in ("n1", "n2", "n3"):
            assert not pods[(a, 100)].ping(pods[(b, 200)], count=1, timeout=1), f"{a}/100 reached {b}/200"

    def broadcast_from_n1():
        """{(node, vlan): copies of one broadcast from n1's VLAN 100 pod}
        at every pod of both VLANs on the other nodes, and the VXLAN
        packets tcpdump saw on the fabric's bridge."""
        marker = secrets.token_bytes(8)
        caps = {k: p.capture(2, marker) for k, p in pods.items() if k[0] != "n1"}
        dump = subprocess.Popen(["ip", "netns", "exec", fabric, "timeout", "3", "tcpdump", "-nn", "-l", "-x",
                                 "-i", "br0", "udp port 4789"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.5)
        src = pods[("n1", 100)]
        src.send(frame(BROADCAST, src.mac, marker))
        got = {k: len(done()) for k, done in caps.items()}
        wire = dump.communicate(timeout=10)[0]
        hexed = "".join(line.split(":", 1)[1] for line in wire.splitlines() if ":" in line and line.startswith("\t"))
        packets = [line for line in wire.splitlines() if "VXLAN" in line or "vxlan" in line.lower()
                   or ("UDP" in line and "4789" in line)]
        return got, wire, hexed.replace(" ", ""), packets

    got, wire, hexed, packets = broadcast_from_n1()
    assert got == {("n2", 100): 1, ("n3", 100): 1, ("n2", 200): 0, ("n3", 200): 0}, got
    # One VXLAN packet per peer, each with VNI 5100 (00 13 ec), none to
    # n1's own address.
    to = [line for line in packets if f"{UNDERLAY['n1']}." in line.split(">")[0]]
    assert len(to) == 2 and any(UNDERLAY["n2"] in x for x in to) and any(UNDERLAY["n3"] in x for x in to), wire
    assert "080000000013ec00" in hexed, wire
    m = scrape(nodes["n1"])
    assert value(m, "podswitch_overlay_floods_total", port="overlay") >= 1, m

    # n3 leaves n1's peers, live: it stops receiving n1's floods and its
    # unicast; its counters and MACs go.
    n1 = nodes["n1"]
    p = n1.ok("PUT", "/v1/ports/overlay/peers", [UNDERLAY["n2"]])
    assert p["nic"]["vxlan"]["peers"] == [UNDERLAY["n2"]], p
    st = status(n1)
    assert [x["address"] for x in st["peers"]] == [UNDERLAY["n2"]], st
    assert not pods[("n1", 100)].ping(pods[("n3", 100)], count=1, timeout=1), "n3 still gets unicast"
    got = broadcast_from_n1()[0]
    assert got[("n2", 100)] == 1 and got[("n3", 100)] == 0, got
    # Back again; the list is stored with the port.
    n1.ok("PUT", "/v1/ports/overlay/peers", [UNDERLAY["n2"], UNDERLAY["n3"]])
    assert broadcast_from_n1()[0][("n3", 100)] == 1
    stored = n1.ok("GET", "/v1/ports/overlay")["nic"]["vxlan"]["peers"]
    assert stored == [UNDERLAY["n2"], UNDERLAY["n3"]], stored

    # A peer nobody answers ARP for, and one without a route, are shown
    # unreachable (API and /metrics); the others stay reachable.
    ghost, lost = "192.0.2.77", "198.51.100.1"
    n1.ok("PUT", "/v1/ports/overlay/peers", [UNDERLAY["n2"], UNDERLAY["n3"], ghost])
    status_code, body = n1.api("PUT", "/v1/ports/overlay/peers", [UNDERLAY["n2"], UNDERLAY["n3"], ghost, lost])
    assert status_code == 200, body
    assert not peer(status(n1), lost)["reachable"] and "no route" in peer(status(n1), lost)["path"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        broadcast_from_n1()
        g = peer(status(n1), ghost)
        if not g["reachable"]:
            break
    assert not g["reachable"] and "does not answer" in g["path"], g
    assert peer(status(n1), UNDERLAY["n2"])["reachable"]
    m = scrape(n1)
    assert value(m, "podswitch_overlay_peer_unreachable", port="overlay", peer=ghost) == 1, m
    assert value(m, "podswitch_overlay_peer_unreachable", port="overlay", peer=UNDERLAY["n3"]) == 0, m

    # Peers of a port that is not an overlay, and bad peers, are refused.
    status_code, body = n1.api("PUT", f"/v1/ports/{pods[('n1', 100)].port['id']}/peers", [UNDERLAY["n2"]])
    assert status_code == 400 and "vxlan" in body["message"], body
    status_code, body = n1.api("PUT", "/v1/ports/overlay/peers", ["224.0.0.1"])
    assert status_code == 400, body


def test_the_overlay_survives_restart_and_handover(topo):
    """A kill -9 and restart of switchd re-attaches its programs to the
    netdevs it left behind; a handover leaves exactly one set of overlay
    programs per netdev, the old process's go, and the counters and learned
    MACs carry over. Node 2 runs generic XDP
    (--xdp-mode generic): its overlay port's veth still gets native XDP,
    since generic XDP passes over the frames TC redirects to it."""
    n1, n2 = topo.node("n1").start(), topo.node("n2").start("--xdp-mode", "generic")
    u1, u2 = topo.cable(n1, n2, "ul")
    for node, u, name in ((n1, u1, "n1"), (n2, u2, "n2")):
        nsexec(node.ns, "ip", "addr", "add", f"{UNDERLAY[name]}/24", "dev", u)
        nsexec(node.ns, "ip", "link", "set", u, "up")
    a1, a2 = topo.pod(n1, "a1", "10.82.0.1/24"), topo.pod(n2, "a2", "10.82.0.2/24")
    for p in (a1, a2):
        nsexec(p.ns, "ip", "link", "set", p.ifname, "mtu", "1450")
        p.attach(vlan=100)
    overlay(n1, "n1", ["n2"], u1, vlans=(100,))
    overlay(n2, "n2", ["n1"], u2, vlans=(100,))
    assert a1.ping_until(a2, 10)
    modes = {p["id"]: p["status"]["xdpMode"] for p in n2.ok("GET", "/v1/ports")}
    assert modes == {"overlay": "native", a2.port["id"]: "generic"}, modes
    # Netdevs deleted by hand are made again, with fresh programs.
    nsexec(n1.ns, "ip", "link", "del", "psovl0")
    nsexec(n1.ns, "ip", "link", "del", "psovl0-vx")
    assert a1.ping_until(a2, 15), "the overlay did not come back after its netdevs were deleted"
    nsexec(n1.ns, "ip", "link", "del", "psovl0-vx")  # the port's own end stays attached
    assert a1.ping_until(a2, 15), "the overlay did not come back after its VXLAN netdev was deleted"
    n1.kill()
    n1.start()
    assert a1.ping_until(a2, 10), "the overlay did not come back after a restart"
    assert status(n1)["peers"][0]["address"] == UNDERLAY["n2"]

    def tcx_links(pid):
        """The tcx links process `pid` holds (fdinfo of its bpf-link fds)."""
        n = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if "link_type:\ttcx" in open(f"/proc/{pid}/fdinfo/{fd}").read():
                    n += 1
            except OSError:
                pass
        return n

    assert tcx_links(n1.proc.pid) == 2
    before = peer(status(n1), UNDERLAY["n2"])
    assert before["rxPackets"] > 0 and before["learnedMacs"] >= 1, before
    old = n1.proc
    n1.start("--after-handover", "wait")
    # The successor's programs go on from the predecessor's counts and MACs.
    after = peer(status(n1), UNDERLAY["n2"])
    assert after["rxPackets"] >= before["rxPackets"] and after["txPackets"] >= before["txPackets"], (before, after)
    assert after["learnedMacs"] >= 1, after
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and tcx_links(old.pid):
        time.sleep(0.1)
    assert tcx_links(old.pid) == 0, "the old switchd kept its overlay programs attached"
    assert tcx_links(n1.proc.pid) == 2
    assert a1.ping_until(a2, 10), "the overlay did not survive a handover"
    n2_port = status(n2)["peers"][0]
    assert n2_port["rxPackets"] > 0, n2_port


def test_an_ipv6_underlay_carries_the_overlay(topo):
    """The underlay may be IPv6: the tunnel keys carry IPv6 peers, and the
    overlay's MTU is the underlay's less 70 (IPv6's 40-byte header)."""
    n1, n2 = topo.node("n1").start(), topo.node("n2").start()
    u1, u2 = topo.cable(n1, n2, "ul")
    addr = {"n1": "2001:db8:9::1", "n2": "2001:db8:9::2"}
    for node, u, name in ((n1, u1, "n1"), (n2, u2, "n2")):
        nsexec(node.ns, "ip", "addr", "add", f"{addr[name]}/64", "dev", u, "nodad")
        nsexec(node.ns, "ip", "link", "set", u, "up")
    a1, a2 = topo.pod(n1, "a1", "10.83.0.1/24"), topo.pod(n2, "a2", "10.83.0.2/24")
    for p in (a1, a2):
        nsexec(p.ns, "ip", "link", "set", p.ifname, "mtu", "1430")
        p.attach(vlan=100)
    for node, u, me, other in ((n1, u1, "n1", "n2"), (n2, u2, "n2", "n1")):
        node.ok("POST", "/v1/ports", {"id": "overlay", "trunk": [{"id": 100}], "nic": {
            "kind": "vxlan", "ifname": "psovl0",
            "vxlan": {"local": addr[me], "underlay": u, "peers": [addr[other]]}}})
    assert a1.ping_until(a2, 10), "the overlay does not cross an IPv6 underlay"
    st = status(n1)
    assert st["mtu"] == 1430, st
    p2 = peer(st, addr["n2"])
    assert p2["txPackets"] > 0 and p2["rxPackets"] > 0 and p2["reachable"], p2
    assert "mtu 1430" in nsexec(n1.ns, "ip", "link", "show", "psovl0").stdout
