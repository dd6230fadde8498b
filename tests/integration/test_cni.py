"""The podswitch CNI plugin driven by the CNI protocol: real namespaces, a
real switchd, the real `host-local` IPAM from containernetworking-plugins."""
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import TARGET, host_links, ipam_allocations, nsexec, sh

PLUGIN = TARGET / "podswitch"
REF_CNI = Path("/usr/lib/cni")


def need_host_local():
    if not (REF_CNI / "host-local").exists():
        pytest.skip("the reference host-local IPAM is not installed (apt-get install containernetworking-plugins)")


class Cni:
    """Runs the plugin inside a node's netns, as a runtime on that node would."""

    def __init__(self, topo, node, subnet="10.66.0.0/24", **extra):
        need_host_local()
        self.topo, self.node = topo, node
        self.plugin = PLUGIN
        self.ipam_dir = node.dir / "ipam"
        self.name = f"{topo.prefix}-net"
        self.conf = {
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "podswitch",
            "socket": node.socket,
            "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                     "ranges": [[{"subnet": subnet, "gateway": subnet.replace("0/24", "1")}]],
                     "routes": [{"dst": "0.0.0.0/0"}]},
            **extra,
        }

    def run(self, command, cid="", netns="", ifname="eth0", conf=None, args="", env=None, stdin=None):
        e = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
             "CNI_PATH": f"{REF_CNI}:{TARGET}", "CNI_ARGS": args, "PATH": os.environ["PATH"]}
        if env is not None:
            e = {k: v for k, v in {**e, **env}.items() if v is not None}
        data = stdin if stdin is not None else json.dumps(conf if conf is not None else self.conf)
        r = subprocess.run(["ip", "netns", "exec", self.node.ns, "env", "-i", *[f"{k}={v}" for k, v in e.items()],
                            str(self.plugin)], input=data, capture_output=True, text=True, timeout=60)
        out = json.loads(r.stdout) if r.stdout.strip() else None
        return r.returncode, out, r.stderr

    def add(self, pod, cid=None, ifname="eth0", **kw):
        rc, out, err = self.run("ADD", cid or pod.cid, pod.netns, ifname, **kw)
        assert rc == 0, f"ADD failed: {out} {err}"
        return out

    def allocations(self):
        return ipam_allocations(self.ipam_dir, self.name)


