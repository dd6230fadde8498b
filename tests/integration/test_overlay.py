"""Overlay across nodes without a VLAN fabric (issue 13, first part): a
port whose NIC is a kernel VXLAN netdev that switchd makes for one VNI,
with one all-zero FDB entry per peer. Two "nodes" (namespaces, each with
its own switchd) joined by an L3 underlay veth; pods on VLAN 100 and 200 on
both. Real namespaces, veths, VXLAN, AF_XDP, ping and tcpdump."""
import subprocess
import time

import secrets

from conftest import BROADCAST, frame, nsexec, sh

UNDERLAY = {"n1": "192.0.2.1", "n2": "192.0.2.2", "n3": "192.0.2.3"}


def overlay(node, name, peer, vni, vlan, underlay):
    """The node's overlay port for `vni`, carrying VLAN `vlan`."""
    return node.ok("POST", "/v1/ports", {
        "nic": {"kind": "vxlan", "ifname": f"psx{vni}",
                "vxlan": {"vni": vni, "local": UNDERLAY[name], "underlay": underlay, "peers": [UNDERLAY[peer]]}},
        "vlan": vlan})


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
    ports = {}
    for node, ul, name, peer in ((n1, u1, "n1", "n2"), (n2, u2, "n2", "n1")):
        for vni, vlan in ((100, 100), (200, 200)):
            ports[(name, vni)] = overlay(node, name, peer, vni, vlan, ul)
        link = nsexec(node.ns, "ip", "-d", "link", "show", "psx100").stdout
        assert "vxlan id 100" in link and f"local {UNDERLAY[name]}" in link and "mtu 1450" in link, link
        fdb = nsexec(node.ns, "bridge", "fdb", "show", "dev", "psx100").stdout
        assert f"00:00:00:00:00:00 dst {UNDERLAY[peer]}" in fdb, fdb
    # Within a VLAN, across nodes; never across VLANs.
    assert a1.ping_until(a2, 10), "VLAN 100 does not cross the overlay"
    assert b1.ping_until(b2, 10), "VLAN 200 does not cross the overlay"
    assert not a1.ping(b2, count=2, timeout=1), "VLAN 100 reached VLAN 200 across the overlay"
    assert not a1.ping(b1, count=2, timeout=1), "VLAN 100 reached VLAN 200 on the node"
    # On the wire: VNI 100, and the inner frame carries no 802.1Q tag.
    cap = subprocess.Popen(["ip", "netns", "exec", n2.ns, "tcpdump", "-nn", "-e", "-l", "-c", "4", "-i", u2,
                            "udp port 4789"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.5)
    a1.ping(a2, count=3, interval=0.2)
    try:
        out = cap.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        cap.kill()
        out = cap.communicate()[0]
    print(out)
    assert "vni 100" in out, out
    assert "10.80.0.1 > 10.80.0.2" in out or "10.80.0.2 > 10.80.0.1" in out, out
    # tcpdump prints each inner frame on the line after its VXLAN header;
    # neither the outer nor the inner frame may carry a tag.
    assert "802.1Q" not in out and "vlan 100" not in out, out
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
    # Deleting the overlay port removes the netdev switchd made.
    n1.ok("DELETE", f"/v1/ports/{ports[('n1', 100)]['id']}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "psx100" in nsexec(n1.ns, "ip", "link", "show").stdout:
        time.sleep(0.1)
    assert "psx100" not in nsexec(n1.ns, "ip", "link", "show").stdout
    assert not a1.ping(a2, count=2, timeout=1), "VLAN 100 still crosses with its overlay port gone"
    assert b1.ping(b2, count=2), "VLAN 200's overlay went with VLAN 100's"


def test_a_vxlan_nic_is_checked(topo):
    n = topo.node().start()
    bad = [
        ({"kind": "vxlan", "ifname": "psx1"}, "needs nic.vxlan"),
        ({"kind": "vxlan", "ifname": "psx1", "vxlan": {"vni": 0, "local": "192.0.2.1"}}, "vni 0"),
        ({"kind": "vxlan", "ifname": "psx1", "vxlan": {"vni": 5, "local": "192.0.2.1", "peers": ["224.0.0.5"]}},
         "not another node"),
        ({"kind": "veth", "ifname": "x", "vxlan": {"vni": 5, "local": "192.0.2.1"}}, "vxlan NICs only"),
    ]
    for nic, why in bad:
        status, body = n.api("POST", "/v1/ports", {"nic": nic, "vlan": 100})
        assert status == 400 and why in body["message"], (nic, status, body)


def underlay_bridge(topo, nodes):
    """An L3 underlay: each node's veth into one bridge in a namespace of
    its own (the fabric), 192.0.2.0/24. Returns {node name: its underlay
    netdev}."""
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
    return out


def test_three_nodes_broadcast_once_per_peer_and_peers_change_live(topo):
    """Three nodes on one L3 underlay, pods on VLAN 100 and 200 on each.
    Pods ping across nodes within their VLAN and never across VLANs; a
    broadcast reaches each other node's pod on its VLAN exactly once (head-
    end replication: one copy per peer); a peer removed live (PUT
    /v1/ports/{id}/peers) stops receiving, and added back receives again."""
    nodes = {n: topo.node(n).start() for n in ("n1", "n2", "n3")}
    ul = underlay_bridge(topo, nodes)
    pods, ports = {}, {}
    for i, (name, node) in enumerate(nodes.items(), start=1):
        for vlan in (100, 200):
            p = topo.pod(node, f"{name}v{vlan}", f"10.81.0.{i + (10 if vlan == 200 else 0)}/24")
            nsexec(p.ns, "ip", "link", "set", p.ifname, "mtu", "1450")
            p.attach(vlan=vlan)
            pods[(name, vlan)] = p
            peers = [UNDERLAY[o] for o in nodes if o != name]
            ports[(name, vlan)] = node.ok("POST", "/v1/ports", {
                "nic": {"kind": "vxlan", "ifname": f"psx{vlan}",
                        "vxlan": {"vni": 5000 + vlan, "local": UNDERLAY[name], "underlay": ul[name],
                                  "peers": peers}},
                "vlan": vlan})
    for vlan in (100, 200):
        for a in ("n1", "n2", "n3"):
            for b in ("n1", "n2", "n3"):
                if a < b:
                    assert pods[(a, vlan)].ping_until(pods[(b, vlan)], 10), f"VLAN {vlan}: {a} -> {b}"
    for a in ("n1", "n2", "n3"):
        for b in ("n1", "n2", "n3"):
            assert not pods[(a, 100)].ping(pods[(b, 200)], count=1, timeout=1), f"{a}/100 reached {b}/200"

    def broadcast_from_n1():
        """{node: copies of one broadcast from n1's VLAN 100 pod} at every
        pod of both VLANs on the other nodes."""
        marker = secrets.token_bytes(8)
        caps = {k: p.capture(2, marker) for k, p in pods.items() if k[0] != "n1"}
        src = pods[("n1", 100)]
        src.send(frame(BROADCAST, src.mac, marker))
        return {k: len(done()) for k, done in caps.items()}

    got = broadcast_from_n1()
    assert got == {("n2", 100): 1, ("n3", 100): 1, ("n2", 200): 0, ("n3", 200): 0}, got
    # n3 leaves n1's VNI 5100 peers, live: it stops receiving n1's floods.
    n1 = nodes["n1"]
    pid = ports[("n1", 100)]["id"]
    p = n1.ok("PUT", f"/v1/ports/{pid}/peers", [UNDERLAY["n2"]])
    assert p["nic"]["vxlan"]["peers"] == [UNDERLAY["n2"]], p
    fdb = nsexec(n1.ns, "bridge", "fdb", "show", "dev", "psx100").stdout
    # Neither the flood entry nor any MAC learned behind n3 is left.
    assert f"dst {UNDERLAY['n2']}" in fdb and f"dst {UNDERLAY['n3']}" not in fdb, fdb
    assert not pods[("n1", 100)].ping(pods[("n3", 100)], count=1, timeout=1), "n3 still gets unicast"
    got = broadcast_from_n1()
    assert got[("n2", 100)] == 1 and got[("n3", 100)] == 0, got
    # Back again; a restart of switchd keeps the list (it is stored).
    n1.ok("PUT", f"/v1/ports/{pid}/peers", [UNDERLAY["n2"], UNDERLAY["n3"]])
    assert broadcast_from_n1()[("n3", 100)] == 1
    stored = n1.ok("GET", f"/v1/ports/{pid}")["nic"]["vxlan"]["peers"]
    assert stored == [UNDERLAY["n2"], UNDERLAY["n3"]], stored
    # Peers of a port that is not an overlay, and bad peers, are refused.
    status, body = n1.api("PUT", f"/v1/ports/{pods[('n1', 100)].port['id']}/peers", [UNDERLAY["n2"]])
    assert status == 400 and "vxlan" in body["message"], body
    status, body = n1.api("PUT", f"/v1/ports/{pid}/peers", ["224.0.0.1"])
    assert status == 400, body
