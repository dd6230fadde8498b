//! Property tests of the forwarding rules over random port tables and
//! random frames: whatever arrives, no frame crosses VLANs, goes back out
//! its ingress port, reaches a down port, or leaves with the wrong tag.

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
}
