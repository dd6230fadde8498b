"""Generates and loads Python gRPC stubs for the Kubernetes CRI API
(runtime.v1), the API a kubelet uses to drive containerd.

The generated code is not checked in: it is tied to the protobuf runtime
that compiles it. `scripts/setup-containerd.sh` runs this file once; a test
calls `load()`, which regenerates the stubs if they are missing or were made
from another api.proto or grpcio-tools.

    python tests/integration/cri/stubs.py [--proto API_PROTO] [--out DIR]

The api.proto comes from Debian's golang-github-kubernetes-cri-api-dev. Its
gogoproto import and options only matter to Go code generation and are
dropped. The proto is compiled as package `podswitch_cri`, so the generated
modules import each other as `podswitch_cri.api_pb2` and never clash with
another `api_pb2` on sys.path.
"""
import argparse
import hashlib
import importlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("PODSWITCH_TEST_CACHE", "/opt/podswitch-test"))
PROTO = CACHE / "cri-api/usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"
OUT = CACHE / "cri-stubs"
PACKAGE = "podswitch_cri"
# The gogoproto import and file options; any other gogo use makes protoc fail
# loudly rather than being silently dropped.
GOGO = re.compile(r'\s*(import\s+"[^"]*gogo\.proto"|option\s+\(gogoproto\.)')


class StubsUnavailable(Exception):
    """Why the stubs cannot be had here (to print as a skip reason)."""


def _stamp(proto_text):
    import grpc_tools
    version = getattr(grpc_tools, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version
        version = dist_version("grpcio-tools")
    return hashlib.sha256(proto_text.encode()).hexdigest() + " grpcio-tools " + version


def generate(proto=PROTO, out=OUT):
    """Compiles api.proto into `out/podswitch_cri/`; returns that folder."""
    proto, out = Path(proto), Path(out)
    if not proto.exists():
        raise StubsUnavailable(f"{proto} is missing (run scripts/setup-containerd.sh)")
    try:
        import grpc  # noqa: F401  (the stubs need it at run time)
        import grpc_tools  # noqa: F401
    except ImportError as e:
        raise StubsUnavailable(f"grpcio/grpcio-tools are not installed ({e}); "
                               "run scripts/setup-containerd.sh") from e
    text = "".join(line for line in proto.read_text().splitlines(keepends=True)
                   if not GOGO.match(line))
    stamp = _stamp(text)
    pkg = out / PACKAGE
    if (pkg / "STAMP").exists() and (pkg / "STAMP").read_text() == stamp:
        return pkg
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        src = Path(tmp) / "src" / PACKAGE
        src.mkdir(parents=True)
        (src / "api.proto").write_text(text)
        built = Path(tmp) / "out"
        built.mkdir()
        r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{src.parent}",
                            f"--python_out={built}", f"--grpc_python_out={built}",
                            f"{PACKAGE}/api.proto"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise StubsUnavailable(f"protoc failed on {proto}: {r.stdout}{r.stderr}")
        (built / PACKAGE / "__init__.py").write_text("")
        (built / PACKAGE / "STAMP").write_text(stamp)
        # Swap the folder in whole, so a concurrent reader never sees half of it.
        old = Path(tmp) / "old"
        if pkg.exists():
            pkg.rename(old)
        (built / PACKAGE).rename(pkg)
    return pkg


def load(proto=PROTO, out=OUT):
    """Returns (api_pb2, api_pb2_grpc); raises StubsUnavailable with the reason."""
    generate(proto, out)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module(f"{PACKAGE}.api_pb2")
        pb2_grpc = importlib.import_module(f"{PACKAGE}.api_pb2_grpc")
    except ImportError as e:
        raise StubsUnavailable(f"the generated CRI stubs in {out} do not import: {e}") from e
    return pb2, pb2_grpc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proto", default=PROTO)
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args()
    try:
        pb2, _ = load(a.proto, a.out)
    except StubsUnavailable as e:
        sys.exit(f"cri stubs: {e}")
    print(f"cri stubs: {Path(pb2.__file__).parent}")


if __name__ == "__main__":
    main()
