"""Faults injected on purpose, each at least 20 times, with the invariants
checked after every injection:
  * every ADD that reported success has a working port (it pings a
    resident pod);
  * no port exists without a pod, and no pod that holds an address lacks one;
  * host veths = ports = IPAM allocations;
  * switchd's open files and memory are back near their baseline.
The runtime's part is played as kubelet plays it: an ADD that fails is
followed by a DEL. Real switchd, the real podswitch plugin and the
reference host-local IPAM; every traffic check is bounded.
"""
import os
import random
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from cnihelp import NetCni, QuietPodNs, make_pods, ping_once
from conftest import TARGET, host_links, nsexec, sh
from test_cni import REF_CNI as REF_CNI_DIR

ROUNDS = int(os.environ.get("PODSWITCH_FAULT_ROUNDS", "20"))
assert ROUNDS >= 1, "PODSWITCH_FAULT_ROUNDS must be at least 1: zero rounds test nothing"


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class World:
    """One node, its CNI, a resident pod that is never touched, and the set
    of pods whose ADD reported success (and were not deleted since)."""

    def __init__(self, topo, subnet, node=None, **conf):
        self.topo = topo
        self.node = node or topo.node().start()
        self.cni = NetCni(topo, self.node, subnet=subnet, **conf)
        self.resident = QuietPodNs(topo, "resident")
        self.resident.add_to(self.cni)
        self.added = {}  # cid -> pod
        self.table = {"injections": 0, "adds ok": 0, "adds failed": 0, "dels": 0, "violations": 0}
        self.base_fds = fds(self.node.proc.pid)
        self.base_rss = rss_kib(self.node.proc.pid)

    def add(self, pod, env=None):
        rc, out, err = self.cni.run("ADD", pod.cid, pod.netns, env=env)
        if rc == 0:
            pod.ip = out["ips"][0]["address"].split("/")[0]
            self.added[pod.cid] = pod
            self.table["adds ok"] += 1
            return True
        self.table["adds failed"] += 1
        # kubelet's part: a failed ADD is followed by a DEL.
        self.delete(pod, env=env)
        return False

    def delete(self, pod, env=None):
        rc, out, err = self.cni.run("DEL", pod.cid, pod.netns, env=env)
        assert rc == 0, f"DEL {pod.ns} failed: {out} {err}"
        self.added.pop(pod.cid, None)
        self.table["dels"] += 1

    def check(self, what):
        """The invariants; raises with what broke."""
        node = self.node
        if node.proc.poll() is not None:
            node.start()
        deadline = time.monotonic() + 10
        while True:
            ports = [p for p in node.ok("GET", "/v1/ports") if p["nic"]["kind"] != "uplink"]
            if all(p["status"]["attached"] for p in ports) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        owners = sorted(p["owner"]["containerID"] for p in ports)
        want = sorted([self.resident.cid, *self.added])
        veths = host_links(node)
        ipam = self.cni.allocations()
        problems = []
        if owners != want:
            problems.append(f"ports {owners} != pods {want}")
        if not (len(veths) == len(ports) == len(ipam)):
            problems.append(f"veths {len(veths)}, ports {len(ports)}, IPAM allocations {len(ipam)}")
        unattached = [p["id"] for p in ports if not p["status"]["attached"]]
        if unattached:
            problems.append(f"not attached: {unattached}")
        for pod in self.added.values():
            if not ping_once(pod.ns, self.resident.ip, tries=3):
                problems.append(f"{pod.ns} ({pod.ip}) cannot reach the resident pod")
        pid = node.proc.pid
        n_fds, rss = fds(pid), rss_kib(pid)
        if n_fds > self.base_fds + 4 * len(ports) + 16:
            problems.append(f"{n_fds} open files (baseline {self.base_fds}, {len(ports)} ports)")
        if rss > self.base_rss * 1.25 + 8192:
            problems.append(f"RSS {rss} KiB (baseline {self.base_rss} KiB)")
        if problems:
            self.table["violations"] += 1
            raise AssertionError(f"after {what}: " + "; ".join(problems) + f"\n{node.log()[-1500:]}")

    def report(self, name):
        print(f"fault table [{name}]: {self.table}", file=sys.stderr)


def test_kill_9_during_add_del_bursts(topo):
    """switchd is killed at a random moment of a burst of parallel ADDs and
    DELs, then started again (as kubelet would restart it)."""
    w = World(topo, "10.73.0.0/24")
    pool = make_pods(topo, [f"k{i}" for i in range(12)])
    rng = random.Random(7)
    for rnd in range(ROUNDS):
        if w.node.proc.poll() is not None:
            w.node.start()
        todo = [(p, p.cid not in w.added) for p in pool]
        rng.shuffle(todo)
        killer = threading.Timer(rng.uniform(0.0, 0.4), lambda: w.node.kill())
        killer.start()

        def one(item):
            pod, adding = item
            if adding:
                w.add(pod)
            else:
                w.delete(pod)

        with ThreadPoolExecutor(4) as ex:
            list(ex.map(one, todo[:8]))
        killer.join()
        w.table["injections"] += 1
        w.check(f"kill -9 in round {rnd}")
    w.report("kill -9")
    assert w.table["injections"] >= ROUNDS and w.table["violations"] == 0


