"""SR-IOV VF endpoints (`"endpoint": "vfio"`) through the real plugin, the
real host-local IPAM and a real switchd, without SR-IOV hardware.

The plugin reads sysfs under `sysfsRoot`; here that is a tree the test
generates (`make_sysfs`, a Python mirror of cni/src/sriov/testutil.rs): a
ConnectX-like PF 0000:18:00.0 with four VFs, in switchdev or legacy eswitch
mode. Its netdevs are REAL ones in the node's namespace: the PF is a veth
(its ifindex is written into the tree) and, in switchdev mode, each VF's
representor is a veth too, so switchd attaches it for real.

A veth is no SR-IOV PF: the kernel answers the plugin's RTM_GETLINK for the
PF's VF list with no VF at all. So an ADD here gets through resolving the
VF, IPAM and registering the port with switchd (the representor attached in
switchdev mode, the port recorded in legacy mode), then fails at the PF with
the kernel's answer, and must roll all of it back: that is what these tests
check, with DEL after it and bad input through the binary. The success path
(the exact rtnetlink requests, restore on DEL, CHECK) is covered by the
unit tests in cni/src/vfio/tests.rs against a recording kernel double. The
switchd side of vfio ports (a switchdev port forwarding through its
representor; a legacy port recorded, reported, kept out of the data path
and across a restart) is driven over its API here.
"""
import json
import os
import signal
import time
from pathlib import Path

from cnihelp import NetCni, QuietPodNs
from conftest import nsexec, sh

SUBNET = "10.83.0.0/24"
SWITCH_ID = "b8cef6fffe0a1b2c"
PF_PCI = "0000:18:00.0"
BRIDGE = "devices/pci0000:17/0000:17:02.0"


