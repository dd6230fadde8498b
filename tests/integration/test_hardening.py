"""Hostile clients against switchd's listeners: what an unprivileged
process (or, with the chart, any pod that can reach the node's metrics
port) can do to the control socket that the CNI needs.

Real switchd, the real podswitch CNI plugin with the reference host-local
IPAM; the attacker is a separate process running as `nobody`.
"""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cnihelp import NetCni, QuietPodNs
from conftest import nsexec

# The attacker: N connections to the metrics port, each sending one header
# line every 2 s and never finishing its request (a slowloris).
SLOWLORIS = r"""
import socket, sys, time
port, n, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
conns = []
for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        continue
    conns.append(s)
end = time.monotonic() + secs
started = set()  # connections whose request line went out (connects finish late)
k = 0
while time.monotonic() < end:
    for s in conns:
        try:
            if s in started:
                s.send(b"X-Slow: %d\r\n" % k)
            else:
                s.send(b"GET /metrics HTTP/1.1\r\n")
                started.add(s)
        except OSError:
            pass
    k += 1
    time.sleep(2)
print(len(conns), "connections held,", len(started), "started a request", flush=True)
"""


def metrics_text(node):
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    return nsexec(node.ns, sys.executable, "-c",
                  f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())").stdout


def sample(text, name, listener):
    m = re.search(rf'^{name}{{listener="{listener}"}} (\d+)', text, re.M)
    assert m, f"{name} for {listener} missing"
    return int(m.group(1))


def test_metrics_flood_does_not_cut_off_the_cni(topo):
    """1300 slow connections to the metrics port of a switchd allowed 1200
    open files: the control socket still answers, and a CNI ADD succeeds."""
    node = topo.node().start()
    # switchd raised its soft limit at start; now cap it as a node might.
    subprocess.run(["prlimit", "--pid", str(node.proc.pid), "--nofile=1200:1200"], check=True)
    cni = NetCni(topo, node, subnet="10.71.0.0/24")
    attacker = subprocess.Popen(
        ["ip", "netns", "exec", node.ns, "prlimit", "--nofile=4096:4096",
         "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-c", SLOWLORIS, str(node.metrics_port), "1300", "14"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)  # the flood is in place and trickling headers
        t0 = time.monotonic()
        status, body = node.api("GET", "/healthz")
        healthz_s = time.monotonic() - t0
        assert status == 200, body
        pod = QuietPodNs(topo, "victim")
        t0 = time.monotonic()
        rc, out, err = cni.run("ADD", pod.cid, pod.netns)
        add_s = time.monotonic() - t0
        assert rc == 0, f"CNI ADD failed under the metrics flood: {out} {err}"
        print(f"under a 1300-connection metrics flood: /healthz {healthz_s * 1000:.0f} ms, "
              f"CNI ADD {add_s * 1000:.0f} ms", file=sys.stderr)
        assert healthz_s < 1.0 and add_s < 5.0, (healthz_s, add_s)
        assert cni.run("DEL", pod.cid, pod.netns)[0] == 0
        out, err = attacker.communicate(timeout=60)
        assert "connections held" in out, f"the attack did not run: {out} {err}"
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    # Once the flood stops the metrics listener serves again, and says
    # what it went through: connections timed out, the cap was hit, and
    # it never held more than its cap.
    deadline = time.monotonic() + 20
    while True:
        try:
            text = metrics_text(node)
            break
        except RuntimeError:  # what conftest.sh raises for a failed command
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert sample(text, "podswitch_listener_timeouts_total", "metrics") > 0
    assert sample(text, "podswitch_listener_full_total", "metrics") > 0
    assert sample(text, "podswitch_listener_open_connections", "metrics") <= \
        sample(text, "podswitch_listener_max_connections", "metrics")
    accept_lines = [ln for ln in node.log().splitlines() if "accept on" in ln]
    assert len(accept_lines) <= 5, f"accept errors flood the log: {accept_lines[:5]}"


def test_slow_body_gets_408_and_frees_the_connection(topo):
    """A request whose body never finishes is answered 408 after the body
    timeout, and the connection does not stay open."""
    node = topo.node().start()
    script = (
        "import socket, sys, time\n"
        f"s = socket.socket(socket.AF_UNIX); s.connect({node.socket!r}); s.settimeout(30)\n"
        "s.sendall(b'POST /v1/ports HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
        "Content-Length: 100\\r\\n\\r\\n{\"nic\":')\n"
        "t0 = time.monotonic(); data = s.recv(4096)\n"
        "print(round(time.monotonic() - t0, 1), data.split(b'\\r\\n')[0].decode())\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    secs, status = r.stdout.split(" ", 1)
    assert "408" in status, r.stdout + r.stderr
    assert 5 <= float(secs) <= 20, secs


# --- the state directory -----------------------------------------------------

def test_state_file_is_private(topo):
    """state.json names pods and MACs: 0600 in a 0700 directory, also when
    an older switchd left them 0644/0755."""
    node = topo.node()
    state = Path(node.state_dir)
    state.mkdir(mode=0o755)
    (state / "state.json").write_text('{"version": 1, "switches": [], "ports": []}')
    os.chmod(state / "state.json", 0o644)
    os.chmod(state, 0o755)
    node.start()
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "state.json").st_mode) == 0o600
    node.ok("POST", "/v1/switches", {"name": "private"})
    assert stat.S_IMODE(os.stat(state / "state.json").st_mode) == 0o600


