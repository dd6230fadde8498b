// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// podswitch's XDP program: one instance is attached to every netdev that is
// a switch port. It looks up the port slot of the ingress interface and
// redirects the frame into that slot's AF_XDP socket. A netdev that is not
// (or no longer) a port, or a slot without a socket, drops: a switch port
// never leaks frames into the host's stack.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_PORTS 4096

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_PORTS);
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

SEC("xdp")
int podswitch_xdp(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *slot = bpf_map_lookup_elem(&PORTS, &ifindex);

	if (!slot)
		return XDP_DROP;
	return bpf_redirect_map(&XSKS, *slot, XDP_DROP);
}

char _license[] SEC("license") = "Dual BSD/GPL";
