"""A real kubelet-side runtime: containerd 2.x's CRI plugin, driven over its
gRPC socket by a small CRI client (Python stubs from the Kubernetes CRI
api.proto), on a podswitch network given as a CNI 1.1.0 conflist.

containerd 2.x is the one real caller of CNI STATUS here: its CRI `Status`
runs STATUS on every plugin of the conflist, and a kubelet marks the node
NotReady when the NetworkReady condition is false. So with switchd down, the
operator should see *our* message on the node, not a generic failure.

containerd runs inside the test's node netns (nsenter --net, so its mounts
stay in the host mount namespace, where cleanup can see them) with private
root, state, runc root, socket and CNI directories; nothing of the system's
containerd, if any, is touched. `scripts/setup-containerd.sh` installs
containerd 2.x (Debian sid's, unpacked under /opt/podswitch-test) and the
CRI stubs; without them the tests skip and say why.
"""
import glob
import io
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import TARGET, host_links, ipam_allocations, sh
from cri import stubs

CACHE = Path(os.environ.get("PODSWITCH_TEST_CACHE", "/opt/podswitch-test"))
CONTAINERD_BIN = CACHE / "containerd" / "usr" / "bin"
REF_CNI = Path("/usr/lib/cni")
SUBNET = "10.89.0"
PAUSE_IMAGE = "localhost/podswitch-pause:test"
MESSAGE = "switchd is not reachable"


def need_containerd():
    """The containerd 2.x bin dir, or a skip with the reason printed."""
    def skip(reason):
        print(f"SKIP: {reason}", file=sys.stderr)
        pytest.skip(reason)

    for tool in ("nsenter", "runc", "umount"):
        if shutil.which(tool) is None:
            skip(f"{tool} is not installed (apt-get install util-linux runc)")
    if not (REF_CNI / "host-local").exists():
        skip("containernetworking-plugins is not installed (host-local is missing)")
    containerd = CONTAINERD_BIN / "containerd"
    if not containerd.exists():
        skip(f"containerd 2.x is not unpacked at {containerd} (run scripts/setup-containerd.sh)")
    out = sh(str(containerd), "--version", check=False).stdout
    m = re.search(r"\s(\d+)\.(\d+)\.\d+", out)
    if not m or int(m.group(1)) < 2:
        skip(f"{containerd} is not containerd 2.x ({out.strip()!r}); run scripts/setup-containerd.sh")
    try:
        stubs.load()
    except stubs.StubsUnavailable as e:
        skip(f"no Python CRI stubs: {e}")
    return CONTAINERD_BIN


def pause_image_tar(path, ref):
    """Writes an OCI image archive holding a static busybox that sleeps: the
    pod sandbox ("pause") image, built locally since there is no registry."""
    def add(tf, name, data):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode = len(data), 0o644
        tf.addfile(ti, io.BytesIO(data))

    def blob(tf, data):
        digest = hashlib.sha256(data).hexdigest()
        add(tf, f"blobs/sha256/{digest}", data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as lt:
        d = tarfile.TarInfo("bin")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        lt.addfile(d)
        lt.add("/bin/busybox", "bin/busybox")
        s = tarfile.TarInfo("bin/sleep")
        s.type, s.linkname = tarfile.SYMTYPE, "busybox"
        lt.addfile(s)
    layer = layer.getvalue()
    with tarfile.open(path, "w") as tf:
        layer_desc = blob(tf, layer)
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Entrypoint": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"]},
                  "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               **blob(tf, json.dumps(config).encode())},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}]}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                **blob(tf, json.dumps(manifest).encode()),
                                "platform": {"architecture": "amd64", "os": "linux"},
                                "annotations": {"io.containerd.image.name": ref,
                                                "org.opencontainers.image.ref.name": ref}}]}
        add(tf, "index.json", json.dumps(index).encode())
        add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')


