"""A real VM on a podswitch tap port: QEMU (TCG) boots a guest built on
the fly (vmguest.py: a Debian kernel and a busybox initramfs, cached under
tests/integration/.cache), whose virtio-net uses the tap that the real
plugin made with `"endpoint": "tap"` and switchd attached inside the VM
pod's netns. Real host-local IPAM, real switchd, real `switchctl vm
link-follow` carrying the port's link state to the guest over QMP.
"""
import json
import subprocess
import sys
import time

import pytest

import vmguest
from cnihelp import NetCni, QuietPodNs, VmPod
from conftest import SWITCHD, nsexec

SUBNET = "10.83.0.0/24"
SWITCHCTL = SWITCHD.parent / "switchctl"
LIMIT = 20_000_000  # bit/s: well below what a TCG guest sends (~100-300 Mbit/s)


def say(msg):
    print(f"vm-qemu: {msg}", file=sys.stderr)


@pytest.fixture(scope="module")
def guest_image():
    return vmguest.image_or_skip("test_vm_qemu")


def test_qemu_guest_on_a_tap_port(topo, guest_image):
    node = topo.node().start()
    web = NetCni(topo, node, subnet=SUBNET, vlan=100)
    other = NetCni(topo, node, subnet=SUBNET, vlan=200)
    vmnet = NetCni(topo, node, subnet=SUBNET, vlan=100, endpoint="tap",
                   qos={"egressRate": LIMIT, "egressBurst": 400_000})
    a = QuietPodNs(topo, "a")
    a.add_to(web)
    b = QuietPodNs(topo, "b")
    b.add_to(other)
    vm = VmPod(topo, "vm")
    vm.add_vm(vmnet, node, vmguest.random_mac())
    mac, guest_ip, port = vm.mac, vm.ip, vm.port
    assert port["status"]["attached"], port

    follower = None
    with vmguest.Guest(vm.ns, "eth0", mac=mac, workdir=node.dir / "vm") as g:
        say(f"guest booted in {g.boot_seconds:.1f}s")
        g.configure(f"{guest_ip}/24")
        # Its VLAN: reachable. Another VLAN, same subnet: not.
        assert g.ping_until(a.ip, seconds=20), f"guest cannot ping {a.ip} on its VLAN\n{g.console_tail()}"
        assert not g.ping(b.ip, count=3), "VLAN leak: the guest reached a pod on VLAN 200"
        st = node.ok("GET", f"/v1/ports/{port['id']}")["stats"]
        assert st["rxPackets"] > 0 and st["txPackets"] > 0, st

        # Link state reaches the guest through switchctl vm link-follow.
        follower = subprocess.Popen(
            [str(SWITCHCTL), "vm", "link-follow", "--netns", vm.netns, "--ifname", "eth0",
             "--qmp", g.qmp_path, "--netdev", g.NETDEV],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert g.wait_link(True, timeout=10) is not None
            node.ok("PATCH", f"/v1/ports/{port['id']}", {"linkState": "down"})
            t = g.wait_link(False, timeout=10)
            say(f"guest saw link down {t:.2f}s after the PATCH")
            assert not g.ping(a.ip, count=2)
            node.ok("PATCH", f"/v1/ports/{port['id']}", {"linkState": "up"})
            t = g.wait_link(True, timeout=10)
            say(f"guest saw link up {t:.2f}s after the PATCH")
            assert g.ping_until(a.ip, seconds=10)
        finally:
            follower.kill()
            fout, _ = follower.communicate(timeout=10)
        assert "guest link of n0 set down" in fout, fout

        # QoS: the port's egress limit (what the VM sends) holds.
        res = vmguest.measure_tcp_rate(g, a.ns, a.ip, port=5201, seconds=4)
        say(f"guest -> pod TCP through a {LIMIT / 1e6:.0f} Mbit/s egress limit: "
            f"{res['bps'] / 1e6:.1f} Mbit/s ({res['bytes']} bytes in {res['seconds']:.2f}s)")
        assert res["bytes"] > 0, res
        assert res["bps"] <= LIMIT * 1.10, res
        assert res["bps"] >= LIMIT * 0.5, res
        drops = node.ok("GET", f"/v1/ports/{port['id']}")["stats"]["drops"]
        assert drops.get("qos", 0) > 0, drops


def test_multi_queue_tap_follows_the_vmm(topo, guest_image):
    """With two poll threads the tap is multi_queue; its queues appear when
    QEMU opens them (queues=2), and switchd then serves each with its own
    socket (one per poll thread)."""
    node = topo.node().start("--poll-cpus", "0-1")
    web = NetCni(topo, node, subnet=SUBNET, vlan=100)
    vmnet = NetCni(topo, node, subnet=SUBNET, vlan=100, endpoint="tap")
    a = QuietPodNs(topo, "a")
    a.add_to(web)
    vm = VmPod(topo, "vm")
    vm.add_vm(vmnet, node, vmguest.random_mac())
    mac, guest_ip, port = vm.mac, vm.ip, vm.port
    assert vmguest.tap_flags(vm.ns, "eth0") & 0x0100, "two poll threads: a multi_queue tap"
    assert port["status"]["queues"] == 1, "before the VMM: one queue"
    # Two vCPUs: the guest's virtio-net then enables both queue pairs (with
    # one, QEMU detaches the second queue again).
    with vmguest.Guest(vm.ns, "eth0", mac=mac, workdir=node.dir / "vm", extra_args=("-smp", "2")) as g:
        assert g.multi_queue
        deadline = time.monotonic() + 10
        while node.ok("GET", f"/v1/ports/{port['id']}")["status"]["queues"] < 2:
            assert time.monotonic() < deadline, f"switchd did not follow the tap's queues\n{node.log()[-1500:]}"
            time.sleep(0.2)
        g.configure(f"{guest_ip}/24")
        assert g.ping_until(a.ip, seconds=20), g.console_tail()
    assert "the tap now has 2 queues" in node.log()
