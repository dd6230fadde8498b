"""Port mirroring (`portMirroring`: none, source, destination), with real
traffic between real pods: a destination pod, sniffing in its own netns,
sees what each source port sends and receives, with the VLAN tag as seen
on the source side (an uplink's frames tagged, an access port's not); a
pod that is no destination sees none of it; a PATCH turns it off live."""
import secrets

from conftest import BROADCAST, frame, nsexec


def marked(frames, marker):
    return [f for f in frames if marker.hex() in f["hex"]]


def test_destinations_see_sources_both_ways_with_their_tags(topo):
    node = topo.node().start()
    fab = topo.pod(node, "fab")
    uplink = node.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": fab.host_if},
                                           "trunk": [{"id": 100}]})
    src = topo.pod(node, "src", ip="10.92.0.1/24")
    peer = topo.pod(node, "peer", ip="10.92.0.2/24")
    oth = topo.pod(node, "oth", ip="10.92.0.4/24")
    dst = topo.pod(node, "dst")
    dst2 = topo.pod(node, "dst2")
    src.attach(vlan=100, portMirroring="source")
    peer.attach(vlan=100)
    oth.attach(vlan=100)
    # Destinations on other VLANs: copies cross VLANs, forwarding does not.
    dst.attach(portMirroring="destination")
    dst2.attach(vlan=200, portMirroring="destination")
    assert src.port["portMirroring"] == "source" and "portMirroring" not in peer.port
    for x, y in ((src, peer), (peer, src)):
        nsexec(x.ns, "ip", "neigh", "replace", y.addr, "lladdr", y.mac, "dev", "eth0", "nud", "permanent")
    assert src.ping_until(peer)

    # 1. An access source: its pings to peer (in) and the replies (out).
    m = secrets.token_bytes(8)
    caps = [p.capture(3, m) for p in (dst, dst2, oth)]
    assert nsexec(src.ns, "ping", "-c", "2", "-i", "0.3", "-W", "1", "-p", m.hex(), peer.addr,
                  check=False).returncode == 0
    got = [c() for c in caps]
    for d, frames in zip((dst, dst2), got):
        icmp = [(f["src"], f["dst"], f["vlan"], bytes.fromhex(f["hex"])[34]) for f in frames]
        assert sorted(icmp) == sorted([(src.mac, peer.mac, None, 8)] * 2 + [(peer.mac, src.mac, None, 0)] * 2), \
            f"{d.host_if} sees both ways, untagged as on the access port: {icmp}"
    assert got[2] == [], f"a pod that is no destination sees none of it: {got[2]}"

    # 2. Several sources: the uplink too (switchctl). What crosses both is
    # copied as each one sees it: tagged on the uplink, untagged on src.
    r = node.ctl("port", "set", uplink["id"], "--mirroring", "source")
    assert "source" in r.stdout, r.stdout
    m = secrets.token_bytes(8)
    cap = dst.capture(2.5, m)
    fab.send(frame(BROADCAST, fab.mac, m, vlan=100))  # in on the uplink, out to src
    peer.send(frame(BROADCAST, peer.mac, m))  # out to the uplink (tagged) and to src
    # (source MAC, VLAN tag; 0: untagged)
    seen = sorted((f["src"], f["vlan"] or f["inline_vlan"] or 0) for f in marked(cap(), m))
    assert seen == sorted([(fab.mac, 100), (fab.mac, 0), (peer.mac, 100), (peer.mac, 0)]), seen
    ports = node.ctl("ports").stdout
    assert "MIRROR" in ports.splitlines()[0] and "destination" in ports, ports

    # Counted on the destinations, in the API and /metrics.
    st = node.ok("GET", f"/v1/ports/{dst.port['id']}")["stats"]
    assert st["mirrorCopies"] >= 8 and st["drops"].get("mirror", 0) == 0, st
    metrics = nsexec(node.ns, "curl", "-sf", f"http://127.0.0.1:{node.metrics_port}/metrics").stdout
    line = f'podswitch_port_mirror_copies_total{{port="{dst.port["id"]}"}} {st["mirrorCopies"]}'
    assert line in metrics
    assert f'podswitch_port_drops_total{{port="{dst.port["id"]}",reason="mirror"}} 0' in metrics
    show = node.ctl("port", "show", dst.port["id"]).stdout
    assert "mirroring: destination" in show, show

    # 3. Live off: a PATCH to none stops the copies; forwarding goes on.
    node.ok("PATCH", f"/v1/ports/{src.port['id']}", {"portMirroring": "none"})
    node.ok("PATCH", f"/v1/ports/{uplink['id']}", {"portMirroring": "none"})
    m = secrets.token_bytes(8)
    cap = dst.capture(2, m)
    assert nsexec(src.ns, "ping", "-c", "2", "-i", "0.3", "-W", "1", "-p", m.hex(), peer.addr,
                  check=False).returncode == 0
    fab.send(frame(BROADCAST, fab.mac, m, vlan=100))
    assert marked(cap(), m) == []
    assert "portMirroring" not in node.ok("GET", f"/v1/ports/{src.port['id']}")

    # Bad values are a 400 with a JSON error.
    status, body = node.api("PATCH", f"/v1/ports/{src.port['id']}", {"portMirroring": "both"})
    assert status == 400 and body["code"] == "invalid" and "both" in body["message"], body


def test_mirroring_from_the_cni_config(topo):
    from cnihelp import NetCni, QuietPodNs
    node = topo.node().start()
    cni = NetCni(topo, node, subnet="10.93.0.0/24", portMirroring="destination")
    pod = QuietPodNs(topo, "p")
    pod.add_to(cni)
    (port,) = node.ok("GET", "/v1/ports")
    assert port["portMirroring"] == "destination", port
    bad = QuietPodNs(topo, "bad")
    rc, out, _ = cni.run("ADD", bad.cid, bad.netns, conf={**cni.conf, "portMirroring": "sideways"})
    assert rc != 0 and out["code"] == 7, out