class Containerd:
    """A private containerd 2.x in a node's netns, and a CRI client for it."""

    def __init__(self, topo, node, bin_dir):
        self.pb, self.pb_grpc = stubs.load()
        self.node = node
        self.bin_dir = bin_dir
        self.dir = node.dir / "containerd"
        d = self.dir
        self.socket = d / "containerd.sock"
        self.runc_root = d / "runc"
        self.log_path = d / "containerd.log"
        self.net = f"{topo.prefix}-cri"
        self.ipam_dir = d / "ipam"
        # A cgroup parent of our own, so cleanup knows what to remove.
        self.cgroup_parent = f"{topo.prefix}-pods"
        self.run_containerd_existed = Path("/run/containerd").exists()
        for sub in ("net.d", "tmp", "logs"):
            (d / sub).mkdir(parents=True)
        conflist = {
            "cniVersion": "1.1.0",
            "name": self.net,
            "plugins": [{"type": "podswitch", "socket": node.socket, "vlan": 100,
                         "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                                  "ranges": [[{"subnet": f"{SUBNET}.0/24"}]]}}],
        }
        (d / "net.d" / f"10-{self.net}.conflist").write_text(json.dumps(conflist))
        runtime = "plugins.'io.containerd.cri.v1.runtime'"
        (d / "config.toml").write_text(f"""
version = 3
root = '{d}/root'
state = '{d}/state'
temp = '{d}/tmp'
[grpc]
  address = '{self.socket}'
[ttrpc]
  address = '{self.socket}.ttrpc'
[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{PAUSE_IMAGE}'
  [{runtime}]
    # Without it runc fails here: "can't get final child's PID from pipe".
    restrict_oom_score_adj = true
    # Pod netns bind mounts under our state dir, not /var/run/netns.
    netns_mounts_under_state_dir = true
    enable_cdi = false
    [{runtime}.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [{runtime}.containerd.runtimes.runc.options]
        Root = '{self.runc_root}'
    [{runtime}.cni]
      bin_dirs = ['{TARGET}', '{REF_CNI}']
      conf_dir = '{d}/net.d'
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.internal.v1.opt']
    path = '{d}/opt'
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
""")
        # The shim is found on PATH: use the one beside this containerd.
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"}
        self.topo = topo
        self.proc = None
        self.channel = None

    def start(self):
        import grpc
        d, node, bin_dir = self.dir, self.node, self.bin_dir
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{node.ns}", str(bin_dir / "containerd"),
             "--config", str(d / "config.toml")],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        self.topo.procs.append(self.proc)
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.rt = self.pb_grpc.RuntimeServiceStub(self.channel)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited ({self.proc.returncode}):\n{self.log()}")
            try:
                v = self.rt.Version(self.pb.VersionRequest(), timeout=2)
                self.version = v.runtime_version
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"containerd did not answer on {self.socket}:\n{self.log()}")
                time.sleep(0.2)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def conditions(self):
        """The runtime's conditions from CRI Status, by type."""
        r = self.rt.Status(self.pb.StatusRequest(), timeout=15)
        return {c.type: c for c in r.status.conditions}

    def wait_network(self, ready, seconds=30):
        """Polls Status until NetworkReady is `ready`; returns that condition."""
        deadline = time.monotonic() + seconds
        while True:
            cond = self.conditions().get("NetworkReady")
            if cond is not None and cond.status == ready:
                return cond
            if time.monotonic() > deadline:
                raise AssertionError(f"NetworkReady did not become {ready} within {seconds}s; last: "
                                     f"{cond}\n--- containerd log ---\n{self.log()}")
            time.sleep(0.25)

    def import_pause_image(self):
        tar = self.dir / "pause.tar"
        pause_image_tar(tar, PAUSE_IMAGE)
        sh(str(self.bin_dir / "ctr"), "--address", str(self.socket), "--namespace", "k8s.io",
           "images", "import", str(tar), timeout=120)

    def sandbox_config(self, name):
        pb = self.pb
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="default", uid=f"uid-{name}"),
            hostname=name, log_directory=str(self.dir / "logs"),
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"/{self.cgroup_parent}"))

    def run_pod(self, name):
        r = self.rt.RunPodSandbox(self.pb.RunPodSandboxRequest(config=self.sandbox_config(name)),
                                  timeout=120)
        return r.pod_sandbox_id

    def pod_status(self, pod_id):
        r = self.rt.PodSandboxStatus(self.pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True),
                                     timeout=30)
        return r.status, json.loads(r.info.get("info", "{}"))

    def stop_pod(self, pod_id):
        self.rt.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)

    def remove_pod(self, pod_id):
        self.rt.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)

    def pods(self):
        return list(self.rt.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=30).items)

    def cleanup(self):
        """Removes everything this containerd made, whatever state it is in.
        Every step is bounded and carries on past failures."""
        def attempt(what, fn, default=None):
            try:
                return fn()
            except Exception as e:  # cleanup goes on; say what was left
                print(f"containerd cleanup: {what}: {e}", file=sys.stderr)
                return default

        running = self.proc is not None and self.proc.poll() is None
        if running and self.channel is not None:
            for pod in attempt("list pods", self.pods, []):
                attempt(f"stop pod {pod.id}", lambda: self.stop_pod(pod.id))
                attempt(f"remove pod {pod.id}", lambda: self.remove_pod(pod.id))
        if self.channel is not None:
            attempt("close channel", self.channel.close)
        if running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # Containers that outlived containerd (a failed test, a crash).
        runc_ns = self.runc_root / "k8s.io"
        if runc_ns.is_dir():
            for cid in os.listdir(runc_ns):
                sh("runc", "--root", str(runc_ns), "kill", "--all", cid, "KILL", check=False)
                sh("runc", "--root", str(runc_ns), "delete", "--force", cid, check=False)
        # Shims are started with our socket's address: end exactly those,
        # then remove the sockets a killed shim leaves in /run/containerd/s
        # (each task's bundle records its shim's address in bootstrap.json).
        shim_sockets = []
        for f in glob.glob(f"{self.dir}/state/io.containerd.runtime.v2.task/*/*/bootstrap.json"):
            try:
                addr = json.loads(Path(f).read_text()).get("address", "").removeprefix("unix://")
            except (OSError, ValueError):
                continue
            if addr.startswith("/run/containerd/s/"):
                shim_sockets.append(addr)
        shims = pids_mentioning(str(self.socket))
        for pid in shims:
            attempt(f"kill shim {pid}", lambda: os.kill(pid, signal.SIGKILL))
        deadline = time.monotonic() + 10
        while shims and time.monotonic() < deadline:
            shims = [p for p in shims if Path(f"/proc/{p}").exists() and not is_zombie(p)]
            time.sleep(0.05)
        for addr in shim_sockets:
            if Path(addr).exists():
                attempt(f"remove shim socket {addr}", lambda: os.unlink(addr))
        unmount_under(self.dir)
        for hierarchy in glob.glob("/sys/fs/cgroup/*/") + ["/sys/fs/cgroup/"]:
            remove_cgroup_tree(Path(hierarchy) / self.cgroup_parent)
        # The shims make /run/containerd/s (fixed path) and may make
        # /run/containerd/runc; remove them only if we made them and they are empty.
        if not self.run_containerd_existed:
            for d in ("/run/containerd/s", "/run/containerd/runc/k8s.io", "/run/containerd/runc",
                      "/run/containerd"):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def pids_mentioning(text):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline.split("\0"):
            pids.append(int(entry))
    return pids