def test_pod_netns_removed_mid_add(topo):
    """The pod's network namespace disappears while its ADD runs (the pod
    was deleted meanwhile); the runtime then sends DEL."""
    w = World(topo, "10.74.0.0/24")
    rng = random.Random(11)
    for rnd in range(ROUNDS):
        pod = QuietPodNs(topo, f"n{rnd}")
        t = threading.Timer(rng.uniform(0.0, 0.006), lambda: sh("ip", "netns", "del", pod.ns, check=False))
        t.start()
        w.add(pod)
        t.join()
        # The sandbox is gone either way: the runtime deletes it.
        if pod.cid in w.added:
            w.delete(pod)
        w.table["injections"] += 1
        w.check(f"netns removal in round {rnd}")
    w.report("netns removed")
    assert w.table["violations"] == 0


FLAKY_IPAM = """#!/bin/sh
# host-local, then, when the flag file exists, an injected failure of ADD
# after the address was allocated (the worst moment).
out=$({host_local}); rc=$?
if [ "$CNI_COMMAND" = ADD ] && [ -e {flag} ]; then
  echo '{{"cniVersion": "1.0.0", "code": 11, "msg": "injected IPAM failure"}}'
  exit 1
fi
printf '%s\\n' "$out"
exit $rc
"""


def test_ipam_failing_mid_add(topo, tmp_path):
    """host-local allocates, then the IPAM call fails: the ADD must fail
    and roll back everything, and the runtime's DEL frees the address."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    flag = tmp_path / "fail"
    ipam = bindir / "flaky-host-local"
    ipam.write_text(FLAKY_IPAM.format(host_local=REF_CNI_DIR / "host-local", flag=flag))
    ipam.chmod(ipam.stat().st_mode | stat.S_IEXEC)
    w = World(topo, "10.75.0.0/24")
    w.cni.conf["ipam"]["type"] = "flaky-host-local"
    env = {"CNI_PATH": f"{bindir}:{REF_CNI_DIR}:{TARGET}"}
    rng = random.Random(5)
    pods = make_pods(topo, [f"i{i}" for i in range(ROUNDS)])
    failed = 0
    for rnd, pod in enumerate(pods):
        if rng.random() < 0.7 or rnd == 0:
            flag.touch()
        ok = w.add(pod, env=env)
        if flag.exists():
            assert not ok, "ADD succeeded although IPAM failed"
            failed += 1
            flag.unlink()
        else:
            assert ok, f"ADD failed in round {rnd} without an injected IPAM failure"
        w.table["injections"] += 1
        w.check(f"IPAM failure in round {rnd}")
    w.report("IPAM fails")
    assert failed >= ROUNDS // 2 and w.table["violations"] == 0


def test_state_directory_read_only_or_full(topo):
    """The state directory (a small tmpfs) turns read-only or fills up under
    a running switchd: ADDs fail cleanly (and roll back) while it cannot
    persist, nothing is half-created, and all works again once it can."""
    node = topo.node()
    os.makedirs(node.state_dir, mode=0o700)
    sh("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", node.state_dir)
    try:
        node.start()
        w = World(topo, "10.76.0.0/24", node=node)
        pods = make_pods(topo, [f"d{i}" for i in range(ROUNDS)])
        filler = os.path.join(node.state_dir, "filler")
        for rnd, pod in enumerate(pods):
            fault = ("read-only", "full")[rnd % 2]
            if fault == "read-only":
                sh("mount", "-o", "remount,ro", node.state_dir)
            else:
                subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
            ok = w.add(pod)
            assert not ok, f"ADD succeeded with the state directory {fault}"
            # A DEL of a pod that is still there must not lose it either.
            if w.added:
                victim = next(iter(w.added.values()))
                rc, out, err = w.cni.run("DEL", victim.cid, victim.netns)
                # DEL may fail (cannot persist) or succeed; the runtime retries until it succeeds.
                keep_failing = rc != 0
            else:
                keep_failing = False
            if fault == "read-only":
                sh("mount", "-o", "remount,rw", node.state_dir)
            else:
                os.unlink(filler)
            if w.added and keep_failing:
                w.delete(victim)
            elif w.added:
                w.added.pop(victim.cid)
                w.table["dels"] += 1
            assert w.add(QuietPodNs(topo, f"e{rnd}")), "ADD failed after the state directory recovered"
            w.table["injections"] += 1
            w.check(f"state directory {fault} in round {rnd}")
        w.report("state dir")
        assert w.table["violations"] == 0
    finally:
        try:
            node.kill()
        finally:
            sh("umount", "-l", node.state_dir, check=False)


def test_uplink_deleted_under_a_running_switch(topo):
    """The uplink NIC disappears (a driver reset, a bond torn down) and comes
    back, 20 times: pods keep forwarding among themselves, the uplink port
    stays declared and re-attaches once its NIC is back, and nothing leaks."""
    w = World(topo, "10.77.0.0/24")
    node = w.node
    other = QuietPodNs(topo, "other")
    assert w.add(other)
    up = f"{topo.short}up0"
    far = QuietPodNs(topo, "far")  # the fabric behind the uplink

    def make_link():
        sh("ip", "-n", node.ns, "link", "add", up, "numtxqueues", "1", "numrxqueues", "1",
           "type", "veth", "peer", "name", "eth0", "netns", far.ns, "numtxqueues", "1", "numrxqueues", "1")
        nsexec(far.ns, "ethtool", "-K", "eth0", "tx", "off")
        nsexec(far.ns, "ip", "addr", "add", "10.77.0.250/24", "dev", "eth0")
        nsexec(far.ns, "ip", "link", "set", "eth0", "up")
        link = nsexec(node.ns, "ip", "-o", "link", "show", up).stdout
        return int(link.split(":", 1)[0])

    ifindex = make_link()
    # Native VLAN 1 (the pods' VLAN) untagged, so the fabric side can ping them.
    port = node.ok("POST", "/v1/ports", {"nic": {"kind": "uplink", "ifname": up}, "vlan": 1,
                                         "trunk": [{"minID": 100, "maxID": 200}]})

    def uplink():
        return node.ok("GET", f"/v1/ports/{port['id']}")

    def wait_attached(rnd, ifindex):
        deadline = time.monotonic() + 10
        while True:
            st = uplink()["status"]
            if st["attached"] and st["ifindex"] == ifindex:
                return
            assert time.monotonic() < deadline, f"uplink did not re-attach in round {rnd}: {st}\n{node.log()[-1500:]}"
            time.sleep(0.2)

    wait_attached(-1, ifindex)
    assert ping_once(far.ns, w.resident.ip, tries=5), "no traffic through the uplink"
    for rnd in range(ROUNDS):
        sh("ip", "-n", node.ns, "link", "del", up)
        w.table["injections"] += 1
        assert ping_once(other.ns, w.resident.ip, tries=3), f"pods stopped forwarding after the uplink went (round {rnd})"
        ifindex = make_link()
        wait_attached(rnd, ifindex)
        assert ping_once(far.ns, w.resident.ip, tries=5), f"no traffic through the re-attached uplink (round {rnd})"
        w.check(f"uplink removal in round {rnd}")
    w.report("uplink deleted")
    assert w.table["violations"] == 0


def test_netdev_deleted_just_before_the_next_add(topo):
    """A pod's veth vanishes (the runtime tore the sandbox down) and the
    next ADD arrives before switchd noticed: the kernel has unbound the
    vanished port's AF_XDP socket, which switchd would share its UMEM with.
    Found by a CI run of the churn test (`bind(AF_XDP): Bad file
    descriptor` on 1 ADD in 100). The ADD must succeed anyway, 20 times."""
    w = World(topo, "10.78.0.0/24")
    node = w.node
    for rnd in range(ROUNDS):
        victim = QuietPodNs(topo, f"v{rnd}")
        assert w.add(victim), f"ADD of the victim failed in round {rnd}"
        # Its port has the highest slot: the first socket a new one would share.
        veth = [p["nic"]["ifname"] for p in node.ok("GET", "/v1/ports")
                if p["owner"]["containerID"] == victim.cid][0]
        sh("ip", "-n", node.ns, "link", "del", veth)
        newcomer = QuietPodNs(topo, f"c{rnd}")
        ok = w.add(newcomer)
        w.table["injections"] += 1
        w.delete(victim)  # the runtime's DEL of the torn-down sandbox
        assert ok, f"ADD right after a netdev vanished failed in round {rnd}\n{node.log()[-1500:]}"
        w.check(f"netdev deletion in round {rnd}")
        w.delete(newcomer)
    w.report("netdev deleted before ADD")
    # Proof that the rounds met the unbound socket (switchd checks netdevs
    # only once a second, and an ADD takes tens of milliseconds).
    # (The whole log: node.log() is its last 4000 characters.)
    assert "lost its netdev; trying another" in node.log_path.read_text(errors="replace"), \
        node.log()[-1500:]
    assert w.table["violations"] == 0
