//! Ethernet II and 802.1Q: a zero-copy parse of the L2 header and the
//! in-place tag edits the egress path needs (push, pop, rewrite).
//!
//! Tag edits use the headroom in front of the frame: the 12 address bytes
//! move by 4 and the payload stays where it is, so a VLAN push or pop costs
//! a 12-byte move whatever the frame's size.

use podswitch_shared::model::MacAddr;

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of one 802.1Q tag.
pub const TAG_LEN: usize = 4;
/// 802.1Q C-tag TPID.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad S-tag TPID (and the old pre-standard QinQ TPID).
pub const TPID_8021AD: u16 = 0x88a8;
pub const TPID_QINQ_OLD: u16 = 0x9100;

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const TYPE: Range<usize> = 12..14;
    pub const TCI: Range<usize> = 14..16;
    pub const INNER_TYPE: Range<usize> = 16..18;
}

/// Why a frame could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than an Ethernet header.
    Runt,
    /// Says it carries a tag but ends inside it.
    TruncatedTag,
    /// Source MAC is multicast/broadcast or all zero.
    BadSource,
}

/// The outer 802.1Q tag of a frame, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// No tag.
    None,
    /// TPID 0x8100 with this PCP and VID (VID 0 is a priority tag).
    Dot1q { pcp: u8, dei: bool, vid: u16 },
    /// An S-tag or other stacked-VLAN TPID: never classified, only dropped.
    Other(u16),
}

impl Tag {
    /// Whether the frame carries 4 tag bytes after the source MAC.
    pub fn in_frame(&self) -> bool {
        !matches!(self, Tag::None)
    }
}

/// The parsed L2 header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Header {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub tag: Tag,
    /// EtherType after the tag (or the only one).
    pub ethertype: u16,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn mac(b: &[u8]) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(b);
    MacAddr(m)
}

/// Parses the Ethernet and outer 802.1Q header of `frame`.
pub fn parse(frame: &[u8]) -> Result<L2Header, ParseError> {
    if frame.len() < HEADER_LEN {
        return Err(ParseError::Runt);
    }
    let dst = mac(&frame[field::DST]);
    let src = mac(&frame[field::SRC]);
    if !src.is_unicast() {
        return Err(ParseError::BadSource);
    }
    let outer = be16(&frame[field::TYPE]);
    let (tag, ethertype) = match outer {
        TPID_8021Q | TPID_8021AD | TPID_QINQ_OLD => {
            if frame.len() < HEADER_LEN + TAG_LEN {
                return Err(ParseError::TruncatedTag);
            }
            let inner = be16(&frame[field::INNER_TYPE]);
            if outer == TPID_8021Q {
                let tci = be16(&frame[field::TCI]);
                let tag = Tag::Dot1q {
                    pcp: (tci >> 13) as u8,
                    dei: tci & 0x1000 != 0,
                    vid: tci & 0x0fff,
                };
                (tag, inner)
            } else {
                (Tag::Other(outer), inner)
            }
        }
        t => (Tag::None, t),
    };
    Ok(L2Header {
        dst,
        src,
        tag,
        ethertype,
    })
}

/// What the egress port needs done to a frame's outer tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagEdit {
    /// Leave untagged (remove a tag if present).
    Untagged,
    /// Carry this VID in an 802.1Q tag (push one, or rewrite the VID).
    Tagged(u16),
}

/// Not enough headroom in front of the frame to push a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoHeadroom;

