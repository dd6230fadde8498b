//! The forwarding pipeline: pure code from a received frame to a list of
//! egress ports with the tag edit each needs. No I/O, no clock, no locks:
//! the caller passes the snapshot, the switch's FDB, the per-port limiter
//! state it owns, and the time.
//!
//! Order: parse → ingress admin state → VLAN classification → MAC spoof
//! guard → IP guard → DHCP and router guards → outbound ACL → learn → look
//! up (both in the VLAN's filtering database: private VLANs share their
//! primary's; a known unicast to a port outside the frame's VLAN is a
//! private-VLAN drop) → storm control (for floods) → per egress port:
//! inbound ACL, and a mark that the port's ingress rate shapes the frame
//! (the caller queues it, shared by the senders' weights) → unicast or
//! flood within the VLAN (never back out the ingress port, never to a port
//! that is down or not in the VLAN; on a snooping switch, IP multicast only
//! to the group's members and the router ports, see `mcast`).

pub mod acl;
pub mod capture;
pub mod fdb;
pub mod ipguard;
pub mod mcast;
pub mod qos;
pub mod snapshot;
pub mod vlan;

#[cfg(test)]
mod proptests;

use crate::wire::ethernet::{self, ParseError, TagEdit, HEADER_LEN, TAG_LEN};
use crate::wire::ip::{self, L3};
use acl::Dir;
use fdb::{Fdb, Slot};
use podswitch_shared::model::MacAddr;
use qos::{default_burst_bits, shaper_queue_limit, Admit, TokenBucket};
use snapshot::{PortView, Snapshot, SwitchView};

/// Why a frame was dropped; each has a per-port counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Runt, truncated tag, multicast or zero source MAC.
    Malformed = 0,
    /// Not accepted by the port's VLAN role.
    Vlan = 1,
    /// Source MAC is not the port's MAC (macSpoofCheck).
    Spoof = 2,
    /// The port is administratively down.
    LinkDown = 3,
    /// No UMEM frame was free for a copy (a flood, a hand-off to another
    /// poll thread), or the hand-off ring to that thread was full.
    NoBuffer = 4,
    /// Over the port's rate limit.
    Qos = 5,
    /// Denied by an ACL rule or the ACL's default.
    Acl = 6,
    /// A DHCP server message from a port with the DHCP guard on.
    DhcpGuard = 7,
    /// A router advertisement or redirect from a port with the router guard on.
    RouterGuard = 8,
    /// Broadcast, multicast or unknown unicast over the port's storm limit.
    Storm = 9,
    /// Longer than the egress port's MTU (never truncated).
    Oversize = 10,
    /// The kernel could not hand a received frame to the port's socket:
    /// its fill ring was empty or its RX ring full (the poll thread did not
    /// keep up). Read from the socket's XDP_STATISTICS.
    RxOverrun = 11,
    /// The egress port's TX ring was full (the kernel had not sent what
    /// was queued: the receiving side is slower than the senders).
    TxFull = 12,
    /// Arrived on a queue of the port's NIC that has no socket (a VMM that
    /// opened more tap queues than switchd has poll threads). Counted by
    /// the XDP program, never by the pipeline.
    NoSocket = 13,
    /// An IPv4 source address not among the port's allowed IPs (ipSpoofCheck).
    IpSpoof = 14,
    /// An ARP sender address not among the port's allowed IPs.
    ArpSpoof = 15,
    /// An IPv6 source address not among the port's allowed IPs (nor `::`
    /// or the MAC's link-local address).
    Ipv6Spoof = 16,
    /// A neighbour advertisement (or DAD probe) for an address the port
    /// may not claim.
    NdSpoof = 17,
    /// A mirror copy for this port (a mirroring destination) that could
    /// not be made or queued: no free frame to spare, its TX ring full, or
    /// the hand-off ring to its poll thread full. Copies never wait.
    Mirror = 18,
    /// A unicast to a station that the private VLAN's rules keep from
    /// the sender (isolated to isolated, one community to another).
    Pvlan = 19,
}

impl DropReason {
    pub const COUNT: usize = 20;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::Vlan,
        DropReason::Spoof,
        DropReason::LinkDown,
        DropReason::NoBuffer,
        DropReason::Qos,
        DropReason::Acl,
        DropReason::DhcpGuard,
        DropReason::RouterGuard,
        DropReason::Storm,
        DropReason::Oversize,
        DropReason::RxOverrun,
        DropReason::TxFull,
        DropReason::NoSocket,
        DropReason::IpSpoof,
        DropReason::ArpSpoof,
        DropReason::Ipv6Spoof,
        DropReason::NdSpoof,
        DropReason::Mirror,
        DropReason::Pvlan,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Vlan => "vlan",
            DropReason::Spoof => "spoof",
            DropReason::LinkDown => "link-down",
            DropReason::NoBuffer => "no-buffer",
            DropReason::Qos => "qos",
            DropReason::Acl => "acl",
            DropReason::DhcpGuard => "dhcp-guard",
            DropReason::RouterGuard => "router-guard",
            DropReason::Storm => "storm",
            DropReason::Oversize => "oversize",
            DropReason::RxOverrun => "rx-overrun",
            DropReason::TxFull => "tx-full",
            DropReason::NoSocket => "no-socket",
            DropReason::IpSpoof => "ip-spoof",
            DropReason::ArpSpoof => "arp-spoof",
            DropReason::Ipv6Spoof => "ipv6-spoof",
            DropReason::NdSpoof => "nd-spoof",
            DropReason::Mirror => "mirror",
            DropReason::Pvlan => "pvlan",
        }
    }
}

