"""switchd end to end: real namespaces, veths, AF_XDP and the control API."""
import json
import os
import secrets
import signal
import time


from conftest import BROADCAST, cpu_seconds, frame


def marker():
    return b"PSW-" + secrets.token_hex(6).encode()


def two_pods(topo, vlan_a=100, vlan_b=100):
    node = topo.node().start()
    a = topo.pod(node, "a", "10.77.0.1/24")
    b = topo.pod(node, "b", "10.77.0.2/24")
    a.attach(vlan=vlan_a)
    b.attach(vlan=vlan_b)
    return node, a, b


def test_access_vlan_pods_ping(topo):
    node, a, b = two_pods(topo)
    assert a.ping(b, count=5), "pods on the same access VLAN must reach each other"
    assert b.ping(a, count=2)
    sa, sb = a.stats(), b.stats()
    assert sa["rxPackets"] >= 5 and sa["txPackets"] >= 5, sa
    assert sb["rxPackets"] >= 5 and sb["txPackets"] >= 5, sb
    port = node.ok("GET", f"/v1/ports/{a.port['id']}")
    assert port["status"]["attached"] is True
    assert port["status"]["xdpMode"] in ("native", "generic")


def test_tcp_and_udp_through_the_switch(topo):
    """Checksums survive the AF_XDP path (pod TX offload off)."""
    node, a, b = two_pods(topo)
    msg = secrets.token_hex(8)
    from conftest import nsexec
    import subprocess
    srv = subprocess.Popen(["ip", "netns", "exec", b.ns, "python3", "-c",
                            "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                            "s.bind(('0.0.0.0',5701));s.listen(1);s.settimeout(10);c,_=s.accept();"
                            "print(c.recv(100).decode(),flush=True)"],
                           stdout=subprocess.PIPE, text=True)
    topo.procs.append(srv)
    time.sleep(0.3)
    nsexec(a.ns, "python3", "-c",
           f"import socket;s=socket.create_connection(('{b.addr}',5701),timeout=5);s.sendall(b'{msg}');s.close()")
    out, _ = srv.communicate(timeout=15)
    assert out.strip() == msg


def test_different_vlans_are_isolated(topo):
    node = topo.node().start()
    a = topo.pod(node, "a", "10.77.0.1/24")
    b = topo.pod(node, "b", "10.77.0.2/24")
    c = topo.pod(node, "c", "10.77.0.3/24")
    a.attach(vlan=100)
    b.attach(vlan=200)
    c.attach(vlan=100)
    assert a.ping(c), "same VLAN must work (control)"
    assert not a.ping(b, count=2), "ping crossed VLANs"
    # Raw broadcast frames: seen within VLAN 100, never on VLAN 200.
    m = marker()
    cap_b = b.capture(2, m)
    cap_c = c.capture(2, m)
    a.send(frame(BROADCAST, a.mac, m), count=5)
    got_b, got_c = cap_b(), cap_c()
    assert got_b == [], f"broadcast leaked into VLAN 200: {got_b}"
    assert len(got_c) == 5, got_c
    assert all(f["vlan"] is None for f in got_c), "access ports deliver untagged"


def test_tagged_frame_on_access_port_is_dropped(topo):
    node = topo.node().start()
    a = topo.pod(node, "a")
    b = topo.pod(node, "b")
    v200 = topo.pod(node, "c")
    a.attach(vlan=100)
    b.attach(vlan=100)
    v200.attach(vlan=200)
    m = marker()
    cap_b, cap_c = b.capture(2, m), v200.capture(2, m)
    # Tagged with its own VLAN, another VLAN, and double-tagged (VLAN hopping).
    a.send(frame(BROADCAST, a.mac, m, vlan=100))
    a.send(frame(BROADCAST, a.mac, m, vlan=200))
    a.send(frame(BROADCAST, a.mac, b"\x81\x00\x00\xc8\x88\xb5" + m, vlan=100))
    assert cap_b() == [] and cap_c() == []
    assert a.stats()["drops"].get("vlan") == 3, a.stats()


