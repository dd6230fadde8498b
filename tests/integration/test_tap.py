"""VM endpoints: `"endpoint": "tap"` through the real plugin, the real
host-local IPAM and a real switchd, which attaches the tap inside the VM
pod's netns. The "VM" here is tapvmm.py, which opens a tap queue as qemu
does and speaks ARP; test_vm_qemu.py boots a real guest on the same path.
"""
import json
import os
from pathlib import Path

from cnihelp import NetCni, QuietPodNs, VmPod
from conftest import nsexec

HERE = Path(__file__).parent
SUBNET = "10.81.0.0/24"


def vmm_arp(pod, guest_mac, guest_ip, target_ip, seconds=3.0, multi_queue=False, as_user=None,
            queues=1, send_queue=0):
    args = ["python3", str(HERE / "tapvmm.py"), "arp", "eth0", guest_mac, guest_ip, target_ip,
            "--seconds", str(seconds), "--queues", str(queues), "--send-queue", str(send_queue)]
    if as_user:  # an unprivileged VMM, handed /dev/net/tun by its launcher
        args += ["--as", f"{as_user[0]}:{as_user[1]}"]
    out = nsexec(pod.ns, *args).stdout.strip().splitlines()
    return json.loads(out[-1])


def tap_details(pod, ifname="eth0"):
    links = json.loads(nsexec(pod.ns, "ip", "-j", "-d", "link", "show", ifname).stdout)
    return links[0]


def test_tap_endpoint_add_check_del(topo):
    """ADD makes a tap named CNI_IFNAME in the pod's netns with the MAC,
    MTU and owner asked for and no address; switchd attaches it there; the
    "VM" behind it resolves a pod on its VLAN and not one on another VLAN;
    CHECK passes; DEL removes tap, port and address."""
    node = topo.node().start()
    web = NetCni(topo, node, subnet=SUBNET, vlan=100)
    other = NetCni(topo, node, subnet=SUBNET, vlan=200)
    vmnet = NetCni(topo, node, subnet=SUBNET, vlan=100, endpoint="tap", mtu=1400,
                   tapOwner={"uid": 4242, "gid": 4343})
    a = QuietPodNs(topo, "a")
    a.add_to(web)
    b = QuietPodNs(topo, "b")
    b.add_to(other)
    vm = QuietPodNs(topo, "vm")
    mac = "02:00:00:aa:bb:01"
    out = vmnet.add(vm, args=f"IgnoreUnknown=1;MAC={mac}")
    # The result: one interface (the tap, in the sandbox), the IPAM address on it.
    assert [i["name"] for i in out["interfaces"]] == ["eth0"], out
    assert out["interfaces"][0]["sandbox"] == vm.netns
    assert out["interfaces"][0]["mac"] == mac
    assert out["ips"] and out["ips"][0]["interface"] == 0, out
    guest_ip = out["ips"][0]["address"].split("/")[0]
    d = tap_details(vm)
    info = d["linkinfo"]["info_data"]
    assert d["linkinfo"]["info_kind"] == "tun" and info["type"] == "tap", d
    assert d["address"] == mac and d["mtu"] == 1400, d
    assert info.get("user") == 4242 and info.get("group") == 4343, info
    assert not info.get("multi_queue"), "one poll thread: a single-queue tap"
    addrs = json.loads(nsexec(vm.ns, "ip", "-j", "addr", "show", "eth0").stdout)[0]["addr_info"]
    assert not addrs, f"the guest owns the address; the tap has none: {addrs}"
    # No tap left behind in the node's namespace.
    node_links = json.loads(nsexec(node.ns, "ip", "-d", "-j", "link", "show").stdout)
    assert any(l.get("linkinfo", {}).get("info_kind") == "veth" for l in node_links), \
        "ip -d lists link kinds (the check below could not fail without it)"
    assert not [l for l in node_links if l.get("linkinfo", {}).get("info_kind") == "tun"]
    ports = node.ok("GET", "/v1/ports")
    port = [p for p in ports if p["nic"]["kind"] == "tap"][0]
    assert port["nic"] == {"kind": "tap", "ifname": "eth0", "netns": vm.netns}, port
    assert port["status"]["attached"], port
    assert port["mac"] == mac
    # The VM resolves the pod on VLAN 100, not the one on VLAN 200; its
    # VMM runs unprivileged, as the tap's owner (another user cannot open it).
    r = vmm_arp(vm, mac, guest_ip, a.ip, as_user=(4343, 4343))
    assert r["reply_mac"] is None and "not permitted" in (r.get("error") or ""), r
    r = vmm_arp(vm, mac, guest_ip, a.ip, as_user=(4242, 4343))
    assert r["reply_mac"] == json.loads(nsexec(a.ns, "ip", "-j", "link", "show", "eth0").stdout)[0]["address"], r
    r = vmm_arp(vm, mac, guest_ip, b.ip, seconds=1.5)
    assert r["reply_mac"] is None, f"VLAN leak: {r}"
    # CHECK with the ADD's result.
    rc, o, e = vmnet.run("CHECK", vm.cid, vm.netns, conf={**vmnet.conf, "prevResult": out})
    assert rc == 0, f"CHECK failed: {o} {e}"
    # DEL removes the tap, the port and the address; a second DEL is fine.
    for _ in range(2):
        rc, o, e = vmnet.run("DEL", vm.cid, vm.netns)
        assert rc == 0, f"DEL failed: {o} {e}"
    assert nsexec(vm.ns, "ip", "link", "show", "eth0", check=False).returncode != 0, "tap left behind"
    assert not [p for p in node.ok("GET", "/v1/ports") if p["nic"]["kind"] == "tap"]
    assert guest_ip not in vmnet.allocations()


