// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// podswitch's overlay: maps a switch port's 802.1Q VLANs onto VXLAN VNIs.
//
// An overlay port is a veth pair: switchd's end (`ovl0`, an ordinary
// trunk port of the switch, AF_XDP) and the far end (`ovl0-t`), plus one
// kernel VXLAN netdev in external (collect-metadata) mode (`ovl0-vx`). Two
// TC programs, attached with tcx links at ingress, do the rest:
//
// - podswitch_to_overlay, on ovl0-t: a frame the switch sends to the
//   overlay. Its VLAN (tag, or the port's untagged VLAN) picks the VNI and
//   the tag comes off. Known unicast goes to the one peer its MAC was
//   learned behind; broadcast, multicast and unknown unicast go to every
//   peer (head-end replication: a clone per peer).
// - podswitch_from_overlay, on ovl0-vx: a decapsulated frame. Only a listed
//   peer's frames are taken; the VNI picks the VLAN (an unmapped VNI is
//   dropped and counted), the source MAC is learned behind the peer, the
//   tag goes on and the frame goes to the switch through the veth.
//
// The kernel's VXLAN netdev does the encapsulation (its GSO, checksums and
// route lookup); these programs only choose VNI and peer, and count.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_PEERS 256
#define VLANS 4096
#define FDB_SIZE 65536

struct config {
	__u32 vxlan_ifindex; // the VXLAN netdev (frames to peers)
	__u32 veth_ifindex;  // the veth's far end (frames to the switch)
	__u32 npeers;        // PEERS[0..npeers] are the peers
	__u16 untagged_vlan; // the VLAN of untagged frames (0: none)
	__u8 v6;             // the underlay is IPv6
	__u8 ttl;            // outer TTL / hop limit
	__u32 local[4];      // the outer source (IPv4: host order in local[0])
	__u64 fdb_age_ns;    // a MAC learned longer ago than this floods
};

// A peer's underlay address: IPv4 in host order in a[0] (the order
// bpf_tunnel_key uses), IPv6 as its 16 bytes.
struct addr {
	__u32 a[4];
};

struct peer_stats {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 last_rx_ns;
};

struct fdb_key {
	__u8 mac[6];
	__u16 vlan;
};

struct fdb_val {
	struct addr peer;
	__u64 seen_ns;
};

// Indexes of STATS.
enum {
	DROP_UNMAPPED_VNI = 0, // from a peer, a VNI no VLAN maps to
	DROP_NOT_PEER,         // from an address that is not a peer
	DROP_UNMAPPED_VLAN,    // from the switch, a VLAN without a VNI
	DROP_UNTAGGED,         // from the switch, untagged with no untagged VLAN
	DROP_NO_PEERS,         // a flood with no peer to go to
	DROP_TX_ERROR,         // the kernel refused a tunnel key or redirect
	DROP_MALFORMED,        // too short, or a tag that would not come off/on
	FLOODS,                // frames replicated to every peer
	NSTATS,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} CONFIG SEC(".maps");

// VLAN -> VNI (0: unmapped)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VLANS);
	__type(key, __u32);
	__type(value, __u32);
} VLAN_VNI SEC(".maps");

// VNI -> VLAN
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, VLANS);
	__type(key, __u32);
	__type(value, __u16);
} VNI_VLAN SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PEERS);
	__type(key, __u32);
	__type(value, struct addr);
} PEERS SEC(".maps");

// peer -> its counters; also the set of peers a frame is taken from
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_PEERS);
	__type(key, struct addr);
	__type(value, struct peer_stats);
} PEER_STATS SEC(".maps");

// (MAC, VLAN) -> the peer it was last seen behind
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FDB_SIZE);
	__type(key, struct fdb_key);
	__type(value, struct fdb_val);
} FDB SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} STATS SEC(".maps");

// [0]: the last unmapped VNI; [1]: the last non-peer (IPv4, host order)
// or the first word of an IPv6 one (operators see who is knocking)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} LAST SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&STATS, &what);

	if (n)
		*n += 1;
}

static __always_inline void remember(__u32 slot, __u32 value)
{
	bpf_map_update_elem(&LAST, &slot, &value, BPF_ANY);
}