def test_trunk_port_gets_allowed_vlans_tagged_and_nothing_else(topo):
    node = topo.node().start()
    p100 = topo.pod(node, "v100")
    p200 = topo.pod(node, "v200")
    p300 = topo.pod(node, "v300")
    trunk = topo.pod(node, "trk")
    native = topo.pod(node, "ntv")
    p100.attach(vlan=100)
    p200.attach(vlan=200)
    p300.attach(vlan=300)
    trunk.attach(trunk=[{"id": 100}, {"minID": 150, "maxID": 250}])
    native.attach(trunk=[{"id": 200}], vlan=100)  # native VLAN 100

    m = marker()
    cap_t, cap_n = trunk.capture(2.5, m), native.capture(2.5, m)
    for p in (p100, p200, p300):
        p.send(frame(BROADCAST, p.mac, m), count=2)
    got = cap_t()
    by_src = {}
    for f in got:
        by_src.setdefault(f["src"], []).append(f["vlan"])
    assert by_src.get(p100.mac) == [100, 100], got
    assert by_src.get(p200.mac) == [200, 200], got
    assert p300.mac not in by_src, "VLAN 300 is not in the trunk's allowed set"
    assert set(by_src) == {p100.mac, p200.mac}, f"unexpected frames on the trunk: {got}"
    gotn = cap_n()
    by_src = {}
    for f in gotn:
        by_src.setdefault(f["src"], []).append(f["vlan"])
    assert by_src.get(p100.mac) == [None, None], "native VLAN leaves untagged"
    assert by_src.get(p200.mac) == [200, 200]
    assert p300.mac not in by_src

    # Trunk ingress: tagged 100 reaches the access port untagged; a VID
    # outside the allowed set and untagged without a native VLAN are dropped.
    m2 = marker()
    cap_100, cap_300 = p100.capture(2, m2), p300.capture(2, m2)
    trunk.send(frame(BROADCAST, trunk.mac, m2, vlan=100))
    trunk.send(frame(BROADCAST, trunk.mac, m2, vlan=300))
    trunk.send(frame(BROADCAST, trunk.mac, m2))
    got100 = cap_100()
    assert [f["vlan"] for f in got100] == [None], got100
    assert cap_300() == []
    assert trunk.stats()["drops"].get("vlan") == 2
    # Native untagged in → VLAN 100.
    m3 = marker()
    cap_100 = p100.capture(2, m3)
    native.send(frame(BROADCAST, native.mac, m3))
    assert len(cap_100()) == 1


def test_link_down_pulls_the_cable(topo):
    node, a, b = two_pods(topo)
    assert a.ping(b)
    from conftest import nsexec
    port = node.ok("PATCH", f"/v1/ports/{a.port['id']}", {"linkState": "down"})
    assert port["linkState"] == "down"
    link = json.loads(nsexec(a.ns, "ip", "-j", "link", "show", "eth0").stdout)[0]
    assert "NO-CARRIER" in link["flags"], link
    assert not a.ping(b, count=2)
    assert not b.ping(a, count=2)
    fdb = node.ok("GET", "/v1/switches/default/fdb")
    assert all(e["port"] != a.port["id"] for e in fdb), "a down port's MACs are flushed"
    node.ok("PATCH", f"/v1/ports/{a.port['id']}", {"linkState": "up"})
    assert a.ping_until(b, 10), "link up restores traffic"
    link = json.loads(nsexec(a.ns, "ip", "-j", "link", "show", "eth0").stdout)[0]
    assert "NO-CARRIER" not in link["flags"]
    # switchctl shows the same thing.
    out = node.ctl("port", "set", a.port["id"], "--link", "down").stdout
    assert "down" in out
    assert not a.ping(b, count=1)
    node.ctl("port", "set", a.port["id"], "--link", "up")
    assert a.ping_until(b, 10)


def test_vlan_change_is_live(topo):
    node, a, b = two_pods(topo, 100, 200)
    assert not a.ping(b, count=1)
    node.ok("PATCH", f"/v1/ports/{b.port['id']}", {"vlan": 100})
    assert a.ping_until(b, 5), "moving b to VLAN 100 live connects them"
    node.ctl("port", "set", a.port["id"], "--vlan", "300")
    assert not a.ping(b, count=2)


def test_fdb_shows_learned_macs(topo):
    node, a, b = two_pods(topo)
    assert a.ping(b)
    fdb = node.ok("GET", "/v1/switches/default/fdb")
    rows = {(e["vlan"], e["mac"]): e for e in fdb}
    assert rows[(100, a.mac)]["port"] == a.port["id"]
    assert rows[(100, b.mac)]["port"] == b.port["id"]
    assert rows[(100, a.mac)]["type"] == "learned"
    table = node.ctl("fdb").stdout
    assert a.mac in table and b.mac in table
    js = json.loads(node.ctl("-o", "json", "fdb", "default").stdout)
    assert {e["mac"] for e in js} >= {a.mac, b.mac}
    ports = node.ctl("ports").stdout
    assert a.port["id"] in ports and "access 100" in ports


def test_fdb_aging(topo):
    node = topo.node().start("--fdb-aging", "2")
    a = topo.pod(node, "a", "10.77.0.1/24")
    b = topo.pod(node, "b", "10.77.0.2/24")
    a.attach()
    b.attach()
    assert a.ping(b, count=1)
    assert len(node.ok("GET", "/v1/switches/default/fdb")) == 2
    time.sleep(3.5)
    assert node.ok("GET", "/v1/switches/default/fdb") == []


