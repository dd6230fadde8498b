// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// podswitch's XDP program: one instance is attached to every netdev that is
// a switch port. It looks up the port slot of the ingress interface and
// redirects the frame into the AF_XDP socket of that slot and receive queue
// (each poll thread owns one queue of every port). A netdev that is not (or
// no longer) a port, or a queue without a socket, drops: a switch port never
// leaks frames into the host's stack.
//
// The program is frags-aware ("xdp.frags"): it only reads metadata, so a
// multi-buffer (jumbo) frame is redirected whole, and a veth or NIC with an
// MTU above one page accepts it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_PORTS 4096
// Queues per port that can have a socket (the most poll threads).
#define MAX_QUEUES 64

// key: slot * MAX_QUEUES + rx queue index
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_PORTS * MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} XSKS SEC(".maps");

// ifindex -> port slot (the XSKS key)
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} PORTS SEC(".maps");

// slot -> frames that arrived on a queue of the port without a socket
// (e.g. a VMM that opened more tap queues than switchd has poll threads)
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, __u64);
} NOSOCK SEC(".maps");

SEC("xdp.frags")
int podswitch_xdp(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *slot = bpf_map_lookup_elem(&PORTS, &ifindex);
	__u32 queue = ctx->rx_queue_index;
	__u64 *lost;
	long act = XDP_DROP;

	if (!slot)
		return XDP_DROP;
	// A queue without a socket: the redirect's fallback action (DROP).
	if (queue < MAX_QUEUES)
		act = bpf_redirect_map(&XSKS, *slot * MAX_QUEUES + queue, XDP_DROP);
	if (act != XDP_REDIRECT) {
		lost = bpf_map_lookup_elem(&NOSOCK, slot);
		if (lost)
			*lost += 1;
	}
	return act;
}

char _license[] SEC("license") = "Dual BSD/GPL";