@pytest.mark.parametrize("content, message", [
    ('{"version": 2, "switches": [], "ports": [], "vnis": []}', r"state version 2, newer than this switchd reads \(1\)"),
    ('{"version": 1, "switches": [', r"is not a valid podswitch state file"),
], ids=["future-version", "corrupt"])
def test_unusable_state_stops_the_start_before_the_socket_appears(topo, content, message):
    """A state file from a newer switchd, or a corrupt one, is refused with a
    clear message; the file is left as it was, and the control socket never
    appears (nothing is served from a state switchd cannot use)."""
    node = topo.node()
    state = Path(node.state_dir)
    state.mkdir(mode=0o700)
    (state / "state.json").write_text(content)
    with pytest.raises(RuntimeError, match="switchd exited"):
        node.start()
    assert node.proc.returncode != 0
    log = node.log_path.read_text(errors="replace")
    assert re.search(message, log), log[:3000]
    assert (state / "state.json").read_text() == content
    assert not os.path.exists(node.socket)
    assert "serving the control API" not in log


def test_a_panicking_poll_thread_takes_switchd_down(topo):
    """A poll thread that panics must not leave /healthz answering ok: the
    process exits non-zero (kubelet restarts it), and the restart brings
    the stored ports back."""
    node = topo.node()
    os.environ["SWITCHD_TEST_PANIC_POLL_THREAD"] = "1"
    try:
        node.start(wait_ready=False)
    except RuntimeError:
        pass  # it may already be gone before it answered
    finally:
        del os.environ["SWITCHD_TEST_PANIC_POLL_THREAD"]
    try:
        rc = node.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"switchd kept running after its poll thread panicked:\n{node.log()}")
    assert rc != 0
    log = node.log_path.read_text(errors="replace")
    assert "panic injected" in log and "exiting so that it is restarted" in log, log[-2000:]
    node.start()
    assert node.api("GET", "/healthz")[0] == 200


# --- request storms on the control socket -------------------------------------