def test_switches_are_separate_domains(topo):
    node = topo.node().start()
    node.ok("POST", "/v1/switches", {"name": "storage", "agingSeconds": 60})
    a = topo.pod(node, "a", "10.77.0.1/24")
    b = topo.pod(node, "b", "10.77.0.2/24")
    c = topo.pod(node, "c", "10.77.0.3/24")
    a.attach(vlan=10)
    b.attach(vlan=10, switch="storage")
    c.attach(vlan=10, switch="storage")
    assert b.ping(c)
    assert not a.ping(b, count=2), "same VLAN on another switch must not connect"
    sw = {s["name"]: s for s in node.ok("GET", "/v1/switches")}
    assert sw["storage"]["ports"] == 2 and sw["storage"]["agingSeconds"] == 60
    status, err = node.api("DELETE", "/v1/switches/storage")
    assert status == 409 and "port" in err["message"]


def test_mac_spoof_guard(topo):
    node, a, b = two_pods(topo)
    node.ok("PATCH", f"/v1/ports/{a.port['id']}", {"mac": a.mac, "macSpoofCheck": True})
    assert a.ping(b)
    m = marker()
    cap = b.capture(2, m)
    a.send(frame(BROADCAST, "02:00:00:00:66:66", m), count=3)
    a.send(frame(BROADCAST, a.mac, m))
    got = cap()
    assert [f["src"] for f in got] == [a.mac]
    assert a.stats()["drops"].get("spoof") == 3


def test_malformed_frames_are_dropped_and_counted(topo):
    node, a, b = two_pods(topo)
    m = marker()
    cap = b.capture(2, m)
    a.send(frame(BROADCAST, "01:00:5e:00:00:01", m))  # multicast source
    a.send(frame(BROADCAST, "00:00:00:00:00:00", m))  # zero source
    a.send(bytes.fromhex("ffffffffffff") + bytes.fromhex(a.mac.replace(":", "")) + b"\x81\x00")  # truncated tag
    assert cap() == []
    assert a.stats()["drops"].get("malformed") == 3
    assert a.ping(b), "the switch keeps forwarding good frames"


def test_kill9_and_restart_keeps_ports(topo):
    node, a, b = two_pods(topo)
    assert a.ping(b)
    before = {p["id"]: p for p in node.ok("GET", "/v1/ports")}
    node.kill(signal.SIGKILL)
    assert not a.ping(b, count=1, timeout=1), "no switchd, no forwarding"
    t0 = time.monotonic()
    node.start()
    assert a.ping_until(b, 5), f"pods did not reach each other again:\n{node.log()}"
    elapsed = time.monotonic() - t0
    after = {p["id"]: p for p in node.ok("GET", "/v1/ports")}
    assert set(after) == set(before)
    for pid, p in after.items():
        assert p["status"]["attached"], p
        assert p["vlan"] == before[pid]["vlan"]
    print(f"restart to first ping: {elapsed:.2f}s")
    assert elapsed < 5


def test_graceful_restart_and_orphan_drop(topo):
    node, a, b = two_pods(topo)
    node.kill(signal.SIGTERM)
    # While switchd is down, b's pod disappears (its veth goes with the netns).
    from conftest import sh
    sh("ip", "netns", "del", b.ns)
    topo.namespaces.remove(b.ns)
    node.start()
    ports = node.ok("GET", "/v1/ports")
    assert [p["id"] for p in ports] == [a.port["id"]], "the orphaned port is dropped on start"


def test_two_nodes_over_uplinks(topo):
    n1 = topo.node("n1").start()
    n2 = topo.node("n2").start()
    up1, up2 = topo.cable(n1, n2, "up")
    for n, up in ((n1, up1), (n2, up2)):
        n.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": up},
                                    "trunk": [{"minID": 100, "maxID": 200}]})
    a100 = topo.pod(n1, "a1", "10.77.0.1/24")
    a200 = topo.pod(n1, "a2", "10.77.0.2/24")
    b100 = topo.pod(n2, "b1", "10.77.0.3/24")
    b200 = topo.pod(n2, "b2", "10.77.0.4/24")
    a100.attach(vlan=100)
    a200.attach(vlan=200)
    b100.attach(vlan=100)
    b200.attach(vlan=200)
    assert a100.ping(b100), "VLAN 100 across nodes"
    assert a200.ping(b200), "VLAN 200 across nodes"
    assert not a100.ping(b200, count=2), "VLAN 100 must not reach VLAN 200 on the other node"
    assert not a200.ping(b100, count=2)
    # The cable carries 802.1Q: watch it from node 2's side with a raw capture.
    fdb2 = n2.ok("GET", "/v1/switches/default/fdb")
    uplink_id = [p for p in n2.ok("GET", "/v1/ports") if p["nic"]["kind"] == "uplink"][0]["id"]
    assert {(e["vlan"], e["mac"]) for e in fdb2 if e["port"] == uplink_id} >= {(100, a100.mac), (200, a200.mac)}


