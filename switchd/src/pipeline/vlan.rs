//! 802.1Q port roles: ingress classification and egress tagging.
//!
//! Access port: untagged (or priority-tagged) in → its VLAN; any other
//! tagged frame → drop (which also stops double-tag VLAN hopping); out →
//! untagged. Trunk port: tagged with an allowed VID → that VLAN; untagged
//! or priority-tagged → the native VLAN if set, else drop; out → tagged,
//! except the native VLAN which leaves untagged.
//!
//! Private VLAN port (RFC 5517): untagged like an access port; its frames
//! enter on one VLAN (the secondary for isolated and community ports, the
//! primary for promiscuous ones) and it receives the frames of its member
//! VLANs only (isolated: the primary; community: the primary and its own
//! secondary; promiscuous: the primary and its secondaries), so isolated
//! ports never hear each other and communities stay apart. Such VLANs
//! share one filtering database (`Fids`): a MAC learned on a secondary is
//! found by a unicast on the primary.

use crate::wire::ethernet::{Tag, TagEdit};
use podswitch_shared::model::VlanMode;
use std::sync::Arc;

/// A set of VLAN IDs 0..4096 as a bitmap.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet([0; 64])
    }
}

impl std::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries((0..4096u16).filter(|v| self.contains(*v)))
            .finish()
    }
}

impl VlanSet {
    pub fn insert(&mut self, vid: u16) {
        let v = (vid & 0x0fff) as usize;
        self.0[v / 64] |= 1 << (v % 64);
    }
    pub fn insert_range(&mut self, lo: u16, hi: u16) {
        for v in lo..=hi {
            self.insert(v);
        }
    }
    pub fn contains(&self, vid: u16) -> bool {
        let v = (vid & 0x0fff) as usize;
        self.0[v / 64] & (1 << (v % 64)) != 0
    }
}

/// A port's VLAN role in the form the datapath reads.
// The allowed set is a 4096-bit map read per frame: kept inline, not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortVlan {
    Access(u16),
    Trunk {
        allowed: VlanSet,
        native: Option<u16>,
    },
    /// A private VLAN port: untagged frames enter on `pvid`; frames of
    /// the `members` VLANs leave it untagged.
    Private {
        pvid: u16,
        members: VlanSet,
    },
}

impl From<&VlanMode> for PortVlan {
    fn from(m: &VlanMode) -> Self {
        match m {
            VlanMode::Access(v) => PortVlan::Access(v.get()),
            VlanMode::Trunk { allowed, native } => {
                let mut set = VlanSet::default();
                for r in allowed {
                    let (lo, hi) = r.bounds();
                    set.insert_range(lo, hi);
                }
                PortVlan::Trunk {
                    allowed: set,
                    native: native.map(|v| v.get()),
                }
            }
            VlanMode::Private(p) => {
                let mut members = VlanSet::default();
                p.member_vlans()
                    .iter()
                    .for_each(|v| members.insert(v.get()));
                PortVlan::Private {
                    pvid: p.ingress_vlan().get(),
                    members,
                }
            }
        }
    }
}

impl PortVlan {
    /// The VLAN a frame with outer `tag` belongs to when it enters this
    /// port, or `None` if the port does not accept it.
    pub fn classify(&self, tag: Tag) -> Option<u16> {
        let untagged = matches!(tag, Tag::None | Tag::Dot1q { vid: 0, .. });
        match self {
            PortVlan::Access(v) | PortVlan::Private { pvid: v, .. } => untagged.then_some(*v),
            PortVlan::Trunk { allowed, native } => match tag {
                _ if untagged => *native,
                Tag::Dot1q { vid, .. } if allowed.contains(vid) => Some(vid),
                _ => None,
            },
        }
    }

    /// Whether frames of `vlan` may leave through this port.
    pub fn carries(&self, vlan: u16) -> bool {
        match self {
            PortVlan::Access(v) => *v == vlan,
            PortVlan::Trunk { allowed, native } => *native == Some(vlan) || allowed.contains(vlan),
            PortVlan::Private { members, .. } => members.contains(vlan),
        }
    }

