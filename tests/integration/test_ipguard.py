"""IP, ARP and ND spoof guard (`ipSpoofCheck` with `allowedIPs`), with real
traffic between real namespaces: through the real plugin (allowedIPs from
host-local's answer) and through the API with hand-made frames for each
check and each exception (DHCP from 0.0.0.0, DAD from ::, the MAC's
link-local address)."""
import ipaddress
import json
import socket
import struct

from cnihelp import NetCni, QuietPodNs
from conftest import BROADCAST, mac_bytes, nsexec

SUBNET = "10.84.0.0/24"


def test_cni_fills_allowed_ips_and_a_spoofed_source_is_dropped(topo):
    node = topo.node().start()
    guarded = NetCni(topo, node, subnet=SUBNET, ipSpoofCheck=True)
    a = QuietPodNs(topo, "a")
    a.add_to(guarded)
    b = QuietPodNs(topo, "b")
    b.add_to(guarded)
    port = [p for p in node.ok("GET", "/v1/ports") if p["owner"]["containerID"] == a.cid][0]
    assert port["ipSpoofCheck"] is True and port["allowedIPs"] == [a.ip], port
    assert nsexec(a.ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", b.ip, check=False).returncode == 0
    # The pod takes an address it was not given. It knows b's MAC from the
    # ping above, so its ICMP goes out at once and meets the IPv4 check.
    nsexec(a.ns, "ip", "addr", "add", "10.84.0.200/24", "dev", "eth0")
    r = nsexec(a.ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", "10.84.0.200", b.ip, check=False)
    assert r.returncode != 0, "a spoofed source got through"
    drops = node.ok("GET", f"/v1/ports/{port['id']}")["stats"]["drops"]
    assert drops.get("ip-spoof", 0) >= 3, drops
    # Forgetting b, it asks with ARP from the new address: dropped too.
    nsexec(a.ns, "ip", "neigh", "flush", "dev", "eth0")
    nsexec(a.ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "10.84.0.200", b.ip, check=False)
    drops = node.ok("GET", f"/v1/ports/{port['id']}")["stats"]["drops"]
    assert drops.get("arp-spoof", 0) > 0, drops
    # A PATCH allows it, live.
    node.ok("PATCH", f"/v1/ports/{port['id']}", {"allowedIPs": [a.ip, "10.84.0.200"]})
    assert nsexec(a.ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "10.84.0.200", b.ip,
                  check=False).returncode == 0
    metrics = nsexec(node.ns, "curl", "-sf", f"http://127.0.0.1:{node.metrics_port}/metrics").stdout
    assert f'podswitch_port_drops_total{{port="{port["id"]}",reason="ip-spoof"}}' in metrics


def eth(dst, src, ethertype, payload):
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload


def ipv4_udp(src, dst, sport, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + udp


def ipv6_icmp(src, dst, icmp):
    return struct.pack("!IHBB", 0x60000000, len(icmp), 58, 255) + \
        ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + icmp


def nd(icmp_type, target):
    return struct.pack("!BBHI", icmp_type, 0, 0, 0x60000000 if icmp_type == 136 else 0) + \
        ipaddress.IPv6Address(target).packed


def eui64(mac):
    m = bytearray(mac_bytes(mac))
    return str(ipaddress.IPv6Address(bytes([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe,
                                            m[3], m[4], m[5]])))


def test_each_check_counts_its_reason_and_the_exceptions_pass(topo):
    node = topo.node().start()
    a = topo.pod(node, "a", "10.85.0.5/24")
    b = topo.pod(node, "b", "10.85.0.6/24")
    a.attach(mac=a.mac, ipSpoofCheck=True, allowedIPs=["10.85.0.5", "fd00::5"])
    b.attach()
    marker = b"psw-ipguard-" + bytes(topo.prefix, "ascii")
    ll = eui64(a.mac)
    allnodes = "33:33:00:00:00:01"
    cases = [
        # (what, frame, passes, reason when dropped)
        ("IPv4 from an allowed address", eth(BROADCAST, a.mac, 0x0800,
                                             ipv4_udp("10.85.0.5", "10.85.0.255", 9, 9, marker)), True, None),
        ("IPv4 from another address", eth(BROADCAST, a.mac, 0x0800,
                                          ipv4_udp("10.85.0.99", "10.85.0.255", 9, 9, marker)), False, "ip-spoof"),
        ("DHCP discover from 0.0.0.0", eth(BROADCAST, a.mac, 0x0800,
                                           ipv4_udp("0.0.0.0", "255.255.255.255", 68, 67, marker)), True, None),
        ("UDP from 0.0.0.0 that is not DHCP", eth(BROADCAST, a.mac, 0x0800,
                                                  ipv4_udp("0.0.0.0", "255.255.255.255", 68, 53, marker)),
         False, "ip-spoof"),
        ("ARP with another sender address",
         eth(BROADCAST, a.mac, 0x0806, bytes.fromhex("0001080006040001") + mac_bytes(a.mac)
             + socket.inet_aton("10.85.0.99") + bytes(6) + socket.inet_aton("10.85.0.6") + marker),
         False, "arp-spoof"),
        ("ARP probe from 0.0.0.0",
         eth(BROADCAST, a.mac, 0x0806, bytes.fromhex("0001080006040001") + mac_bytes(a.mac)
             + bytes(4) + bytes(6) + socket.inet_aton("10.85.0.5") + marker),
         True, None),
        ("IPv6 from another address", eth(allnodes, a.mac, 0x86dd,
                                          ipv6_icmp("fd00::99", "ff02::1", bytes([128, 0, 0, 0, 0, 0, 0, 0])) + marker),
         False, "ipv6-spoof"),
        ("IPv6 from the MAC's link-local address", eth(allnodes, a.mac, 0x86dd,
                                                       ipv6_icmp(ll, "ff02::1", bytes([128, 0, 0, 0, 0, 0, 0, 0]))
                                                       + marker), True, None),
        ("DAD probe for the link-local address", eth(allnodes, a.mac, 0x86dd,
                                                     ipv6_icmp("::", "ff02::1", nd(135, ll)) + marker), True, None),
        ("DAD probe for another address", eth(allnodes, a.mac, 0x86dd,
                                              ipv6_icmp("::", "ff02::1", nd(135, "fd00::99")) + marker),
         False, "nd-spoof"),
        ("NA for an allowed address", eth(allnodes, a.mac, 0x86dd,
                                          ipv6_icmp(ll, "ff02::1", nd(136, "fd00::5")) + marker), True, None),
        ("NA for another address", eth(allnodes, a.mac, 0x86dd,
                                       ipv6_icmp(ll, "ff02::1", nd(136, "fd00::99")) + marker), False, "nd-spoof"),
    ]
    for what, f, passes, reason in cases:
        before = a.stats()["drops"]
        done = b.capture(1.0, marker)
        a.send(f)
        got = [x for x in done() if x["hex"] == f.hex()]
        after = a.stats()["drops"]
        if passes:
            assert got, f"{what}: should pass, did not reach the peer ({after})"
            assert after == before, f"{what}: counted a drop {before} -> {after}"
        else:
            assert not got, f"{what}: should be dropped, reached the peer"
            assert after.get(reason, 0) == before.get(reason, 0) + 1, f"{what}: {before} -> {after}"
    # Off, live: everything passes.
    a.port = node.ok("PATCH", f"/v1/ports/{a.port['id']}", {"ipSpoofCheck": False})
    for what, f, passes, _ in cases:
        if passes:
            continue
        done = b.capture(1.0, marker)
        a.send(f)
        assert [x for x in done() if x["hex"] == f.hex()], f"guard off: {what} should pass"
