"""Python stubs for the Kubernetes CRI API (runtime.v1), so tests can talk to
a real container runtime the way a kubelet does. See `stubs.py`."""