def is_zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def mounts_under(root):
    root = str(root).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(root):
            found.append(point)
    return found


def unmount_under(root):
    """Unmounts everything below `root`, deepest first (overlay rootfs, shm,
    netns bind mounts); lazily where a plain unmount is refused."""
    for _ in range(3):
        points = sorted(set(mounts_under(root)), key=len, reverse=True)
        if not points:
            return
        for p in points:
            if sh("umount", p, check=False).returncode != 0:
                sh("umount", "-l", p, check=False)
    left = mounts_under(root)
    if left:
        print(f"containerd cleanup: still mounted: {left}", file=sys.stderr)


def remove_cgroup_tree(path):
    if not path.is_dir():
        return
    for sub, _, _ in sorted(os.walk(path), key=lambda w: len(w[0]), reverse=True):
        try:
            os.rmdir(sub)
        except OSError as e:
            print(f"containerd cleanup: cgroup {sub}: {e}", file=sys.stderr)


@pytest.fixture
def containerd(topo, request):
    bin_dir = need_containerd()
    node = topo.node().start()
    c = Containerd(topo, node, bin_dir)
    try:
        c.start()
        yield c
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(f"--- containerd log ---\n{c.log()}", file=sys.stderr)
        c.cleanup()




def test_cri_status_reports_switchd_down(containerd):
    """A kubelet's view: CRI Status says the network is not ready, with our
    CNI STATUS message, while switchd is down, and ready again after."""
    c, node = containerd, containerd.node
    assert c.version.startswith("2."), c.version
    # containerd loads the conflist from conf_dir asynchronously at start.
    c.wait_network(True)

    node.kill()
    cond = c.wait_network(False, seconds=20)
    assert cond.reason == "NetworkPluginNotReady", cond
    assert MESSAGE in cond.message, cond.message
    assert node.socket in cond.message, "the message names the socket the plugin tried"
    assert c.conditions()["RuntimeReady"].status, "only the network is reported down"

    node.start()
    cond = c.wait_network(True, seconds=20)
    assert not cond.message, cond


