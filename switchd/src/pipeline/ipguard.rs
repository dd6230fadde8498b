//! IP, ARP and ND spoof guard (Hyper-V's `PreventIPSpoofing` with its
//! allowed addresses; Kube-OVN's port security): what a port sends must
//! carry one of its allowed addresses as its own.
//!
//! - IPv4: the source address; `0.0.0.0` only for DHCP (UDP 68 → 67).
//! - ARP: the sender protocol address; `0.0.0.0` (an RFC 5227 probe) passes.
//! - IPv6: the source address; `::` (duplicate address detection, MLD
//!   during DAD) and the link-local address derived from the port's MAC
//!   (EUI-64) pass.
//! - ND: the target of a neighbour advertisement, and of a DAD probe (a
//!   solicitation from `::`), which claim that address. An ordinary
//!   solicitation's target is the neighbour being looked up, not us.
//!
//! Pure code over the frame's bytes after the Ethernet header (and tag).

use super::DropReason;
use podswitch_shared::model::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::ethernet::{TPID_8021AD, TPID_8021Q};
use crate::wire::ip::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, L3, PROTO_ICMPV6, PROTO_UDP};

const ETHERTYPE_ARP: u16 = 0x0806;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;

/// A port's allowed addresses, ready for the per-frame checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpGuard {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    /// fe80::/64 with the EUI-64 interface ID of the port's MAC.
    link_local: Option<Ipv6Addr>,
}

/// The EUI-64 link-local address of `mac` (RFC 4291 appendix A).
pub fn eui64_link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

