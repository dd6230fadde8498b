//! The forwarding pipeline: pure code from a received frame to a list of
//! egress ports with the tag edit each needs. No I/O, no clock, no locks:
//! the caller passes the snapshot, the switch's FDB and the time.
//!
//! Order: parse → ingress admin state → VLAN classification → MAC spoof
//! guard → learn → look up → flood or unicast within the VLAN (never back
//! out the ingress port, never to a port that is down or not in the VLAN).

pub mod fdb;
pub mod vlan;

#[cfg(test)]
mod proptests;

use crate::snapshot::{PortView, Snapshot, SwitchView};
use crate::wire::ethernet::{self, ParseError, TagEdit};
use fdb::{Fdb, Slot};

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
    /// No UMEM frame or TX ring slot was free.
    NoBuffer = 4,
}

impl DropReason {
    pub const COUNT: usize = 5;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::Vlan,
        DropReason::Spoof,
        DropReason::LinkDown,
        DropReason::NoBuffer,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Vlan => "vlan",
            DropReason::Spoof => "spoof",
            DropReason::LinkDown => "link-down",
            DropReason::NoBuffer => "no-buffer",
        }
    }
}

/// One copy of the frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub slot: Slot,
    pub edit: TagEdit,
}

/// What the pipeline decided for a frame it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub vlan: u16,
    /// The frame carries a 4-byte 802.1Q tag now (egress edits need this).
    pub tagged: bool,
    /// The frame was flooded (unknown unicast, broadcast or multicast).
    pub flooded: bool,
}

/// Decides where the frame received on `ingress` goes. `out` is cleared
/// and filled with the egress ports; an empty `out` with `Ok` means the
/// frame is consumed (e.g. its destination sits behind the ingress port).
pub fn forward(
    snap: &Snapshot,
    sw: &SwitchView,
    fdb: &mut Fdb,
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
    fdb.learn(vlan, hdr.src, ingress.slot, now);

    let mut push = |p: &PortView| {
        if p.slot != ingress.slot && p.up && p.vlan.carries(vlan) {
            out.push(Egress {
                slot: p.slot,
                edit: p.vlan.egress(vlan),
            });
        }
    };
    let known = if hdr.dst.is_multicast() {
        None
    } else {
        fdb.lookup(vlan, hdr.dst, now)
    };
    let flooded = match known.and_then(|s| snap.port(s)) {
        Some(p) => {
            push(p);
            false
        }
        None => {
            for p in sw.ports.iter().filter_map(|s| snap.port(*s)) {
                push(p);
            }
            true
        }
    };
    Ok(Decision {
        vlan,
        tagged: hdr.tag.in_frame(),
        flooded,
    })
}

#[cfg(test)]
mod tests {
    use super::fdb::Fdb;
    use super::vlan::{PortVlan, VlanSet};
    use super::*;
    use crate::snapshot::PortCounters;
    use crate::wire::ethernet::tests::{tagged, tagged_with, untagged, A, B};
    use crate::wire::ethernet::TPID_8021AD;
    use podswitch_shared::model::MacAddr;
    use std::sync::{Arc, Mutex};

    const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
    const BCAST: [u8; 6] = [0xff; 6];
    const MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 1];
    const SEC: u64 = 1_000_000_000;

    fn access(slot: Slot, vid: u16) -> PortView {
        PortView {
            id: format!("p{slot}"),
            slot,
            switch: 0,
            vlan: PortVlan::Access(vid),
            up: true,
            mac: None,
            spoof_check: false,
            counters: Arc::new(PortCounters::default()),
        }
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
                        fdb: Arc::new(Mutex::new(Fdb::new(300, 100))),
                    }],
                },
                fdb: Fdb::new(300, 100),
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
            let d = forward(
                &self.snap,
                &self.snap.switches[0],
                &mut self.fdb,
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
        Egress { slot, edit }
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
        w.fdb.set_static(&[(10, MacAddr(B), 1)]);
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

    #[test]
    fn limit_reached_still_floods() {
        let mut w = World::new(vec![access(0, 1), access(1, 1), access(2, 1)]);
        w.fdb.set_limit(1);
        w.slots(0, &untagged(BCAST, A, b""), 0);
        w.slots(1, &untagged(BCAST, B, b""), 0); // not learned: table full
        assert_eq!(w.fdb.limit_hits, 1);
        assert_eq!(w.slots(0, &untagged(B, A, b""), 0), vec![1, 2]);
    }
}
