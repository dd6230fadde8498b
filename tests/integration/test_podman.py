"""A real runtime: podman 4 with its CNI backend runs busybox containers on a
podswitch network (conflist 1.0.0, chained with the real tuning, bandwidth
and portmap plugins). podman runs inside the test's node netns (nsenter
--net, so mounts stay shared), with private storage and configuration."""
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import TARGET, host_links, ipam_allocations

REF_CNI = Path("/usr/lib/cni")


def need_podman():
    for tool in ("podman", "runc", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install podman runc busybox-static)")
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed")
    if not (REF_CNI / "host-local").exists():
        pytest.skip("containernetworking-plugins is not installed")


class Podman:
    def __init__(self, topo, node):
        self.node = node
        d = node.dir / "podman"
        self.dir = d
        self.net = f"{topo.prefix}-pm"
        (d / "net.d").mkdir(parents=True)
        (d / "tmp").mkdir()
        (d / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{d}/graph"\nrunroot = "{d}/run"\n')
        (d / "containers.conf").write_text(f"""
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
tmp_dir = "{d}/tmp"
static_dir = "{d}/static"
volume_path = "{d}/volumes"
runtime = "runc"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{TARGET}", "{REF_CNI}"]
network_config_dir = "{d}/net.d"
""")
        self.ipam_dir = d / "ipam"
        conflist = {
            "cniVersion": "1.0.0",
            "name": self.net,
            "plugins": [
                {"type": "podswitch", "socket": node.socket, "vlan": 100,
                 "capabilities": {"mac": True, "ips": True},
                 "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                          "ranges": [[{"subnet": "10.88.77.0/24", "gateway": "10.88.77.1"}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
                {"type": "bandwidth", "capabilities": {"bandwidth": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (d / "net.d" / f"{self.net}.conflist").write_text(json.dumps(conflist))
        self.env = {**os.environ, "CONTAINERS_CONF": str(d / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(d / "storage.conf"), "TMPDIR": str(d / "tmp")}
        self.image = f"localhost/{topo.prefix}-busybox"
        root = d / "rootfs"
        (root / "bin").mkdir(parents=True)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        for tool in ("sh", "sleep", "ping", "ip", "cat", "ifconfig"):
            os.symlink("busybox", root / "bin" / tool)
        with tarfile.open(d / "rootfs.tar", "w") as t:
            t.add(root, arcname=".")
        self.run("import", "--change", "ENV PATH=/bin", str(d / "rootfs.tar"), self.image)

    def run(self, *args, check=True, timeout=120):
        r = subprocess.run(["nsenter", f"--net=/var/run/netns/{self.node.ns}", "podman", *args],
                           env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def start(self, name, *extra):
        self.run("run", "-d", "--name", name, "--network", self.net, "--runtime", "runc",
                 "--ulimit", "nofile=10000:10000", "--ulimit", "nproc=4096:4096", *extra,
                 self.image, "sleep", "600")

    def ip(self, name):
        info = json.loads(self.run("inspect", name).stdout)[0]
        return info["NetworkSettings"]["Networks"][self.net]["IPAddress"]

    def cleanup(self):
        self.run("rm", "-a", "-f", "-t", "0", check=False)
        self.run("rmi", "-a", "-f", check=False)
        shutil.rmtree(self.dir / "graph", ignore_errors=True)


@pytest.fixture
def podman(topo):
    need_podman()
    node = topo.node().start()
    p = Podman(topo, node)
    yield p
    p.cleanup()




def test_podman_containers_ping_and_leave_nothing(podman):
    node = podman.node
    podman.start("c1", "--mac-address", "02:42:0a:58:4d:10")
    podman.start("c2", "--ip", "10.88.77.50", "-p", "18080:80")
    ip2 = podman.ip("c2")
    assert ip2 == "10.88.77.50", "podman's --ip reached host-local through our plugin"
    r = podman.run("exec", "c1", "ping", "-c", "3", "-W", "2", ip2, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    ports = node.ok("GET", "/v1/ports")
    assert len(ports) == 2 and all(p["vlan"] == 100 and p["status"]["attached"] for p in ports)
    assert "02:42:0a:58:4d:10" in {p["mac"] for p in ports}, "podman's --mac-address honoured"
    assert len(ipam_allocations(podman.ipam_dir, podman.net)) == 2 and len(host_links(node)) == 2
    # network disconnect/connect: DEL and ADD of a second attachment.
    podman.run("stop", "-t", "0", "c1")
    assert len(node.ok("GET", "/v1/ports")) == 1
    podman.run("start", "c1")
    r = podman.run("exec", "c1", "ping", "-c", "2", "-W", "2", ip2, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    podman.run("stop", "-t", "0", "c1", "c2")
    podman.run("rm", "c1", "c2")
    assert node.ok("GET", "/v1/ports") == []
    assert host_links(node) == []
    assert ipam_allocations(podman.ipam_dir, podman.net) == []
