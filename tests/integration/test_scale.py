"""Scale through the real CNI plugin: hundreds of pods on one switchd at its
default settings (no --umem-frames), reachability pod0 <-> every pod, and
forwarding that survives heavy ADD/DEL churn. Real namespaces, real switchd,
the real podswitch plugin and the reference host-local IPAM.

Slow (minutes on a 2-core machine): every ping is bounded (-c 1 -W 1, three
tries per target and direction) and runs with limited parallelism.
"""
import os
import time
from concurrent.futures import ThreadPoolExecutor

from cnihelp import (NetCni, Timer, cni_add_all, cni_del_all, describe, leaks, make_pods,
                     ping_matrix, port_summary)

SUBNET = "10.68.0.0/23"  # 510 usable addresses: room for 250 pods


def reachability_report(what, node, src, targets, fwd, rev):
    ports, unattached, drops = port_summary(node)
    reached = len(targets) - len(set(p.ns for p in fwd) | set(p.ns for p in rev))
    lines = [f"{what}: {reached} of {len(targets)} pods reachable both ways from {src.ns.split('-', 1)[1]} "
             f"({src.ip}); {len(ports)} ports, {len(unattached)} not attached, drops {drops}"]
    if fwd:
        lines.append(f"{len(fwd)} pods did not answer pod0's ping: {describe(fwd)}")
    if rev:
        lines.append(f"{len(rev)} pods could not ping pod0: {describe(rev)}")
    if unattached:
        lines.append(f"not attached: {unattached}")
    return "\n".join(lines), drops, unattached


def test_250_pods_reach_each_other(topo, capsys):
    n = int(os.environ.get("PODSWITCH_SCALE_PODS", "250"))
    t = Timer(capsys)
    node = topo.node().start()
    cni = NetCni(topo, node, subnet=SUBNET)
    pods = make_pods(topo, [f"p{i}" for i in range(n)])
    t.mark(f"{n} pod namespaces made")
    errors = cni_add_all(cni, pods, workers=4)
    t.mark(f"{n} CNI ADDs done ({len(errors)} failed)")
    assert not errors, f"{len(errors)} ADDs failed: {errors}"
    assert len(cni.allocations()) == n and len(set(p.ip for p in pods)) == n

    pod0, others = pods[0], pods[1:]
    fwd, rev = ping_matrix(pod0, others, workers=8)
    t.mark("pings done")
    msg, drops, unattached = reachability_report(f"{n} pods", node, pod0, others, fwd, rev)
    t.say(msg.splitlines()[0])
    t.say("buffer/ring drops (all ports): "
          + ", ".join(f"{r} {drops.get(r, 0)}" for r in ("no-buffer", "rx-overrun", "tx-full")))

    errors = cni_del_all(cni, pods, workers=4)
    t.mark(f"{n} CNI DELs done ({len(errors)} failed)")
    left = leaks(node, cni)
    # Reachability is the point of the test: report it first, then the rest.
    all_reached = not fwd and not rev
    assert all_reached, msg
    assert not unattached, msg
    assert not errors, f"{len(errors)} DELs failed: {errors}"
    assert left == {"veths": [], "ipam": [], "ports": []}, f"leaked after DEL of all pods: {left}"


def test_churn_keeps_forwarding(topo, capsys):
    residents_n = int(os.environ.get("PODSWITCH_SCALE_RESIDENTS", "100"))
    cycles = int(os.environ.get("PODSWITCH_SCALE_CYCLES", "1000"))
    t = Timer(capsys)
    node = topo.node().start()
    cni = NetCni(topo, node, subnet=SUBNET)
    residents = make_pods(topo, [f"r{i}" for i in range(residents_n)])
    errors = cni_add_all(cni, residents, workers=4)
    assert not errors, f"{len(errors)} ADDs failed: {errors}"
    t.mark(f"{residents_n} resident pods added")
    pod0, others = residents[0], residents[1:]
    # Before churn: a baseline, so that a failure after it is clearly the churn's.
    fwd0, rev0 = ping_matrix(pod0, others, workers=8)
    before, _, _ = reachability_report("before churn", node, pod0, others, fwd0, rev0)
    t.say(before.splitlines()[0])
    t.mark("baseline pings done")

    # Churn: ADD then DEL of an extra pod, `cycles` times, in two lanes that
    # each rotate over their own few namespaces (every cycle a new container ID).
    extra = make_pods(topo, [f"x{i}" for i in range(4)])
    lanes = [extra[0::2], extra[1::2]]
    failures = []
    t0 = time.monotonic()

    def lane(k):
        for i in range(k, cycles, len(lanes)):
            p = lanes[k][(i // len(lanes)) % len(lanes[k])]
            cid = f"{p.cid}-{i}"
            rc, out, err = cni.run("ADD", cid, p.netns)
            if rc != 0:
                failures.append((i, "ADD", out, err[-300:]))
            rc, out, err = cni.run("DEL", cid, p.netns)
            if rc != 0:
                failures.append((i, "DEL", out, err[-300:]))
            if len(failures) > 10:
                return

    with ThreadPoolExecutor(len(lanes)) as ex:
        list(ex.map(lane, range(len(lanes))))
    churn_s = time.monotonic() - t0
    t.mark(f"{cycles} ADD/DEL cycles in {churn_s:.1f}s ({cycles / churn_s:.1f} cycles/s)")
    assert not failures, f"churn failed: {failures[:10]}"

    fwd, rev = ping_matrix(pod0, others, workers=8)
    t.mark("post-churn pings done")
    msg, drops, unattached = reachability_report(f"after {cycles} churn cycles", node, pod0, others, fwd, rev)
    t.say(msg.splitlines()[0])
    t.say("buffer/ring drops (all ports): "
          + ", ".join(f"{r} {drops.get(r, 0)}" for r in ("no-buffer", "rx-overrun", "tx-full")))
    ports = node.ok("GET", "/v1/ports")
    extra_ports = sorted(p["id"] for p in ports if p["owner"]["containerID"] not in {r.cid for r in residents})
    allocations = len(cni.allocations())

    errors = cni_del_all(cni, residents, workers=4)
    left = leaks(node, cni)
    t.mark("all resident pods deleted")
    # Reachability is the point of the test: report it first, then the rest.
    all_reached = not fwd and not rev
    assert all_reached, f"{msg}\n(before churn: {before})"
    assert not unattached, msg
    assert not extra_ports and len(ports) == residents_n, f"churn left {len(extra_ports)} extra ports: {extra_ports}"
    assert allocations == residents_n, f"churn leaked {allocations - residents_n} IPAM allocations"
    assert not errors, f"{len(errors)} DELs failed: {errors}"
    assert left == {"veths": [], "ipam": [], "ports": []}, f"leaked after DEL of all pods: {left}"