def test_tap_link_down_drops_carrier_and_traffic(topo):
    """PATCH linkState down takes the tap down where it lives (no carrier;
    what the VMM writes goes nowhere, as on a pulled cable) and up restores
    forwarding."""
    node = topo.node().start()
    net = NetCni(topo, node, subnet=SUBNET, vlan=100)
    vmnet = NetCni(topo, node, subnet=SUBNET, vlan=100, endpoint="tap")
    a = QuietPodNs(topo, "a")
    a.add_to(net)
    vm = VmPod(topo, "vm")
    vm.add_vm(vmnet, node, "02:00:00:aa:bb:02")
    mac, guest_ip, port_id = vm.mac, vm.ip, vm.port["id"]
    assert vmm_arp(vm, mac, guest_ip, a.ip)["reply_mac"]
    node.ok("PATCH", f"/v1/ports/{port_id}", {"linkState": "down"})
    d = tap_details(vm)
    assert "UP" not in d["flags"] and "LOWER_UP" not in d["flags"], d
    r = vmm_arp(vm, mac, guest_ip, a.ip, seconds=1.5)
    assert r["reply_mac"] is None, r
    node.ok("PATCH", f"/v1/ports/{port_id}", {"linkState": "up"})
    assert "UP" in tap_details(vm)["flags"]
    assert vmm_arp(vm, mac, guest_ip, a.ip)["reply_mac"]


def test_tap_bad_input(topo):
    """tapOwner without a tap, deviceID without vfio, an unknown endpoint
    kind: clear errors (code 7), nothing created."""
    node = topo.node().start()
    cni = NetCni(topo, node, subnet=SUBNET)
    pod = QuietPodNs(topo, "p")
    for extra, words in [({"tapOwner": {"uid": 1}}, "tapOwner is for"),
                         ({"endpoint": "veth", "deviceID": "0000:00:01.0"}, "deviceID is for"),
                         ({"endpoint": "macvtap"}, "unknown variant"),
                         ({"endpoint": "tap", "tapOwner": {"uid": 1, "user": 2}}, "unknown field")]:
        rc, out, err = cni.run("ADD", pod.cid, pod.netns, conf={**cni.conf, **extra})
        assert rc != 0 and out["code"] == 7, (extra, out)
        assert words in json.dumps(out), (words, out)
    assert not node.ok("GET", "/v1/ports")
    assert not cni.allocations()


def test_tap_port_survives_a_switchd_restart_and_gc_removes_it(topo):
    """A tap port is stored with its namespace: after kill -9 and a restart
    switchd attaches it again inside the VM pod's netns. GC of the network
    without the VM's attachment removes port, tap and address."""
    node = topo.node().start()
    net = NetCni(topo, node, subnet=SUBNET, vlan=100)
    vmnet = NetCni(topo, node, subnet=SUBNET, vlan=100, endpoint="tap")
    vmnet.conf["name"] = net.conf["name"]  # one network, two endpoint kinds
    a = QuietPodNs(topo, "a")
    a.add_to(net)
    vm = VmPod(topo, "vm")
    vm.add_vm(vmnet, node, "02:00:00:aa:bb:03")
    mac, guest_ip = vm.mac, vm.ip
    assert vmm_arp(vm, mac, guest_ip, a.ip)["reply_mac"]
    node.kill()
    node.start()
    port = [p for p in node.ok("GET", "/v1/ports") if p["nic"]["kind"] == "tap"][0]
    assert port["status"]["attached"] and port["nic"]["netns"] == vm.netns, port
    assert vmm_arp(vm, mac, guest_ip, a.ip)["reply_mac"], "no forwarding after the restart"
    # GC: only the veth pod is still valid.
    gc = {**net.conf, "cniVersion": "1.1.0",
          "cni.dev/valid-attachments": [{"containerID": a.cid, "ifname": "eth0"}]}
    rc, o, e = net.run("GC", conf=gc)
    assert rc == 0, f"GC failed: {o} {e}"
    assert not [p for p in node.ok("GET", "/v1/ports") if p["nic"]["kind"] == "tap"]
    assert nsexec(vm.ns, "ip", "link", "show", "eth0", check=False).returncode != 0, "GC left the tap"
    assert guest_ip not in net.allocations()
    assert len(node.ok("GET", "/v1/ports")) == 1


def test_frames_on_a_tap_queue_without_a_socket_are_counted(topo):
    """Two poll threads serve at most two queues of a tap. A VMM that opens
    three and sends on the third loses those frames: the XDP program
    counts them as `no-socket` drops, which the API and /metrics show."""
    node = topo.node().start("--poll-cpus", "0-1")
    net = NetCni(topo, node, subnet=SUBNET, vlan=100)
    vmnet = NetCni(topo, node, subnet=SUBNET, vlan=100, endpoint="tap")
    a = QuietPodNs(topo, "a")
    a.add_to(net)
    vm = VmPod(topo, "vm")
    vm.add_vm(vmnet, node, "02:00:00:aa:bb:04")
    r = vmm_arp(vm, vm.mac, vm.ip, a.ip, seconds=2.5, queues=3, send_queue=2)
    assert r["reply_mac"] is None, r
    drops = node.ok("GET", f"/v1/ports/{vm.port['id']}")["stats"]["drops"]
    assert drops.get("no-socket", 0) >= 1, drops
    metrics = nsexec(node.ns, "curl", "-sf", f"http://127.0.0.1:{node.metrics_port}/metrics").stdout
    line = f'podswitch_port_drops_total{{port="{vm.port["id"]}",reason="no-socket"}} '
    assert line in metrics and not metrics.split(line)[1].startswith("0\n"), line
    # Queue 0 has its socket: the same VMM is answered there.
    assert vmm_arp(vm, vm.mac, vm.ip, a.ip, queues=3, send_queue=0)["reply_mac"]