/// Edits the frame `buf[off..off + len]` in place so that it leaves with
/// `edit`, given whether it currently carries an 802.1Q tag (`tagged`),
/// and, tagged, with the 802.1p priority `pcp` (None: a rewritten tag
/// keeps its PCP, a pushed one gets 0). Returns the frame's new
/// `(off, len)`; pushing needs `off >= 4`.
pub fn apply_tag_edit(
    buf: &mut [u8],
    off: usize,
    len: usize,
    tagged: bool,
    edit: TagEdit,
    pcp: Option<u8>,
) -> Result<(usize, usize), NoHeadroom> {
    let prio = |p: u8| u16::from(p & 7) << 13;
    match (tagged, edit) {
        (false, TagEdit::Untagged) => Ok((off, len)),
        (true, TagEdit::Untagged) => {
            // Pop: slide the two addresses forward over the tag.
            buf.copy_within(off..off + 12, off + TAG_LEN);
            Ok((off + TAG_LEN, len - TAG_LEN))
        }
        (true, TagEdit::Tagged(vid)) => {
            let tci = off + field::TCI.start;
            let old = be16(&buf[tci..tci + 2]);
            let keep = match pcp {
                Some(p) => prio(p) | (old & 0x1000), // DEI stays
                None => old & 0xf000,
            };
            let new = keep | (vid & 0x0fff);
            buf[tci..tci + 2].copy_from_slice(&new.to_be_bytes());
            // A non-0x8100 TPID never reaches egress; normalise anyway.
            buf[off + 12..off + 14].copy_from_slice(&TPID_8021Q.to_be_bytes());
            Ok((off, len))
        }
        (false, TagEdit::Tagged(vid)) => {
            if off < TAG_LEN {
                return Err(NoHeadroom);
            }
            let n = off - TAG_LEN;
            buf.copy_within(off..off + 12, n);
            buf[n + 12..n + 14].copy_from_slice(&TPID_8021Q.to_be_bytes());
            let tci = pcp.map(prio).unwrap_or(0) | (vid & 0x0fff);
            buf[n + 14..n + 16].copy_from_slice(&tci.to_be_bytes());
            Ok((n, len + TAG_LEN))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    pub const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    /// An untagged frame dst <- src carrying `payload` with EtherType 0x0800.
    pub fn untagged(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(payload);
        f
    }

    /// A frame tagged with `tpid` and `tci`.
    pub fn tagged_with(dst: [u8; 6], src: [u8; 6], tpid: u16, tci: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(payload);
        f
    }

    pub fn tagged(dst: [u8; 6], src: [u8; 6], vid: u16, payload: &[u8]) -> Vec<u8> {
        tagged_with(dst, src, TPID_8021Q, vid, payload)
    }

    #[test]
    fn parse_untagged() {
        let f = untagged(B, A, b"hello");
        let h = parse(&f).unwrap();
        assert_eq!(h.dst, MacAddr(B));
        assert_eq!(h.src, MacAddr(A));
        assert_eq!(h.tag, Tag::None);
        assert_eq!(h.ethertype, 0x0800);
    }

    #[test]
    fn parse_tagged_and_priority() {
        let f = tagged_with(B, A, TPID_8021Q, (5 << 13) | 0x1000 | 200, b"x");
        let h = parse(&f).unwrap();
        assert_eq!(
            h.tag,
            Tag::Dot1q {
                pcp: 5,
                dei: true,
                vid: 200
            }
        );
        assert_eq!(h.ethertype, 0x0800);
        let f = tagged_with(B, A, TPID_8021Q, 3 << 13, b"x");
        assert_eq!(
            parse(&f).unwrap().tag,
            Tag::Dot1q {
                pcp: 3,
                dei: false,
                vid: 0
            }
        );
        let f = tagged_with(B, A, TPID_8021AD, 100, b"x");
        assert_eq!(parse(&f).unwrap().tag, Tag::Other(TPID_8021AD));
    }

    #[test]
    fn parse_rejects() {
        assert_eq!(parse(&[0u8; 13]), Err(ParseError::Runt));
        assert_eq!(parse(&[]), Err(ParseError::Runt));
        let mut f = tagged(B, A, 10, b"");
        f.truncate(17);
        assert_eq!(parse(&f), Err(ParseError::TruncatedTag));
        let f = untagged(B, [0x01, 0, 0x5e, 0, 0, 1], b"x");
        assert_eq!(parse(&f), Err(ParseError::BadSource));
        let f = untagged(B, [0xff; 6], b"x");
        assert_eq!(parse(&f), Err(ParseError::BadSource));
        let f = untagged(B, [0; 6], b"x");
        assert_eq!(parse(&f), Err(ParseError::BadSource));
        // Exactly a header is fine (an empty payload is the next layer's business).
        assert!(parse(&untagged(B, A, b"")).is_ok());
    }

    fn in_buffer(frame: &[u8], headroom: usize) -> Vec<u8> {
        let mut buf = vec![0xee; headroom];
        buf.extend_from_slice(frame);
        buf
    }

    #[test]
    fn push_pop_rewrite() {
        let plain = untagged(B, A, b"payload");
        let mut buf = in_buffer(&plain, 8);
        let (off, len) =
            apply_tag_edit(&mut buf, 8, plain.len(), false, TagEdit::Tagged(300), None).unwrap();
        assert_eq!((off, len), (4, plain.len() + 4));
        assert_eq!(
            &buf[off..off + len],
            tagged(B, A, 300, b"payload").as_slice()
        );

        let (off, len) =
            apply_tag_edit(&mut buf, off, len, true, TagEdit::Tagged(7), None).unwrap();
        assert_eq!(&buf[off..off + len], tagged(B, A, 7, b"payload").as_slice());

        let (off, len) = apply_tag_edit(&mut buf, off, len, true, TagEdit::Untagged, None).unwrap();
        assert_eq!((off, len), (8, plain.len()));
        assert_eq!(&buf[off..off + len], plain.as_slice());

        let (o2, l2) = apply_tag_edit(&mut buf, off, len, false, TagEdit::Untagged, None).unwrap();
        assert_eq!((o2, l2), (off, len));
    }

    #[test]
    fn priority_bits_set_reset_or_kept() {
        // Pushed with a forced PCP; rewritten with another; pushed without: 0.
        let plain = untagged(B, A, b"p");
        let mut buf = in_buffer(&plain, 8);
        let (off, len) = apply_tag_edit(
            &mut buf,
            8,
            plain.len(),
            false,
            TagEdit::Tagged(100),
            Some(5),
        )
        .unwrap();
        let pcp = |b: &[u8]| match parse(b).unwrap().tag {
            Tag::Dot1q { pcp, vid, .. } => (pcp, vid),
            t => panic!("{t:?}"),
        };
        assert_eq!(pcp(&buf[off..off + len]), (5, 100));
        let (off, len) =
            apply_tag_edit(&mut buf, off, len, true, TagEdit::Tagged(7), Some(0)).unwrap();
        assert_eq!(pcp(&buf[off..off + len]), (0, 7));
        let f = tagged_with(B, A, TPID_8021Q, 3 << 13, b"p");
        let mut buf = in_buffer(&f, 0);
        let n = f.len();
        apply_tag_edit(&mut buf, 0, n, true, TagEdit::Tagged(9), None).unwrap();
        assert_eq!(pcp(&buf), (3, 9), "trust keeps the frame's own");
        let mut buf = in_buffer(&plain, 8);
        let (off, len) =
            apply_tag_edit(&mut buf, 8, plain.len(), false, TagEdit::Tagged(9), None).unwrap();
        assert_eq!(pcp(&buf[off..off + len]), (0, 9));
    }

    #[test]
    fn rewrite_keeps_priority_bits() {
        let f = tagged_with(B, A, TPID_8021Q, 6 << 13, b"p");
        let mut buf = in_buffer(&f, 0);
        let n = f.len();
        apply_tag_edit(&mut buf, 0, n, true, TagEdit::Tagged(42), None).unwrap();
        assert_eq!(
            parse(&buf).unwrap().tag,
            Tag::Dot1q {
                pcp: 6,
                dei: false,
                vid: 42
            }
        );
    }

    #[test]
    fn push_needs_headroom() {
        let f = untagged(B, A, b"x");
        let mut buf = in_buffer(&f, 2);
        assert_eq!(
            apply_tag_edit(&mut buf, 2, f.len(), false, TagEdit::Tagged(5), None),
            Err(NoHeadroom)
        );
    }
}
