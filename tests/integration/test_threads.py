"""Several poll threads (`switchd --poll-cpus`): each serves its own queue of
every port, with its own UMEM. Real namespaces, pods added through the real
CNI plugin (which gives pod veths one queue per poll thread), real AF_XDP.

Checks: the queue count reaches the pods; traffic spreads over the threads;
flows are not reordered; a single-queue port is still reached from every
thread (hand-off); a rate limit holds across threads; counters sum."""
import json
import os
import subprocess
import time

import pytest

from conftest import nsexec
from test_cni import Cni, PodNs
from test_qos_security import IPERF_PORT, need_iperf3, received_bps


def two_cpus():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs for two pinned poll threads")


def rx_queues(pod):
    return len([q for q in nsexec(pod.ns, "ls", "/sys/class/net/eth0/queues").stdout.split() if q.startswith("rx-")])


def iperf(topo, client, server_ip, server_ns, seconds, extra=(), port=IPERF_PORT):
    need_iperf3()
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    topo.procs.append(srv)
    time.sleep(0.4)
    r = nsexec(client.ns, "timeout", str(seconds + 15), "iperf3", "-c", server_ip, "-p", str(port),
               "-t", str(seconds), "-J", *extra, timeout=seconds + 20)
    srv.wait(timeout=10)
    return json.loads(r.stdout)


@pytest.fixture
def two_threads(topo):
    two_cpus()
    node = topo.node().start("--poll-cpus", "0-1")
    return node, Cni(topo, node, vlan=100)


def test_two_threads_serve_two_queues_and_flows_stay_in_order(topo, two_threads):
    node, cni = two_threads
    info = node.ok("GET", "/v1/datapath")
    assert info["pollThreads"] == 2 and info["pollCpus"] == [0, 1], info
    pods = [PodNs(topo, f"q{i}") for i in range(4)]
    for p in pods:
        cni.add(p)
    idle = PodNs(topo, "idle")
    idle_port = cni.add(idle)["interfaces"][0]["name"]
    assert all(rx_queues(p) == 2 for p in pods), "the CNI gives pod veths one queue per poll thread"
    ports = node.ok("GET", "/v1/ports")
    assert all(p["status"]["queues"] == 2 for p in ports), [p["status"] for p in ports]
    a, b, c, d = pods
    assert a.ping(b.addr()) and c.ping(d.addr())
    sent_to_idle = node.ok("GET", f"/v1/ports/{idle_port}")["stats"]["txPackets"]
    # Two UDP flows at once, several streams each so both queues carry some.
    import threading
    res = {}

    def run(name, cl, sv, port):
        res[name] = iperf(topo, cl, sv.addr(), sv.ns, 4, ("-u", "-b", "100M", "-l", "1200", "-P", "4"), port)
    t1 = threading.Thread(target=run, args=("ab", a, b, IPERF_PORT))
    t2 = threading.Thread(target=run, args=("cd", c, d, IPERF_PORT + 1))
    t1.start(), t2.start()
    t1.join(60), t2.join(60)
    for name, rep in res.items():
        s = rep["end"]["sum"]
        ooo = sum(st["udp"].get("out_of_order", 0) for st in rep["end"]["streams"])
        print(f"flow {name}: {s['packets']} datagrams, {s['lost_percent']:.2f}% lost, {ooo} out of order")
        assert ooo == 0, f"flow {name} was reordered: {ooo}"
        assert s["packets"] > 1000
    assert set(res) == {"ab", "cd"}
    # Each thread's table knows what the other learned: the flows' unicast
    # is not flooded to a bystander on the VLAN.
    flooded = node.ok("GET", f"/v1/ports/{idle_port}")["stats"]["txPackets"] - sent_to_idle
    assert flooded < 100, f"{flooded} frames of the two flows were flooded to an idle pod"
    macs = {e["mac"] for e in node.ok("GET", "/v1/switches/default/fdb")}
    assert len(macs) >= 4, macs
    threads = node.ok("GET", "/v1/datapath")["threads"]
    print("threads:", [(t["index"], t["rxPackets"], t["txPackets"], t["handoffOut"]) for t in threads])
    assert all(t["rxPackets"] > 100 for t in threads), f"traffic should reach both threads: {threads}"
    # Port counters sum every thread's slot.
    st = {p["id"]: p["stats"] for p in node.ok("GET", "/v1/ports")}
    assert sum(s["rxPackets"] for s in st.values()) >= sum(t["rxPackets"] for t in threads) * 0.99
    out = node.ctl("datapath").stdout
    assert "THREAD" in out and "HANDOFF-OUT" in out, out


