"""Live capture of a port (`switchctl port capture`, `GET
/v1/ports/{id}/capture`): the port's frames as a pcap stream, read back by
the real tcpdump, with real pings between real pods. The stream ends at
its count, and when its reader goes away, leaving no capture behind."""
import shutil
import signal
import subprocess
import time

import pytest

from conftest import SWITCHCTL, UnixHTTPConnection, nsexec, sh

TCPDUMP = shutil.which("tcpdump")


def two_pods(topo, net="10.91.0"):
    """A node with pods a and b that know each other's MAC for good, so
    no ARP interleaves with the pings a test captures."""
    node = topo.node().start()
    a = topo.pod(node, "a", ip=f"{net}.1/24")
    b = topo.pod(node, "b", ip=f"{net}.2/24")
    a.attach()
    b.attach()
    for x, y in ((a, b), (b, a)):
        nsexec(x.ns, "ip", "neigh", "replace", y.addr, "lladdr", y.mac, "dev", "eth0", "nud", "permanent")
    assert a.ping_until(b), "no forwarding before the capture"
    return node, a, b


def running(node, port):
    return node.ok("GET", f"/v1/ports/{port['id']}")["status"].get("captures", [])


def wait_running(node, port, n, seconds=5):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if len(running(node, port)) == n:
            return
        time.sleep(0.05)
    raise AssertionError(f"expected {n} running capture(s): {running(node, port)}")


def tcpdump_lines(pcap):
    r = sh(TCPDUMP, "-nn", "-e", "-r", str(pcap))
    return [l for l in r.stdout.splitlines() if l.strip()]


def ctl_capture(node, port, *args, **kw):
    p = subprocess.Popen([str(SWITCHCTL), "--socket", node.socket, "port", "capture", port["id"], *args],
                         stderr=subprocess.PIPE, **kw)
    node.topo.procs.append(p)
    return p


@pytest.fixture
def tcpdump():
    if TCPDUMP is None:
        pytest.skip("tcpdump is not installed (scripts/setup.sh installs it)")


def test_capture_of_a_ping_read_back_by_tcpdump(topo, tcpdump):
    node, a, b = two_pods(topo)
    pcap = node.dir / "a.pcap"
    # Both ways, stop after 4 frames: two pings' requests and replies.
    p = ctl_capture(node, a.port, "-c", "4", "-w", str(pcap))
    wait_running(node, a.port, 1)
    assert a.ping(b, count=3, interval=0.3), "forwarding suffers from the capture"
    _, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert b"4 frames captured, 0 dropped" in err, err
    lines = tcpdump_lines(pcap)
    assert len(lines) == 4, f"-c 4 is 4 frames: {lines}"
    req = [l for l in lines if f"{a.addr} > {b.addr}: ICMP echo request" in l]
    rep = [l for l in lines if f"{b.addr} > {a.addr}: ICMP echo reply" in l]
    assert len(req) == 2 and len(rep) == 2, lines
    # The Ethernet addresses are the pods' (tcpdump -e prints them).
    assert all(l.split()[1] == a.mac and l.split()[3].rstrip(",") == b.mac for l in req), req
    assert all(l.split()[1] == b.mac for l in rep), rep
    # Ended: nothing left registered; the figures stay in the counters.
    wait_running(node, a.port, 0)
    stats = node.ok("GET", f"/v1/ports/{a.port['id']}")["stats"]
    assert stats["captureFrames"] >= 4 and stats["captureDropped"] == 0, stats

    # One direction only: in = what the pod sends (requests), out = what
    # it is sent (replies).
    for direction, want, other in (("in", "request", "reply"), ("out", "reply", "request")):
        pcap = node.dir / f"a-{direction}.pcap"
        p = ctl_capture(node, a.port, "--direction", direction, "-c", "2", "-w", str(pcap))
        wait_running(node, a.port, 1)
        assert a.ping(b, count=3, interval=0.3)
        _, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        lines = tcpdump_lines(pcap)
        assert len(lines) == 2 and all(f"ICMP echo {want}" in l for l in lines), (direction, lines)
        assert not any(f"ICMP echo {other}" in l for l in lines)
    wait_running(node, a.port, 0)
    metrics = nsexec(node.ns, "curl", "-sf", f"http://127.0.0.1:{node.metrics_port}/metrics").stdout
    assert f'podswitch_port_capture_frames_total{{port="{a.port["id"]}"}} 8' in metrics
    assert f'podswitch_port_captures_running{{port="{a.port["id"]}"}} 0' in metrics


