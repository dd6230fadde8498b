//! Property tests of the forwarding rules over random port tables and
//! random frames: whatever arrives, no frame crosses VLANs, goes back out
//! its ingress port, reaches a down port, or leaves with the wrong tag.

use super::fdb::{Fdb, Slot};
use super::vlan::{PortVlan, VlanSet};
use super::{forward, DropReason};
use crate::pipeline::snapshot::{PortView, Snapshot, SwitchView};
use crate::wire::ethernet::{self, apply_tag_edit, TagEdit, TPID_8021AD, TPID_8021Q};
use podswitch_shared::model::MacAddr;
use proptest::prelude::*;

const VIDS: [u16; 4] = [1, 10, 20, 30];

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

fn build(ports: &[(bool, u8, u8, Option<u8>, bool)]) -> Snapshot {
    let views: Vec<Option<PortView>> = ports
        .iter()
        .enumerate()
        .map(|(i, &(trunk, acc, mask, native, up))| {
            let vlan = if trunk {
                let mut allowed = VlanSet::default();
                for (b, v) in VIDS.iter().enumerate() {
                    if mask & (1 << b) != 0 {
                        allowed.insert(*v);
                    }
                }
                PortVlan::Trunk {
                    allowed,
                    native: native.map(|n| VIDS[n as usize]),
                }
            } else {
                PortVlan::Access(VIDS[acc as usize])
            };
            Some(PortView {
                up,
                ..PortView::plain(i as Slot, vlan)
            })
        })
        .collect();
    Snapshot {
        generation: 1,
        switches: vec![SwitchView {
            name: "default".into(),
            ports: (0..ports.len() as Slot).collect(),
            ..SwitchView::default()
        }],
        ports: views,
        changed: None,
    }
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

fn mac(i: u8) -> [u8; 6] {
    if i == 7 {
        [0xff; 6]
    } else {
        [0x02, 0, 0, 0, 0, i + 1]
    }
}

fn make_frame(&(d, s, kind, tci, ref payload): &(u8, u8, u8, u16, Vec<u8>)) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&mac(d));
    f.extend_from_slice(&mac(s));
    match kind {
        0 => {}
        1 => {
            // 802.1Q with a VID from our set (or 0, a priority tag)
            let vid = [0, 1, 10, 20, 30, 99][tci as usize % 6];
            f.extend_from_slice(&TPID_8021Q.to_be_bytes());
            f.extend_from_slice(&((tci & 0xf000) | vid).to_be_bytes());
        }
        2 => {
            f.extend_from_slice(&TPID_8021AD.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        _ => {
            f.extend_from_slice(&TPID_8021Q.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f
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
        let (o, l) = apply_tag_edit(&mut buf, 8, f.len(), false, TagEdit::Tagged(vid)).unwrap();
        let h = ethernet::parse(&buf[o..o + l]).unwrap();
        prop_assert_eq!(h.tag, ethernet::Tag::Dot1q { pcp: 0, dei: false, vid });
        let (o, l) = apply_tag_edit(&mut buf, o, l, true, TagEdit::Untagged).unwrap();
        prop_assert_eq!(&buf[o..o + l], f.as_slice());
    }

    #[test]
    fn forwarding_rules_hold(
        ports in proptest::collection::vec(port_strategy(), 2..7),
        frames in proptest::collection::vec((0..7usize, frame_strategy()), 1..40),
    ) {
        let snap = build(&ports);
        let sw = &snap.switches[0];
        let mut fdb = Fdb::new(300, 64);
        let mut limits = super::Limits::default();
        limits.sync(&snap, 0);
        let mut out = Vec::new();
        for (t, (ingress, spec)) in frames.iter().enumerate() {
            let ingress = ingress % ports.len();
            let p = snap.port(ingress as Slot).unwrap();
            let f = make_frame(spec);
            let hdr = ethernet::parse(&f).unwrap();
            match forward(&snap, sw, &mut fdb, &mut limits, p, &f, t as u64, &mut out) {
                Err(DropReason::LinkDown) => prop_assert!(!p.up),
                Err(DropReason::Vlan) => prop_assert_eq!(p.vlan.classify(hdr.tag), None),
                Err(r) => prop_assert!(false, "unexpected drop {:?}", r),
                Ok(d) => {
                    prop_assert!(p.up);
                    prop_assert_eq!(Some(d.vlan), p.vlan.classify(hdr.tag));
                    let mut seen = std::collections::HashSet::new();
                    for e in &out {
                        prop_assert!(seen.insert(e.slot), "duplicate egress");
                        prop_assert_ne!(e.slot, p.slot, "back out the ingress port");
                        let q = snap.port(e.slot).unwrap();
                        prop_assert!(q.up, "to a down port");
                        prop_assert!(q.vlan.carries(d.vlan), "across VLANs");
                        prop_assert_eq!(e.edit, q.vlan.egress(d.vlan));
                    }
                    if !d.flooded {
                        prop_assert!(out.len() <= 1);
                        prop_assert!(!MacAddr(mac(spec.0)).is_multicast());
                    }
                }
            }
        }
    }
}