/// One copy of the frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub slot: Slot,
    pub edit: TagEdit,
    /// The egress port has an ingress rate: the frame goes to the port's
    /// shaping queue on its home thread (`PortView::home`; handed there if
    /// that is another poll thread), which sends it when tokens allow.
    pub limit: Option<Limited>,
}

/// What the home thread needs to queue a frame for a rate-limited port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The sending port and its minimum-bandwidth weight.
    pub from: Slot,
    pub weight: u32,
}

/// What the pipeline decided for a frame it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub vlan: u16,
    /// The filtering database the source MAC was learned in (`vlan`, or
    /// its primary for a private VLAN): what the other poll threads learn.
    pub fid: u16,
    /// The frame carries a 4-byte 802.1Q tag now (egress edits need this).
    pub tagged: bool,
    /// The frame was flooded (unknown unicast, broadcast or multicast).
    pub flooded: bool,
    /// What learning its source MAC did (the caller announces new and
    /// moved MACs to the other poll threads).
    pub learned: fdb::Learned,
    /// The source MAC.
    pub src: MacAddr,
    /// The port's own MAC moved here from another port: a VM that moved
    /// (live migration) announced itself.
    pub handover: bool,
    /// An IGMP/MLD message on a snooping switch: the caller sends its
    /// events (`mcast::frame_events`) to the snooper.
    pub snooped: bool,
}

/// The rate limiters of one port: mutable, owned by the poll thread.
#[derive(Debug, Default)]
pub struct PortLimits {
    /// Frames from the pod (qos.egressRate): the caller *shapes* with it
    /// (queues frames until tokens arrive, as TCP needs) before `forward`.
    pub egress: Option<TokenBucket>,
    /// Frames to the pod (qos.ingressRate): the caller *shapes* with it
    /// too, from a fair queue that shares it by the senders' weights.
    pub ingress: Option<TokenBucket>,
    /// Flooded frames from the pod per second (stormLimit).
    pub storm: Option<TokenBucket>,
}

/// The limiters of the ports homed on one poll thread, indexed by slot,
/// kept in step with the snapshot. A port's limiters live on its home
/// thread only (`PortView::home`), so a limit holds however many threads
/// its frames arrive on; the other threads hand those frames over.
#[derive(Debug, Default)]
pub struct Limits {
    ports: Vec<PortLimits>,
    generation: u64,
    /// The poll thread these limiters (and the counters it writes) belong to.
    pub thread: usize,
}

fn sync_bucket(b: &mut Option<TokenBucket>, want: Option<(u64, u64)>, now: u64) {
    match (b.as_mut(), want) {
        (_, None) => *b = None,
        (None, Some((r, bu))) => *b = Some(TokenBucket::new(r, bu, now)),
        (Some(x), Some((r, bu))) if x.rate() != r || x.burst() != bu => x.reconfigure(r, bu, now),
        _ => {}
    }
}

impl Limits {
    /// Applies the snapshot's QoS settings, keeping the state of limiters
    /// whose settings did not change (a live PATCH does not reset them).
    /// After the generation it saw last, only the changed ports are looked
    /// at (a typed change); otherwise every port.
    pub fn sync(&mut self, snap: &Snapshot, now: u64) {
        if snap.generation == self.generation && self.ports.len() == snap.ports.len() {
            return;
        }
        let seen = std::mem::replace(&mut self.generation, snap.generation);
        self.ports
            .resize_with(snap.ports.len(), PortLimits::default);
        match snap.changed_since(seen) {
            Some(slots) => {
                for &s in slots {
                    self.sync_port(snap, s as usize, now);
                }
            }
            None => {
                for i in 0..self.ports.len() {
                    self.sync_port(snap, i, now);
                }
            }
        }
    }

    fn sync_port(&mut self, snap: &Snapshot, i: usize, now: u64) {
        let thread = self.thread;
        let Some(l) = self.ports.get_mut(i) else {
            return;
        };
        let Some(p) = snap.ports[i].as_ref().filter(|p| p.home == thread) else {
            *l = PortLimits::default();
            return;
        };
        let q = p.qos.clone().unwrap_or_default();
        let pair = |r: Option<u64>, b: Option<u64>| {
            r.map(|r| (r, b.unwrap_or_else(|| default_burst_bits(r))))
        };
        sync_bucket(&mut l.egress, pair(q.egress_rate, q.egress_burst), now);
        sync_bucket(
            &mut l.storm,
            p.storm_limit.map(|n| (n as u64, n.max(1) as u64)),
            now,
        );
        sync_bucket(&mut l.ingress, pair(q.ingress_rate, q.ingress_burst), now);
    }

    /// Limiters for the poll thread `thread`.
    pub fn new(thread: usize) -> Self {
        Limits {
            thread,
            ..Limits::default()
        }
    }

    fn get(&mut self, slot: Slot) -> Option<&mut PortLimits> {
        self.ports.get_mut(slot as usize)
    }

    /// The to-port shaper's bucket of a port (homed here), if it has an
    /// ingress rate.
    pub fn ingress(&mut self, slot: Slot) -> Option<&mut TokenBucket> {
        self.get(slot).and_then(|l| l.ingress.as_mut())
    }

