//! IPv4/IPv6 and the L4 fields port security and ACLs look at: addresses,
//! protocol, TCP/UDP ports, ICMP type, and the first byte of a UDP payload
//! (the BOOTP op of DHCPv4). IPv6 extension headers are walked (a router
//! advertisement hidden behind them is still one); a later fragment has no
//! L4 header and says so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// What the L3/L4 headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L3 {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// TCP/UDP source and destination port.
    pub ports: Option<(u16, u16)>,
    /// ICMP/ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// First byte of a UDP payload (BOOTP op for DHCPv4, msg-type for DHCPv6).
    pub udp_first: Option<u8>,
    /// A non-first fragment, or a header chain cut short: L4 is unknown.
    pub l4_unknown: bool,
    /// Where the L4 header starts in the L3 packet (after IPv6 extension
    /// headers); meaningful when `l4_unknown` is false.
    pub l4_off: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// (ports, ICMP type, ICMP code, complete): what the L4 header gives.
type L4Fields = (Option<(u16, u16)>, Option<u8>, Option<u8>, bool);

fn l4(proto: u8, p: &[u8]) -> L4Fields {
    match proto {
        PROTO_TCP | PROTO_UDP => match (be16(p, 0), be16(p, 2)) {
            (Some(s), Some(d)) => {
                let first = if proto == PROTO_UDP {
                    p.get(8).copied()
                } else {
                    None
                };
                (Some((s, d)), None, first, false)
            }
            _ => (None, None, None, true),
        },
        PROTO_ICMP | PROTO_ICMPV6 => match p.first() {
            Some(t) => (None, Some(*t), None, false),
            None => (None, None, None, true),
        },
        _ => (None, None, None, false),
    }
}

/// Parses the L3 packet `p` of EtherType `ethertype`; None if it is not IP
/// or too short to have addresses.
pub fn parse(ethertype: u16, p: &[u8]) -> Option<L3> {
    match ethertype {
        ETHERTYPE_IPV4 => {
            if p.len() < 20 || p[0] >> 4 != 4 {
                return None;
            }
            let ihl = (p[0] & 0x0f) as usize * 4;
            let proto = p[9];
            let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
            let frag_off = be16(p, 6)? & 0x1fff;
            if ihl < 20 || frag_off != 0 || p.len() < ihl {
                return Some(L3 {
                    src,
                    dst,
                    proto,
                    ports: None,
                    icmp_type: None,
                    udp_first: None,
                    l4_unknown: true,
                    l4_off: ihl,
                });
            }
            let (ports, icmp_type, udp_first, l4_unknown) = l4(proto, &p[ihl..]);
            Some(L3 {
                src,
                dst,
                proto,
                ports,
                icmp_type,
                udp_first,
                l4_unknown,
                l4_off: ihl,
            })
        }
        ETHERTYPE_IPV6 => {
            if p.len() < 40 || p[0] >> 4 != 6 {
                return None;
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[8..24]);
            let src = IpAddr::V6(Ipv6Addr::from(a));
            a.copy_from_slice(&p[24..40]);
            let dst = IpAddr::V6(Ipv6Addr::from(a));
            let mut next = p[6];
            let mut off = 40usize;
            let mut unknown = false;
            // Walk at most 8 extension headers.
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 => {
                        // hop-by-hop, routing, destination options: (len+1)*8 bytes
                        let (Some(nh), Some(len)) = (p.get(off), p.get(off + 1)) else {
                            unknown = true;
                            break;
                        };
                        next = *nh;
                        off += (*len as usize + 1) * 8;
                    }
                    44 => {
                        // fragment: 8 bytes; only the first fragment has L4
                        let (Some(nh), Some(fo)) = (p.get(off), be16(p, off + 2)) else {
                            unknown = true;
                            break;
                        };
                        next = *nh;
                        off += 8;
                        if fo >> 3 != 0 {
                            unknown = true;
                            break;
                        }
                    }
                    _ => break,
                }
            }
            if matches!(next, 0 | 43 | 60 | 44) {
                unknown = true; // chain longer than we walk: treat as opaque
            }
            let (ports, icmp_type, udp_first, cut) = if unknown || off > p.len() {
                (None, None, None, true)
            } else {
                l4(next, &p[off..])
            };
            Some(L3 {
                src,
                dst,
                proto: next,
                ports,
                icmp_type,
                udp_first,
                l4_unknown: unknown || cut,
                l4_off: off,
            })
        }
        _ => None,
    }
}