static __always_inline int drop(__u32 why)
{
	count(why);
	return TC_ACT_SHOT;
}

// Points the tunnel key at `peer` and counts the frame on it.
static __always_inline long to_peer(struct __sk_buff *skb, struct bpf_tunnel_key *key,
				    const struct config *cfg, const struct addr *peer, __u32 len)
{
	struct peer_stats *s;
	long err;

	if (cfg->v6) {
		key->remote_ipv6[0] = peer->a[0];
		key->remote_ipv6[1] = peer->a[1];
		key->remote_ipv6[2] = peer->a[2];
		key->remote_ipv6[3] = peer->a[3];
	} else {
		key->remote_ipv4 = peer->a[0];
	}
	err = bpf_skb_set_tunnel_key(skb, key, sizeof(*key), cfg->v6 ? BPF_F_TUNINFO_IPV6 : 0);
	if (err)
		return err;
	s = bpf_map_lookup_elem(&PEER_STATS, peer);
	if (s) {
		s->tx_packets += 1;
		s->tx_bytes += len;
	}
	return 0;
}

// One clone of a flood (bpf_loop's callback; `i` is the peer's index).
struct flood {
	struct __sk_buff *skb;
	struct bpf_tunnel_key key;
	__u32 len;
};

static long flood_one(__u32 i, void *ctx)
{
	struct flood *fl = ctx;
	__u32 zero = 0, k = i;
	struct config *cfg = bpf_map_lookup_elem(&CONFIG, &zero);
	struct addr *peer = bpf_map_lookup_elem(&PEERS, &k);

	if (!cfg || !peer)
		return 1;
	if (to_peer(fl->skb, &fl->key, cfg, peer, fl->len) ||
	    bpf_clone_redirect(fl->skb, cfg->vxlan_ifindex, 0))
		count(DROP_TX_ERROR);
	return 0;
}