def make_sysfs(root, mode, pf, pf_ifindex, reps=()):
    """A sysfs tree under `root` as cni/src/sriov/testutil.rs lays it out:
    - PF 0000:18:00.0 (mlx5_core), netdev `pf` (ifindex `pf_ifindex`,
      phys_port_name p0), sriov_totalvfs 8, sriov_numvfs 4, virtfn0..3 ->
      VFs 0000:18:02.0..3 (VF 0 and 3 on vfio-pci, 1 on mlx5_core, 2
      unbound);
    - switchdev mode: representors `reps[i]` = (name, ifindex), pf0vf<i>,
      with the PF's phys_switch_id; legacy mode: none, but the PF keeps
      its phys_switch_id (as ice does);
    - PF 0000:18:00.1 without SR-IOV, named as physfn by 0000:18:0a.0;
    - 0000:00:1f.0, neither PF nor VF.
    bus/pci/devices/* and class/net/* are relative links into devices/."""
    root = Path(root)

    def write(rel, content):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)

    def link(rel, target):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("../" * rel.count("/") + target, p)

    def pci_device(parent, addr, ids, driver):
        dev = f"{parent}/{addr}"
        write(f"{dev}/vendor", ids[0] + "\n")
        write(f"{dev}/device", ids[1] + "\n")
        write(f"{dev}/class", "0x020000\n")
        link(f"bus/pci/devices/{addr}", dev)
        if driver:
            (root / f"bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
            link(f"{dev}/driver", f"bus/pci/drivers/{driver}")
        return dev

    def netdev(dev, name, ifindex, port=None):
        nd = f"{dev}/net/{name}"
        write(f"{nd}/ifindex", f"{ifindex}\n")
        write(f"{nd}/address", "02:00:00:00:00:00\n")
        if port:
            write(f"{nd}/phys_switch_id", port[0] + "\n")
            write(f"{nd}/phys_port_name", port[1] + "\n")
        link(f"class/net/{name}", nd)

    mlx, mlx_vf = ("0x15b3", "0x1017"), ("0x15b3", "0x1018")
    pf_dev = pci_device(BRIDGE, PF_PCI, mlx, "mlx5_core")
    write(f"{pf_dev}/sriov_totalvfs", "8\n")
    write(f"{pf_dev}/sriov_numvfs", "4\n")
    netdev(pf_dev, pf, pf_ifindex, (SWITCH_ID, "p0"))
    for i, driver in enumerate(["vfio-pci", "mlx5_core", None, "vfio-pci"]):
        vf = pci_device(BRIDGE, f"0000:18:02.{i}", mlx_vf, driver)
        link(f"{vf}/physfn", pf_dev)
        link(f"{pf_dev}/virtfn{i}", vf)
        if driver == "mlx5_core":
            netdev(vf, f"{pf}v{i}", 900 + i)
        if mode == "switchdev":
            name, ifindex = reps[i]
            netdev(pf_dev, name, ifindex, (SWITCH_ID, f"pf0vf{i}"))
    pf1 = pci_device(BRIDGE, "0000:18:00.1", mlx, "mlx5_core")
    netdev(pf1, f"{pf}x", 950, (SWITCH_ID, "p1"))
    stray = pci_device(BRIDGE, "0000:18:0a.0", mlx_vf, None)
    link(f"{stray}/physfn", pf1)
    pci_device("devices/pci0000:00", "0000:00:1f.0", ("0x8086", "0xa1c8"), None)
    return root


def port_id(cid, ifname):
    """The CNI's port ID for an attachment (cni/src/endpoint.rs host_ifname:
    "psw" + 48 bits of FNV-1a over container ID, 0xff, ifname)."""
    h = 0xcbf29ce484222325
    for i, part in enumerate((cid, ifname)):
        if i:
            h = ((h ^ 0xff) * 0x100000001b3) % 2**64
        for b in part.encode():
            h = ((h ^ b) * 0x100000001b3) % 2**64
    return f"psw{h & 0xffffffffffff:012x}"


def ifindex(node, name):
    return json.loads(nsexec(node.ns, "ip", "-j", "link", "show", name).stdout)[0]["ifindex"]


def xdp_attached(node, name):
    return "xdp" in json.loads(nsexec(node.ns, "ip", "-j", "-d", "link", "show", name).stdout)[0]


class Sriov:
    """An SR-IOV NIC as far as this node's sysfs says: the PF and (in
    switchdev mode) the representors are real veths in the node netns."""

    def __init__(self, topo, node, mode):
        self.node = node
        self.pf = f"{topo.short}pf"
        sh("ip", "-n", node.ns, "link", "add", self.pf, "type", "veth", "peer", "name", f"{topo.short}pfw")
        self.reps = []
        if mode == "switchdev":
            for i in range(4):
                r = f"{topo.short}r{i}"
                sh("ip", "-n", node.ns, "link", "add", r, "numtxqueues", "1", "numrxqueues", "1",
                   "type", "veth", "peer", "name", f"{topo.short}v{i}", "numtxqueues", "1", "numrxqueues", "1")
                self.reps.append((r, ifindex(node, r)))
        self.root = make_sysfs(node.dir / "sys", mode, self.pf, ifindex(node, self.pf), self.reps)
        self.state_dir = node.dir / "vfstate"
        self.devinfo_dir = node.dir / "devinfo"

    def cni(self, topo, **extra):
        return NetCni(topo, self.node, subnet=SUBNET, cniVersion="1.1.0", endpoint="vfio",
                      sysfsRoot=str(self.root), vfStateDir=str(self.state_dir), **extra)

    def devinfo(self, pod):
        return self.devinfo_dir / f"{pod.cid}_net1"

    def claims(self):
        return sorted(p.name for p in self.state_dir.iterdir()) if self.state_dir.exists() else []

    def claim(self, pci, cid, saved=None, ifname="net1"):
        """A claim file as ADD writes it (cni/src/sriov/state.rs VfState)."""
        self.state_dir.mkdir(exist_ok=True)
        path = self.state_dir / f"{pci}.json"
        path.write_text(json.dumps({
            "pciAddress": pci, "claim": {"containerID": cid, "ifname": ifname},
            "pfPciAddress": PF_PCI, "pfNetdev": self.pf, "vfIndex": int(pci[-1]),
            "saved": saved or {}, "applied": {}}))
        return path


def run(cni, pod, command, runtime=None, extra=None, ifname="net1", args=""):
    conf = {k: v for k, v in {**cni.conf, **(extra or {})}.items() if v is not None}
    if runtime is not None:
        conf["runtimeConfig"] = runtime
    return cni.run(command, pod.cid, pod.netns, ifname, conf=conf, args=args)


def test_vfio_add_fails_at_a_pf_without_vfs_and_rolls_everything_back(topo):
    """Switchdev mode: ADD resolves VF 0000:18:02.0 and its representor,
    allocates an address and has switchd attach the representor, then the
    PF's VF list (from the real kernel) has no VF 0: code 999 naming the
    VF, the PF and the kernel's answer, and nothing is left: no port (the
    representor detached), no claim, no device-info file, no address.
    Legacy mode likewise, with a recorded port. DEL after it, twice, is
    fine."""
    node = topo.node().start()
    for mode, pci, extra in [
        ("switchdev", "0000:18:02.0", {"vlan": 100, "trunk": [{"id": 200}]}),
        ("legacy", "0000:18:02.3", {"vlan": 100, "macSpoofCheck": True}),
    ]:
        nic = Sriov(topo, node, mode)
        cni = nic.cni(topo, **extra)
        vm = QuietPodNs(topo, f"vm{mode[0]}")
        vm.port_id = port_id(vm.cid, "net1")
        runtime = {"deviceID": pci, "mac": "02:00:00:aa:bb:03",
                   "CNIDeviceInfoFile": str(nic.devinfo(vm))}
        rc, out, err = run(cni, vm, "ADD", runtime)
        assert rc != 0 and out["code"] == 999, (mode, out, err)
        idx = ifindex(node, nic.pf)
        vfn = int(pci[-1])
        assert out["msg"] == (f"configuring VF {pci} (VF {vfn} of PF {nic.pf}): the kernel's "
                              f"answer for PF ifindex {idx} lists no VF {vfn}"), out
        # The port was there (switchd's log says so) and is gone.
        log = node.log()
        if mode == "switchdev":
            rep = nic.reps[0][0]
            assert f"deleted port {vm.port_id} ({rep} (VF {pci}))" in log, log
            assert not xdp_attached(node, rep), "the representor is still attached"
        else:
            loc = f"VF {pci} (legacy eswitch)"
            assert f"recorded port {vm.port_id} ({loc}): not attached" in log, log
            assert f"deleted port {vm.port_id} ({loc})" in log, log
        assert node.ok("GET", "/v1/ports") == []
        assert nic.claims() == [], "a VF claim is left"
        assert not nic.devinfo(vm).exists()
        assert cni.allocations() == [], "the address is left allocated"
        for _ in range(2):
            rc, out, err = run(cni, vm, "DEL", runtime)
            assert rc == 0, (out, err)
        assert cni.allocations() == [] and node.ok("GET", "/v1/ports") == []
        # The node's netdevs are the NIC's, not ours: still there.
        nsexec(node.ns, "ip", "link", "show", nic.pf)
        for r, _ in nic.reps:
            nsexec(node.ns, "ip", "link", "show", r)
        sh("ip", "-n", node.ns, "link", "del", nic.pf)
        for r, _ in nic.reps:
            sh("ip", "-n", node.ns, "link", "del", r)
        sh("rm", "-rf", str(nic.root), str(nic.state_dir))


def test_vfio_bad_input_through_the_plugin(topo):
    """Wrong or missing device IDs, vfio keys on other endpoints, settings a
    legacy VF cannot enforce, a VF another container holds: the CNI code
    and message say so, nothing is created, and DEL after it succeeds."""
    node = topo.node().start()
    nic = Sriov(topo, node, "switchdev")
    cni = nic.cni(topo)
    vm = QuietPodNs(topo, "vm")
    # Another attachment holds VF 0000:18:02.1.
    held = nic.claim("0000:18:02.1", "other")
    # (config keys, runtimeConfig, code, words); the configurations that do
    # not parse fail DEL the same way, the others must DEL cleanly.
    cases = [
        ({}, {}, 7, "\"endpoint\": \"vfio\" needs the VF's PCI address: runtimeConfig.deviceID"),
        ({"deviceID": "0000:18:2.0"}, {}, 7,
         'deviceID "0000:18:2.0" is not a PCI address (expected domain:bus:device.function'),
        ({}, {"deviceID": "18:02.0"}, 7,
         'runtimeConfig.deviceID: "18:02.0" is not a PCI address'),
        ({}, {"deviceID": "0000:19:02.0"}, 7, "no PCI device 0000:19:02.0 on this node"),
        ({}, {"deviceID": PF_PCI}, 7, "it is a physical function; pass one of its VFs"),
        ({}, {"deviceID": "0000:18:0a.0"}, 7,
         "physical function 0000:18:00.1 of 0000:18:0a.0 has no SR-IOV"),
        ({}, {"deviceID": "0000:18:02.1"}, 999,
         "VF 0000:18:02.1 is already in use by container other (interface net1)"),
        ({}, {"deviceID": "0000:18:02.0", "mac": "01:00:5e:00:00:01"}, 7, "is not a unicast MAC"),
        ({"endpoint": "veth", "vfStateDir": None}, {}, 7,
         'sysfsRoot is for "endpoint": "vfio" (this endpoint is "veth")'),
        ({"endpoint": "tap", "sysfsRoot": None}, {}, 7,
         'vfStateDir is for "endpoint": "vfio" (this endpoint is "tap")'),
        ({"vfStatedir": "/x"}, {}, 7, 'did you mean "vfStateDir"'),
    ]
    for extra, runtime, code, words in cases:
        rc, out, err = run(cni, vm, "ADD", runtime, extra)
        assert rc != 0 and out["code"] == code, (extra, runtime, out, err)
        assert words in out["msg"], (words, out)
        parses = not extra
        rc, out, err = run(cni, vm, "DEL", runtime, extra)
        assert (rc == 0) == parses, ("DEL", extra, runtime, out, err)
    # Legacy mode refuses what the PF cannot enforce.
    legacy = Sriov(topo, topo.node("n2").start(), "legacy")
    lcni = legacy.cni(topo, trunk=[{"id": 5}], qos={"ingressRate": 1000000})
    rc, out, err = run(lcni, vm, "ADD", {"deviceID": "0000:18:02.3"})
    assert rc != 0 and out["code"] == 7, out
    assert out["msg"] == ("an SR-IOV VF in legacy eswitch mode cannot enforce a trunk, qos.ingressRate; "
                          "put the PF in switchdev mode or drop the setting"), out
    assert node.ok("GET", "/v1/ports") == [] and legacy.node.ok("GET", "/v1/ports") == []
    assert cni.allocations() == [] and lcni.allocations() == []
    assert nic.claims() == ["0000:18:02.1.json"], "the other attachment's claim is untouched"
    assert json.loads(held.read_text())["claim"]["containerID"] == "other"
    assert legacy.claims() == []


def test_switchd_vfio_ports(topo):
    """switchd's side: a switchdev VF port forwards through its representor
    like a veth; a legacy VF port is recorded with its PCI address, reported
    unattached with a reason, left out of /readyz's wait, the attached and
    traffic metrics and the data path, refuses PATCH, survives a restart
    without retries; bad VF fields are 4xx JSON errors."""
    node = topo.node().start()
    a = topo.pod(node, "a", ip="10.84.0.1/24")
    a.attach(vlan=100)
    vm = topo.pod(node, "vm", ip="10.84.0.2/24")  # its eth0 stands in for the VF
    rep = node.ok("POST", "/v1/ports", {
        "id": "vmvf", "vlan": 100,
        "nic": {"kind": "vfio", "ifname": vm.host_if, "pciAddress": "0000:18:02.0",
                "eswitchMode": "switchdev"}})
    assert rep["status"]["attached"], rep
    assert vm.ping(a), "no traffic through the representor"
    legacy = node.ok("POST", "/v1/ports", {
        "id": "vmlegacy", "vlan": 100, "mac": "02:00:00:aa:bb:09", "macSpoofCheck": True,
        "qos": {"egressRate": 100000000},
        "nic": {"kind": "vfio", "pciAddress": "0000:18:02.3", "eswitchMode": "legacy"}})
    assert legacy["nic"] == {"kind": "vfio", "pciAddress": "0000:18:02.3", "eswitchMode": "legacy"}
    st = legacy["status"]
    assert st["attached"] is False and st["xdpMode"] == "none", st
    assert st["reason"].startswith("VF 0000:18:02.3 (legacy eswitch): the NIC's own switch forwards"), st
    assert "stats" not in legacy
    # Its MAC is not a static entry: the switch does not send its frames
    # to a port that has no socket.
    fdb = node.ok("GET", "/v1/switches/default/fdb")
    assert all(e["mac"] != "02:00:00:aa:bb:09" for e in fdb), fdb
    for method, path, body, status, words in [
        ("POST", "/v1/ports", {"nic": {"kind": "vfio", "pciAddress": "18:02.3", "eswitchMode": "legacy"}},
         400, 'nic.pciAddress "18:02.3" is not a PCI address'),
        ("POST", "/v1/ports", {"nic": {"kind": "vfio", "eswitchMode": "legacy"}}, 400, "needs nic.pciAddress"),
        ("POST", "/v1/ports", {"nic": {"kind": "veth", "ifname": "x", "pciAddress": "0000:18:02.3"}},
         400, "nic.pciAddress is for vfio NICs only"),
        ("POST", "/v1/ports", {"trunk": [{"id": 5}], "nic": {"kind": "vfio", "pciAddress": "0000:18:02.2",
                                                            "eswitchMode": "legacy"}},
         400, "cannot have a trunk"),
        ("POST", "/v1/ports", {"nic": {"kind": "vfio", "pciAddress": "0000:18:02.3".upper(),
                                       "eswitchMode": "legacy"}}, 409, "already recorded as port vmlegacy"),
        ("POST", "/v1/ports", {"nic": {"kind": "vfio", "ifname": "x", "eswitchMode": "sideways"}},
         400, "unknown variant"),
        ("PATCH", "/v1/ports/vmlegacy", {"vlan": 200}, 409, "switchd cannot change them live"),
    ]:
        code, body_ = node.api(method, path, body)
        assert code == status, (method, path, body, code, body_)
        assert set(body_) == {"code", "message"} and words in body_["message"], (words, body_)
    # Ready, and the data path counts only what it serves.
    assert node.api("GET", "/readyz")[0] == 200
    dp = node.ok("GET", "/v1/datapath")
    assert (dp["ports"], dp["attachedPorts"]) == (2, 2), dp
    text = nsexec(node.ns, "curl", "-sf", f"http://127.0.0.1:{node.metrics_port}/metrics").stdout
    info = [l for l in text.splitlines() if l.startswith('podswitch_port_info{port="vmlegacy"')]
    assert len(info) == 1 and 'nic="0000:18:02.3"' in info[0] and 'eswitch_mode="legacy"' in info[0], info
    assert 'podswitch_port_attached{port="vmlegacy"}' not in text
    assert 'podswitch_port_receive_packets_total{port="vmlegacy"}' not in text
    assert 'podswitch_port_attached{port="vmvf"} 1' in text
    assert 'pci_address="0000:18:02.0",eswitch_mode="switchdev"' in text
    ports = node.ctl("ports").stdout
    row = [l for l in ports.splitlines() if l.startswith("vmlegacy")][0]
    assert "vfio/VF 0000:18:02.3 (legacy eswitch)" in row and "n/a (NIC)" in row, ports
    assert f"vfio/{vm.host_if} (VF 0000:18:02.0)" in ports, ports
    assert "not attached: VF 0000:18:02.3" in node.ctl("port", "show", "vmlegacy").stdout
    # A restart: both come back; the legacy port is not waited for or retried.
    node.kill(signal.SIGTERM)
    t0 = time.monotonic()
    node.start()
    assert time.monotonic() - t0 < 8, "the start waited for a port it never attaches"
    got = {p["id"]: p for p in node.ok("GET", "/v1/ports")}
    assert got["vmlegacy"]["nic"]["pciAddress"] == "0000:18:02.3"
    assert got["vmvf"]["status"]["attached"], got["vmvf"]
    assert vm.ping_until(a)
    time.sleep(2.5)  # a few reconcile rounds
    tail = node.log().split("serving metrics")[-1]
    assert "dropping stored port vmlegacy" not in tail, tail
    assert [p["id"] for p in node.ok("GET", "/v1/ports") if p["id"] == "vmlegacy"] == ["vmlegacy"]
    code, _ = node.api("DELETE", "/v1/ports/vmlegacy")
    assert code in (200, 204)
    assert node.api("GET", "/v1/ports/vmlegacy")[0] == 404


def test_vfio_gc_and_a_pf_that_refuses_the_restore(topo):
    """GC removes a stale vfio attachment (its port, its VF claim) and
    keeps a valid one. DEL of an attachment whose saved VF settings the PF
    refuses to take back (the real kernel: a veth has no VFs, EOPNOTSUPP)
    fails with the kernel's answer and keeps the claim, so that DEL can be
    retried, instead of dropping what it could not restore."""
    node = topo.node().start()
    nic = Sriov(topo, node, "switchdev")
    cni = nic.cni(topo)

    def vf_port(i, cid):
        return node.ok("POST", "/v1/ports", {
            "id": f"vf{i}",
            "nic": {"kind": "vfio", "ifname": nic.reps[i][0], "pciAddress": f"0000:18:02.{i}",
                    "eswitchMode": "switchdev"},
            "owner": {"containerID": cid, "ifname": "net1", "network": cni.name}})

    vf_port(1, "gone")
    nic.claim("0000:18:02.1", "gone")
    vf_port(2, "alive")
    nic.claim("0000:18:02.2", "alive")
    assert xdp_attached(node, nic.reps[1][0])
    gc = {**cni.conf, "cni.dev/valid-attachments": [{"containerID": "alive", "ifname": "net1"}]}
    rc, out, err = cni.run("GC", conf=gc)
    assert rc == 0, (out, err)
    assert [p["id"] for p in node.ok("GET", "/v1/ports")] == ["vf2"]
    assert nic.claims() == ["0000:18:02.2.json"]
    assert not xdp_attached(node, nic.reps[1][0])

    # The PF refuses: the claim stays, DEL says why, and says it again.
    claim = nic.claim("0000:18:02.3", "refuse", saved={"trust": True})
    vm = QuietPodNs(topo, "vm")
    vm.cid = "refuse"
    for _ in range(2):
        rc, out, err = run(cni, vm, "DEL", {"deviceID": "0000:18:02.3"})
        assert rc != 0 and out["code"] == 999, (out, err)
        assert out["msg"].startswith(
            f"restoring VF 0000:18:02.3: setting the VF (RTM_SETLINK) on PF ifindex "
            f"{ifindex(node, nic.pf)}: Operation not supported (os error 95)"), out
        assert claim.exists()
    # Once nothing is left to put back, DEL lets go of the VF.
    nic.claim("0000:18:02.3", "refuse")
    rc, out, err = run(cni, vm, "DEL", {})
    assert rc == 0, (out, err)
    assert nic.claims() == ["0000:18:02.2.json"]