    /// (frames, bits) a port's to-port shaping queue holds.
    pub fn ingress_queue_limit(&mut self, slot: Slot) -> (usize, u64) {
        self.ingress(slot)
            .map(|b| shaper_queue_limit(b.rate(), b.burst()))
            .unwrap_or((0, 0))
    }

    /// The egress shaper's bucket of a port, if it has an egress rate.
    pub fn egress(&mut self, slot: Slot) -> Option<&mut TokenBucket> {
        self.get(slot).and_then(|l| l.egress.as_mut())
    }

    /// How many frames a port's egress shaping queue holds: 100 ms at its
    /// rate in full-size frames, within 64..=4096.
    pub fn egress_queue_limit(&mut self, slot: Slot) -> usize {
        self.egress(slot)
            .map(|b| (b.rate() / 8 / 10 / 1514) as usize)
            .unwrap_or(0)
            .clamp(64, 4096)
    }
}

/// Decides where the frame received on `ingress` goes. `out` is cleared
/// and filled with the egress ports; an empty `out` with `Ok` means the
/// frame is consumed (e.g. its destination sits behind the ingress port,
/// or every egress port refused it and counted why). `frame` may be a
/// multi-buffer frame's first fragment: every header the pipeline reads
/// is in it.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    snap: &Snapshot,
    sw: &SwitchView,
    fdb: &mut Fdb,
    limits: &mut Limits,
    ingress: &PortView,
    frame: &[u8],
    now: u64,
    out: &mut Vec<Egress>,
) -> Result<Decision, DropReason> {
    out.clear();
    let hdr = ethernet::parse(frame).map_err(|e| match e {
        ParseError::Runt | ParseError::TruncatedTag | ParseError::BadSource => {
            DropReason::Malformed
        }
    })?;
    if !ingress.up {
        return Err(DropReason::LinkDown);
    }
    let vlan = ingress.vlan.classify(hdr.tag).ok_or(DropReason::Vlan)?;
    if ingress.spoof_check && ingress.mac.is_some_and(|m| m != hdr.src) {
        return Err(DropReason::Spoof);
    }
    let l3_off = HEADER_LEN + if hdr.tag.in_frame() { TAG_LEN } else { 0 };

    let mut l3_cache: Option<Option<L3>> = None;
    let mut l3 = || {
        *l3_cache
            .get_or_insert_with(|| ip::parse(hdr.ethertype, frame.get(l3_off..).unwrap_or(&[])))
    };
    if let Some(g) = &ingress.ip_guard {
        let p = l3();
        g.check(
            hdr.ethertype,
            frame.get(l3_off..).unwrap_or(&[]),
            p.as_ref(),
        )?;
    }
    if ingress.dhcp_guard || ingress.router_guard {
        if let Some(p) = l3() {
            if ingress.dhcp_guard && ip::is_dhcp_server(&p) {
                return Err(DropReason::DhcpGuard);
            }
            if ingress.router_guard && ip::is_router_message(&p) {
                return Err(DropReason::RouterGuard);
            }
        }
    }
    if !ingress.acl.is_open() {
        let p = if ingress.acl.needs_l3() { l3() } else { None };
        if !ingress.acl.allows(Dir::Outbound, &hdr, p.as_ref()) {
            return Err(DropReason::Acl);
        }
    }
    let fid = sw.fids.of(vlan);
    let learned = fdb.learn(fid, hdr.src, ingress.slot, now);

    let known = if hdr.dst.is_multicast() {
        None
    } else {
        fdb.lookup(fid, hdr.dst, now)
    };
    let target = known.and_then(|s| snap.port(s));
    if let Some(t) = target {
        // Shared learning found the station; the private VLAN's rules say
        // whether this frame may reach it. Flooding instead would leak it.
        if t.slot != ingress.slot && t.up && !t.vlan.carries(vlan) && sw.fids.is_private(vlan) {
            return Err(DropReason::Pvlan);
        }
    }
    let flooded = target.is_none();
    if flooded {
        if let Some(b) = limits.get(ingress.slot).and_then(|l| l.storm.as_mut()) {
            if b.admit(1, now) == Admit::No {
                return Err(DropReason::Storm);
            }
        }
    }
    let weight = ingress
        .qos
        .as_ref()
        .and_then(|q| q.min_bandwidth_weight)
        .unwrap_or(1);
    let mut push = |p: &PortView| {
        if p.slot == ingress.slot || !p.up || !p.vlan.carries(vlan) {
            return;
        }
        if !p.acl.is_open() {
            let l = if p.acl.needs_l3() { l3() } else { None };
            if !p.acl.allows(Dir::Inbound, &hdr, l.as_ref()) {
                p.counters.t(limits.thread).count_drop(DropReason::Acl);
                return;
            }
        }
        // Shaped, not policed: the caller queues the frame for the port.
        let limit = p
            .qos
            .as_ref()
            .is_some_and(|q| q.ingress_rate.is_some())
            .then_some(Limited {
                from: ingress.slot,
                weight,
            });
        out.push(Egress {
            slot: p.slot,
            edit: p.vlan.egress(vlan),
            limit,
        });
    };
    // Multicast snooping: which ports of the VLAN an IP multicast frame
    // goes to, by the table the snooper published (loaded only for a
    // report or data to a tracked group). The table is per filtering
    // database: a private VLAN's secondaries share their primary's, and
    // `push` still applies the private VLAN's rules.
    let class = match (&sw.mcast, target) {
        (Some(m), None) if hdr.dst.is_multicast() => Some((
            m,
            mcast::classify(hdr.ethertype, frame.get(l3_off..).unwrap_or(&[])),
        )),
        _ => None,
    };
    let snooped =
        class.is_some_and(|(_, c)| matches!(c, mcast::Class::Query | mcast::Class::Report));
    let table = class
        .filter(|(_, c)| matches!(c, mcast::Class::Report | mcast::Class::Data(_)))
        .map(|(m, c)| (m, c, m.shared.table.load()));
    // (selection, whether a port left out counts as filtered: data only).
    let selection = table.as_ref().map(|(m, class, t)| {
        let gen_of = |s| snap.port(s).map(|p| p.flush_gen);
        let sel = mcast::select(t, *class, fid, &m.uplinks, m.flood_unknown, gen_of, now);
        (sel, matches!(class, mcast::Class::Data(_)))
    });
    match target {
        Some(p) => push(p),
        None => {
            let mut filtered = 0;
            for p in sw.ports.iter().filter_map(|s| snap.port(*s)) {
                if let Some((sel, data)) = selection {
                    if !sel.admits(p.slot, p.flush_gen, now) {
                        if data && p.slot != ingress.slot && p.up && p.vlan.carries(vlan) {
                            filtered += 1;
                        }
                        continue;
                    }
                }
                push(p);
            }
            if let (Some((m, _, _)), true) = (&table, filtered > 0) {
                m.shared.counters.add_filtered(limits.thread, filtered);
            }
        }
    }
    Ok(Decision {
        vlan,
        fid,
        tagged: hdr.tag.in_frame(),
        flooded,
        learned,
        src: hdr.src,
        handover: matches!(learned, fdb::Learned::Moved { .. }) && ingress.mac == Some(hdr.src),
        snooped,
    })
}