    /// How a frame of `vlan` leaves through this port (only if `carries`).
    pub fn egress(&self, vlan: u16) -> TagEdit {
        match self {
            PortVlan::Access(_) | PortVlan::Private { .. } => TagEdit::Untagged,
            PortVlan::Trunk { native, .. } if *native == Some(vlan) => TagEdit::Untagged,
            PortVlan::Trunk { .. } => TagEdit::Tagged(vlan),
        }
    }
}

/// The filtering databases of one switch: which VLAN's MAC table a
/// frame of each VLAN learns into and looks up in. Each secondary VLAN of
/// a private VLAN shares its primary's (shared VLAN learning, RFC 5517
/// §2.3: a router on a promiscuous port answers an isolated host by a
/// unicast on the primary); every other VLAN has its own.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fids(Option<Arc<[u16]>>);

impl std::fmt::Debug for Fids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0.as_deref().unwrap_or(&[]);
        f.debug_map()
            .entries(t.iter().enumerate().filter(|(_, p)| **p != 0))
            .finish()
    }
}

impl Fids {
    /// From (secondary, primary) pairs; a primary maps to itself. The
    /// registry refuses a secondary with two primaries; were one given,
    /// the first pair wins.
    pub fn new(pairs: impl IntoIterator<Item = (u16, u16)>) -> Fids {
        let mut t: Option<Vec<u16>> = None;
        for (s, p) in pairs {
            let t = t.get_or_insert_with(|| vec![0; 4096]);
            for (v, fid) in [(p, p), (s, p)] {
                let slot = &mut t[(v & 0x0fff) as usize];
                if *slot == 0 {
                    *slot = fid;
                }
            }
        }
        Fids(t.map(Into::into))
    }

    /// The filtering database of `vlan`'s frames.
    #[inline]
    pub fn of(&self, vlan: u16) -> u16 {
        match self
            .0
            .as_deref()
            .and_then(|t| t.get((vlan & 0x0fff) as usize))
        {
            Some(&fid) if fid != 0 => fid,
            _ => vlan,
        }
    }