def test_bad_api_inputs_get_4xx_and_daemon_keeps_serving(topo):
    node, a, b = two_pods(topo)
    pid = a.port["id"]
    cases = [
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": "x1"}, "vlam": 100}, 400, "unknown field"),
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": a.host_if}, "vlan": 5000}, 400, "5000"),
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": a.host_if}, "vlan": 0}, 400, "outside 1..4094"),
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": "nosuchnic0"}}, 422, "does not exist"),
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": a.host_if}}, 409, "already attached"),
        ("POST", "/v1/ports", {"id": pid, "nic": {"kind": "veth", "ifname": "zz"}}, 409, "already exists"),
        ("POST", "/v1/ports", {"nic": {"kind": "floppy", "ifname": "zz"}}, 400, "unknown variant"),
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": "a/b"}}, 400, "interface name"),
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": "zz"}, "trunk": [{"minID": 9, "maxID": 3}]}, 400, "greater"),
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": "zz"}, "switch": "nope"}, 404, "no switch"),
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": "zz"}, "mac": "01:00:5e:00:00:01"}, 400, "unicast"),
        ("PATCH", f"/v1/ports/{pid}", {"vlan": 4095}, 400, "outside"),
        ("PATCH", f"/v1/ports/{pid}", {"linkState": "sideways"}, 400, "unknown variant"),
        ("PATCH", f"/v1/ports/{pid}", {"trunk": []}, 400, "lists no VLAN"),
        ("PATCH", "/v1/ports/nope", {"vlan": 5}, 404, "no port"),
        ("GET", "/v1/ports/nope", None, 404, "no port"),
        ("DELETE", "/v1/ports/nope", None, 404, "no port"),
        ("DELETE", "/v1/switches/default", None, 409, "always exists"),
        ("POST", "/v1/switches", {"name": "../etc"}, 400, "switch name"),
        ("POST", "/v1/switches", {"name": "default"}, 409, "already exists"),
        ("GET", "/v1/switches/nope/fdb", None, 404, "no switch"),
        ("PUT", "/v1/ports", {}, 405, "not allowed"),
        ("GET", "/v2/everything", None, 404, "no such endpoint"),
    ]
    for method, path, body, want, text in cases:
        status, err = node.api(method, path, body)
        assert status == want, f"{method} {path} {body} -> {status} {err}"
        assert isinstance(err, dict) and err.get("code") and text in err.get("message", ""), (method, path, err)
    for raw, text in [("{not json", "request body"), ("", "empty"), ("[1,2]", "request body")]:
        status, err = node.api("POST", "/v1/ports", raw=raw)
        assert status == 400 and text in err["message"], (raw, status, err)
    # A body over the 1 MiB limit: switchd answers 413 and may close before
    # reading it all, so talk to the socket directly.
    import socket as pysocket
    s = pysocket.socket(pysocket.AF_UNIX)
    s.settimeout(10)
    s.connect(node.socket)
    # The declared length is refused before any of the body is read.
    s.sendall(b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 << 20))
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Nothing changed and the daemon still serves and forwards.
    assert len(node.ok("GET", "/v1/ports")) == 2
    assert node.ok("GET", "/healthz")["status"] == "ok"
    assert a.ping(b)


def test_port_delete_and_reuse_leaves_nothing(topo):
    node, a, b = two_pods(topo)
    assert a.ping(b)
    node.ok("DELETE", f"/v1/ports/{b.port['id']}")
    assert not a.ping(b, count=1)
    status, _ = node.api("DELETE", f"/v1/ports/{b.port['id']}")
    assert status == 404
    # The same NIC can be attached again, repeatedly, without leaking.
    for _ in range(20):
        b.attach(vlan=100)
        node.ok("DELETE", f"/v1/ports/{b.port['id']}")
    b.attach(vlan=100)
    assert a.ping_until(b, 5)
    fds = len(os.listdir(f"/proc/{node.proc.pid}/fd")) if node.proc else None
    assert fds is not None and fds < 64, f"switchd holds {fds} fds after churn"


def test_idle_switch_costs_no_cpu(topo):
    node, a, b = two_pods(topo)
    assert a.ping(b, count=1)
    time.sleep(1)
    # `ip netns exec` execs switchd, so the Popen pid is switchd's.
    pid = node.proc.pid
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(5)
    share = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
    print(f"idle switchd with 2 ports: {share * 100:.2f}% of a core")
    assert share < 0.01