class PodNs:
    """A bare pod network namespace (the runtime's job), no interfaces."""

    def __init__(self, topo, name):
        self.ns = f"{topo.prefix}-{name}"
        self.netns = f"/var/run/netns/{self.ns}"
        self.cid = f"{topo.prefix}-{name}-cid"
        sh("ip", "netns", "add", self.ns)
        topo.namespaces.append(self.ns)
        nsexec(self.ns, "ip", "link", "set", "lo", "up")

    def addr(self, ifname="eth0"):
        a = json.loads(nsexec(self.ns, "ip", "-j", "-4", "addr", "show", ifname).stdout)
        return a[0]["addr_info"][0]["local"]

    def ping(self, ip, count=2):
        return nsexec(self.ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", ip, check=False).returncode == 0



@pytest.fixture
def env(topo):
    node = topo.node().start()
    return node, Cni(topo, node, vlan=100)


def test_version():
    r = subprocess.run([str(PLUGIN)], env={"CNI_COMMAND": "VERSION"}, input='{"cniVersion":"1.1.0"}',
                       capture_output=True, text=True)
    assert r.returncode == 0
    v = json.loads(r.stdout)
    assert set(v["supportedVersions"]) >= {"0.4.0", "1.0.0", "1.1.0"}


def test_pods_on_one_vlan_ping_other_vlan_cannot(topo, env):
    node, cni = env
    p1, p2, p3 = PodNs(topo, "p1"), PodNs(topo, "p2"), PodNs(topo, "p3")
    r1 = cni.add(p1, args="IgnoreUnknown=1;K8S_POD_NAME=web-1;K8S_POD_NAMESPACE=prod")
    cni.add(p2)
    other = dict(cni.conf, vlan=200)
    cni.add(p3, conf=other)
    # The result follows the spec.
    assert r1["cniVersion"] == "1.0.0"
    assert r1["interfaces"][1]["name"] == "eth0" and r1["interfaces"][1]["sandbox"] == p1.netns
    assert r1["interfaces"][0]["name"].startswith("psw") and "sandbox" not in r1["interfaces"][0]
    assert r1["ips"][0]["interface"] == 1 and r1["ips"][0]["gateway"] == "10.66.0.1"
    assert r1["routes"] == [{"dst": "0.0.0.0/0"}]
    assert p1.addr() == r1["ips"][0]["address"].split("/")[0]
    assert p1.ping(p2.addr()), "pods on VLAN 100 must reach each other"
    assert not p1.ping(p3.addr()), "a pod on VLAN 200 must not be reachable"
    # The port in switchd carries the owner and the pod's MAC.
    ports = {p["id"]: p for p in node.ok("GET", "/v1/ports")}
    port = ports[r1["interfaces"][0]["name"]]
    assert port["owner"]["podName"] == "web-1" and port["owner"]["podNamespace"] == "prod"
    assert port["owner"]["containerID"] == p1.cid and port["owner"]["network"] == cni.name
    assert port["mac"] == r1["interfaces"][1]["mac"] and port["vlan"] == 100
    # Offloads the AF_XDP path needs are off on the pod's interface.
    feats = nsexec(p1.ns, "ethtool", "-k", "eth0").stdout
    assert "tx-checksumming: off" in feats


def test_versions_040_and_110(topo, env):
    node, cni = env
    p1, p2 = PodNs(topo, "p1"), PodNs(topo, "p2")
    r = cni.add(p1, conf=dict(cni.conf, cniVersion="0.4.0"))
    assert r["cniVersion"] == "0.4.0" and r["ips"][0]["version"] == "4"
    # 1.1.0: host-local 1.1 speaks only up to 1.0.0; the plugin bridges that.
    r = cni.add(p2, conf=dict(cni.conf, cniVersion="1.1.0"))
    assert r["cniVersion"] == "1.1.0" and "version" not in r["ips"][0]


def test_mac_and_mtu_from_config_and_args(topo, env):
    node, cni = env
    p1, p2 = PodNs(topo, "p1"), PodNs(topo, "p2")
    conf = dict(cni.conf, mtu=1400, runtimeConfig={"mac": "02:aa:00:00:00:01"}, capabilities={"mac": True})
    r = cni.add(p1, conf=conf)
    assert r["interfaces"][1]["mac"] == "02:aa:00:00:00:01"
    link = json.loads(nsexec(p1.ns, "ip", "-j", "link", "show", "eth0").stdout)[0]
    assert link["address"] == "02:aa:00:00:00:01" and link["mtu"] == 1400
    r = cni.add(p2, args="IgnoreUnknown=1;MAC=02:aa:00:00:00:02")  # as podman passes it
    assert r["interfaces"][1]["mac"] == "02:aa:00:00:00:02"


def test_check_passes_then_fails_after_address_removed(topo, env):
    node, cni = env
    p = PodNs(topo, "p1")
    r = cni.add(p)
    conf = dict(cni.conf, prevResult=r)
    rc, out, err = cni.run("CHECK", p.cid, p.netns, conf=conf)
    assert rc == 0, (out, err)
    nsexec(p.ns, "ip", "addr", "flush", "dev", "eth0")
    rc, out, _ = cni.run("CHECK", p.cid, p.netns, conf=conf)
    assert rc != 0 and "lacks address" in out["msg"], out
    rc, out, _ = cni.run("CHECK", p.cid, p.netns, conf=cni.conf)
    assert rc != 0 and out["code"] == 7 and "prevResult" in out["msg"]


def test_check_notices_port_changes(topo, env):
    node, cni = env
    p = PodNs(topo, "p1")
    r = cni.add(p)
    conf = dict(cni.conf, prevResult=r)
    node.ok("PATCH", f"/v1/ports/{r['interfaces'][0]['name']}", {"vlan": 300})
    rc, out, _ = cni.run("CHECK", p.cid, p.netns, conf=conf)
    assert rc != 0 and "VLAN" in out["msg"], out


def test_del_twice_and_after_netns_gone_leave_nothing(topo, env):
    node, cni = env
    p1, p2 = PodNs(topo, "p1"), PodNs(topo, "p2")
    cni.add(p1)
    cni.add(p2)
    assert len(cni.allocations()) == 2 and len(host_links(node)) == 2
    for _ in range(2):
        rc, out, err = cni.run("DEL", p1.cid, p1.netns)
        assert rc == 0, (out, err)
    # The runtime deleted p2's netns before DEL: the veth went with it.
    sh("ip", "netns", "del", p2.ns)
    topo.namespaces.remove(p2.ns)
    rc, out, err = cni.run("DEL", p2.cid, p2.netns)
    assert rc == 0, (out, err)
    rc, out, err = cni.run("DEL", p2.cid, "")
    assert rc == 0, (out, err)
    assert cni.allocations() == []
    assert host_links(node) == []
    assert node.ok("GET", "/v1/ports") == []


def test_second_add_same_ifname_fails_and_keeps_the_first(topo, env):
    node, cni = env
    p = PodNs(topo, "p1")
    cni.add(p)
    rc, out, _ = cni.run("ADD", p.cid + "x", p.netns, "eth0")
    assert rc != 0 and "already exists" in out["msg"], out
    assert len(cni.allocations()) == 1 and len(host_links(node)) == 1
    assert len(node.ok("GET", "/v1/ports")) == 1


def test_failed_add_rolls_everything_back(topo, env):
    node, cni = env
    p = PodNs(topo, "p1")
    # switchd refuses the port (no such switch) after veth and IPAM succeeded.
    rc, out, _ = cni.run("ADD", p.cid, p.netns, conf=dict(cni.conf, switch="nope"))
    assert rc != 0 and "no switch" in (out.get("details", "") + out["msg"]), out
    assert cni.allocations() == [], "the address was released"
    assert host_links(node) == [], "the veth was removed"
    assert nsexec(p.ns, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert node.ok("GET", "/v1/ports") == []
    # IPAM fails (a one-address range, already used) after the veth exists.
    small = dict(cni.conf)
    small["ipam"] = dict(cni.conf["ipam"], ranges=[[{"subnet": "10.66.0.0/30"}]])
    q = PodNs(topo, "q1")
    cni.add(q, conf=small)
    rc, out, _ = cni.run("ADD", p.cid, p.netns, conf=small)
    assert rc != 0 and "IPAM" in out["msg"], out
    assert len(host_links(node)) == 1 and len(cni.allocations()) == 1


def test_gc_removes_exactly_the_stale_attachments(topo, env):
    node, cni = env
    pods = [PodNs(topo, f"p{i}") for i in range(4)]
    for p in pods:
        cni.add(p)
    # A port of another network must survive this network's GC.
    other = Cni(topo, node, subnet="10.67.0.0/24", vlan=100)
    other.name = f"{topo.prefix}-other"
    other.conf["name"] = other.name
    po = PodNs(topo, "po")
    other.add(po)
    keep = pods[:2]
    conf = dict(cni.conf, cniVersion="1.1.0",
                **{"cni.dev/valid-attachments": [{"containerID": p.cid, "ifname": "eth0"} for p in keep]})
    rc, out, err = cni.run("GC", conf=conf)
    assert rc == 0, (out, err)
    owners = sorted(p["owner"]["containerID"] for p in node.ok("GET", "/v1/ports"))
    assert owners == sorted([p.cid for p in keep] + [po.cid])
    assert len(cni.allocations()) == 2 and len(other.allocations()) == 1
    assert len(host_links(node)) == 3
    assert keep[0].ping(keep[1].addr())


def test_status_follows_switchd(topo, env):
    node, cni = env
    conf = dict(cni.conf, cniVersion="1.1.0")
    rc, out, err = cni.run("STATUS", conf=conf)
    assert rc == 0, (out, err)
    node.kill()
    rc, out, _ = cni.run("STATUS", conf=conf)
    assert rc != 0 and out["code"] == 50 and "not reachable" in out["msg"], out
    node.start()
    rc, _, _ = cni.run("STATUS", conf=conf)
    assert rc == 0
    # An uplink that is set down cuts the switch off from the fabric: 51.
    up = topo.short + "up"
    sh("ip", "-n", node.ns, "link", "add", up, "type", "veth", "peer", "name", up + "x")
    port = node.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": up}, "trunk": [{"id": 100}]})
    rc, _, _ = cni.run("STATUS", conf=conf)
    assert rc == 0
    node.ok("PATCH", f"/v1/ports/{port['id']}", {"linkState": "down"})
    rc, out, _ = cni.run("STATUS", conf=conf)
    assert rc != 0 and out["code"] == 51 and "uplink" in out["msg"], out


def test_del_with_switchd_down_frees_veth_and_address(topo, env):
    node, cni = env
    p = PodNs(topo, "p1")
    cni.add(p)
    node.kill()
    rc, out, err = cni.run("DEL", p.cid, p.netns)
    assert rc == 0, (out, err)
    assert cni.allocations() == [] and host_links(node) == []
    node.start()
    assert node.ok("GET", "/v1/ports") == [], "switchd drops the orphaned port on start"


def test_error_codes_from_real_bad_input(topo, env):
    node, cni = env
    p = PodNs(topo, "p1")
    cases = [
        ("bad JSON", dict(stdin="{nope"), 6),
        ("not an object", dict(stdin="[]"), 6),
        ("old version", dict(conf=dict(cni.conf, cniVersion="0.2.0")), 1),
        ("typo", dict(conf={**cni.conf, "vlna": 100}), 7),
        ("vlan out of range", dict(conf=dict(cni.conf, vlan=5000)), 7),
        ("mtu too big", dict(conf=dict(cni.conf, mtu=9001)), 7),
        ("no container ID", dict(env={"CNI_CONTAINERID": None}), 4),
        ("bad netns", dict(env={"CNI_NETNS": "/proc/self/status"}), 4),
        ("unknown CNI_ARGS", dict(args="FOO=bar"), 4),
        ("unknown command", dict(env={"CNI_COMMAND": "FROB"}), 4),
    ]
    for what, kw, want in cases:
        rc, out, err = cni.run("ADD", p.cid, p.netns, **kw)
        assert rc != 0 and out and out["code"] == want, (what, out, err)
        assert out["msg"], what
    rc, out, _ = cni.run("ADD", p.cid, p.netns, conf={**cni.conf, "vlna": 100})
    assert "did you mean \"vlan\"" in out["msg"]
    node.kill()
    t0 = time.monotonic()
    rc, out, _ = cni.run("ADD", p.cid, p.netns)
    waited = time.monotonic() - t0
    assert rc != 0 and out["code"] == 11, out
    # It retried for its window (3 s) before giving up, not longer.
    assert 2.5 <= waited <= 8, waited
    assert cni.allocations() == [] and host_links(node) == []
    rc, out, _ = cni.run("GC", conf=dict(cni.conf, cniVersion="1.0.0"))
    assert out["code"] == 1, out


def test_an_add_while_switchd_restarts_is_retried_to_success(topo):
    """switchd down when the ADD arrives and back 1 s later (a restart,
    a handover): the plugin retries within its window, and the ADD
    succeeds instead of failing with "try again later"."""
    node = topo.node().start()
    cni = Cni(topo, node, vlan=100)
    p = PodNs(topo, "rt")
    node.kill()
    threading.Timer(1.0, node.start).start()
    t0 = time.monotonic()
    out = cni.add(p)
    waited = time.monotonic() - t0
    print(f"ADD during a switchd restart succeeded after {waited:.2f} s")
    assert 0.9 <= waited <= 4, waited
    assert out["ips"] and len(cni.allocations()) == 1
    assert node.ok("GET", f"/v1/ports/{out['interfaces'][0]['name']}")["status"]["attached"]


def test_churn_leaves_nothing_behind(topo, env):
    node, cni = env
    p = PodNs(topo, "p1")
    fds = lambda: len(os.listdir(f"/proc/{node.proc.pid}/fd"))
    cni.add(p)
    rc, _, _ = cni.run("DEL", p.cid, p.netns)
    base = fds()
    n = int(os.environ.get("PODSWITCH_CHURN", "200"))
    t0 = time.monotonic()
    for i in range(n):
        cid = f"{p.cid}-{i}"
        rc, out, err = cni.run("ADD", cid, p.netns)
        assert rc == 0, (i, out, err)
        rc, out, err = cni.run("DEL", cid, p.netns)
        assert rc == 0, (i, out, err)
    print(f"{n} ADD/DEL cycles in {time.monotonic() - t0:.1f}s")
    assert host_links(node) == []
    assert node.ok("GET", "/v1/ports") == []
    assert cni.allocations() == []
    # Connections of the last API calls may still be closing: allow a moment.
    deadline = time.monotonic() + 3
    while fds() > base and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fds() <= base, f"switchd fds grew from {base} to {fds()} over {n} cycles"


def test_qos_and_guards_from_config_and_bandwidth_capability(topo, env):
    node, cni = env
    p1, p2 = PodNs(topo, "p1"), PodNs(topo, "p2")
    conf = dict(cni.conf, qos={"egressRate": 30_000_000, "minBandwidthWeight": 5}, dhcpGuard=True,
                routerGuard=True, stormLimit=500, capabilities={"bandwidth": True},
                acls=[{"direction": "inbound", "action": "deny", "protocol": "udp", "localPorts": "53"}],
                runtimeConfig={"bandwidth": {"ingressRate": 20_000_000, "ingressBurst": 400_000}})
    r = cni.add(p1, conf=conf)
    port = node.ok("GET", f"/v1/ports/{r['interfaces'][0]['name']}")
    assert port["qos"] == {"ingressRate": 20_000_000, "ingressBurst": 400_000, "egressRate": 30_000_000,
                           "minBandwidthWeight": 5}
    assert port["dhcpGuard"] and port["routerGuard"] and port["stormLimit"] == 500
    assert port["acls"][0]["localPorts"] == "53"
    # CHECK compares the QoS too.
    rc, out, err = cni.run("CHECK", p1.cid, p1.netns, conf=dict(conf, prevResult=r))
    assert rc == 0, (out, err)
    node.ok("PATCH", f"/v1/ports/{port['id']}", {"qos": None})
    rc, out, _ = cni.run("CHECK", p1.cid, p1.netns, conf=dict(conf, prevResult=r))
    assert rc != 0 and "QoS" in out["msg"]
    # A bad QoS value is a config error (code 7) before anything is created.
    rc, out, _ = cni.run("ADD", p2.cid, p2.netns, conf=dict(cni.conf, qos={"egressRate": 0}))
    assert rc != 0 and out["code"] == 7, out
    assert len(host_links(node)) == 1


def test_receive_offload_default_and_off(topo, env):
    """GRO in a threaded NAPI on the pod end and TSO off on the host end by
    default (TCP into the pod arrives merged); `"gro": false` leaves both
    as the kernel made them."""
    node, cni = env
    on, off = PodNs(topo, "gon"), PodNs(topo, "goff")
    r_on = cni.add(on)
    r_off = cni.add(off, conf=dict(cni.conf, gro=False))
    feats = nsexec(on.ns, "ethtool", "-k", "eth0").stdout
    assert "generic-receive-offload: on" in feats, feats
    assert nsexec(on.ns, "cat", "/sys/class/net/eth0/threaded").stdout.strip() in ("1", "enabled"), "threaded NAPI"
    host_on = r_on["interfaces"][0]["name"]
    # (The legacy TSO switch covers TCP/TCP6 segmentation, what the veth
    # checks before handing frames to the peer's NAPI.)
    assert "\ttx-tcp-segmentation: off" in nsexec(node.ns, "ethtool", "-k", host_on).stdout
    assert nsexec(off.ns, "cat", "/sys/class/net/eth0/threaded").stdout.strip() in ("0", "disabled")
    host_off = r_off["interfaces"][0]["name"]
    assert "\ttx-tcp-segmentation: on" in nsexec(node.ns, "ethtool", "-k", host_off).stdout
    assert on.ping(off.addr())
    # TCP works both ways with it (checksums complete, nothing stalls).
    from test_qos_security import need_iperf3
    need_iperf3()
    for cl, sv in ((off, on), (on, off)):
        srv = subprocess.Popen(["ip", "netns", "exec", sv.ns, "iperf3", "-s", "-1", "-p", "5311"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        topo.procs.append(srv)
        time.sleep(0.4)
        r = nsexec(cl.ns, "timeout", "20", "iperf3", "-c", sv.addr(), "-p", "5311", "-t", "2", "-J", timeout=25)
        rep = json.loads(r.stdout)
        srv.wait(timeout=10)
        gbps = rep["end"]["sum_received"]["bits_per_second"] / 1e9
        print(f"TCP {cl.ns[-4:]} -> {sv.ns[-4:]}: {gbps:.2f} Gbit/s")
        assert gbps > 0.05, rep["end"]
    rc, out, err = cni.run("ADD", on.cid, on.netns, "eth0", conf=dict(cni.conf, gro="yes"))
    assert rc == 1 and out["code"] == 7, (out, err)