#[cfg(test)]
mod tests {
    use super::fdb::Fdb;
    use super::vlan::{PortVlan, VlanSet};
    use super::*;
    use crate::wire::ethernet::tests::{tagged, tagged_with, untagged, A, B};
    use crate::wire::ethernet::TPID_8021AD;
    use podswitch_shared::model::MacAddr;
    use std::sync::Arc;

    const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
    const BCAST: [u8; 6] = [0xff; 6];
    const MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 1];
    const SEC: u64 = 1_000_000_000;

    fn access(slot: Slot, vid: u16) -> PortView {
        PortView::plain(slot, PortVlan::Access(vid))
    }

    fn trunk(slot: Slot, vids: &[u16], native: Option<u16>) -> PortView {
        let mut allowed = VlanSet::default();
        vids.iter().for_each(|v| allowed.insert(*v));
        PortView {
            vlan: PortVlan::Trunk { allowed, native },
            ..access(slot, 1)
        }
    }

    struct World {
        snap: Snapshot,
        fdb: Fdb,
        limits: Limits,
    }

    impl World {
        fn new(ports: Vec<PortView>) -> Self {
            let slots = ports.iter().map(|p| p.slot).collect();
            let max = ports.iter().map(|p| p.slot).max().unwrap_or(0) as usize;
            let mut table = vec![None; max + 1];
            for p in ports {
                let s = p.slot as usize;
                table[s] = Some(p);
            }
            World {
                snap: Snapshot {
                    generation: 1,
                    ports: table,
                    switches: vec![SwitchView {
                        name: "default".into(),
                        ports: slots,
                        ..SwitchView::default()
                    }],
                    changed: None,
                },
                fdb: Fdb::new(300, 100),
                limits: Limits::default(),
            }
        }

        fn send(
            &mut self,
            ingress: Slot,
            frame: &[u8],
            now: u64,
        ) -> Result<(Decision, Vec<Egress>), DropReason> {
            let mut out = Vec::new();
            let p = self.snap.port(ingress).unwrap().clone();
            self.limits.sync(&self.snap, now);
            let d = forward(
                &self.snap,
                &self.snap.switches[0],
                &mut self.fdb,
                &mut self.limits,
                &p,
                frame,
                now,
                &mut out,
            )?;
            Ok((d, out))
        }

        fn slots(&mut self, ingress: Slot, frame: &[u8], now: u64) -> Vec<Slot> {
            let (_, out) = self.send(ingress, frame, now).unwrap();
            let mut s: Vec<Slot> = out.iter().map(|e| e.slot).collect();
            s.sort();
            s
        }
    }

    fn eg(slot: Slot, edit: TagEdit) -> Egress {
        Egress {
            slot,
            edit,
            limit: None,
        }
    }

    #[test]
    fn broadcast_floods_only_within_vlan_and_not_back() {
        let mut w = World::new(vec![
            access(0, 10),
            access(1, 10),
            access(2, 20),
            access(3, 10),
        ]);
        assert_eq!(w.slots(0, &untagged(BCAST, A, b"arp"), 0), vec![1, 3]);
        assert_eq!(
            w.slots(2, &untagged(BCAST, C, b"arp"), 0),
            Vec::<Slot>::new()
        );
        assert_eq!(
            w.slots(0, &untagged(MCAST, A, b"m"), 0),
            vec![1, 3],
            "multicast floods in VLAN"
        );
    }

    #[test]
    fn unknown_unicast_floods_then_learned_goes_to_one_port() {
        let mut w = World::new(vec![access(0, 10), access(1, 10), access(2, 10)]);
        let (d, _) = w.send(0, &untagged(B, A, b"1"), 0).unwrap();
        assert!(d.flooded);
        assert_eq!(
            w.slots(0, &untagged(B, A, b"1"), 0),
            vec![1, 2],
            "unknown unicast floods"
        );
        // B answers from port 1: learned; A is known at port 0.
        assert_eq!(w.slots(1, &untagged(A, B, b"2"), 0), vec![0]);
        assert_eq!(w.slots(0, &untagged(B, A, b"3"), 0), vec![1]);
        let (d, _) = w.send(0, &untagged(B, A, b"3"), 0).unwrap();
        assert!(!d.flooded);
    }

    #[test]
    fn never_back_out_ingress() {
        let mut w = World::new(vec![access(0, 10), access(1, 10)]);
        w.slots(0, &untagged(BCAST, B, b""), 0); // learn B at port 0
        assert_eq!(w.slots(0, &untagged(B, A, b""), 0), Vec::<Slot>::new());
    }

    #[test]
    fn learned_mac_on_other_vlan_is_not_used() {
        let mut w = World::new(vec![access(0, 10), access(1, 20), access(2, 10)]);
        w.slots(1, &untagged(BCAST, B, b""), 0); // B learned on VLAN 20
                                                 // A on VLAN 10 sends to B: unknown on VLAN 10, floods to port 2 only.
        assert_eq!(w.slots(0, &untagged(B, A, b""), 0), vec![2]);
    }

    #[test]
    fn tagged_on_access_dropped() {
        let mut w = World::new(vec![access(0, 10), access(1, 10)]);
        assert_eq!(
            w.send(0, &tagged(BCAST, A, 10, b""), 0),
            Err(DropReason::Vlan)
        );
        assert_eq!(
            w.send(0, &tagged(BCAST, A, 20, b""), 0),
            Err(DropReason::Vlan)
        );
        // Double tagging (S-tag outside, C-tag inside) is dropped too.
        let mut qinq = tagged_with(BCAST, A, TPID_8021AD, 10, b"");
        qinq.splice(16..18, [0x81, 0x00, 0x00, 0x14, 0x08, 0x00]);
        assert_eq!(w.send(0, &qinq, 0), Err(DropReason::Vlan));
        // A priority tag is untagged: accepted, and popped on the way out.
        let (d, out) = w.send(0, &tagged(BCAST, A, 0, b""), 0).unwrap();
        assert_eq!((d.vlan, d.tagged), (10, true));
        assert_eq!(out, vec![eg(1, TagEdit::Untagged)]);
    }

    #[test]
    fn trunk_classification_and_egress_tags() {
        // 0: access 100, 1: access 200, 2: trunk {100,200} native 200, 3: trunk {100} no native
        let mut w = World::new(vec![
            access(0, 100),
            access(1, 200),
            trunk(2, &[100, 200], Some(200)),
            trunk(3, &[100], None),
        ]);
        // From access 100: trunk 2 gets it tagged 100, trunk 3 tagged 100.
        let (_, out) = w.send(0, &untagged(BCAST, A, b""), 0).unwrap();
        assert_eq!(
            out,
            vec![eg(2, TagEdit::Tagged(100)), eg(3, TagEdit::Tagged(100))]
        );
        // From access 200: trunk 2 gets it untagged (native); trunk 3 not at all.
        let (_, out) = w.send(1, &untagged(BCAST, B, b""), 0).unwrap();
        assert_eq!(out, vec![eg(2, TagEdit::Untagged)]);
        // Trunk 2 untagged in → native 200 → access 1.
        let (d, out) = w.send(2, &untagged(BCAST, C, b""), 0).unwrap();
        assert_eq!((d.vlan, d.tagged), (200, false));
        assert_eq!(out, vec![eg(1, TagEdit::Untagged)]);
        // Trunk 2 tagged 100 in → access 0 untagged, trunk 3 tagged.
        let (d, out) = w.send(2, &tagged(BCAST, C, 100, b""), 0).unwrap();
        assert_eq!((d.vlan, d.tagged), (100, true));
        assert_eq!(
            out,
            vec![eg(0, TagEdit::Untagged), eg(3, TagEdit::Tagged(100))]
        );
        // Disallowed VID on a trunk.
        assert_eq!(
            w.send(2, &tagged(BCAST, C, 300, b""), 0),
            Err(DropReason::Vlan)
        );
        // Untagged on a trunk without native VLAN.
        assert_eq!(
            w.send(3, &untagged(BCAST, C, b""), 0),
            Err(DropReason::Vlan)
        );
    }

    #[test]
    fn malformed_frames() {
        let mut w = World::new(vec![access(0, 1), access(1, 1)]);
        assert_eq!(w.send(0, &[0u8; 10], 0), Err(DropReason::Malformed));
        assert_eq!(
            w.send(0, &untagged(B, MCAST, b""), 0),
            Err(DropReason::Malformed)
        );
        assert_eq!(
            w.send(0, &untagged(B, [0; 6], b""), 0),
            Err(DropReason::Malformed)
        );
        let mut t = tagged(B, A, 1, b"");
        t.truncate(16);
        assert_eq!(w.send(0, &t, 0), Err(DropReason::Malformed));
        assert!(w.fdb.is_empty(), "nothing learned from malformed frames");
    }

    #[test]
    fn admin_down_forwards_nothing_either_way() {
        let mut down = access(1, 10);
        down.up = false;
        let mut w = World::new(vec![access(0, 10), down, access(2, 10)]);
        assert_eq!(w.slots(0, &untagged(BCAST, A, b""), 0), vec![2]);
        assert_eq!(
            w.send(1, &untagged(BCAST, B, b""), 0),
            Err(DropReason::LinkDown)
        );
        // Even a static/learned entry pointing at the down port sends nothing there.
        w.fdb.set_static(&[(10, MacAddr(B), 1)], 0);
        assert_eq!(w.slots(0, &untagged(B, A, b""), 0), Vec::<Slot>::new());
    }

    #[test]
    fn spoof_guard() {
        let mut p = access(0, 1);
        p.mac = Some(MacAddr(A));
        p.spoof_check = true;
        let mut w = World::new(vec![p, access(1, 1)]);
        assert_eq!(
            w.send(0, &untagged(BCAST, C, b""), 0),
            Err(DropReason::Spoof)
        );
        assert_eq!(w.slots(0, &untagged(BCAST, A, b""), 0), vec![1]);
        assert_eq!(
            w.fdb.lookup(1, MacAddr(C), 0),
            None,
            "spoofed MAC not learned"
        );
    }

    #[test]
    fn aging_makes_mac_unknown_again() {
        let mut w = World::new(vec![access(0, 1), access(1, 1), access(2, 1)]);
        w.slots(1, &untagged(BCAST, B, b""), 0);
        assert_eq!(w.slots(0, &untagged(B, A, b""), SEC), vec![1]);
        assert_eq!(
            w.slots(0, &untagged(B, A, b""), 301 * SEC),
            vec![1, 2],
            "aged → flood"
        );
    }

    #[test]
    fn mac_move_follows_the_station() {
        let mut w = World::new(vec![access(0, 1), access(1, 1), access(2, 1)]);
        w.slots(1, &untagged(BCAST, B, b""), 0);
        w.slots(2, &untagged(BCAST, B, b""), SEC); // B moved to port 2
        assert_eq!(w.slots(0, &untagged(B, A, b""), 2 * SEC), vec![2]);
        assert_eq!(w.fdb.moves, 1);
    }

    /// Turns snooping on for the World's switch; the table starts empty.
    fn snooping(w: &mut World, flood_unknown: bool, uplinks: Vec<Slot>) -> Arc<mcast::McastShared> {
        let (tx, _rx) = std::sync::mpsc::sync_channel(16);
        let shared = Arc::new(mcast::McastShared::new(Arc::new(
            mcast::McastCounters::new(1),
        )));
        w.snap.switches[0].mcast = Some(mcast::McastView {
            shared: shared.clone(),
            epoch: 1,
            flood_unknown,
            uplinks,
            events: tx,
        });
        shared
    }

    fn ip_mcast(group: [u8; 4], src: [u8; 6], l3: Vec<u8>) -> Vec<u8> {
        let dst = [0x01, 0x00, 0x5e, group[1] & 0x7f, group[2], group[3]];
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&l3);
        f
    }

    #[test]
    fn snooping_sends_a_group_to_its_members_and_router_ports_only() {
        use mcast::tests::{igmp, ipv4};
        use mcast::{Event, Mdb, PROTO_IGMP};
        const G: [u8; 4] = [239, 1, 2, 3];
        let group = std::net::IpAddr::from(G);
        // 0..3 access 10, 4 access 20, 5 the uplink (trunk 10, 20).
        let mut w = World::new(vec![
            access(0, 10),
            access(1, 10),
            access(2, 10),
            access(3, 10),
            access(4, 20),
            trunk(5, &[10, 20], None),
        ]);
        let shared = snooping(&mut w, true, vec![5]);
        let data = |src| ip_mcast(G, src, ipv4([10, 0, 0, 1], G, 17, &[0; 12]));
        // Nobody joined: the group floods within the VLAN.
        assert_eq!(w.slots(0, &data(A), 0), vec![1, 2, 3, 5]);
        // Port 1 reports: the report goes to the uplink only, for the snooper.
        let report = igmp(vec![0x16, 0, 0, 0, 239, 1, 2, 3]);
        let report = ip_mcast(G, B, ipv4([10, 0, 0, 2], G, PROTO_IGMP, &report));
        let (d, out) = w.send(1, &report, 0).unwrap();
        assert!(d.snooped);
        assert_eq!(out.iter().map(|e| e.slot).collect::<Vec<_>>(), vec![5]);
        let mut events = Vec::new();
        mcast::frame_events(&report, &mut |e| events.push(e));
        assert_eq!(events, vec![Event::Join(group)]);
        // The snooper applies it and publishes.
        let mut mdb = Mdb::new(260);
        mdb.apply(10, 1, 0, Event::Join(group), 0);
        shared.table.store(Arc::new(mdb.view()));
        let (d, out) = w.send(0, &data(A), 0).unwrap();
        assert!(!d.snooped && d.flooded);
        assert_eq!(out.iter().map(|e| e.slot).collect::<Vec<_>>(), vec![1, 5]);
        assert_eq!(
            shared.counters.filtered(),
            2,
            "ports 2 and 3 (port 4 is on VLAN 20)"
        );
        // The same group on VLAN 20 has no member: it floods there.
        assert_eq!(w.slots(4, &data(C), 0), vec![5]);
        // Link-local groups always flood.
        let mdns = ip_mcast(
            [224, 0, 0, 251],
            A,
            ipv4([10, 0, 0, 1], [224, 0, 0, 251], 17, &[0; 12]),
        );
        assert_eq!(w.slots(0, &mdns, 0), vec![1, 2, 3, 5]);
        // A query from port 2 floods, and port 2 becomes a router port.
        let query = igmp(vec![0x11, 100, 0, 0, 0, 0, 0, 0]);
        let query = ip_mcast(
            [224, 0, 0, 1],
            C,
            ipv4([10, 0, 0, 3], [224, 0, 0, 1], PROTO_IGMP, &query),
        );
        let (d, out) = w.send(2, &query, 0).unwrap();
        assert!(d.snooped);
        assert_eq!(
            out.iter().map(|e| e.slot).collect::<Vec<_>>(),
            vec![0, 1, 3, 5]
        );
        mdb.apply(10, 2, 0, Event::Query, 0);
        shared.table.store(Arc::new(mdb.view()));
        assert_eq!(w.slots(0, &data(A), 0), vec![1, 2, 5]);
        assert_eq!(
            w.slots(3, &report, 0),
            vec![2, 5],
            "reports to router ports"
        );
        // The member leaves: the group is unknown and floods again.
        mdb.apply(10, 1, 0, Event::Leave(group), 0);
        shared.table.store(Arc::new(mdb.view()));
        assert_eq!(w.slots(0, &data(A), 0), vec![1, 2, 3, 5]);
        // Unless unknown groups go to router ports only.
        w.snap.switches[0].mcast.as_mut().unwrap().flood_unknown = false;
        assert_eq!(w.slots(0, &data(A), 0), vec![2, 5]);
        // A member whose port changed since (flush_gen) is no member.
        mdb.apply(10, 3, 0, Event::Join(group), 0);
        shared.table.store(Arc::new(mdb.view()));
        assert_eq!(w.slots(0, &data(A), 0), vec![2, 3, 5]);
        w.snap.ports[3].as_mut().unwrap().flush_gen = 9;
        assert_eq!(w.slots(0, &data(A), 0), vec![2, 5]);
        // Snooping off: everything floods as before.
        w.snap.switches[0].mcast = None;
        assert_eq!(w.slots(0, &data(A), 0), vec![1, 2, 3, 5]);
    }

    #[test]
    fn limit_reached_still_floods() {
        let mut w = World::new(vec![access(0, 1), access(1, 1), access(2, 1)]);
        w.fdb.set_limit(1);
        w.slots(0, &untagged(BCAST, A, b""), 0);
        w.slots(1, &untagged(BCAST, B, b""), 0); // not learned: table full
        assert_eq!(w.fdb.limit_hits, 1);
        assert_eq!(w.slots(0, &untagged(B, A, b""), 0), vec![1, 2]);
    }

    fn private(slot: Slot, spec: &str) -> PortView {
        let pv: podswitch_shared::model::Pvlan = spec.parse().unwrap();
        PortView::plain(
            slot,
            PortVlan::from(&podswitch_shared::model::VlanMode::Private(pv)),
        )
    }

    /// 0, 1: isolated 101; 2, 3: community 102; 4: community 103;
    /// 5: promiscuous for all three; 6: the uplink, trunking 100-103.
    fn pvlan_world() -> World {
        let mut w = World::new(vec![
            private(0, "isolated:100:101"),
            private(1, "isolated:100:101"),
            private(2, "community:100:102"),
            private(3, "community:100:102"),
            private(4, "community:100:103"),
            private(5, "promiscuous:100:101,102,103"),
            trunk(6, &[100, 101, 102, 103], None),
        ]);
        w.snap.switches[0].fids = vlan::Fids::new([(101, 100), (102, 100), (103, 100)]);
        w
    }

    const D: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0d];
    const P: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0e];

    #[test]
    fn snooping_on_private_vlans_shares_the_primary_table_and_keeps_the_rules() {
        use mcast::tests::ipv4;
        use mcast::{Event, Mdb};
        const G: [u8; 4] = [239, 1, 2, 3];
        let group = std::net::IpAddr::from(G);
        let mut w = pvlan_world();
        let shared = snooping(&mut w, false, vec![6]);
        // Members: isolated 1 and community 3 (they report on their
        // secondaries; the poll thread files them under the primary).
        let mut mdb = Mdb::new(260);
        mdb.apply(100, 1, 0, Event::Join(group), 0);
        mdb.apply(100, 3, 0, Event::Join(group), 0);
        shared.table.store(Arc::new(mdb.view()));
        let data = |src| ip_mcast(G, src, ipv4([10, 0, 0, 1], G, 17, &[0; 12]));
        // From the promiscuous port: both members and the uplink.
        assert_eq!(w.slots(5, &data(P), 0), vec![1, 3, 6]);
        // From isolated 0: isolated 1 is a member but may not hear it.
        assert_eq!(w.slots(0, &data(A), 0), vec![6]);
        // From community 2: its community's member, not the isolated one.
        assert_eq!(w.slots(2, &data(B), 0), vec![3, 6]);
    }

    #[test]
    fn private_vlan_classification_and_membership() {
        let mut w = pvlan_world();
        // Isolated: only the promiscuous port and the uplink (tagged with
        // the isolated secondary, RFC 5517 §3) hear it.
        let (d, out) = w.send(0, &untagged(BCAST, A, b""), 0).unwrap();
        assert_eq!((d.vlan, d.fid), (101, 100));
        assert_eq!(
            out,
            vec![eg(5, TagEdit::Untagged), eg(6, TagEdit::Tagged(101))]
        );
        // Community: its own community, the promiscuous port, the uplink.
        let (d, out) = w.send(2, &untagged(BCAST, B, b""), 0).unwrap();
        assert_eq!(d.vlan, 102);
        assert_eq!(
            out,
            vec![
                eg(3, TagEdit::Untagged),
                eg(5, TagEdit::Untagged),
                eg(6, TagEdit::Tagged(102))
            ]
        );
        assert_eq!(w.slots(4, &untagged(BCAST, C, b""), 0), vec![5, 6]);
        // Promiscuous: everyone, on the primary.
        let (d, out) = w.send(5, &untagged(BCAST, P, b""), 0).unwrap();
        assert_eq!(d.vlan, 100);
        assert_eq!(out.len(), 6);
        assert!(out.contains(&eg(6, TagEdit::Tagged(100))));
        assert!(out
            .iter()
            .filter(|e| e.slot != 6)
            .all(|e| e.edit == TagEdit::Untagged));
        // From the uplink, by tag: isolated → promiscuous only; community
        // → that community and promiscuous; primary → every pvlan port.
        assert_eq!(w.slots(6, &tagged(BCAST, D, 101, b""), 0), vec![5]);
        assert_eq!(w.slots(6, &tagged(BCAST, D, 102, b""), 0), vec![2, 3, 5]);
        assert_eq!(w.slots(6, &tagged(BCAST, D, 103, b""), 0), vec![4, 5]);
        assert_eq!(
            w.slots(6, &tagged(BCAST, D, 100, b""), 0),
            vec![0, 1, 2, 3, 4, 5]
        );
        // A private VLAN port takes no tagged frame, not even its own VLAN's.
        assert_eq!(
            w.send(0, &tagged(BCAST, A, 101, b""), 0),
            Err(DropReason::Vlan)
        );
        assert_eq!(
            w.send(5, &tagged(BCAST, P, 101, b""), 0),
            Err(DropReason::Vlan)
        );
    }

    #[test]
    fn private_vlan_shared_learning_and_drops() {
        let mut w = pvlan_world();
        // A (isolated, port 0) and C (community 103, port 4) speak first;
        // B (community 102, port 2) too. All learned under the primary.
        w.send(0, &untagged(BCAST, A, b""), 0).unwrap();
        w.send(2, &untagged(BCAST, B, b""), 0).unwrap();
        w.send(4, &untagged(BCAST, C, b""), 0).unwrap();
        assert_eq!(w.fdb.lookup(100, MacAddr(A), 0), Some(0));
        assert_eq!(w.fdb.lookup(101, MacAddr(A), 0), None);
        // The router on the promiscuous port answers on the primary: a
        // known unicast, not a flood.
        let (d, out) = w.send(5, &untagged(A, P, b""), 0).unwrap();
        assert!(!d.flooded);
        assert_eq!(out, vec![eg(0, TagEdit::Untagged)]);
        // And the isolated host reaches the router by unicast.
        assert_eq!(w.slots(0, &untagged(P, A, b""), 0), vec![5]);
        // Isolated → isolated, and community → another community or an
        // isolated host, are dropped as pvlan, never flooded.
        assert_eq!(w.send(1, &untagged(A, D, b""), 0), Err(DropReason::Pvlan));
        assert_eq!(w.send(4, &untagged(B, C, b""), 0), Err(DropReason::Pvlan));
        assert_eq!(w.send(3, &untagged(A, D, b""), 0), Err(DropReason::Pvlan));
        // Within one community a unicast goes through.
        assert_eq!(w.slots(3, &untagged(B, D, b""), 0), vec![2]);
        // From the uplink: tagged isolated to an isolated host is dropped;
        // tagged primary reaches it.
        assert_eq!(
            w.send(6, &tagged(A, D, 101, b""), 0),
            Err(DropReason::Pvlan)
        );
        assert_eq!(w.slots(6, &tagged(A, D, 100, b""), 0), vec![0]);
        // What came in over the uplink tagged with a secondary is found by
        // a unicast on the primary, and leaves tagged with the primary.
        let (d, _) = w.send(6, &tagged(BCAST, D, 101, b""), 0).unwrap();
        assert_eq!(d.fid, 100);
        let (_, out) = w.send(5, &untagged(D, P, b""), 0).unwrap();
        assert_eq!(out, vec![eg(6, TagEdit::Tagged(100))]);
        // Plain VLANs keep their own table and behaviour.
        assert_eq!(w.snap.switches[0].fids.of(7), 7);
    }

    #[test]
    fn private_vlan_port_change_is_live() {
        let mut w = pvlan_world();
        w.send(0, &untagged(BCAST, A, b""), 0).unwrap();
        assert_eq!(w.send(1, &untagged(A, D, b""), 0), Err(DropReason::Pvlan));
        // Port 1 becomes promiscuous: the same unicast now goes through.
        w.snap.ports[1] = Some(private(1, "promiscuous:100:101"));
        assert_eq!(w.slots(1, &untagged(A, D, b""), 0), vec![0]);
    }
}
