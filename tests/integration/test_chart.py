"""The Helm chart, the rendered manifests, the Multus/KubeVirt examples and
the alert rules, checked with the real tools: helm 3 and helm 4 (`lint
--strict`, `template`), kubernetes-validate (the Kubernetes OpenAPI schemas,
strict, at the oldest Kubernetes the chart claims and at the newest it
knows), promtool (`check rules`, `test rules`, `check metrics`) and the
podswitch CNI binary's own configuration parser.

No root needed. A missing tool skips the tests that need it, with the reason
printed; scripts/setup-k8s-tools.sh installs them all.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podswitch"
MANIFESTS = ROOT / "manifests"
VALUES_FULL = ROOT / "tests" / "chart" / "values-full.yaml"
PROM = ROOT / "tests" / "prometheus"
ALERTS = CHART / "files" / "alerts.yaml"
TARGET = Path(os.environ.get("PODSWITCH_TARGET", ROOT / "target" / "release"))
PLUGIN = TARGET / "podswitch"
TOOLS = Path(os.environ.get("PODSWITCH_TEST_CACHE", "/opt/podswitch-test")) / "bin"

# The oldest Kubernetes the chart supports: charts/podswitch/README.md says
# so and Chart.yaml's kubeVersion enforces it. Everything rendered is
# validated against it and against the newest schemas kubernetes-validate has.
OLDEST_K8S = "1.27.0"
RELEASE, NAMESPACE = "podswitch", "kube-system"
MANIFEST_CMD = f"helm template {RELEASE} charts/podswitch --namespace {NAMESPACE}"
# Kinds whose schema is a CRD's, which kubernetes-validate does not have.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "NetworkAttachmentDefinition", "VirtualMachine"}
# The plugin-entry fields DESIGN.md defines for a podswitch network.
NAD_FIELDS = {"cniVersion", "name", "type", "switch", "socket", "mtu", "vlan", "trunk", "qos",
              "macSpoofCheck", "linkState", "ipam", "capabilities", "endpoint", "tapOwner", "deviceID"}
QOS_FIELDS = {"ingressRate", "ingressBurst", "egressRate", "egressBurst"}
# The CNI's error code for "switchd is not reachable": an ADD that gets this
# far has accepted its configuration (unknown fields, bad VLANs and the like
# are code 7 and come first).
CNI_TRY_AGAIN_LATER = 11


def skip(reason):
    print(f"SKIP: {reason}", file=sys.stderr)
    pytest.skip(reason)


try:
    import yaml
except ImportError:
    print("SKIP test_chart.py: PyYAML is missing: run scripts/setup-k8s-tools.sh "
          "(kubernetes-validate brings it)", file=sys.stderr)
    pytest.skip("PyYAML is missing: run scripts/setup-k8s-tools.sh", allow_module_level=True)


def run(*args, check=True, timeout=120, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def find_tool(*candidates):
    for c in candidates:
        p = Path(c)
        if p.is_absolute():
            if os.access(p, os.X_OK):
                return p
        elif shutil.which(c):
            return Path(shutil.which(c))
    return None


HELMS = {name: find_tool(TOOLS / name) for name in ("helm3", "helm4")}


@pytest.fixture(params=sorted(HELMS), ids=sorted(HELMS))
def helm(request):
    path = HELMS[request.param]
    if path is None:
        skip(f"{request.param} is not installed at {TOOLS}: run scripts/setup-k8s-tools.sh")
    return path


def any_helm():
    for name in sorted(HELMS):
        if HELMS[name]:
            return HELMS[name]
    skip(f"no helm at {TOOLS}: run scripts/setup-k8s-tools.sh")


def kubernetes_validate():
    exe = find_tool(Path(sys.executable).parent / "kubernetes-validate", "kubernetes-validate")
    if exe is None:
        skip("kubernetes-validate is not installed: run scripts/setup-k8s-tools.sh")
    return exe


def newest_k8s():
    try:
        from kubernetes_validate.utils import latest_version
    except ImportError:
        skip("kubernetes-validate is not importable here: run scripts/setup-k8s-tools.sh")
    return latest_version()


def promtool():
    exe = find_tool("promtool")
    if exe is None:
        skip("promtool is not installed: apt-get install prometheus (scripts/setup-k8s-tools.sh)")
    return exe


def template(helm, *args, release=RELEASE, namespace=NAMESPACE, check=True):
    return run(helm, "template", release, CHART, "--namespace", namespace, *args, check=check)


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objs, kind):
    found = [o for o in objs if o["kind"] == kind]
    assert found, f"no {kind} rendered"
    return found[0]


def validate_k8s(path, versions=None):
    """kubernetes-validate --strict at the oldest and newest versions; only
    CRD kinds may be unknown to it. Returns the kinds it saw."""
    exe = kubernetes_validate()
    for version in versions or (OLDEST_K8S, newest_k8s()):
        r = run(exe, "--strict", "-k", version, path, check=False)
        out = r.stdout + r.stderr
        problems = "\n".join(l for l in out.splitlines() if not l.startswith("INFO"))
        assert r.returncode == 0, f"kubernetes-validate --strict -k {version} {path}:\n{problems}"
        for line in out.splitlines():
            if line.startswith("WARN"):
                m = re.search(r"schema for kind (\S+) with api version (\S+)", line)
                assert m and m.group(1) in CRD_KINDS, f"unexpected warning: {line}"
            assert not line.startswith("ERROR"), line


def helm_path(path):
    """The two ways helm 3 and helm 4 name a value in schema errors."""
    return [".".join(map(str, path)), "/" + "/".join(map(str, path))]


def cni_parse(conf):
    """Runs the real podswitch CNI binary on `conf` as far as its configuration
    goes: an ADD against a socket that does not exist. Returns (code, reply)."""
    if not PLUGIN.exists():
        skip(f"{PLUGIN} is missing: run `cargo build --release` first")
    conf = {**conf, "socket": "/nonexistent/podswitch-chart-test/switchd.sock"}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "chart-test", "CNI_NETNS": "/nonexistent/netns",
           "CNI_IFNAME": "net1", "CNI_PATH": "/usr/lib/cni", "PATH": os.environ.get("PATH", "/usr/bin")}
    r = subprocess.run([str(PLUGIN)], input=json.dumps(conf), capture_output=True, text=True, env=env, timeout=30)
    reply = json.loads(r.stdout)
    return reply.get("code"), reply


def assert_cni_accepts(conf, what):
    code, reply = cni_parse(conf)
    assert code == CNI_TRY_AGAIN_LATER, f"the podswitch CNI rejects {what}: {reply}"


# --- helm lint and template -------------------------------------------------

VALUE_SETS = {"default": [], "full": ["-f", VALUES_FULL]}


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_lint_strict(helm, values):
    r = run(helm, "lint", "--strict", CHART, *VALUE_SETS[values])
    assert "0 chart(s) failed" in r.stdout


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_rendered_objects_validate(helm, values, tmp_path):
    out = template(helm, "--kube-version", OLDEST_K8S, *VALUE_SETS[values]).stdout
    path = tmp_path / "rendered.yaml"
    path.write_text(out)
    validate_k8s(path)
    kinds = sorted(o["kind"] for o in docs(out))
    expected = ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"]
    if values == "full":
        expected += ["PrometheusRule", "ServiceMonitor"]
    assert kinds == sorted(expected)


def test_chart_refuses_kubernetes_older_than_claimed(helm):
    r = template(helm, "--kube-version", "1.26.0", check=False)
    assert r.returncode != 0 and "kubeVersion" in r.stderr + r.stdout, r.stderr


def containers(ds):
    spec = ds["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("args", [
    [],
    ["-f", VALUES_FULL],
    ["--set", "securityContext.privileged=true"],
    ["--set", "metrics.enabled=false"],
    ["--set", "cni.install=false"],
    ["--set", "pollCpus=2-3", "--set", "resources.limits.memory=1Gi"],
    ["--set", "vmEndpoints.enabled=true"],
], ids=["default", "full", "privileged", "no-metrics", "no-conflist", "poll-cpus", "vm-endpoints"])
def test_daemonset_semantics(helm, args):
    """What the API server would refuse or what would not work, beyond the
    OpenAPI schema: privilege settings, probes, mounts, arguments."""
    objs = docs(template(helm, *args).stdout)
    ds = by_kind(objs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in containers(ds):
        sc = c.get("securityContext", {})
        adds = set(sc.get("capabilities", {}).get("add", []))
        if sc.get("allowPrivilegeEscalation") is False:
            # The API server's rule: no allowPrivilegeEscalation=false with these.
            assert not sc.get("privileged") and "SYS_ADMIN" not in adds, c["name"]
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{c['name']} mounts undefined volume {m['name']}"
    switchd = next(c for c in pod["containers"] if c["name"] == "switchd")
    args_ = switchd["args"]
    assert "--socket=/run/podswitch/switchd.sock" in args_
    assert "--state-dir=/var/lib/podswitch" in args_
    assert "--switches-file=/etc/podswitch/switches.json" in args_
    # VM endpoints: switchd enters pods' netns (SYS_ADMIN) found in the
    # runtime's netns directory, whose new mounts must propagate in.
    mounts = {m["name"]: m for m in switchd.get("volumeMounts", [])}
    sw_caps = set(switchd["securityContext"].get("capabilities", {}).get("add", []))
    if "vmEndpoints.enabled=true" in args:
        assert "SYS_ADMIN" in sw_caps
        assert mounts["netns"]["mountPropagation"] == "HostToContainer"
        assert volumes["netns"]["hostPath"]["path"] == mounts["netns"]["mountPath"] == "/run/netns"
    else:
        assert "netns" not in mounts
    # One poll thread per listed CPU, or the single --poll-cpu otherwise.
    if "pollCpus=2-3" in args:
        assert "--poll-cpus=2-3" in args_ and not any(a.startswith("--poll-cpu=") for a in args_)
    else:
        assert sum(a.startswith("--poll-cpu=") for a in args_) == 1
        assert not any(a.startswith("--poll-cpus=") for a in args_)
    mounts = {m["mountPath"]: m["name"] for m in switchd["volumeMounts"]}
    assert volumes[mounts["/run/podswitch"]]["hostPath"]["path"] == "/run/podswitch"
    assert volumes[mounts["/var/lib/podswitch"]]["hostPath"]["path"] == "/var/lib/podswitch"
    assert volumes[mounts["/etc/podswitch"]]["configMap"]["name"] == by_kind(objs, "ConfigMap")["metadata"]["name"]
    # The metrics listener serves the probes: on the pod (= node) IP, or on
    # loopback when metrics are off, which the probes must then target. No
    # container declares it as a port: under hostNetwork that would be a
    # hostPort, which keeps an upgrade's surging pod off the node.
    port = switchd["readinessProbe"]["httpGet"]["port"]
    assert isinstance(port, int) and f':{port}" "$@"' in switchd["command"][2]
    assert all("ports" not in c for c in containers(ds)), "a declared port becomes a hostPort under hostNetwork"
    env = {e["name"]: e for e in switchd["env"]}
    metrics_on = "metrics.enabled=false" not in args
    if metrics_on:
        assert env["METRICS_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    else:
        assert env["METRICS_HOST"]["value"] == "127.0.0.1"
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = switchd[probe]["httpGet"]
        assert get["path"] == path and get["port"] == port
        assert get.get("host") == (None if metrics_on else "127.0.0.1")
    sc = switchd["securityContext"]
    if "securityContext.privileged=true" in args:
        assert sc["privileged"] is True and "capabilities" not in sc
    else:
        assert sc["privileged"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"NET_ADMIN", "NET_RAW", "BPF", "IPC_LOCK"} <= set(sc["capabilities"]["add"])
    # The conflist the init container installs is the one in the ConfigMap.
    init = next(c for c in pod["initContainers"] if c["name"] == "install-cni")
    script = init["args"][0]
    assert "/usr/local/bin/podswitch /host/cni-bin/.podswitch.tmp" in script
    cm = by_kind(objs, "ConfigMap")["data"]
    conflists = [k for k in cm if k.endswith(".conflist")]
    if "cni.install=false" in args:
        assert conflists == [] and ".conflist" not in script and "cni-conf" not in volumes
    else:
        assert len(conflists) == 1 and f'"/etc/podswitch/{conflists[0]}"' in script
        assert f'/host/cni-conf/{conflists[0]}"' in script


def test_overlay_renders_one_vxlan_trunk_port(helm):
    """overlay.enabled writes one vxlan port "overlay" to switches.json: a
    trunk of the listed VLANs in their order (no native VLAN), netdev
    psovl0, with ${NODE_IP}, which the DaemonSet sets from status.hostIP and
    switchd expands, as its source address, and a VLAN->VNI map holding only
    the VNIs that differ from their VLAN ID (none: no "vni" key); off by
    default."""
    objs = docs(template(helm).stdout)
    assert json.loads(by_kind(objs, "ConfigMap")["data"]["switches.json"])["ports"] == []
    objs = docs(template(helm, "--set", "overlay.enabled=true", "--set", "overlay.underlay=ens5",
                         "--set-json", 'overlay.vlans=[{"vlan":200,"vni":5200},{"vlan":100},{"vlan":300,"vni":300}]',
                         "--set-json", 'overlay.peers=["192.0.2.1","192.0.2.2"]').stdout)
    ports = json.loads(by_kind(objs, "ConfigMap")["data"]["switches.json"])["ports"]
    assert ports == [{"id": "overlay", "switch": "default", "trunk": [{"id": 200}, {"id": 100}, {"id": 300}],
                      "nic": {"kind": "vxlan", "ifname": "psovl0",
                              "vxlan": {"local": "${NODE_IP}", "port": 4789, "underlay": "ens5",
                                        "peers": ["192.0.2.1", "192.0.2.2"],
                                        "vni": [{"vlan": 200, "vni": 5200}]}}}], ports
    # Every VNI the VLAN ID: no map at all.
    objs = docs(template(helm, "--set", "overlay.enabled=true", "--set", "overlay.port=8472",
                         "--set-json", 'overlay.vlans=[{"vlan":100},{"vlan":120,"vni":120}]').stdout)
    ports = json.loads(by_kind(objs, "ConfigMap")["data"]["switches.json"])["ports"]
    assert [p["trunk"] for p in ports] == [[{"id": 100}, {"id": 120}]]
    assert ports[0]["nic"]["vxlan"] == {"local": "${NODE_IP}", "port": 8472, "underlay": "eth0", "peers": []}
    assert "vlan" not in ports[0]


def test_upgrades_surge_so_the_new_switchd_takes_over(helm):
    """By default an upgrade starts the new pod on a node while the old one
    serves (maxSurge 1, maxUnavailable 0), so that the new switchd takes the
    data path over through the handover socket beside the control socket in
    the host's /run/podswitch, which both pods mount. The one-off setting
    for upgrading from a release without handover renders too."""
    objs = docs(template(helm).stdout)
    ds = by_kind(objs, "DaemonSet")
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = ds["spec"]["template"]["spec"]
    # Nothing that would keep the surging pod off the node: no (host) ports.
    assert pod["hostNetwork"] is True
    assert all("ports" not in c for c in containers(ds)), "under hostNetwork a port is a hostPort"
    switchd = next(c for c in pod["containers"] if c["name"] == "switchd")
    # The old pod's switchd idles after handing over: kubelet would restart
    # an exited container, and the old version would take the data path back.
    assert "--after-handover=wait" in switchd["args"]
    run_mount = next(m for m in switchd["volumeMounts"] if m["mountPath"] == "/run/podswitch")
    run_volume = next(v for v in pod["volumes"] if v["name"] == run_mount["name"])
    assert run_volume["hostPath"]["path"] == "/run/podswitch" and not run_mount.get("readOnly")
    assert "--socket=/run/podswitch/switchd.sock" in switchd["args"]
    old = docs(template(helm, "--set", "updateStrategy.rollingUpdate.maxSurge=0",
                        "--set", "updateStrategy.rollingUpdate.maxUnavailable=1").stdout)
    assert by_kind(old, "DaemonSet")["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 0,
                                                                                    "maxUnavailable": 1}
    pct = docs(template(helm, "--set", "updateStrategy.rollingUpdate.maxSurge=10%").stdout)
    assert by_kind(pct, "DaemonSet")["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] == "10%"


# --- values that must fail, naming the value ---------------------------------

BAD_VALUES = {
    "vlan-5000": ({"defaultVlan": 5000}, ("defaultVlan",), r"4,?094"),
    "trunk-vlan-5000": ({"uplink": {"enabled": True, "trunk": [{"minID": 100, "maxID": 5000}]}},
                        ("uplink", "trunk", 0), r"4,?094"),
    "native-vlan-0": ({"uplink": {"nativeVlan": 0}}, ("uplink", "nativeVlan"), r"\b1\b"),
    "mtu-9001": ({"cni": {"mtu": 9001}}, ("cni", "mtu"), r"9,?000"),
    "trunk-vid": ({"uplink": {"enabled": True, "trunk": [{"vid": 3}]}}, ("uplink", "trunk", 0), r"vid"),
    "xdp-turbo": ({"xdpMode": "turbo"}, ("xdpMode",), r"native"),
    "poll-cpu": ({"pollCpu": "fast"}, ("pollCpu",), r"auto"),
    "qos-negative": ({"qos": {"egressRate": -1}}, ("qos", "egressRate"), r"\b0\b"),
    "ipam-type": ({"ipam": {"type": "dhcp"}}, ("ipam", "type"), r"host-local"),
    "unknown-value": ({"xdpmode": "native"}, (), r"xdpmode"),
    "membership-zero": ({"switches": [{"name": "a", "multicastMembershipSeconds": 0}]},
                        ("switches", 0, "multicastMembershipSeconds"), r"\b1\b"),
    "snooping-string": ({"switches": [{"name": "a", "multicastSnooping": "yes"}]},
                        ("switches", 0, "multicastSnooping"), r"boolean"),
    "overlay-vni-0": ({"overlay": {"enabled": True, "vlans": [{"vlan": 100, "vni": 0}]}},
                      ("overlay", "vlans", 0, "vni"), r"\b1\b"),
    "overlay-no-vlans": ({"overlay": {"enabled": True, "vlans": []}}, ("overlay", "vlans"), r"minItems|at least 1|too short|non-empty|should be non-empty"),
    "overlay-vlan-twice": ({"overlay": {"enabled": True, "vlans": [{"vlan": 100}, {"vlan": 100}]}},
                           ("overlay.vlans[1]",), r"listed twice"),
    "overlay-vni-twice": ({"overlay": {"enabled": True, "vlans": [{"vlan": 200}, {"vlan": 100, "vni": 200}]}},
                          ("overlay.vlans[1]",), r"VNI 200 is already used by VLAN 200"),
    "max-surge-word": ({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "one"}}},
                       ("updateStrategy", "rollingUpdate", "maxSurge"), r"oneOf|one and only one|pattern|integer"),
    # Checked by the templates: what a JSON schema cannot say.
    "trunk-reversed": ({"uplink": {"enabled": True, "trunk": [{"minID": 300, "maxID": 200}]}},
                       ("uplink.trunk[0]",), r"minID 300 is greater than maxID 200"),
    "burst-without-rate": ({"qos": {"ingressBurst": 1000}}, ("qos.ingressBurst",), r"needs qos.ingressRate"),
    "unknown-switch": ({"cni": {"switch": "storage"}}, ("cni.switch",), r'"storage" is neither'),
    "duplicate-switch": ({"switches": [{"name": "a"}, {"name": "a"}]}, ("switches[1]",), r"listed twice"),
    "ipam-no-subnet": ({"ipam": {"subnet": ""}}, ("ipam.subnet",), r"required"),
    "poll-cpus-pattern": ({"pollCpus": "a"}, ("pollCpus",), r"pattern|does not match"),
    "poll-cpus-reversed": ({"pollCpus": "5-2"}, ("pollCpus",), r"5-2 is reversed"),
    # Four poll threads pin 4 x 16384 x 4 KiB + 64 MiB = 320 MiB: above the 256Mi default.
    "memory-below-umem": ({"pollCpus": "0-3"}, ("resources.limits.memory",), r"320 MiB"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_fail_naming_the_value(helm, case, tmp_path):
    values, path, message = BAD_VALUES[case]
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    r = template(helm, "-f", f, check=False)
    err = r.stderr
    assert r.returncode != 0, f"{case} rendered:\n{r.stdout[:2000]}"
    if path:
        assert any(p in err for p in helm_path(path)), f"{case}: error does not name {path}:\n{err}"
    assert re.search(message, err), f"{case}: error lacks {message!r}:\n{err}"


# --- manifests/podswitch.yaml ------------------------------------------------

def split_header(text):
    i = text.index("\n---\n")
    return text[: i + 1], text[i + 1:]


def test_manifest_is_the_chart_rendered_with_defaults():
    """manifests/podswitch.yaml must be a fresh render (every helm installed
    here must render the same), under a header that says how it was made."""
    renders = {name: template(h).stdout for name, h in sorted(HELMS.items()) if h}
    if not renders:
        skip(f"no helm at {TOOLS}: run scripts/setup-k8s-tools.sh")
    assert len(set(renders.values())) == 1, f"{sorted(renders)} render the defaults differently"
    fresh = next(iter(renders.values()))
    path = MANIFESTS / "podswitch.yaml"
    header, body = split_header(path.read_text())
    assert MANIFEST_CMD in header and all(l.startswith("#") for l in header.splitlines())
    if body != fresh and os.environ.get("PODSWITCH_UPDATE_MANIFESTS") == "1":
        path.write_text(header + fresh)
        body = fresh
    assert body == fresh, (f"{path} is stale: regenerate it with `{MANIFEST_CMD}` "
                           "(or run this test with PODSWITCH_UPDATE_MANIFESTS=1)")


def test_manifest_validates(tmp_path):
    _, body = split_header((MANIFESTS / "podswitch.yaml").read_text())
    path = tmp_path / "podswitch.yaml"
    path.write_text(body)
    validate_k8s(path)


# --- the CNI configuration the chart installs -------------------------------

def plugin_confs(conflist):
    """Each plugin entry as the runtime hands it to its binary."""
    for p in conflist["plugins"]:
        yield {**p, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}


CONFLIST_CASES = {
    "default": [],
    "full": ["-f", VALUES_FULL],
    "whereabouts": ["--set", "ipam.type=whereabouts", "--set", "ipam.rangeStart=10.250.0.10",
                    "--set", "ipam.gateway=10.250.0.1"],
    "static": ["--set", "ipam.type=static"],
    "raw-ipam": ["--set-json", 'ipam.config={"type":"dhcp"}'],
    "qos": ["--set", "qos.egressRate=50000000", "--set", "qos.egressBurst=400000"],
    "cni-0.4.0": ["--set", "cni.cniVersion=0.4.0"],
}


@pytest.mark.parametrize("case", sorted(CONFLIST_CASES))
def test_conflist_is_accepted_by_the_cni_plugin(case):
    objs = docs(template(any_helm(), *CONFLIST_CASES[case]).stdout)
    data = by_kind(objs, "ConfigMap")["data"]
    (name,) = [k for k in data if k.endswith(".conflist")]
    conflist = json.loads(data[name])
    assert conflist["plugins"][0]["type"] == "podswitch"
    podswitch = [c for c in plugin_confs(conflist) if c["type"] == "podswitch"]
    assert len(podswitch) == 1
    conf = podswitch[0]
    assert conf["socket"] == "/run/podswitch/switchd.sock"
    assert 1 <= conf["vlan"] <= 4094 and 68 <= conf["mtu"] <= 9000
    assert set(conf) <= NAD_FIELDS
    assert_cni_accepts(conf, f"the {case} conflist's plugin entry")
    if case == "qos":
        assert conf["qos"] == {"egressRate": 50000000, "egressBurst": 400000}
    if case == "full":
        assert conf["qos"] == {"ingressRate": 400000000000, "ingressBurst": 8000000, "egressRate": 100000000}
        assert conf["ipam"]["ranges"][0][0]["rangeStart"] == "10.20.1.10"
        assert [p["type"] for p in conflist["plugins"]] == ["podswitch", "tuning", "portmap"]


def test_switches_file():
    """switches.json holds POST /v1/switches and POST /v1/ports bodies."""
    objs = docs(template(any_helm(), "-f", VALUES_FULL).stdout)
    f = json.loads(by_kind(objs, "ConfigMap")["data"]["switches.json"])
    assert set(f) == {"switches", "ports"}
    assert f["switches"] == [{"name": "storage", "agingSeconds": 60, "maxFdbEntries": 4096,
                              "multicastSnooping": True, "multicastFloodUnknown": False,
                              "multicastMembershipSeconds": 120}]
    assert f["ports"] == [{"id": "uplink-ens1f0", "switch": "storage",
                           "nic": {"kind": "uplink", "ifname": "ens1f0"},
                           "trunk": [{"minID": 200, "maxID": 299}, {"id": 400}], "vlan": 10}]
    empty = json.loads(by_kind(docs(template(any_helm()).stdout), "ConfigMap")["data"]["switches.json"])
    assert empty == {"switches": [], "ports": []}


# --- monitoring objects ------------------------------------------------------

def test_service_monitor_and_rule_match_the_chart():
    objs = docs(template(any_helm(), "-f", VALUES_FULL).stdout)
    svc, sm = by_kind(objs, "Service"), by_kind(objs, "ServiceMonitor")
    rule, ds = by_kind(objs, "PrometheusRule"), by_kind(objs, "DaemonSet")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 19476, "targetPort": 19476, "protocol": "TCP"}]
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # One source: the PrometheusRule is files/alerts.yaml, the file promtool tests.
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    # The alerts' job matcher matches the job the ServiceMonitor produces
    # (the Service's name).
    assert re.fullmatch(".*podswitch.*", svc["metadata"]["name"])


def test_promtool_check_rules():
    r = run(promtool(), "check", "rules", ALERTS)
    assert "SUCCESS" in r.stdout


def test_promtool_alert_unit_tests():
    r = run(promtool(), "test", "rules", PROM / "alerts_test.yaml")
    assert "SUCCESS" in r.stdout


def test_every_alert_is_unit_tested():
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROM / "alerts_test.yaml").read_text())["tests"]
    fired, quiet = set(), set()
    for t in tests:
        for a in t.get("alert_rule_test", []):
            (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
    assert alerts == fired, f"never seen firing: {alerts - fired}"
    assert alerts == quiet, f"never seen staying quiet: {alerts - quiet}"


def test_alerts_use_only_exposed_metrics():
    """The metric names the alerts query exist in the exposition switchd
    documents (tests/prometheus/metrics-sample.txt, which promtool lints)."""
    sample = (PROM / "metrics-sample.txt").read_text()
    r = run(promtool(), "check", "metrics", input=sample)
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
    exposed = set(re.findall(r"^# TYPE (\S+)", sample, re.M))
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        for name in re.findall(r"\b((?:podswitch|process)_[a-z_]+)\b", rule["expr"]):
            assert name in exposed, f"{rule['alert']} queries {name}, which switchd does not expose"


# --- Multus and KubeVirt examples --------------------------------------------

NADS = sorted(MANIFESTS.glob("nad-*.yaml"))


def nad_configs():
    out = {}
    for path in NADS:
        for d in docs(path.read_text()):
            assert d["apiVersion"] == "k8s.cni.cncf.io/v1" and d["kind"] == "NetworkAttachmentDefinition"
            out[d["metadata"]["name"]] = (path.name, json.loads(d["spec"]["config"]))
    return out


def test_nad_examples_exist():
    assert {p.name for p in NADS} >= {"nad-access-vlan.yaml", "nad-trunk.yaml", "nad-qos.yaml", "nad-vm.yaml"}


@pytest.mark.parametrize("path", NADS, ids=[p.name for p in NADS])
def test_nad_example(path):
    validate_k8s(path)
    for d in docs(path.read_text()):
        conf = json.loads(d["spec"]["config"])
        name = d["metadata"]["name"]
        assert conf["type"] == "podswitch" and conf["name"] == name
        assert set(conf) <= NAD_FIELDS, f"{name}: fields DESIGN.md does not define: {set(conf) - NAD_FIELDS}"
        if "vlan" in conf:
            assert 1 <= conf["vlan"] <= 4094
        for t in conf.get("trunk", []):
            assert set(t) in ({"id"}, {"minID", "maxID"}), t
            assert all(1 <= v <= 4094 for v in t.values()) and t.get("minID", 0) <= t.get("maxID", 4094)
        assert set(conf.get("qos", {})) <= QOS_FIELDS
        if "mtu" in conf:
            assert 68 <= conf["mtu"] <= 9000
        assert conf.get("linkState", "up") in ("up", "down")


@pytest.mark.parametrize("path", NADS, ids=[p.name for p in NADS])
def test_nad_example_is_accepted_by_the_cni_plugin(path):
    for d in docs(path.read_text()):
        assert_cni_accepts(json.loads(d["spec"]["config"]), f"{path.name}: {d['metadata']['name']}")


def test_nad_examples_say_what_they_show():
    confs = {n: c for n, (_, c) in nad_configs().items()}
    access = [c for c in confs.values() if c.get("vlan") == 100 and "trunk" not in c and "qos" not in c]
    assert access, "no access-VLAN-100 attachment"
    (trunk,) = [c for c in confs.values() if "trunk" in c]
    assert trunk["trunk"] == [{"minID": 200, "maxID": 299}] and trunk["vlan"] == 10
    (qos,) = [c for c in confs.values() if "qos" in c]
    assert set(qos["qos"]) == QOS_FIELDS and all(v > 0 for v in qos["qos"].values())
    (tap,) = [c for c in confs.values() if c.get("endpoint") == "tap"]
    assert tap["tapOwner"] and tap["capabilities"]["mac"]
    (vf,) = [c for c in confs.values() if c.get("endpoint") == "vfio"]
    assert vf["capabilities"]["deviceID"], "Multus passes the VF's PCI address only with the capability"


def test_pod_example(tmp_path):
    path = MANIFESTS / "pod-with-nad.yaml"
    validate_k8s(path)
    (pod,) = docs(path.read_text())
    nets = json.loads(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"])
    confs = nad_configs()
    for n in nets:
        assert n["name"] in confs, f"the pod asks for {n['name']}, which no nad-*.yaml defines"
        assert "ipam" in confs[n["name"]][1], "the pod example's attachment should give it an address"


def test_kubevirt_example():
    (vm,) = docs((MANIFESTS / "kubevirt-vm.yaml").read_text())
    assert vm["apiVersion"] == "kubevirt.io/v1" and vm["kind"] == "VirtualMachine"
    spec = vm["spec"]["template"]["spec"]
    interfaces = {i["name"]: i for i in spec["domain"]["devices"]["interfaces"]}
    networks = {n["name"]: n for n in spec["networks"]}
    assert set(interfaces) == set(networks)
    multus = [n for n in networks.values() if "multus" in n]
    assert multus, "the VM has no Multus network"
    confs = nad_configs()
    for n in multus:
        nad = n["multus"]["networkName"].split("/")[-1]
        assert nad in confs, f"the VM asks for {nad}, which no nad-*.yaml defines"
        assert confs[nad][0] == "nad-access-vlan.yaml"
        iface = interfaces[n["name"]]
        assert "bridge" in iface, "the podswitch NIC should use the bridge binding"
        # The guest's address comes from cloud-init, matched by this MAC.
        mac = iface["macAddress"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        net_data = yaml.safe_load(next(v for v in volumes.values() if "cloudInitNoCloud" in v)
                                  ["cloudInitNoCloud"]["networkData"])
        assert any(e.get("match", {}).get("macaddress") == mac for e in net_data["ethernets"].values())
        if confs[nad][1].get("macSpoofCheck"):
            assert confs[nad][1].get("capabilities", {}).get("mac"), \
                "spoof check on: the NAD must accept the VM's MAC (capabilities.mac)"


# --- consistency of the chart with the rest of the repository ----------------

def flatten(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key not in ("resources", "initResources", "nodeSelector",
                                                     "cni.capabilities", "securityContext.seccompProfile"):
            yield from flatten(v, key + ".")
        else:
            yield key


def test_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [k for k in flatten(values) if f"`{k}`" not in readme]
    assert not missing, f"charts/podswitch/README.md does not document: {missing}"
    assert f"Kubernetes {OLDEST_K8S.rsplit('.', 1)[0]}" in readme


def test_versions_agree():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={OLDEST_K8S}-0"
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S).group(1)
    assert chart["appVersion"] == version, "Chart.yaml appVersion is not the workspace version"


def test_dockerfile_builds_what_the_chart_runs():
    """The image cannot be built here (no container engine); check at least
    that it copies every workspace crate and installs the binaries the chart
    runs where the chart runs them."""
    dockerfile = (ROOT / "images" / "Dockerfile").read_text()
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", (ROOT / "Cargo.toml").read_text()).group(1)
    for m in re.findall(r'"([^"]+)"', members):
        assert re.search(rf"^COPY {re.escape(m)} {re.escape(m)}$", dockerfile, re.M), f"crate {m} is not copied"
    for b in ("switchd", "switchctl", "podswitch"):
        assert f"target/release/{b}" in dockerfile
    assert "COPY --from=build /out/ /usr/local/bin/" in dockerfile
    ds = (CHART / "templates" / "daemonset.yaml").read_text()
    assert "/usr/local/bin/switchd" in ds and "/usr/local/bin/podswitch" in ds


# --- the DaemonSet's switchd command, run for real (root) ---------------------

@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_daemonset_command_runs_switchd_as_rendered(topo, family):
    """Runs the rendered switchd container's command and arguments (only the
    image's /usr/local/bin and the host paths swapped for this checkout's and
    the test's) in a node namespace, with METRICS_HOST as the downward API
    would set it. Then: the probes' endpoints answer on the pod IP, the
    uplink and switches of switches.json exist, and the rendered conflist's
    plugin entry attaches a pod through the real CNI and host-local."""
    from conftest import SWITCHCTL, SWITCHD, nsexec, sh

    if not Path("/usr/lib/cni/host-local").exists():
        skip("the reference host-local IPAM is not installed (apt-get install containernetworking-plugins)")
    if shutil.which("curl") is None:
        skip("curl is not installed")
    node = topo.node()
    nic = f"{topo.short}up"
    nsexec(node.ns, "ip", "link", "add", nic, "numtxqueues", "1", "numrxqueues", "1", "type", "veth",
           "peer", "name", f"{nic}p", "numtxqueues", "1", "numrxqueues", "1")
    nsexec(node.ns, "ip", "link", "set", f"{nic}p", "up")
    # The node's address, which status.podIP is under hostNetwork.
    # (a veth, as a dummy interface needs a module not every kernel has).
    dummy = f"{topo.short}ip"
    nsexec(node.ns, "ip", "link", "add", dummy, "type", "veth", "peer", "name", f"{topo.short}iq")
    nsexec(node.ns, "ip", "link", "set", dummy, "up")
    if family == "ipv4":
        pod_ip, url_host = "10.213.0.1", "10.213.0.1"
        nsexec(node.ns, "ip", "addr", "add", "10.213.0.1/24", "dev", dummy)
    else:
        pod_ip, url_host = "fd42:5053::1", "[fd42:5053::1]"
        r = nsexec(node.ns, "ip", "addr", "add", "fd42:5053::1/64", "dev", dummy, "nodad", check=False)
        if r.returncode != 0:
            skip(f"no IPv6 in this kernel's namespaces: {r.stderr.strip()}")
    peers = ["10.213.0.1", "10.213.0.9"] if family == "ipv4" else ["fd42:5053::1", "fd42:5053::9"]
    objs = docs(template(any_helm(), "--set", "uplink.enabled=true", "--set", f"uplink.nic={nic}",
                         "--set", "overlay.enabled=true", "--set", f"overlay.underlay={dummy}",
                         "--set-json", 'overlay.vlans=[{"vlan":100},{"vlan":120,"vni":5120}]',
                         "--set-json", f"overlay.peers={json.dumps(peers)}",
                         "--set-json", 'uplink.trunk=[{"minID":200,"maxID":299},{"id":400}]',
                         "--set", "uplink.nativeVlan=10", "--set", "uplink.switch=storage",
                         "--set-json", 'switches=[{"name":"storage","agingSeconds":60,"maxFdbEntries":4096,'
                                       '"multicastSnooping":true,"multicastMembershipSeconds":90}]',
                         "--set", "defaultVlan=100", "--set", "ipam.subnet=10.214.0.0/24",
                         "--set", "pollCpu=none").stdout)
    data = by_kind(objs, "ConfigMap")["data"]
    switches_file = node.dir / "switches.json"
    switches_file.write_text(data["switches.json"])
    ds = by_kind(objs, "DaemonSet")
    c = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "switchd")
    port = c["readinessProbe"]["httpGet"]["port"]
    swap = {"--socket=": node.socket, "--state-dir=": node.state_dir, "--switches-file=": str(switches_file)}
    args = []
    for a in c["args"]:
        key = next((k for k in swap if a.startswith(k)), None)
        args.append(key + swap[key] if key else a)
    command = [x.replace("/usr/local/bin/switchd", str(SWITCHD)) for x in c["command"]]
    assert [e["name"] for e in c["env"]] == ["NODE_IP", "METRICS_HOST"]
    assert c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    log = open(node.log_path, "ab")
    proc = subprocess.Popen(["ip", "netns", "exec", node.ns, "env", "-i", "PATH=/usr/bin:/bin",
                             f"NODE_IP={pod_ip}", f"METRICS_HOST={pod_ip}", *command, *args],
                            stdout=log, stderr=subprocess.STDOUT)
    topo.procs.append(proc)
    node.proc = proc
    base = f"http://{url_host}:{port}"

    def get(path):
        return nsexec(node.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                      base + path, check=False).stdout

    deadline = time.monotonic() + 20
    while get("/readyz") != "200":
        assert proc.poll() is None, f"switchd exited ({proc.returncode}):\n{node.log()}"
        assert time.monotonic() < deadline, f"/readyz never answered 200:\n{node.log()}"
        time.sleep(0.1)
    assert get("/healthz") == "200"
    metrics = nsexec(node.ns, "curl", "-sf", base + "/metrics").stdout
    assert "podswitch_build_info" in metrics
    assert f'port="uplink-{nic}"' in metrics
    # The exec probe alternative and the CLI in the container work too.
    assert sh(str(SWITCHCTL), "--socket", node.socket, "status", check=False).returncode == 0
    # switches.json took effect.
    switches = {s["name"]: s for s in node.ok("GET", "/v1/switches")}
    assert switches["storage"]["agingSeconds"] == 60 and switches["storage"]["maxFdbEntries"] == 4096
    assert switches["storage"]["multicastSnooping"] is True
    assert switches["storage"]["multicastMembershipSeconds"] == 90
    # The overlay: one vxlan port trunking both VLANs, VLAN 120 on VNI
    # 5120 (VLAN 100 on VNI 100, the default), this node's address as its
    # source (${NODE_IP}), the other node as its only peer.
    o = node.ok("GET", "/v1/ports/overlay")
    assert o["trunk"] == [{"id": 100}, {"id": 120}] and o["status"]["attached"], o
    assert o["nic"]["ifname"] == "psovl0", o
    assert o["nic"]["vxlan"]["vni"] == [{"vlan": 120, "vni": 5120}], o
    assert o["nic"]["vxlan"]["peers"] == [peers[1]], o
    assert (o["nic"]["vxlan"]["local"], o["nic"]["vxlan"]["port"], o["nic"]["vxlan"]["underlay"]) == \
        (pod_ip, 4789, dummy), o
    # One kernel VXLAN netdev for every VNI: external (collect-metadata) mode.
    link = nsexec(node.ns, "ip", "-d", "link", "show", "psovl0-vx").stdout
    assert "vxlan" in link and "external" in link, link
    assert node.ok("GET", "/v1/ports/overlay/overlay")["vnis"] == {"100": 100, "120": 5120}
    uplink = node.ok("GET", f"/v1/ports/uplink-{nic}")
    assert uplink["nic"] == {"kind": "uplink", "ifname": nic} and uplink["switch"] == "storage"
    assert uplink["trunk"] == [{"minID": 200, "maxID": 299}, {"id": 400}] and uplink["vlan"] == 10
    assert uplink["status"]["attached"] is True
    # The default network's plugin entry, as the runtime would hand it over.
    conflist = json.loads(next(v for k, v in data.items() if k.endswith(".conflist")))
    conf = next(plugin_confs(conflist))
    conf["socket"] = node.socket
    conf["ipam"] = {**conf["ipam"], "dataDir": str(node.dir / "ipam")}
    pod = f"{topo.prefix}-pod"
    sh("ip", "netns", "add", pod)
    topo.namespaces.append(pod)
    env = {"CNI_CONTAINERID": f"{pod}-cid", "CNI_NETNS": f"/var/run/netns/{pod}", "CNI_IFNAME": "eth0",
           "CNI_PATH": f"/usr/lib/cni:{TARGET}", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0",
           "PATH": "/usr/bin:/bin"}

    def cni(command):
        return subprocess.run(["ip", "netns", "exec", node.ns, "env", "-i", f"CNI_COMMAND={command}",
                               *[f"{k}={v}" for k, v in env.items()], str(PLUGIN)],
                              input=json.dumps(conf), capture_output=True, text=True, timeout=60)

    r = cni("ADD")
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result["ips"][0]["address"].startswith("10.214.0.")
    ports = [p for p in node.ok("GET", "/v1/ports") if p.get("owner", {}).get("podName") == "web-0"]
    assert len(ports) == 1 and ports[0]["vlan"] == 100 and ports[0]["switch"] == "default"
    assert ports[0]["macSpoofCheck"] is True
    r = cni("DEL")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [p for p in node.ok("GET", "/v1/ports") if p.get("owner", {}).get("podName") == "web-0"]