def test_single_queue_port_is_reached_from_every_thread(topo, two_threads):
    """A pod with 2 queues talks to a 1-queue port (like a tap or a NIC with
    one channel): frames decided on thread 1 are handed to thread 0."""
    node, cni = two_threads
    a = PodNs(topo, "mq")
    cni.add(a)
    single = topo.pod(node, "sq", "10.66.0.250/24")  # conftest veth: 1 queue each end
    sp = single.attach(vlan=100)
    assert sp["status"]["queues"] == 1, sp["status"]
    assert a.ping(single.addr)
    rep = iperf(topo, a, single.addr, single.ns, 3, ("-P", "4"))
    gbps = rep["end"]["sum_received"]["bits_per_second"] / 1e9
    print(f"TCP 2-queue pod -> 1-queue port, 4 streams: {gbps:.2f} Gbit/s")
    assert gbps > 0.05
    threads = node.ok("GET", "/v1/datapath")["threads"]
    assert threads[1]["handoffOut"] > 0 and threads[0]["handoffIn"] > 0, threads


def test_rate_limit_holds_across_threads(topo, two_threads):
    """The limiter lives on the port's home thread: 4 streams over 2 queues
    still share one 100 Mbit/s."""
    node, cni = two_threads
    src, dst = PodNs(topo, "rs"), PodNs(topo, "rd")
    cni.add(src)
    r = cni.add(dst)
    port = r["interfaces"][0]["name"]
    node.ok("PATCH", f"/v1/ports/{port}", {"qos": {"ingressRate": 100_000_000}})
    # UDP, 4 streams of 100 Mbit/s offered, received at the pod (-R: the
    # client in the limited pod receives).
    rep = iperf(topo, dst, src.addr(), src.ns, 4, ("-R", "-u", "-b", "100M", "-l", "1200", "-P", "4"))
    got = received_bps(rep)
    print(f"4 UDP streams (400 Mbit/s offered) into a 100 Mbit/s ingress limit with 2 threads: {got / 1e6:.1f} Mbit/s")
    assert got < 100e6 * 1.15, "the limit must hold across threads, not per thread"
    assert got > 100e6 * 0.7
    threads = node.ok("GET", "/v1/datapath")["threads"]
    assert sum(t["handoffOut"] for t in threads) > 0, f"frames from the other thread go to the home thread: {threads}"
    # TCP into the shaped port from both threads: one queue, the whole rate.
    rep = iperf(topo, dst, src.addr(), src.ns, 4, ("-R", "-P", "4"), port=IPERF_PORT + 1)
    got = received_bps(rep)
    print(f"4 TCP streams into a 100 Mbit/s ingress limit with 2 threads: {got / 1e6:.1f} Mbit/s")
    assert 100e6 * 0.85 < got < 100e6 * 1.05
    node.ok("PATCH", f"/v1/ports/{port}", {"qos": None})
    node.ok("PATCH", f"/v1/ports/{r['interfaces'][0]['name']}", {"qos": {"egressRate": 50_000_000}})
    rep = iperf(topo, dst, src.addr(), src.ns, 4, ("-P", "4"), port=IPERF_PORT + 2)
    got = rep["end"]["sum_received"]["bits_per_second"]
    print(f"4 TCP streams out of a 50 Mbit/s egress limit with 2 threads: {got / 1e6:.1f} Mbit/s")
    assert got < 50e6 * 1.15
    assert got > 50e6 * 0.3
