//! Property tests of the forwarding rules over random port tables and
//! random frames: whatever arrives, no frame crosses VLANs, goes back out
//! its ingress port, reaches a down port, or leaves with the wrong tag;
//! and on private VLANs, isolated ports hear only promiscuous ports and
//! trunks, communities only themselves, promiscuous ports and trunks.

use super::fdb::{Fdb, Slot};
use crate::fuzzing::{build, check_forwarding, make_frame};
use crate::wire::ethernet::{self, apply_tag_edit, TagEdit};
use proptest::prelude::*;

fn port_strategy() -> impl Strategy<Value = (bool, u8, u8, Option<u8>, bool)> {
    // (is_trunk, access vid idx, trunk allowed mask, native idx, up)
    (
        any::<bool>(),
        0..4u8,
        any::<u8>(),
        proptest::option::of(0..4u8),
        prop::bool::weighted(0.85),
    )
}

fn frame_strategy() -> impl Strategy<Value = (u8, u8, u8, u16, Vec<u8>)> {
    // (dst idx (7 = broadcast), src idx, tag kind, tci, payload)
    (
        0..8u8,
        0..7u8,
        0..4u8,
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = ethernet::parse(&bytes);
    }

    #[test]
    fn ip_parse_never_panics(
        v6 in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        // Mostly-valid version nibbles so the walk gets past the first check.
        let mut b = bytes;
        if let Some(first) = b.first_mut() {
            *first = (*first & 0x0f) | if v6 { 0x60 } else { 0x40 };
        }
        let et = if v6 { crate::wire::ip::ETHERTYPE_IPV6 } else { crate::wire::ip::ETHERTYPE_IPV4 };
        if let Some(l3) = crate::wire::ip::parse(et, &b) {
            let _ = crate::wire::ip::is_dhcp_server(&l3);
            let _ = crate::wire::ip::is_router_message(&l3);
        }
    }

    #[test]
    fn push_then_pop_is_identity(payload in proptest::collection::vec(any::<u8>(), 0..64), vid in 1..4095u16) {
        let f = make_frame(&(1, 2, 0, 0, payload));
        let mut buf = vec![0u8; 8];
        buf.extend_from_slice(&f);
        let (o, l) = apply_tag_edit(&mut buf, 8, f.len(), false, TagEdit::Tagged(vid), None).unwrap();
        let h = ethernet::parse(&buf[o..o + l]).unwrap();
        prop_assert_eq!(h.tag, ethernet::Tag::Dot1q { pcp: 0, dei: false, vid });
        let (o, l) = apply_tag_edit(&mut buf, o, l, true, TagEdit::Untagged, None).unwrap();
        prop_assert_eq!(&buf[o..o + l], f.as_slice());
    }

    #[test]
    fn forwarding_rules_hold(
        ports in proptest::collection::vec(port_strategy(), 2..7),
        frames in proptest::collection::vec((0..7usize, frame_strategy()), 1..40),
    ) {
        let snap = build(&ports);
        let mut fdb = Fdb::new(300, 64);
        let mut limits = super::Limits::default();
        limits.sync(&snap, 0);
        for (t, (ingress, spec)) in frames.iter().enumerate() {
            let ingress = (ingress % ports.len()) as Slot;
            let f = make_frame(spec);
            if let Err(why) = check_forwarding(&snap, &mut fdb, &mut limits, ingress, &f, t as u64) {
                prop_assert!(false, "{}", why);
            }
        }
    }

    #[test]
    fn private_vlan_rules_hold(
        kinds in proptest::collection::vec(0..PVLAN_KINDS.len(), 2..8),
        frames in proptest::collection::vec((0..8usize, 0..8u8, 0..8u8, 0..6usize), 1..60),
    ) {
        let snap = pvlan_build(&kinds);
        let mut fdb = Fdb::new(300, 64);
        let mut limits = super::Limits::default();
        limits.sync(&snap, 0);
        for (t, &(ingress, dst, src, tag)) in frames.iter().enumerate() {
            let ingress = (ingress % kinds.len()) as Slot;
            let vid = [None, Some(100), Some(101), Some(102), Some(103), Some(7)][tag];
            let mut f = crate::fuzzing::mac(dst % 8).to_vec();
            f.extend_from_slice(&crate::fuzzing::mac(src % 7));
            if let Some(v) = vid {
                f.extend_from_slice(&[0x81, 0x00, (v >> 8) as u8, v as u8]);
            }
            f.extend_from_slice(&[0x88, 0xb5, 0, 0]);
            if let Err(why) = check_forwarding(&snap, &mut fdb, &mut limits, ingress, &f, t as u64) {
                prop_assert!(false, "{}", why);
            }
            let mut out = Vec::new();
            let p = snap.port(ingress).unwrap();
            if super::forward(&snap, &snap.switches[0], &mut fdb, &mut limits, p, &f, t as u64, &mut out).is_ok() {
                let from = kinds[ingress as usize];
                for e in &out {
                    let to = kinds[e.slot as usize];
                    prop_assert!(pvlan_may_reach(from, to), "{} reached {}", PVLAN_KINDS[from], PVLAN_KINDS[to]);
                }
            }
        }
    }
}

/// The ports `private_vlan_rules_hold` picks from: `trunk` is the uplink
/// (100-103 tagged), `access:7` an unrelated VLAN.
const PVLAN_KINDS: [&str; 8] = [
    "isolated:100:101",
    "isolated:100:101",
    "community:100:102",
    "community:100:103",
    "promiscuous:100:101,102,103",
    "promiscuous:100:102",
    "trunk",
    "access:7",
];

fn pvlan_build(kinds: &[usize]) -> super::snapshot::Snapshot {
    use super::vlan::{Fids, PortVlan, VlanSet};
    use podswitch_shared::model::VlanMode;
    let views = kinds
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let vlan = match PVLAN_KINDS[k] {
                "trunk" => {
                    let mut allowed = VlanSet::default();
                    allowed.insert_range(100, 103);
                    PortVlan::Trunk {
                        allowed,
                        native: None,
                    }
                }
                "access:7" => PortVlan::Access(7),
                spec => PortVlan::from(&VlanMode::Private(spec.parse().unwrap())),
            };
            Some(super::snapshot::PortView::plain(i as Slot, vlan))
        })
        .collect();
    super::snapshot::Snapshot {
        generation: 1,
        switches: vec![super::snapshot::SwitchView {
            name: "default".into(),
            ports: (0..kinds.len() as Slot).collect(),
            fids: Fids::new([(101, 100), (102, 100), (103, 100)]),
            ..Default::default()
        }],
        ports: views,
        changed: None,
    }
}

/// RFC 5517's matrix, by `PVLAN_KINDS` index (a frame from the uplink
/// may reach whatever its tag allows, checked by the VLAN rules).
fn pvlan_may_reach(from: usize, to: usize) -> bool {
    let kind = |i: usize| PVLAN_KINDS[i].split(':').next().unwrap_or("");
    match (kind(from), kind(to)) {
        ("access", t) | (t, "access") => t == "access",
        ("trunk", _) | (_, "trunk") | ("promiscuous", _) | (_, "promiscuous") => true,
        ("isolated", _) | (_, "isolated") => false,
        // Two community ports: the same community only.
        _ => PVLAN_KINDS[from] == PVLAN_KINDS[to],
    }
}
