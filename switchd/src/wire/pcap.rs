//! The pcap file format (libpcap's, as `tcpdump -r` and Wireshark read
//! it) for live captures, and the capture request's query string. Pure:
//! bytes in, bytes out, no clock (timestamps are passed in).
//!
//! A capture stream is one global header, then one record per frame: a
//! 16-byte record header (timestamp, captured and original length) and
//! the frame's first `snaplen` bytes. We write little-endian with the
//! nanosecond magic (`0xa1b23c4d`), which readers recognise in either
//! byte order, and link type 1 (`LINKTYPE_ETHERNET`): frames exactly as
//! on the wire, 802.1Q tags included.

/// The nanosecond-resolution pcap magic number.
pub const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const GLOBAL_HEADER_LEN: usize = 24;
pub const RECORD_HEADER_LEN: usize = 16;
/// Snap length when the request names none (tcpdump's default).
pub const DEFAULT_SNAPLEN: u32 = 262_144;
/// Shortest snap length accepted: an Ethernet header with a tag.
pub const MIN_SNAPLEN: u32 = 18;

/// The file's global header.
pub fn global_header(snaplen: u32) -> [u8; GLOBAL_HEADER_LEN] {
    let mut h = [0u8; GLOBAL_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_NS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes()); // version 2.4
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone (8..12) and sigfigs (12..16) are 0.
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// The header of one record: `ts_ns` is nanoseconds since the Unix
/// epoch, `caplen` the bytes that follow, `orig_len` the frame's length.
pub fn record_header(ts_ns: u64, caplen: u32, orig_len: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    let secs = (ts_ns / 1_000_000_000) as u32;
    let nanos = (ts_ns % 1_000_000_000) as u32;
    h[0..4].copy_from_slice(&secs.to_le_bytes());
    h[4..8].copy_from_slice(&nanos.to_le_bytes());
    h[8..12].copy_from_slice(&caplen.to_le_bytes());
    h[12..16].copy_from_slice(&orig_len.to_le_bytes());
    h
}

/// Appends one record (header and the frame's bytes, already cut to the
/// snap length) to `out`.
pub fn push_record(out: &mut Vec<u8>, ts_ns: u64, data: &[u8], orig_len: u32) {
    out.extend_from_slice(&record_header(ts_ns, data.len() as u32, orig_len));
    out.extend_from_slice(data);
}

/// Which way a frame crosses the port, seen from the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The switch received it from the port (the pod sent it).
    In,
    /// The switch sent it to the port (the pod receives it).
    Out,
}

/// What a capture takes: `in`, `out` or `both`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

impl Direction {
    pub fn wants(self, d: Dir) -> bool {
        matches!(
            (self, d),
            (Direction::Both, _) | (Direction::In, Dir::In) | (Direction::Out, Dir::Out)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        }
    }
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in" => Ok(Direction::In),
            "out" => Ok(Direction::Out),
            "both" => Ok(Direction::Both),
            _ => Err(format!("direction is in, out or both, not {s:?}")),
        }
    }
}

/// A capture request: `?direction=in|out|both&count=N&snaplen=S`, every
/// key optional (both ways, no count, `DEFAULT_SNAPLEN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureRequest {
    pub direction: Direction,
    /// Stop after this many frames (None: until the client goes away).
    pub count: Option<u64>,
    pub snaplen: u32,
}

impl Default for CaptureRequest {
    fn default() -> Self {
        CaptureRequest {
            direction: Direction::Both,
            count: None,
            snaplen: DEFAULT_SNAPLEN,
        }
    }
}

impl CaptureRequest {
    /// Parses the query string (without the `?`); an unknown key, a
    /// repeated key or a bad value is an error that says which.
    pub fn from_query(q: Option<&str>) -> Result<CaptureRequest, String> {
        let mut r = CaptureRequest::default();
        let mut seen: Vec<&str> = Vec::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if seen.contains(&k) {
                return Err(format!("{k:?} is given twice"));
            }
            seen.push(k);
            match k {
                "direction" => r.direction = v.parse()?,
                "count" => {
                    let n: u64 = v
                        .parse()
                        .map_err(|_| format!("count {v:?} is not a number of frames"))?;
                    if n == 0 {
                        return Err("count must be at least 1 (leave it out for no limit)".into());
                    }
                    r.count = Some(n);
                }
                "snaplen" => {
                    let n: u32 = v
                        .parse()
                        .map_err(|_| format!("snaplen {v:?} is not a number of bytes"))?;
                    if !(MIN_SNAPLEN..=DEFAULT_SNAPLEN).contains(&n) {
                        return Err(format!(
                            "snaplen {n} is outside {MIN_SNAPLEN}..{DEFAULT_SNAPLEN}"
                        ));
                    }
                    r.snaplen = n;
                }
                _ => {
                    return Err(format!(
                        "unknown query parameter {k:?} (direction, count, snaplen)"
                    ))
                }
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_header_is_libpcap_nanosecond_ethernet() {
        let h = global_header(65535);
        assert_eq!(
            h,
            [
                0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0,
                0, 0
            ]
        );
    }

    #[test]
    fn record_splits_the_timestamp_and_keeps_both_lengths() {
        let mut out = Vec::new();
        let ts = 1_700_000_000 * 1_000_000_000 + 123_456_789;
        push_record(&mut out, ts, &[0xaa; 4], 60);
        assert_eq!(out.len(), RECORD_HEADER_LEN + 4);
        assert_eq!(&out[0..4], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&out[4..8], &123_456_789u32.to_le_bytes());
        assert_eq!(&out[8..12], &4u32.to_le_bytes(), "captured");
        assert_eq!(&out[12..16], &60u32.to_le_bytes(), "on the wire");
        assert_eq!(&out[16..], &[0xaa; 4]);
    }

    #[test]
    fn direction_filter() {
        assert!(Direction::Both.wants(Dir::In) && Direction::Both.wants(Dir::Out));
        assert!(Direction::In.wants(Dir::In) && !Direction::In.wants(Dir::Out));
        assert!(Direction::Out.wants(Dir::Out) && !Direction::Out.wants(Dir::In));
        for d in [Direction::In, Direction::Out, Direction::Both] {
            assert_eq!(d.as_str().parse::<Direction>(), Ok(d));
        }
    }

    #[test]
    fn query_strings() {
        assert_eq!(
            CaptureRequest::from_query(None),
            Ok(CaptureRequest::default())
        );
        assert_eq!(
            CaptureRequest::from_query(Some("direction=in&count=5&snaplen=96")),
            Ok(CaptureRequest {
                direction: Direction::In,
                count: Some(5),
                snaplen: 96
            })
        );
        for (bad, words) in [
            ("direction=sideways", "in, out or both"),
            ("direction=", "in, out or both"),
            ("count=0", "at least 1"),
            ("count=-1", "not a number"),
            ("snaplen=4", "outside"),
            ("snaplen=999999", "outside"),
            ("limit=3", "unknown query parameter \"limit\""),
            ("count=1&count=2", "twice"),
        ] {
            let e = CaptureRequest::from_query(Some(bad)).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }
}
