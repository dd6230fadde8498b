"""Live migration of a VM between two ports of one switch, as KubeVirt
does it: the target virt-launcher pod gets its own ADD with the VM's MAC
while the VM still runs on the source; the VM then moves, announces itself
(GARP, as QEMU does after migration) and the source pod is deleted.

The "VM" is a netns with a fixed MAC; real plugin, real host-local, real
switchd. A third pod pings the VM every 5 ms throughout.
"""
import re
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

from cnihelp import NetCni, QuietPodNs, log
from conftest import nsexec

HERE = Path(__file__).parent
SUBNET = "10.82.0.0/24"
VM_MAC = "02:00:00:5e:00:42"
INTERVAL = 0.005


def line_within(proc, seconds):
    """The next line `proc` prints, waiting at most `seconds`."""
    r, _, _ = select.select([proc.stdout], [], [], seconds)
    assert r, f"no answer from {proc.args} within {seconds}s"
    return proc.stdout.readline().strip()


def garp_hex(mac, ip):
    m = bytes.fromhex(mac.replace(":", ""))
    a = socket.inet_aton(ip)
    eth = b"\xff" * 6 + m + b"\x08\x06"
    arp = bytes.fromhex("0001080006040001") + m + a + b"\x00" * 6 + a
    return (eth + arp).hex()


ANNOUNCER = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
frame = bytes.fromhex(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
s.send(frame)
print("sent", flush=True)
"""


def test_vm_moves_between_ports_with_a_short_gap(topo):
    node = topo.node().start()
    net = NetCni(topo, node, subnet=SUBNET, vlan=100, macSpoofCheck=True)
    client = QuietPodNs(topo, "client")
    client.add_to(net)
    src = QuietPodNs(topo, "src")
    src.add_to(net, args=f"IgnoreUnknown=1;MAC={VM_MAC}")
    vm_ip = src.ip
    dst = QuietPodNs(topo, "dst")
    assert client.ping(vm_ip, count=1)

    count = int(4.0 / INTERVAL)
    ping = subprocess.Popen(
        ["ip", "netns", "exec", client.ns, "ping", "-n", "-i", str(INTERVAL), "-c", str(count),
         "-W", "1", vm_ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ports = {}
    try:
        time.sleep(0.8)
        # The target pod is created with the VM's MAC while the VM runs on
        # the source: it must not pull the VM's traffic.
        dst.add_to(net, args=f"IgnoreUnknown=1;MAC={VM_MAC}")
        for p in node.ok("GET", "/v1/ports"):
            ports[p["owner"]["containerID"]] = p
        src_id, dst_id = ports[src.cid]["id"], ports[dst.cid]["id"]
        assert node.ok("GET", f"/v1/ports/{dst_id}")["status"].get("handover") == "standby"
        assert node.ok("GET", f"/v1/ports/{src_id}")["status"].get("handover") == "active"
        time.sleep(1.0)
        # The VM moves: paused on the source, resumed on the target, which
        # announces it at once (as QEMU does). The target's side is ready
        # beforehand, so the gap measured is the switch's, not Python's.
        nsexec(dst.ns, "ip", "addr", "flush", "dev", "eth0")
        nsexec(dst.ns, "ip", "addr", "add", f"{vm_ip}/24", "dev", "eth0")
        announcer = subprocess.Popen(
            ["ip", "netns", "exec", dst.ns, "python3", "-c", ANNOUNCER, garp_hex(VM_MAC, vm_ip)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert line_within(announcer, 10) == "ready"
            t_move = time.monotonic()
            nsexec(src.ns, "ip", "link", "set", "eth0", "down")
            announcer.stdin.write("go\n")
            announcer.stdin.flush()
            assert line_within(announcer, 10) == "sent"
            move_ms = (time.monotonic() - t_move) * 1000
        finally:
            announcer.kill()
            announcer.wait()
        time.sleep(0.3)
        after_move = {i: node.ok("GET", f"/v1/ports/{i}")["status"].get("handover") for i in (src_id, dst_id)}
        # The source pod goes away.
        net.delete(src)
        out, _ = ping.communicate(timeout=30)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out[-500:]
    sent, got = int(m.group(1)), int(m.group(2))
    lost = sent - got
    gap_ms = lost * INTERVAL * 1000
    handovers = node.ok("GET", f"/v1/ports/{dst_id}")["stats"].get("macHandovers")
    metrics = nsexec(node.ns, "curl", "-sf", f"http://127.0.0.1:{node.metrics_port}/metrics").stdout
    log(f"migration: {sent} pings every {INTERVAL * 1000:.0f} ms, {lost} lost = {gap_ms:.0f} ms gap; "
        f"the emulated move (source down, target's GARP) took {move_ms:.1f} ms; "
        f"handover states after the move {after_move}; macHandovers on the target {handovers}")
    assert after_move == {src_id: "standby", dst_id: "active"}, after_move
    assert handovers == 1, handovers
    assert gap_ms < 100, f"{lost} of {sent} pings lost ({gap_ms:.0f} ms)"
    # Once the source port is gone, the MAC is the target's alone.
    assert "handover" not in node.ok("GET", f"/v1/ports/{dst_id}")["status"]
    assert client.ping(vm_ip, count=2)
    assert f'podswitch_port_mac_handovers_total{{port="{dst_id}"}} 1' in metrics