SEC("classifier")
int podswitch_to_overlay(struct __sk_buff *skb)
{
	__u32 zero = 0, vid, len, i, n, tagged;
	struct config *cfg = bpf_map_lookup_elem(&CONFIG, &zero);
	struct bpf_tunnel_key key = {};
	struct fdb_key fk = {};
	struct fdb_val *fv;
	struct addr *peer;
	__u32 *vni;
	void *data, *end;
	__u8 *eth;

	if (!cfg)
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	if (data + ETH_HLEN > end)
		return drop(DROP_MALFORMED);
	vid = 0;
	tagged = 0;
	if (skb->vlan_present) {
		vid = skb->vlan_tci & 0x0fff;
		tagged = 1;
	} else if (((struct ethhdr *)eth)->h_proto == bpf_htons(ETH_P_8021Q)) {
		if (data + ETH_HLEN + 4 > end)
			return drop(DROP_MALFORMED);
		vid = bpf_ntohs(*(__be16 *)(eth + ETH_HLEN)) & 0x0fff;
		tagged = 1;
	}
	if (tagged && bpf_skb_vlan_pop(skb))
		return drop(DROP_MALFORMED);
	if (!vid) {
		vid = cfg->untagged_vlan;
		if (!vid)
			return drop(DROP_UNTAGGED);
	}
	vni = bpf_map_lookup_elem(&VLAN_VNI, &vid);
	if (!vni || !*vni)
		return drop(DROP_UNMAPPED_VLAN);

	key.tunnel_id = *vni;
	key.tunnel_ttl = cfg->ttl;
	if (cfg->v6) {
		key.local_ipv6[0] = cfg->local[0];
		key.local_ipv6[1] = cfg->local[1];
		key.local_ipv6[2] = cfg->local[2];
		key.local_ipv6[3] = cfg->local[3];
	} else {
		key.local_ipv4 = cfg->local[0];
	}
	len = skb->len;

	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	if (data + ETH_HLEN > end)
		return drop(DROP_MALFORMED);
	if (!(eth[0] & 1)) {
		__builtin_memcpy(fk.mac, eth, 6);
		fk.vlan = vid;
		fv = bpf_map_lookup_elem(&FDB, &fk);
		if (fv && bpf_ktime_get_ns() - fv->seen_ns < cfg->fdb_age_ns &&
		    bpf_map_lookup_elem(&PEER_STATS, &fv->peer)) {
			struct addr p = fv->peer;

			if (to_peer(skb, &key, cfg, &p, len))
				return drop(DROP_TX_ERROR);
			return bpf_redirect(cfg->vxlan_ifindex, 0);
		}
	}

	// Head-end replication: a clone to every peer but the last, which
	// takes the frame itself.
	if (cfg->npeers == 0)
		return drop(DROP_NO_PEERS);
	count(FLOODS);
	n = cfg->npeers;
	if (n > MAX_PEERS)
		n = MAX_PEERS;
	if (n > 1) {
		struct flood fl = { .skb = skb, .key = key, .len = len };

		bpf_loop(n - 1, flood_one, &fl, 0);
	}
	i = n - 1;
	peer = bpf_map_lookup_elem(&PEERS, &i);
	if (!peer || to_peer(skb, &key, cfg, peer, len))
		return drop(DROP_TX_ERROR);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

SEC("classifier")
int podswitch_from_overlay(struct __sk_buff *skb)
{
	__u32 zero = 0, vni, segs;
	struct config *cfg = bpf_map_lookup_elem(&CONFIG, &zero);
	struct bpf_tunnel_key key = {};
	struct peer_stats *s;
	struct addr from = {};
	struct fdb_key fk = {};
	struct fdb_val fv = {}, *old;
	__u16 *vlan;
	__u64 now;
	void *data, *end;
	__u8 *eth;

	if (!cfg)
		return TC_ACT_SHOT;
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), cfg->v6 ? BPF_F_TUNINFO_IPV6 : 0))
		return drop(DROP_MALFORMED);
	if (cfg->v6) {
		from.a[0] = key.remote_ipv6[0];
		from.a[1] = key.remote_ipv6[1];
		from.a[2] = key.remote_ipv6[2];
		from.a[3] = key.remote_ipv6[3];
	} else {
		from.a[0] = key.remote_ipv4;
	}
	s = bpf_map_lookup_elem(&PEER_STATS, &from);
	if (!s) {
		remember(1, from.a[0]);
		return drop(DROP_NOT_PEER);
	}
	vni = key.tunnel_id;
	vlan = bpf_map_lookup_elem(&VNI_VLAN, &vni);
	if (!vlan) {
		remember(0, vni);
		return drop(DROP_UNMAPPED_VNI);
	}
	now = bpf_ktime_get_ns();
	segs = skb->gso_segs;
	s->rx_packets += segs ? segs : 1;
	s->rx_bytes += skb->len;
	s->last_rx_ns = now;

	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	if (data + ETH_HLEN > end)
		return drop(DROP_MALFORMED);
	if (!(eth[6] & 1)) {
		__builtin_memcpy(fk.mac, eth + 6, 6);
		fk.vlan = *vlan;
		old = bpf_map_lookup_elem(&FDB, &fk);
		// Written at most once a second per MAC while it stays put.
		if (!old || old->peer.a[0] != from.a[0] || old->peer.a[1] != from.a[1] ||
		    old->peer.a[2] != from.a[2] || old->peer.a[3] != from.a[3] ||
		    now - old->seen_ns > 1000000000ULL) {
			fv.peer = from;
			fv.seen_ns = now;
			bpf_map_update_elem(&FDB, &fk, &fv, BPF_ANY);
		}
	}

	if (*vlan != cfg->untagged_vlan) {
		// The tag goes into the frame itself (not the skb's metadata,
		// which XDP on switchd's end would not see): 4 bytes of headroom,
		// the MACs move up, the tag goes between them and the EtherType.
		__u8 hdr[16];
		__u16 tci = *vlan;

		if (bpf_skb_change_head(skb, 4, 0))
			return drop(DROP_MALFORMED);
		if (bpf_skb_load_bytes(skb, 4, hdr, 12))
			return drop(DROP_MALFORMED);
		hdr[12] = 0x81;
		hdr[13] = 0x00;
		hdr[14] = tci >> 8;
		hdr[15] = tci & 0xff;
		if (bpf_skb_store_bytes(skb, 0, hdr, 16, 0))
			return drop(DROP_MALFORMED);
	}
	return bpf_redirect(cfg->veth_ifindex, 0);
}

char _license[] SEC("license") = "GPL";
