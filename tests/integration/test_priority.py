"""802.1p per port (`priority`: trust, reset, set), seen where it matters:
on the uplink, captured on the fabric side of a real veth."""
import secrets

from conftest import BROADCAST, frame


def test_pcp_on_the_uplink_trust_reset_set(topo):
    node = topo.node().start()
    fabric = topo.pod(node, "fab")
    # The fabric side's veth end is the switch's uplink, trunking VLAN 100.
    node.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": fabric.host_if},
                                  "trunk": [{"id": 100}]})
    trust = topo.pod(node, "trust")
    reset = topo.pod(node, "reset")
    fixed = topo.pod(node, "set")
    trust.attach(vlan=100)  # default: trust
    reset.attach(vlan=100, priority={"mode": "reset"})
    fixed.attach(vlan=100, priority={"mode": "set", "pcp": 5})
    m = b"PSW-" + secrets.token_hex(6).encode()
    cap = fabric.capture(2.5, m)
    prio3 = (3 << 13) | 0  # a priority tag: PCP 3, VID 0 (the pod's own)
    for p in (trust, reset, fixed):
        p.send(frame(BROADCAST, p.mac, m, vlan=prio3))
        p.send(frame(BROADCAST, p.mac, m))
    got = cap()
    seen = {}
    for f in got:
        assert f["vlan"] == 100, f
        seen.setdefault(f["src"], []).append(f["pcp"])
    assert seen.get(trust.mac) == [3, 0], f"trust keeps the pod's PCP: {got}"
    assert seen.get(reset.mac) == [0, 0], f"reset clears it: {got}"
    assert seen.get(fixed.mac) == [5, 5], f"set forces 5: {got}"

    # Live: a PATCH changes it; bad values are 400 with a JSON error.
    node.ok("PATCH", f"/v1/ports/{trust.port['id']}", {"priority": {"mode": "set", "pcp": 7}})
    cap = fabric.capture(1.5, m)
    trust.send(frame(BROADCAST, trust.mac, m))
    assert [f["pcp"] for f in cap() if f["src"] == trust.mac] == [7]
    for bad in ({"mode": "set"}, {"mode": "set", "pcp": 8}, {"mode": "reset", "pcp": 1}, {"mode": "x"}):
        status, body = node.api("PATCH", f"/v1/ports/{trust.port['id']}", {"priority": bad})
        assert status == 400 and body.get("message"), (bad, status, body)


def test_priority_from_the_cni_config(topo):
    from cnihelp import NetCni, QuietPodNs
    node = topo.node().start()
    cni = NetCni(topo, node, subnet="10.86.0.0/24", vlan=100, priority={"mode": "set", "pcp": 4})
    pod = QuietPodNs(topo, "p")
    pod.add_to(cni)
    (port,) = node.ok("GET", "/v1/ports")
    assert port["priority"] == {"mode": "set", "pcp": 4}, port
    bad = QuietPodNs(topo, "bad")
    rc, out, _ = cni.run("ADD", bad.cid, bad.netns, conf={**cni.conf, "priority": {"mode": "set", "pcp": 9}})
    assert rc != 0 and out["code"] == 7 and "0..7" in out["msg"], out