    /// Whether `vlan` is a primary or secondary VLAN of a private VLAN.
    #[inline]
    pub fn is_private(&self, vlan: u16) -> bool {
        self.0
            .as_deref()
            .and_then(|t| t.get((vlan & 0x0fff) as usize))
            .is_some_and(|&fid| fid != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::TPID_8021AD;

    fn dot1q(vid: u16) -> Tag {
        Tag::Dot1q {
            pcp: 0,
            dei: false,
            vid,
        }
    }

    fn trunk(ranges: &[(u16, u16)], native: Option<u16>) -> PortVlan {
        let mut allowed = VlanSet::default();
        for &(a, b) in ranges {
            allowed.insert_range(a, b);
        }
        PortVlan::Trunk { allowed, native }
    }

    #[test]
    fn access_port() {
        let p = PortVlan::Access(100);
        assert_eq!(p.classify(Tag::None), Some(100));
        assert_eq!(
            p.classify(dot1q(0)),
            Some(100),
            "priority tag counts as untagged"
        );
        assert_eq!(
            p.classify(dot1q(100)),
            None,
            "tagged on access is dropped, even its own VID"
        );
        assert_eq!(p.classify(dot1q(200)), None);
        assert_eq!(
            p.classify(Tag::Other(TPID_8021AD)),
            None,
            "no double-tag hopping"
        );
        assert!(p.carries(100) && !p.carries(101));
        assert_eq!(p.egress(100), TagEdit::Untagged);
    }

    #[test]
    fn trunk_port_allowed_and_native() {
        let p = trunk(&[(200, 299), (400, 400)], Some(10));
        assert_eq!(p.classify(dot1q(250)), Some(250));
        assert_eq!(p.classify(dot1q(400)), Some(400));
        assert_eq!(p.classify(dot1q(300)), None, "disallowed VID");
        assert_eq!(
            p.classify(dot1q(10)),
            None,
            "native VID tagged is not in the allowed set"
        );
        assert_eq!(p.classify(Tag::None), Some(10), "untagged → native");
        assert_eq!(p.classify(dot1q(0)), Some(10), "priority-tagged → native");
        assert_eq!(p.classify(Tag::Other(TPID_8021AD)), None);
        assert!(p.carries(10) && p.carries(299) && !p.carries(300));
        assert_eq!(p.egress(10), TagEdit::Untagged, "native leaves untagged");
        assert_eq!(p.egress(250), TagEdit::Tagged(250));
    }

    #[test]
    fn trunk_without_native_drops_untagged() {
        let p = trunk(&[(5, 5)], None);
        assert_eq!(p.classify(Tag::None), None);
        assert_eq!(p.classify(dot1q(0)), None);
        assert_eq!(p.classify(dot1q(5)), Some(5));
    }

    #[test]
    fn from_mode() {
        use podswitch_shared::model::{TrunkRange, VlanId};
        let v = |n| VlanId::new(n).unwrap();
        let m = VlanMode::Trunk {
            allowed: vec![TrunkRange::Range(v(2), v(4)), TrunkRange::Single(v(4094))],
            native: Some(v(1)),
        };
        let p = PortVlan::from(&m);
        assert!(p.carries(2) && p.carries(3) && p.carries(4) && p.carries(4094) && p.carries(1));
        assert!(!p.carries(5));
    }

    #[test]
    fn private_vlan_ports() {
        use podswitch_shared::model::Pvlan;
        let port = |s: &str| PortVlan::from(&VlanMode::Private(s.parse::<Pvlan>().unwrap()));
        let iso = port("isolated:100:101");
        let com = port("community:100:102");
        let pro = port("promiscuous:100:101,102");
        // Ingress: untagged (or priority-tagged) on the secondary, or the
        // primary for promiscuous; any tagged frame is refused.
        assert_eq!(iso.classify(Tag::None), Some(101));
        assert_eq!(iso.classify(dot1q(0)), Some(101));
        assert_eq!(iso.classify(dot1q(101)), None);
        assert_eq!(iso.classify(dot1q(100)), None);
        assert_eq!(iso.classify(Tag::Other(TPID_8021AD)), None);
        assert_eq!(com.classify(Tag::None), Some(102));
        assert_eq!(pro.classify(Tag::None), Some(100));
        assert_eq!(pro.classify(dot1q(101)), None);
        // Membership: isolated hears the primary only; community its own
        // community and the primary; promiscuous all of them.
        assert!(iso.carries(100) && !iso.carries(101) && !iso.carries(102));
        assert!(com.carries(100) && com.carries(102) && !com.carries(101));
        assert!(pro.carries(100) && pro.carries(101) && pro.carries(102));
        assert!(!pro.carries(103) && !iso.carries(1));
        // Frames leave untagged, whatever VLAN they were classified on.
        for (p, v) in [(&iso, 100), (&com, 102), (&pro, 101)] {
            assert_eq!(p.egress(v), TagEdit::Untagged);
        }
    }

    #[test]
    fn fids_share_a_primary() {
        let f = Fids::new([(101, 100), (102, 100), (201, 200), (101, 300)]);
        assert_eq!(f.of(101), 100);
        assert_eq!(f.of(102), 100);
        assert_eq!(f.of(100), 100);
        assert_eq!(f.of(201), 200);
        assert_eq!(f.of(7), 7, "a plain VLAN is its own");
        assert!(f.is_private(100) && f.is_private(101) && !f.is_private(7));
        assert_eq!(f.of(300), 300, "a refused second primary");
        let none = Fids::default();
        assert_eq!(none.of(101), 101);
        assert!(!none.is_private(101));
        assert_eq!(Fids::new([]), none);
    }
}