def test_capture_to_a_pipe_and_the_reader_going_away(topo, tcpdump):
    node, a, b = two_pods(topo, "10.91.1")
    # switchctl ... -w - | tcpdump -r -: the reader sees frames as they come.
    ctl = ctl_capture(node, a.port, "-w", "-", stdout=subprocess.PIPE)
    dump = subprocess.Popen([TCPDUMP, "-nn", "-l", "-r", "-"], stdin=ctl.stdout, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    topo.procs.append(dump)
    ctl.stdout.close()  # tcpdump holds the only read end
    wait_running(node, a.port, 1)
    assert a.ping(b, count=2, interval=0.3)
    seen = [dump.stdout.readline() for _ in range(4)]
    assert sum(f"{a.addr} > {b.addr}: ICMP echo request" in l for l in seen) == 2, seen
    assert sum(f"{b.addr} > {a.addr}: ICMP echo reply" in l for l in seen) == 2, seen
    # The reader goes away, with nothing in flight: switchctl notices,
    # ends, and switchd unregisters the capture.
    dump.kill()
    dump.wait(timeout=5)
    assert ctl.wait(timeout=5) == 0, ctl.stderr.read()
    wait_running(node, a.port, 0)

    # The API client itself killed mid-capture: switchd sees the
    # connection end and unregisters the capture, with no traffic needed.
    ctl = ctl_capture(node, a.port, "-w", str(node.dir / "killed.pcap"))
    wait_running(node, a.port, 1)
    ctl.send_signal(signal.SIGKILL)
    ctl.wait(timeout=5)
    wait_running(node, a.port, 0)
    # Forwarding is as before.
    assert a.ping(b, count=3, interval=0.2)
    drops = node.ok("GET", f"/v1/ports/{a.port['id']}")["stats"]["drops"]
    assert not drops, drops


def test_capture_bad_input_and_concurrent_captures(topo):
    node = topo.node().start()
    a = topo.pod(node, "a", ip="10.91.2.1/24")
    a.attach()
    pid = a.port["id"]
    for query, status, words in (
        ("direction=sideways", 400, "in, out or both"),
        ("count=0", 400, "at least 1"),
        ("snaplen=3", 400, "outside"),
        ("bogus=1", 400, "unknown query parameter"),
    ):
        got, body = node.api("GET", f"/v1/ports/{pid}/capture?{query}")
        assert got == status and body["code"] == "invalid" and words in body["message"], (query, got, body)
    got, body = node.api("GET", "/v1/ports/nosuchport/capture")
    assert got == 404 and body["code"] == "not-found", body
    got, body = node.api("POST", f"/v1/ports/{pid}/capture")
    assert got == 405, body
    r = node.ctl("port", "capture", "nosuchport", "-w", str(node.dir / "x.pcap"), check=False)
    assert r.returncode == 1 and "404" in r.stderr, r.stderr

    # Four captures of one port run at once; a fifth is refused (409).
    conns = []
    try:
        for _ in range(4):
            c = UnixHTTPConnection(node.socket)
            c.request("GET", f"/v1/ports/{pid}/capture?count=10")
            resp = c.getresponse()
            assert resp.status == 200 and resp.getheader("content-type") == "application/vnd.tcpdump.pcap"
            assert resp.read(24)[:4] == bytes.fromhex("4d3cb2a1"), "pcap, nanosecond magic"
            conns.append(c)
        assert len(running(node, a.port)) == 4
        got, body = node.api("GET", f"/v1/ports/{pid}/capture")
        assert got == 409 and body["code"] == "conflict" and "4 live captures" in body["message"], body
    finally:
        for c in conns:
            c.close()
    wait_running(node, a.port, 0)
    # Deleting the port ends a capture of it cleanly (the stream ends).
    p = ctl_capture(node, a.port, "-w", str(node.dir / "gone.pcap"))
    wait_running(node, a.port, 1)
    node.ok("DELETE", f"/v1/ports/{pid}")
    _, err = p.communicate(timeout=10)
    assert p.returncode == 0 and b"frames captured" in err, err
