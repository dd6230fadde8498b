"""Jumbo frames (MTU 9000) through the AF_XDP multi-buffer path: real
namespaces, real veths, a real switchd. Frames longer than one 4 KiB UMEM
chunk arrive as several descriptors; the VLAN tag edit runs on the first
fragment, and a frame longer than the egress port's MTU is dropped and
counted, never truncated."""
import secrets

from conftest import BROADCAST, frame, nsexec
from test_qos_security import iperf


def jumbo_pod(topo, node, name, ip=None, mtu=9000):
    p = topo.pod(node, name, ip)
    nsexec(node.ns, "ip", "link", "set", p.host_if, "mtu", str(mtu))
    nsexec(p.ns, "ip", "link", "set", p.ifname, "mtu", str(mtu))
    return p


def marker():
    return b"PSWJ-" + secrets.token_hex(6).encode()


def drops(pod):
    return pod.stats().get("drops", {})


def test_jumbo_ping_and_tcp_between_mtu_9000_pods(topo):
    node = topo.node().start()
    a = jumbo_pod(topo, node, "ja", "10.78.0.1/24")
    b = jumbo_pod(topo, node, "jb", "10.78.0.2/24")
    pa = a.attach(vlan=100)
    b.attach(vlan=100)
    assert pa["status"]["mtu"] == 9000, pa["status"]
    assert a.ping_until(b, 10), node.log()
    # The largest IPv4 packet a 9000 MTU takes, not fragmented.
    r = nsexec(a.ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "8972", "-M", "do", b.addr, check=False)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout + r.stderr
    # One byte more does not fit the MTU: refused by the sender itself.
    r = nsexec(a.ns, "ping", "-c", "1", "-W", "1", "-s", "8973", "-M", "do", b.addr, check=False)
    assert r.returncode != 0
    rep = iperf(topo, a, b, 3)
    gbps = rep["end"]["sum_received"]["bits_per_second"] / 1e9
    retr = rep["end"]["sum_sent"]["retransmits"]
    print(f"TCP at MTU 9000: {gbps:.2f} Gbit/s, {retr} retransmits")
    assert gbps > 0.05, rep["end"]
    st = b.stats()
    assert st["rxBytes"] > 0 and "oversize" not in st.get("drops", {}), st


def test_jumbo_tag_push_and_pop_on_multibuffer_frames(topo):
    node = topo.node().start()
    acc = jumbo_pod(topo, node, "jacc")
    trk = jumbo_pod(topo, node, "jtrk")
    acc.attach(vlan=100)
    trk.attach(trunk=[{"id": 100}])
    payload_len = 8990  # L2 payload: the frame is 9004 bytes untagged

    # Access → trunk: the tag is pushed onto a 3-fragment frame.
    m = marker()
    cap = trk.capture(2.5, m)
    body = m + b"\xab" * (payload_len - len(m))
    acc.send(frame(BROADCAST, acc.mac, body), count=2)
    got = cap()
    assert len(got) == 2, got and [(f["len"], f["vlan"]) for f in got]
    for f in got:
        assert f["vlan"] == 100, (f["vlan"], f["len"])
        # Tag in metadata (PACKET_AUXDATA): the bytes are the untagged frame.
        assert f["len"] == 14 + payload_len, f["len"]
        assert bytes.fromhex(f["hex"])[14:] == body

    # Trunk → access: the tag is popped from a 3-fragment frame.
    m = marker()
    cap = acc.capture(2.5, m)
    body = m + b"\xcd" * (payload_len - len(m))
    trk.send(frame(BROADCAST, trk.mac, body, vlan=100), count=2)
    got = cap()
    assert len(got) == 2, [(f["len"], f["vlan"]) for f in got]
    for f in got:
        assert f["vlan"] is None and f["inline_vlan"] is None, f["vlan"]
        assert f["len"] == 14 + payload_len
        assert bytes.fromhex(f["hex"])[14:] == body, "payload intact across fragments"


def test_oversized_frame_is_dropped_and_counted(topo):
    node = topo.node().start()
    big = jumbo_pod(topo, node, "jbig", "10.79.0.1/24", mtu=9000)
    small = jumbo_pod(topo, node, "jsml", "10.79.0.2/24", mtu=1500)
    big.attach(vlan=100)
    small.attach(vlan=100)
    assert big.ping_until(small, 10), node.log()
    # 4000-byte IPv4 packets fit the sender's MTU, not the receiver's.
    r = nsexec(big.ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-s", "3972", "-M", "do", small.addr, check=False)
    assert r.returncode != 0, "an oversized frame must not reach a 1500-MTU pod"
    d = drops(small)
    assert d.get("oversize", 0) >= 3, d
    # Small frames still pass.
    assert big.ping(small, count=2)
    ctl = node.ctl("port", "show", small.port["id"]).stdout
    assert "oversize" in ctl, ctl


def test_uplink_at_mtu_9000_attaches_and_carries_jumbo_frames(topo):
    n1 = topo.node("n1").start()
    n2 = topo.node("n2").start()
    up1, up2 = topo.cable(n1, n2, "up")
    nsexec(n1.ns, "ip", "link", "set", up1, "mtu", "9000")
    nsexec(n2.ns, "ip", "link", "set", up2, "mtu", "9000")
    u1 = n1.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": up1}, "trunk": [{"id": 100}]})
    n2.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": up2}, "trunk": [{"id": 100}]})
    assert u1["status"]["attached"] and u1["status"]["mtu"] == 9000, u1["status"]
    a = jumbo_pod(topo, n1, "ua", "10.80.0.1/24")
    b = jumbo_pod(topo, n2, "ub", "10.80.0.2/24")
    a.attach(vlan=100)
    b.attach(vlan=100)
    assert a.ping_until(b, 10), n1.log() + n2.log()
    r = nsexec(a.ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "8972", "-M", "do", b.addr, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    info = n1.ok("GET", "/v1/datapath")
    assert info["maxMtu"] == 9000, info