STORM = r"""
import asyncio, json, sys, time
sock, total, inflight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
REQS = [("GET", "/v1/ports", None), ("GET", "/v1/switches", None), ("GET", "/v1/datapath", None),
        ("GET", "/v1/switches/default/fdb", None), ("GET", "/v1/ports/nope", None),
        ("POST", "/v1/ports", b'{"nic": 3}'), ("PATCH", "/v1/ports/nope", b'{"vlan": 5}'),
        ("DELETE", "/v1/ports/nope", None)]

async def one(i):
    m, p, b = REQS[i % len(REQS)]
    r, w = await asyncio.open_unix_connection(sock)
    head = f"{m} {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if b is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n"
    w.write(head.encode() + b"\r\n" + (b or b""))
    await w.drain()
    data = await r.read()
    w.close()
    return int(data.split(b" ", 2)[1]) if data else 0

async def main():
    sem = asyncio.Semaphore(inflight)
    codes = {}
    async def guarded(i):
        async with sem:
            try:
                c = await one(i)
            except OSError as e:
                c = type(e).__name__
            codes[c] = codes.get(c, 0) + 1
    t0 = time.monotonic()
    await asyncio.gather(*(guarded(i) for i in range(total)))
    print(json.dumps({"codes": codes, "secs": time.monotonic() - t0}))

asyncio.run(main())
"""


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def storm(node, total, inflight):
    r = subprocess.run([sys.executable, "-c", STORM, node.socket, str(total), str(inflight)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_request_storm_keeps_probes_and_cni_fast_and_memory_returns(topo):
    """2000 mixed requests, 200 in flight (five times over): /healthz and a CNI ADD stay under
    100 ms at p99, switchd's threads stay bounded, and its memory comes back
    to within 10 % of where it started."""
    node = topo.node().start()
    cni = NetCni(topo, node, subnet="10.72.0.0/24")
    pid = node.proc.pid
    # Warm-up: the thread pool and allocator reach their working size, and
    # ports come and go once, so the UMEM pages they touch (pinned packet
    # buffers, not the storm's memory) are in the baseline.
    storm(node, 200, 50)
    warm = [QuietPodNs(topo, f"w{i}") for i in range(6)]
    for p in warm:
        assert cni.run("ADD", p.cid, p.netns)[0] == 0
    for p in warm:
        cni.run("DEL", p.cid, p.netns)
    time.sleep(12)         # idle blocking threads retire after 10 s
    rss0, threads0 = rss_kib(pid), threads(pid)
    result = {}
    done = threading.Event()

    def run_storm():
        # Five storms back to back, so that probes and ADDs meet them.
        try:
            for _ in range(5):
                r = storm(node, 2000, 200)
                for k, v in r["codes"].items():
                    result.setdefault("codes", {})[k] = result.get("codes", {}).get(k, 0) + v
                result["secs"] = result.get("secs", 0) + r["secs"]
        finally:
            done.set()

    t = threading.Thread(target=run_storm)
    t.start()
    health, adds, peak_threads = [], [], threads0
    pods = [QuietPodNs(topo, f"s{i}") for i in range(6)]
    try:
        i = 0
        while not done.is_set():
            t0 = time.monotonic()
            status, _ = node.api("GET", "/healthz")
            health.append(time.monotonic() - t0)
            assert status == 200
            peak_threads = max(peak_threads, threads(pid))
            if i < len(pods) and len(health) % 4 == 1:
                t0 = time.monotonic()
                rc, out, err = cni.run("ADD", pods[i].cid, pods[i].netns)
                adds.append(time.monotonic() - t0)
                assert rc == 0, f"ADD under the storm failed: {out} {err}"
                i += 1
            time.sleep(0.01)
    finally:
        t.join(timeout=300)
    for p in pods:
        cni.run("DEL", p.cid, p.netns)
    health.sort()
    p99 = health[min(len(health) - 1, int(len(health) * 0.99))]
    print(f"storm: {result}; /healthz p99 {p99 * 1000:.1f} ms over {len(health)}; "
          f"CNI ADDs {[round(a * 1000) for a in adds]} ms; threads {threads0} -> peak {peak_threads}",
          file=sys.stderr)
    codes = result["codes"]
    assert sum(v for k, v in codes.items() if k in ("200", "400", "404")) == 5 * 2000, codes
    assert adds, "the storm ended before any ADD ran"
    assert p99 < 0.100, f"/healthz p99 {p99 * 1000:.1f} ms"
    assert max(adds) < 0.100, f"CNI ADDs under the storm took {adds} s"
    assert peak_threads <= threads0 + 40, (threads0, peak_threads)
    deadline = time.monotonic() + 30
    while rss_kib(pid) > rss0 * 1.10 and time.monotonic() < deadline:
        time.sleep(1)
    assert rss_kib(pid) <= rss0 * 1.10, f"RSS {rss0} KiB before the storm, {rss_kib(pid)} KiB 30 s after"


# --- peer credentials ------------------------------------------------------------

AS_NOBODY_GET = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"GET /v1/ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
print(data.decode(errors="replace"))
"""


def as_nobody_get(node):
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-c", AS_NOBODY_GET, node.socket],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr[-1000:]
    return r.stdout


def test_peer_credentials_are_checked_beyond_the_file_mode(topo):
    """A peer that is neither root nor in --socket-group gets a 403 that says
    why, even when the socket file's mode would let it in, and is counted;
    a member of --socket-group is served."""
    node = topo.node().start()
    os.chmod(node.dir, 0o711)          # let nobody reach the socket file...
    os.chmod(node.socket, 0o666)       # ...and open it, as a careless operator might
    out = as_nobody_get(node)
    assert out.startswith("HTTP/1.1 403"), out[:300]
    assert "uid 65534" in out and "--socket-group" in out, out
    text = metrics_text(node)
    assert sample(text, "podswitch_listener_refused_peers_total", "control") == 1
    node.kill(signal.SIGTERM)

    node.start("--socket-group", "65534")
    os.chmod(node.dir, 0o711)
    mode = stat.S_IMODE(os.stat(node.socket).st_mode)
    assert mode == 0o660 and os.stat(node.socket).st_gid == 65534, oct(mode)
    out = as_nobody_get(node)
    assert out.startswith("HTTP/1.1 200"), out[:300]
