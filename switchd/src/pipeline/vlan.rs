//! 802.1Q port roles: ingress classification and egress tagging.
//!
//! Access port: untagged (or priority-tagged) in → its VLAN; any other
//! tagged frame → drop (which also stops double-tag VLAN hopping); out →
//! untagged. Trunk port: tagged with an allowed VID → that VLAN; untagged
//! or priority-tagged → the native VLAN if set, else drop; out → tagged,
//! except the native VLAN which leaves untagged.

use crate::wire::ethernet::{Tag, TagEdit};
use podswitch_shared::model::VlanMode;

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
        }
    }
}

impl PortVlan {
    /// The VLAN a frame with outer `tag` belongs to when it enters this
    /// port, or `None` if the port does not accept it.
    pub fn classify(&self, tag: Tag) -> Option<u16> {
        let untagged = matches!(tag, Tag::None | Tag::Dot1q { vid: 0, .. });
        match self {
            PortVlan::Access(v) => untagged.then_some(*v),
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
        }
    }

    /// How a frame of `vlan` leaves through this port (only if `carries`).
    pub fn egress(&self, vlan: u16) -> TagEdit {
        match self {
            PortVlan::Access(_) => TagEdit::Untagged,
            PortVlan::Trunk { native, .. } if *native == Some(vlan) => TagEdit::Untagged,
            PortVlan::Trunk { .. } => TagEdit::Tagged(vlan),
        }
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
}
