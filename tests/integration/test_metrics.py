"""Prometheus metrics of a live switchd, checked by the real promtool and
scraped by a real Prometheus (both inside the test's node namespace, on its
loopback)."""
import json
import shutil
import subprocess
import time

import pytest

from conftest import nsexec


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install --no-install-recommends prometheus)")


def scrape(node):
    return nsexec(node.ns, "curl", "-sf", f"http://127.0.0.1:{node.metrics_port}/metrics").stdout


def value(text, name, **labels):
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_pass_promtool_and_count_the_traffic(topo):
    need("promtool")
    node = topo.node().start()
    a = topo.pod(node, "a", "10.79.0.1/24")
    b = topo.pod(node, "b", "10.79.0.2/24")
    a.attach(vlan=7, owner={"podName": "web-0", "podNamespace": "shop"})
    b.attach(vlan=7)
    r = nsexec(a.ns, "ping", "-c", "1000", "-i", "0.002", "-q", b.addr, timeout=60)
    assert " 0% packet loss" in r.stdout, r.stdout
    a.send(bytes(10) * 6)  # one malformed frame (zero source MAC)
    text = scrape(node)
    chk = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    for p in (a, b):
        pid = p.port["id"]
        assert value(text, "podswitch_port_receive_packets_total", port=pid) >= 1000
        assert value(text, "podswitch_port_transmit_packets_total", port=pid) >= 1000
        assert value(text, "podswitch_port_receive_bytes_total", port=pid) >= 1000 * 98
        assert value(text, "podswitch_port_link_up", port=pid) == 1
        assert value(text, "podswitch_port_attached", port=pid) == 1
    assert value(text, "podswitch_port_drops_total", port=a.port["id"], reason="malformed") == 1
    assert value(text, "podswitch_port_info", port=a.port["id"], pod="web-0", namespace="shop", vlan="7",
                 nic_kind="veth") == 1
    assert value(text, "podswitch_switch_fdb_entries", switch="default") == 2
    assert value(text, "podswitch_switch_fdb_moves_total", switch="default") == 0
    assert value(text, "podswitch_switch_fdb_learn_refused_total", switch="default") == 0
    assert value(text, "podswitch_api_requests_total", method="POST", code="201") == 2
    assert value(text, "podswitch_build_info") == 1
    # Probes on the same listener.
    assert nsexec(node.ns, "curl", "-sf", f"http://127.0.0.1:{node.metrics_port}/readyz").returncode == 0


def test_real_prometheus_scrapes_switchd(topo):
    need("prometheus")
    need("promtool")
    node = topo.node().start()
    a = topo.pod(node, "a", "10.79.0.1/24")
    b = topo.pod(node, "b", "10.79.0.2/24")
    a.attach()
    b.attach()
    assert a.ping(b, count=5)
    d = node.dir / "prometheus"
    d.mkdir()
    (d / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: podswitch
    static_configs:
      - targets: ["127.0.0.1:{node.metrics_port}"]
""")
    port = node.metrics_port + 1 if node.metrics_port < 65000 else node.metrics_port - 1
    prom = subprocess.Popen(["ip", "netns", "exec", node.ns, "prometheus", f"--config.file={d}/prometheus.yml",
                             f"--storage.tsdb.path={d}/data", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    topo.procs.append(prom)
    query = f'podswitch_port_receive_bytes_total{{port="{a.port["id"]}"}}'
    deadline = time.monotonic() + 30
    got = None
    while time.monotonic() < deadline and got is None:
        time.sleep(1)
        r = nsexec(node.ns, "promtool", "query", "instant", "-o", "json", f"http://127.0.0.1:{port}", query,
                   check=False)
        if r.returncode == 0 and r.stdout.strip():
            res = json.loads(r.stdout)
            if res:
                got = float(res[0]["value"][1])
    assert got is not None, "Prometheus did not return the port's received bytes within 30 s"
    assert got >= 5 * 98, got
    prom.terminate()
    prom.wait(timeout=10)