def test_cri_pod_sandbox_runs_on_podswitch_and_leaves_nothing(containerd):
    """RunPodSandbox drives ADD (a port on switchd, an IP in the pod's netns);
    StopPodSandbox and RemovePodSandbox drive DEL and release everything. With
    switchd down, RunPodSandbox fails with our message and leaks nothing."""
    import grpc
    if not Path("/bin/busybox").exists():
        reason = "busybox-static is not installed (needed to build the pause image)"
        print(f"SKIP: {reason}", file=sys.stderr)
        pytest.skip(reason)
    c, node = containerd, containerd.node
    c.wait_network(True)
    c.import_pause_image()

    node.kill()
    with pytest.raises(grpc.RpcError) as failed:
        c.run_pod("p0")
    assert MESSAGE in failed.value.details(), failed.value.details()
    assert c.pods() == [], "the failed sandbox was rolled back"
    assert ipam_allocations(c.ipam_dir, c.net) == [] and host_links(node) == [], "a failed ADD leaks no IP and no veth"
    node.start()

    pod = c.run_pod("p1")
    status, info = c.pod_status(pod)
    assert status.state == c.pb.SANDBOX_READY, status
    ip = status.network.ip
    assert ip.startswith(f"{SUBNET}."), status.network
    ports = node.ok("GET", "/v1/ports")
    assert len(ports) == 1 and ports[0]["vlan"] == 100 and ports[0]["status"]["attached"], ports
    assert ipam_allocations(c.ipam_dir, c.net) == [ip] and len(host_links(node)) == 1
    netns = [n["path"] for n in info["runtimeSpec"]["linux"]["namespaces"] if n["type"] == "network"]
    assert netns and netns[0].startswith(str(c.dir)), info["runtimeSpec"]["linux"]["namespaces"]
    addrs = json.loads(sh("nsenter", f"--net={netns[0]}", "ip", "-j", "addr", "show", "eth0").stdout)
    assert ip in [a["local"] for a in addrs[0]["addr_info"]], addrs

    c.stop_pod(pod)
    assert node.ok("GET", "/v1/ports") == []
    assert host_links(node) == [] and ipam_allocations(c.ipam_dir, c.net) == []
    c.remove_pod(pod)  # a second DEL, now for a pod whose netns is gone
    assert c.pods() == []
    assert node.ok("GET", "/v1/ports") == []
