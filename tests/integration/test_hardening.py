"""Hostile clients against switchd's listeners: what an unprivileged
process (or, with the chart, any pod that can reach the node's metrics
port) can do to the control socket that the CNI needs.

Real switchd, the real podswitch CNI plugin with the reference host-local
IPAM; the attacker is a separate process running as `nobody`.
"""
import os
import re
import stat
import subprocess
import sys
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
k = 0
while time.monotonic() < end:
    for s in conns:
        try:
            s.send(b"GET /metrics HTTP/1.1\r\n" if k == 0 else b"X-Slow: %d\r\n" % k)
        except OSError:
            pass
    k += 1
    time.sleep(2)
print(len(conns), "connections held", flush=True)
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
        except subprocess.CalledProcessError:
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