/// A DHCP server message (what a DHCP guard drops): DHCPv4 BOOTREPLY from
/// port 67, or a DHCPv6 server/relay message from port 547.
pub fn is_dhcp_server(l3: &L3) -> bool {
    if l3.proto != PROTO_UDP {
        return false;
    }
    match (l3.src, l3.ports, l3.udp_first) {
        (IpAddr::V4(_), Some((67, _)), Some(2)) => true,
        // ADVERTISE, REPLY, RECONFIGURE, RELAY-REPL
        (IpAddr::V6(_), Some((547, _)), Some(2 | 7 | 10 | 13)) => true,
        _ => false,
    }
}

/// A router advertisement or redirect (what a router guard drops). An
/// ICMPv6 packet whose type cannot be seen (fragmented header chain) is
/// treated as one, as RFC 7113 recommends.
pub fn is_router_message(l3: &L3) -> bool {
    match l3.proto {
        PROTO_ICMPV6 => l3.l4_unknown || matches!(l3.icmp_type, Some(134 | 137)),
        PROTO_ICMP => l3.icmp_type == Some(5),
        _ => l3.src.is_ipv6() && l3.l4_unknown,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        let len = (p.len() + l4.len()) as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(l4);
        p
    }

    pub fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.push(next);
        p.push(255);
        p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(l4);
        p
    }

    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    #[test]
    fn tcp_ports() {
        let p = ipv4(PROTO_TCP, [10, 0, 0, 1], [10, 0, 0, 2], &udp(1234, 80, b""));
        let l = parse(ETHERTYPE_IPV4, &p).unwrap();
        assert_eq!(l.ports, Some((1234, 80)));
        assert_eq!(l.dst, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(!l.l4_unknown);
    }

    #[test]
    fn dhcp_offer_is_a_server_message() {
        let p = ipv4(
            PROTO_UDP,
            [10, 0, 0, 1],
            [255; 4],
            &udp(67, 68, &[2, 1, 6, 0]),
        );
        assert!(is_dhcp_server(&parse(ETHERTYPE_IPV4, &p).unwrap()));
        let discover = ipv4(PROTO_UDP, [0; 4], [255; 4], &udp(68, 67, &[1, 1, 6, 0]));
        assert!(!is_dhcp_server(&parse(ETHERTYPE_IPV4, &discover).unwrap()));
        let v6 = ipv6(PROTO_UDP, &udp(547, 546, &[7, 0, 0, 0]));
        assert!(is_dhcp_server(&parse(ETHERTYPE_IPV6, &v6).unwrap()));
        let solicit = ipv6(PROTO_UDP, &udp(546, 547, &[1, 0, 0, 0]));
        assert!(!is_dhcp_server(&parse(ETHERTYPE_IPV6, &solicit).unwrap()));
    }

    #[test]
    fn router_advertisement_even_behind_extension_headers() {
        let ra = ipv6(PROTO_ICMPV6, &[134, 0, 0, 0]);
        assert!(is_router_message(&parse(ETHERTYPE_IPV6, &ra).unwrap()));
        // hop-by-hop header (8 bytes) in front
        let mut ext = vec![PROTO_ICMPV6, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[134, 0, 0, 0]);
        let hidden = ipv6(0, &ext);
        let l = parse(ETHERTYPE_IPV6, &hidden).unwrap();
        assert_eq!((l.proto, l.icmp_type), (PROTO_ICMPV6, Some(134)));
        assert!(is_router_message(&l));
        let ns = ipv6(PROTO_ICMPV6, &[135, 0, 0, 0]);
        assert!(!is_router_message(&parse(ETHERTYPE_IPV6, &ns).unwrap()));
        let redirect = ipv4(PROTO_ICMP, [10, 0, 0, 1], [10, 0, 0, 2], &[5, 0, 0, 0]);
        assert!(is_router_message(
            &parse(ETHERTYPE_IPV4, &redirect).unwrap()
        ));
        let echo = ipv4(PROTO_ICMP, [10, 0, 0, 1], [10, 0, 0, 2], &[8, 0, 0, 0]);
        assert!(!is_router_message(&parse(ETHERTYPE_IPV4, &echo).unwrap()));
    }

    #[test]
    fn truncated_and_fragmented() {
        assert_eq!(parse(ETHERTYPE_IPV4, &[0x45; 10]), None);
        assert_eq!(parse(0x0806, &[0; 40]), None);
        let mut p = ipv4(PROTO_UDP, [1, 1, 1, 1], [2, 2, 2, 2], &udp(1, 2, b""));
        p[6] = 0x00;
        p[7] = 0x10; // fragment offset 16
        assert!(parse(ETHERTYPE_IPV4, &p).unwrap().l4_unknown);
        // IPv6 later fragment carrying "ICMPv6": opaque, so a router guard drops it.
        let frag = [PROTO_ICMPV6, 0, 0, 0x08, 0, 0, 0, 1, 134, 0];
        let l = parse(ETHERTYPE_IPV6, &ipv6(44, &frag)).unwrap();
        assert!(l.l4_unknown && is_router_message(&l));
    }
}
