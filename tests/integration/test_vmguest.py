"""Self-test of the VM-guest harness (vmguest.py) with kernel parts only, no
podswitch: a netns holding a tap (plain or multi_queue) with 10.99.0.1/24, a
QEMU (TCG) guest on it with 10.99.0.2/24. Checks that the guest boots, runs
commands, pings the netns, pushes TCP bulk data to a receiver there, and sees
its carrier go down and up with QMP set_link.

Needs root, qemu-system-x86_64 and busybox-static (scripts/setup-qemu.sh);
the first run fetches a Debian kernel with apt and caches the guest under
tests/integration/.cache/vmguest.
"""
import math
import os
import secrets
import signal
import sys
import time

import pytest

import vmguest
from conftest import nsexec, sh

HOST_IP, GUEST_IP = "10.99.0.1", "10.99.0.2"
TAP = "vmgtap0"


def report(msg):
    print(f"vmguest: {msg}", file=sys.stderr)


@pytest.fixture(scope="module")
def guest_image():
    return vmguest.image_or_skip("test_vmguest")


def host_tap(ns):
    """(carrier, operstate) of the tap in the netns; carrier None when unreadable."""
    r = nsexec(ns, "sh", "-c", f"cat /sys/class/net/{TAP}/carrier; cat /sys/class/net/{TAP}/operstate",
               check=False)
    lines = r.stdout.split()
    carrier = int(lines[0]) if len(lines) == 2 else None
    return carrier, lines[-1] if lines else None


@pytest.fixture(params=["plain", "multi_queue"])
def tapns(request, guest_image):
    """A fresh netns with tap TAP (plain or multi_queue) holding HOST_IP/24."""
    ns = f"vmg{secrets.token_hex(3)}-net"
    sh("ip", "netns", "add", ns)
    try:
        nsexec(ns, "ip", "link", "set", "lo", "up")
        mq = ["multi_queue"] if request.param == "multi_queue" else []
        nsexec(ns, "ip", "tuntap", "add", "dev", TAP, "mode", "tap", *mq)
        nsexec(ns, "ip", "addr", "add", f"{HOST_IP}/24", "dev", TAP)
        nsexec(ns, "ip", "link", "set", TAP, "up")
        yield ns, request.param
    finally:
        # A safety net behind Guest.close(): whatever still runs in our netns.
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", ns, check=False)


def test_guest_on_tap(tapns, tmp_path):
    ns, kind = tapns
    assert host_tap(ns)[0] == 0, "a tap with no queue attached has no carrier"

    t0 = time.monotonic()
    with vmguest.Guest(ns, TAP, workdir=tmp_path, boot_timeout=120) as g:
        report(f"[{kind}] qemu start to shell prompt: {g.boot_seconds:.1f}s")
        assert g.multi_queue == (kind == "multi_queue")
        info = f"\n{g.console_tail()}"

        # A tap gets its carrier when QEMU attaches a queue.
        assert host_tap(ns) == (1, "up"), f"host tap after attach: {host_tap(ns)}"

        # run(): exit status, output, quoting, stderr, long commands.
        assert g.run("true") == (0, "")
        assert g.run("echo out; echo err >&2; exit 3") == (3, "out\nerr\n")
        assert g.run("""printf '%s|' "a b" 'c"d' $((6*7))""") == (0, 'a b|c"d|42|')
        long_cmd = "echo " + "x" * 2000 + " | wc -c"
        assert g.check(long_cmd).strip() == "2001"
        assert g.check("ls /sys/class/net").split() == ["eth0", "lo"], info

        g.configure(f"{GUEST_IP}/24")
        assert g.ping_until(HOST_IP, seconds=20), f"guest cannot ping {HOST_IP}{g.console_tail()}"
        assert g.ping(HOST_IP, count=3), f"guest ping {HOST_IP} lost packets{g.console_tail()}"
        assert nsexec(ns, "ping", "-c", "2", "-W", "2", GUEST_IP, check=False, timeout=20).returncode == 0

        # Bulk TCP, guest -> netns: a file-backed transfer of an exact size ...
        res = vmguest.measure_tcp_rate(g, ns, HOST_IP, port=5201, nbytes=16 << 20, timeout=60)
        report(f"[{kind}] guest->netns TCP, 16 MiB: {res['bps'] / 1e6:.1f} Mbit/s in {res['seconds']:.2f}s")
        assert res["error"] is None and res["bytes"] == 16 << 20, res
        assert res["sender_rc"] == 0, res
        assert math.isfinite(res["bps"]) and res["bps"] > 0, res
        # ... and a time-bound stream.
        res = vmguest.measure_tcp_rate(g, ns, HOST_IP, port=5202, seconds=3)
        report(f"[{kind}] guest->netns TCP, 3 s stream: {res['bps'] / 1e6:.1f} Mbit/s, {res['bytes']} bytes")
        assert res["bytes"] > 0 and math.isfinite(res["bps"]) and res["bps"] > 0, res

        # QMP set_link: the guest sees its carrier go and come back.
        assert g.qmp("query-status")["status"] == "running"
        assert g.carrier() == 1 and g.operstate() == "up"
        g.set_link(False)
        took = g.wait_link(False, timeout=10)
        assert g.carrier() == 0 and g.operstate() == "down"
        assert not g.ping(HOST_IP, count=1), "ping got through with the link down"
        # QEMU's link state is the NIC's alone: the host tap keeps its carrier.
        assert host_tap(ns) == (1, "up"), f"host tap with the guest link down: {host_tap(ns)}"
        g.qmp("set_link", name="n0", up=True)
        took_up = g.wait_link(True, timeout=10)
        report(f"[{kind}] set_link: carrier down after {took:.2f}s, up after {took_up:.2f}s")
        assert g.carrier() == 1 and g.operstate() == "up"
        assert g.ping_until(HOST_IP, seconds=20), f"no ping after the link came back{g.console_tail()}"

        with pytest.raises(vmguest.QMPError):
            g.qmp("set_link", name="no-such-nic", up=False)
        with pytest.raises(vmguest.GuestTimeout):
            g.run("sleep 30", timeout=2)
        # ^C interrupted the sleep: the console still answers.
        assert g.run("echo alive", timeout=20) == (0, "alive\n")

    assert not g.alive()
    assert "VMGUEST-READY" in g.console_log.read_text(errors="replace")
    # When QEMU lets go of the tap, its carrier drops.
    deadline = time.monotonic() + 5
    while host_tap(ns)[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host_tap(ns) == (0, "down"), f"host tap after qemu exit: {host_tap(ns)}"
    report(f"[{kind}] whole guest test: {time.monotonic() - t0:.1f}s")