impl IpGuard {
    pub fn new(allowed: &[IpAddr], mac: Option<MacAddr>) -> IpGuard {
        IpGuard {
            v4: allowed
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v) => Some(*v),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            v6: allowed
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V6(v) => Some(*v),
                    IpAddr::V4(_) => None,
                })
                .collect(),
            link_local: mac.map(eui64_link_local),
        }
    }

    fn allows_v6(&self, a: Ipv6Addr) -> bool {
        self.v6.contains(&a) || self.link_local == Some(a)
    }

    /// Checks a frame the port sent: `l3` is what follows its Ethernet
    /// header (and 802.1Q tag), `parsed` the pipeline's reading of it
    /// (`wire::ip::parse`, which walks IPv6 extension headers). Frames of
    /// other EtherTypes pass; a stacked 802.1Q/802.1ad tag hides its
    /// addresses and is dropped.
    pub fn check(&self, ethertype: u16, l3: &[u8], parsed: Option<&L3>) -> Result<(), DropReason> {
        match ethertype {
            ETHERTYPE_ARP => self.check_arp(l3),
            ETHERTYPE_IPV4 => self.check_ipv4(parsed.ok_or(DropReason::IpSpoof)?),
            ETHERTYPE_IPV6 => self.check_ipv6(l3, parsed.ok_or(DropReason::Ipv6Spoof)?),
            TPID_8021Q | TPID_8021AD => Err(DropReason::IpSpoof),
            _ => Ok(()),
        }
    }

    fn check_arp(&self, p: &[u8]) -> Result<(), DropReason> {
        // htype 1, ptype IPv4, hlen 6, plen 4; the sender's IP at 14..18.
        let Some(spa) = p.get(14..18) else {
            return Err(DropReason::ArpSpoof);
        };
        if p.get(2..6) != Some(&[0x08, 0x00, 6, 4][..]) {
            return Err(DropReason::ArpSpoof);
        }
        let spa = Ipv4Addr::new(spa[0], spa[1], spa[2], spa[3]);
        if spa.is_unspecified() || self.v4.contains(&spa) {
            Ok(())
        } else {
            Err(DropReason::ArpSpoof)
        }
    }

    fn check_ipv4(&self, p: &L3) -> Result<(), DropReason> {
        let IpAddr::V4(src) = p.src else {
            return Err(DropReason::IpSpoof);
        };
        if self.v4.contains(&src) {
            return Ok(());
        }
        // A DHCP client before it has an address: UDP 68 -> 67.
        if src.is_unspecified() && p.proto == PROTO_UDP && p.ports == Some((68, 67)) {
            return Ok(());
        }
        Err(DropReason::IpSpoof)
    }

    fn check_ipv6(&self, l3: &[u8], p: &L3) -> Result<(), DropReason> {
        let IpAddr::V6(src) = p.src else {
            return Err(DropReason::Ipv6Spoof);
        };
        let dad = src.is_unspecified();
        if !dad && !self.allows_v6(src) {
            return Err(DropReason::Ipv6Spoof);
        }
        // An NA, or a DAD probe, claims its target. A fragmented ICMPv6
        // whose type cannot be seen is no ND message (RFC 6980).
        let claims = p.proto == PROTO_ICMPV6
            && match p.icmp_type {
                Some(ND_NEIGHBOR_ADVERT) => true,
                Some(ND_NEIGHBOR_SOLICIT) => dad,
                _ => false,
            };
        if !claims {
            return Ok(());
        }
        let target = l3
            .get(p.l4_off + 8..p.l4_off + 24)
            .and_then(|t| <[u8; 16]>::try_from(t).ok())
            .map(Ipv6Addr::from);
        match target {
            Some(t) if self.allows_v6(t) => Ok(()),
            _ => Err(DropReason::NdSpoof),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x00, 0x00, 0x05]);

    /// The guard's verdict, with the frame parsed as the pipeline does.
    fn verdict(g: &IpGuard, ethertype: u16, l3: &[u8]) -> Result<(), DropReason> {
        g.check(
            ethertype,
            l3,
            crate::wire::ip::parse(ethertype, l3).as_ref(),
        )
    }

    fn guard() -> IpGuard {
        IpGuard::new(
            &["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            Some(MAC),
        )
    }

    fn ipv4(src: [u8; 4], proto: u8, ports: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, proto, 0, 0];
        p.extend(src);
        p.extend([10, 0, 0, 1]);
        p.extend(ports);
        p.extend([0, 8, 0, 0]);
        p
    }

    fn arp(spa: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
        p.extend(MAC.0);
        p.extend(spa);
        p.extend([0; 6]);
        p.extend([10, 0, 0, 1]);
        p
    }

    fn ipv6(src: Ipv6Addr, icmp_type: u8, target: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 24, PROTO_ICMPV6, 255];
        p.extend(src.octets());
        p.extend("ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend([icmp_type, 0, 0, 0, 0, 0, 0, 0]);
        p.extend(target.octets());
        p
    }

    #[test]
    fn eui64() {
        assert_eq!(
            eui64_link_local(MAC),
            "fe80::42:aff:fe00:5".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn ipv4_source_and_dhcp() {
        let g = guard();
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV4, &ipv4([10, 0, 0, 5], 1, [0; 4])),
            Ok(())
        );
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV4, &ipv4([10, 0, 0, 6], 1, [0; 4])),
            Err(DropReason::IpSpoof)
        );
        // DHCP discover from 0.0.0.0 passes; other traffic from it does not.
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV4, &ipv4([0; 4], PROTO_UDP, [0, 68, 0, 67])),
            Ok(())
        );
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV4, &ipv4([0; 4], PROTO_UDP, [0, 68, 0, 53])),
            Err(DropReason::IpSpoof)
        );
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV4, &[0x45, 0]),
            Err(DropReason::IpSpoof)
        );
    }

    #[test]
    fn arp_sender() {
        let g = guard();
        assert_eq!(verdict(&g, ETHERTYPE_ARP, &arp([10, 0, 0, 5])), Ok(()));
        assert_eq!(
            verdict(&g, ETHERTYPE_ARP, &arp([0; 4])),
            Ok(()),
            "ARP probe"
        );
        assert_eq!(
            verdict(&g, ETHERTYPE_ARP, &arp([10, 0, 0, 7])),
            Err(DropReason::ArpSpoof)
        );
        assert_eq!(
            verdict(&g, ETHERTYPE_ARP, &[0, 1]),
            Err(DropReason::ArpSpoof)
        );
    }

    #[test]
    fn ipv6_source_dad_and_nd_targets() {
        let g = guard();
        let own: Ipv6Addr = "fd00::5".parse().unwrap();
        let other: Ipv6Addr = "fd00::9".parse().unwrap();
        let ll = eui64_link_local(MAC);
        let any = Ipv6Addr::UNSPECIFIED;
        // Echo request (128) from our addresses; from another: spoofed.
        assert_eq!(verdict(&g, ETHERTYPE_IPV6, &ipv6(own, 128, any)), Ok(()));
        assert_eq!(verdict(&g, ETHERTYPE_IPV6, &ipv6(ll, 128, any)), Ok(()));
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV6, &ipv6(other, 128, any)),
            Err(DropReason::Ipv6Spoof)
        );
        // DAD: a solicitation from :: for our own (or link-local) address.
        assert_eq!(verdict(&g, ETHERTYPE_IPV6, &ipv6(any, 135, own)), Ok(()));
        assert_eq!(verdict(&g, ETHERTYPE_IPV6, &ipv6(any, 135, ll)), Ok(()));
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV6, &ipv6(any, 135, other)),
            Err(DropReason::NdSpoof)
        );
        // An ordinary solicitation looks another address up: fine.
        assert_eq!(verdict(&g, ETHERTYPE_IPV6, &ipv6(own, 135, other)), Ok(()));
        // An advertisement claims its target.
        assert_eq!(verdict(&g, ETHERTYPE_IPV6, &ipv6(ll, 136, own)), Ok(()));
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV6, &ipv6(ll, 136, other)),
            Err(DropReason::NdSpoof)
        );
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV6, &[0x60]),
            Err(DropReason::Ipv6Spoof)
        );
    }

    #[test]
    fn nd_behind_extension_headers_and_hidden_addresses() {
        let g = guard();
        let ll = eui64_link_local(MAC);
        let other: Ipv6Addr = "fd00::9".parse().unwrap();
        // An NA for another address behind a hop-by-hop header is still one.
        let mut p = ipv6(ll, ND_NEIGHBOR_ADVERT, other);
        p[6] = 0; // next header: hop-by-hop
        let icmp = p.split_off(40);
        p.extend([PROTO_ICMPV6, 0, 0, 0, 0, 0, 0, 0]);
        p.extend(icmp);
        assert_eq!(verdict(&g, ETHERTYPE_IPV6, &p), Err(DropReason::NdSpoof));
        // A truncated NA cannot show its target: dropped.
        let p = ipv6(ll, ND_NEIGHBOR_ADVERT, other);
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV6, &p[..52]),
            Err(DropReason::NdSpoof)
        );
        // MLD reports from :: (during DAD) pass; a stacked tag hides the
        // addresses and is dropped.
        let p = ipv6(Ipv6Addr::UNSPECIFIED, 143, Ipv6Addr::UNSPECIFIED);
        assert_eq!(verdict(&g, ETHERTYPE_IPV6, &p), Ok(()));
        assert_eq!(verdict(&g, TPID_8021Q, &[0; 40]), Err(DropReason::IpSpoof));
        // DHCP from 0.0.0.0 with IPv4 options (IHL 6) is still DHCP.
        let mut p = ipv4([0; 4], PROTO_UDP, [0, 68, 0, 67]);
        p[0] = 0x46;
        p.splice(20..20, [1, 1, 1, 0]);
        assert_eq!(verdict(&g, ETHERTYPE_IPV4, &p), Ok(()));
        // ARP for another protocol than IPv4 is not checkable: dropped.
        let mut p = arp([10, 0, 0, 5]);
        p[2] = 0x86;
        assert_eq!(verdict(&g, ETHERTYPE_ARP, &p), Err(DropReason::ArpSpoof));
    }

    #[test]
    fn other_ethertypes_pass_and_nothing_allowed_blocks_ip() {
        let g = IpGuard::new(&[], None);
        assert_eq!(verdict(&g, 0x88cc, &[1, 2, 3]), Ok(()), "LLDP");
        assert_eq!(
            verdict(&g, ETHERTYPE_IPV4, &ipv4([10, 0, 0, 5], 1, [0; 4])),
            Err(DropReason::IpSpoof)
        );
    }
}
