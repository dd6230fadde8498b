//! The few rtnetlink requests podswitch makes. The plugin: create a veth
//! pair with its peer in the pod's netns, move a link into a netns, set a
//! link up, delete a link, add an address and a route. switchd (overlay,
//! issue 13): create a kernel VXLAN netdev for one VNI, and add or remove
//! its all-zero FDB entries, one per peer (head-end replication of
//! broadcast, unknown unicast and multicast).
//!
//! Messages are built and acknowledgements read with the rust-netlink
//! crates (`netlink-packet-route` for the rtnetlink messages,
//! `netlink-packet-core` for the netlink header and NLMSG_ERROR,
//! `netlink-sys` for the socket), used synchronously: a CNI ADD is
//! latency-critical, runs for milliseconds in a short-lived process, and
//! an async runtime (`rtnetlink` needs one) would only add to its start.
//! Each request is built by a pure function (`*_request`) apart from the
//! socket, so the unit tests decode exactly what the kernel would get.
//!
//! A netlink socket acts in the network namespace it was created in, so
//! pod-side requests use a socket opened on a thread inside that netns.

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ERROR,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::InfoVxlan;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

/// How long a request waits for the kernel's acknowledgement.
const RECV_TIMEOUT_S: libc::time_t = 5;
/// Receive buffer: an acknowledgement (with the echoed request on errors)
/// is far smaller.
const RECV_BUF: usize = 8192;
/// Receive buffer of a dump (the kernel fills datagrams of up to 32 KiB).
const DUMP_BUF: usize = 65536;

/// A request, built but not yet numbered: the rtnetlink message and the
/// NLM_F_* flags it is sent with besides NLM_F_REQUEST | NLM_F_ACK.
#[derive(Debug, Clone)]
struct Request {
    flags: u16,
    msg: RouteNetlinkMessage,
}

impl Request {
    /// The bytes sent to the kernel, with sequence number `seq`.
    fn into_bytes(self, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | self.flags;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(self.msg));
        // Sets the header's length and message type from the payload, so
        // the buffer below is exactly as long as serialize() needs.
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// RTM_NEWLINK (create, exclusive) of a veth pair: `host` here, `peer` in
/// the netns `peer_ns`, `queues` TX and RX queues on each end, the MTU on
/// both and the MAC on the peer. Attributes in the order iproute2 and the
/// previous hand-built encoder used; the nested IFLA_LINKINFO,
/// IFLA_INFO_DATA and VETH_INFO_PEER go without NLA_F_NESTED, as
/// netlink-packet-route (and iproute2) encode them: the kernel parses
/// these attributes with or without the flag.
fn create_veth_request(
    host: &str,
    peer: &str,
    peer_ns: RawFd,
    mtu: Option<u32>,
    peer_mac: Option<[u8; 6]>,
    queues: u32,
) -> Request {
    let queues = queues.max(1);
    let mut p = LinkMessage::default();
    p.attributes.push(LinkAttribute::IfName(peer.to_string()));
    p.attributes.push(LinkAttribute::NetNsFd(peer_ns));
    p.attributes.push(LinkAttribute::NumTxQueues(queues));
    p.attributes.push(LinkAttribute::NumRxQueues(queues));
    if let Some(mtu) = mtu {
        p.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = peer_mac {
        p.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(host.to_string()));
    m.attributes.push(LinkAttribute::NumTxQueues(queues));
    m.attributes.push(LinkAttribute::NumRxQueues(queues));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
    ]));
    Request {
        flags: NLM_F_CREATE | NLM_F_EXCL,
        msg: RouteNetlinkMessage::NewLink(m),
    }
}

/// RTM_NEWLINK on link `ifindex`: into the netns `ns`, renamed `name`,
/// with the MTU and MAC when given.
fn move_link_request(
    ifindex: u32,
    ns: RawFd,
    name: &str,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
) -> Request {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    m.attributes.push(LinkAttribute::NetNsFd(ns));
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    Request {
        flags: 0,
        msg: RouteNetlinkMessage::NewLink(m),
    }
}

/// RTM_NEWLINK on link `ifindex` setting IFF_UP (flags and change mask).
fn set_up_request(ifindex: u32) -> Request {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    Request {
        flags: 0,
        msg: RouteNetlinkMessage::NewLink(m),
    }
}

/// RTM_DELLINK by name.
fn delete_link_request(name: &str) -> Request {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    Request {
        flags: 0,
        msg: RouteNetlinkMessage::DelLink(m),
    }
}

/// RTM_NEWADDR (create, exclusive) of `ip/prefix` on `ifindex`: IFA_LOCAL
/// and IFA_ADDRESS both `ip`, scope universe, IFA_F_NODAD in the header's
/// flags byte and in IFA_FLAGS.
fn add_address_request(ifindex: u32, ip: IpAddr, prefix: u8) -> Request {
    let mut m = AddressMessage::default();
    m.header.family = family(&ip);
    m.header.prefix_len = prefix;
    m.header.flags = AddressHeaderFlags::Nodad;
    m.header.scope = AddressScope::Universe;
    m.header.index = ifindex;
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    m.attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    Request {
        flags: NLM_F_CREATE | NLM_F_EXCL,
        msg: RouteNetlinkMessage::NewAddress(m),
    }
}

/// RTM_NEWROUTE (create, exclusive) in the main table, protocol boot,
/// unicast: to `dst/prefix` (no RTA_DST for a default route) via `gw`
/// (scope universe) or on-link (scope link), out of `ifindex`.
fn add_route_request(ifindex: u32, dst: IpAddr, prefix: u8, gw: Option<IpAddr>) -> Request {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&dst);
    m.header.destination_prefix_length = prefix;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = if gw.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    m.header.kind = RouteType::Unicast;
    if prefix > 0 {
        m.attributes.push(RouteAttribute::Destination(dst.into()));
    }
    if let Some(g) = gw {
        m.attributes.push(RouteAttribute::Gateway(g.into()));
    }
    m.attributes.push(RouteAttribute::Oif(ifindex));
    Request {
        flags: NLM_F_CREATE | NLM_F_EXCL,
        msg: RouteNetlinkMessage::NewRoute(m),
    }
}

/// A kernel VXLAN netdev in external (collect-metadata) mode: one netdev
/// for every VNI, whose VNI and remote a TC program sets per frame (see
/// switchd's overlay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub name: String,
    /// The local underlay address (the outer source).
    pub local: IpAddr,
    /// UDP destination port (4789, IANA's).
    pub port: u16,
    /// The underlay netdev, if the outer frames must leave through it.
    pub underlay: Option<u32>,
    pub mtu: Option<u32>,
}

/// RTM_NEWLINK (create, exclusive) of an external VXLAN netdev. The
/// kernel learns nothing (learning off): which peer a MAC is behind is the
/// overlay program's to know.
fn vxlan_request(v: &Vxlan) -> Request {
    let mut info = vec![InfoVxlan::CollectMetadata(true)];
    match v.local {
        IpAddr::V4(a) => info.push(InfoVxlan::Local(a)),
        IpAddr::V6(a) => info.push(InfoVxlan::Local6(a)),
    }
    if let Some(dev) = v.underlay {
        info.push(InfoVxlan::Link(dev));
    }
    info.push(InfoVxlan::Port(v.port));
    info.push(InfoVxlan::Learning(false));
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(v.name.clone()));
    if let Some(mtu) = v.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(info)),
    ]));
    Request {
        flags: NLM_F_CREATE | NLM_F_EXCL,
        msg: RouteNetlinkMessage::NewLink(m),
    }
}

/// RTM_GETROUTE of the route the kernel would take to `dst`.
fn route_get_request(dst: IpAddr) -> Request {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&dst);
    m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    Request {
        flags: 0,
        msg: RouteNetlinkMessage::GetRoute(m),
    }
}

/// The state of a next hop in the neighbour table, as far as reaching it
/// goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// Resolved (reachable, stale, delay, probe, permanent or noarp).
    Resolved,
    /// Being resolved: a request is out, no answer yet.
    Resolving,
    /// Resolution failed: nobody answered.
    Failed,
    /// Not in the table (nothing was sent there recently).
    Unknown,
}

/// Looks through one received datagram for the acknowledgement of request
/// `seq`: None when it holds none (other messages are skipped), Some(Ok)
/// for an ACK, Some(Err) with the kernel's errno for a NACK, and
/// Some(Err(InvalidData)) when the datagram does not parse.
fn ack_status(datagram: &[u8], seq: u32) -> Option<io::Result<()>> {
    let invalid = |e: netlink_packet_core::DecodeError| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("truncated netlink answer: {e}"),
        )
    };
    let mut rest = datagram;
    // A header's worth of trailing bytes or less is padding, not a message.
    while rest.len() >= 16 {
        let msg = match NetlinkBuffer::new_checked(rest) {
            Ok(m) => m,
            Err(e) => return Some(Err(invalid(e))),
        };
        if msg.message_type() == NLMSG_ERROR && msg.sequence_number() == seq {
            return Some(match ErrorBuffer::new_checked(msg.payload()) {
                Ok(err) => match err.code() {
                    None => Ok(()),
                    // The kernel sends -errno.
                    Some(code) => Err(io::Error::from_raw_os_error(code.get().saturating_neg())),
                },
                Err(e) => Err(invalid(e)),
            });
        }
        // Messages are 4-byte aligned; new_checked made the length >= 16.
        let next = (msg.length() as usize).saturating_add(3) & !3;
        rest = rest.get(next..).unwrap_or_default();
    }
    None
}

/// A NETLINK_ROUTE socket in the netns of the thread that opened it.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let sock = Socket::new(NETLINK_ROUTE)?;
        // netlink-sys has no setter for the receive timeout.
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_S,
            tv_usec: 0,
        };
        // SAFETY: setsockopt(SO_RCVTIMEO) on a socket we own, reading a
        // live timeval whose exact size is passed.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink {
            sock,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends a request and waits for its acknowledgement.
    fn request(&mut self, req: Request) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.sock.send(&req.into_bytes(seq), 0)?;
        loop {
            self.buf.clear();
            // Fills the buffer's spare capacity (RECV_BUF) with one datagram
            // and sets its length to what was received.
            self.sock.recv(&mut self.buf, 0)?;
            if let Some(r) = ack_status(&self.buf, seq) {
                return r;
            }
        }
    }

    /// Creates a veth pair: `host` here, `peer` inside the netns `peer_ns`,
    /// each with `queues` queues, the given MTU and (for the peer) MAC.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_ns: RawFd,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
        queues: u32,
    ) -> io::Result<()> {
        self.request(create_veth_request(
            host, peer, peer_ns, mtu, peer_mac, queues,
        ))
    }

    /// Moves link `ifindex` into the netns `ns` under the name `name`, with
    /// the given MTU and MAC, in one request (the move keeps the link's
    /// ifindex when the target netns has it free).
    pub fn move_link(
        &mut self,
        ifindex: u32,
        ns: RawFd,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        self.request(move_link_request(ifindex, ns, name, mtu, mac))
    }

    pub fn set_up(&mut self, ifindex: u32) -> io::Result<()> {
        self.request(set_up_request(ifindex))
    }

    /// Deletes a link by name; NotFound if it does not exist.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        self.request(delete_link_request(name))
    }

    /// Creates a VXLAN netdev (down; the caller sets it up).
    pub fn create_vxlan(&mut self, v: &Vxlan) -> io::Result<()> {
        self.request(vxlan_request(v))
    }

    /// Sends a get or dump request and hands every answer of it to
    /// `each`, until the kernel's acknowledgement (a get) or its end (a
    /// dump); a NACK is the kernel's errno.
    fn query(&mut self, req: Request, mut each: impl FnMut(RouteNetlinkMessage)) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.sock.send(&req.into_bytes(seq), 0)?;
        // A dump comes in datagrams of up to a few pages each.
        let mut buf = Vec::with_capacity(DUMP_BUF);
        let invalid = |e: netlink_packet_core::DecodeError| {
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        };
        loop {
            buf.clear();
            self.sock.recv(&mut buf, 0)?;
            let mut rest = &buf[..];
            while rest.len() >= 16 {
                let len = NetlinkBuffer::new_checked(rest).map_err(invalid)?.length() as usize;
                let one = rest.get(..len).unwrap_or_default();
                rest = rest.get((len + 3) & !3..).unwrap_or_default();
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(one).map_err(invalid)?;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => {
                                Err(io::Error::from_raw_os_error(code.get().saturating_neg()))
                            }
                        }
                    }
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
            }
        }
    }

    /// The interface and next hop (the gateway, or `dst` itself when it
    /// is on-link) of the route the kernel would take to `dst`; None when
    /// there is no route (unreachable, prohibited or blackholed).
    pub fn route_to(&mut self, dst: IpAddr) -> io::Result<Option<(u32, IpAddr)>> {
        let mut found = None;
        let r = self.query(route_get_request(dst), |m| {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                if r.header.kind != RouteType::Unicast && r.header.kind != RouteType::Local {
                    return;
                }
                let oif = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                let gw = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(IpAddr::V4(*g)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => Some(IpAddr::V6(*g)),
                    _ => None,
                });
                if let Some(oif) = oif {
                    found = Some((oif, gw.unwrap_or(dst)));
                }
            }
        });
        match r {
            Ok(()) => Ok(found),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The state of every IPv4 and IPv6 neighbour of interface `ifindex`.
    pub fn next_hops(&mut self, ifindex: u32) -> io::Result<Vec<(IpAddr, NextHop)>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = NeighbourMessage::default();
            m.header.family = fam;
            m.header.ifindex = ifindex;
            let req = Request {
                flags: NLM_F_DUMP,
                msg: RouteNetlinkMessage::GetNeighbour(m),
            };
            self.query(req, |m| {
                let RouteNetlinkMessage::NewNeighbour(n) = m else {
                    return;
                };
                if n.header.ifindex != ifindex {
                    return;
                }
                let addr = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        Some(IpAddr::V6(*a))
                    }
                    _ => None,
                });
                let state = match n.header.state {
                    NeighbourState::Failed => NextHop::Failed,
                    NeighbourState::Incomplete => NextHop::Resolving,
                    NeighbourState::None => NextHop::Unknown,
                    _ => NextHop::Resolved,
                };
                if let Some(a) = addr {
                    out.push((a, state));
                }
            })?;
        }
        Ok(out)
    }

    /// Adds `ip/prefix` to the interface (no duplicate address detection:
    /// IPAM already made it unique, and DAD would delay the pod's start).
    pub fn add_address(&mut self, ifindex: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.request(add_address_request(ifindex, ip, prefix))
    }

    /// Adds a route to `dst/prefix` via `gw` (or on-link when `gw` is None).
    pub fn add_route(
        &mut self,
        ifindex: u32,
        dst: IpAddr,
        prefix: u8,
        gw: Option<IpAddr>,
    ) -> io::Result<()> {
        self.request(add_route_request(ifindex, dst, prefix, gw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{ErrorMessage, NLA_F_NESTED};
    use std::num::NonZeroI32;

    const RTM_NEWLINK: u16 = 16;
    const RTM_DELLINK: u16 = 17;
    const RTM_NEWADDR: u16 = 20;
    const RTM_NEWROUTE: u16 = 24;

    /// Serializes `req` and parses the bytes back as the kernel would get
    /// them: the header's type, flags and sequence number, and the payload.
    fn roundtrip(req: &Request, seq: u32, ty: u16) -> (u16, RouteNetlinkMessage) {
        let b = req.clone().into_bytes(seq);
        assert_eq!(b.len() % 4, 0, "netlink messages are 4-byte aligned");
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&b).unwrap();
        assert_eq!(m.header.length as usize, b.len());
        assert_eq!(m.header.message_type, ty);
        assert_eq!(m.header.sequence_number, seq);
        assert_eq!(m.header.port_number, 0, "the kernel is the peer");
        match m.payload {
            NetlinkPayload::InnerMessage(inner) => (m.header.flags, inner),
            p => panic!("not an rtnetlink message: {p:?}"),
        }
    }

    fn link(msg: RouteNetlinkMessage) -> LinkMessage {
        match msg {
            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l) => l,
            m => panic!("not a link message: {m:?}"),
        }
    }

    /// Type and value bytes of every top-level attribute of a message
    /// whose fixed header is `hdr` bytes long, as they are on the wire.
    fn raw_attrs(b: &[u8], hdr: usize) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 16 + hdr;
        while off + 4 <= b.len() {
            let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
            let ty = u16::from_ne_bytes([b[off + 2], b[off + 3]]);
            out.push((ty, b[off + 4..off + len].to_vec()));
            off += (len + 3) & !3;
        }
        out
    }

    #[test]
    fn create_veth_sends_both_ends_and_the_peer_nested_in_linkinfo() {
        let mac = [0x02, 0, 0, 0, 0, 0x2a];
        let req = create_veth_request("psw0123", "eth0", 7, Some(1400), Some(mac), 3);
        let (flags, msg) = roundtrip(&req, 9, RTM_NEWLINK);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        let l = link(msg);
        assert_eq!(l.header.index, 0);
        assert_eq!(l.header.flags, LinkFlags::empty());
        assert_eq!(l.header.change_mask, LinkFlags::empty());
        let peer = match &l.attributes[..] {
            [LinkAttribute::IfName(n), LinkAttribute::NumTxQueues(3), LinkAttribute::NumRxQueues(3), LinkAttribute::Mtu(1400), LinkAttribute::LinkInfo(info)] =>
            {
                assert_eq!(n, "psw0123");
                match &info[..] {
                    [LinkInfo::Kind(InfoKind::Veth), LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p)))] => {
                        p.clone()
                    }
                    i => panic!("IFLA_LINKINFO is not veth + peer: {i:?}"),
                }
            }
            a => panic!("host end attributes: {a:?}"),
        };
        // The peer is a whole ifinfomsg + attributes inside VETH_INFO_PEER.
        assert_eq!(peer.header.index, 0);
        assert_eq!(
            peer.attributes,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::NetNsFd(7),
                LinkAttribute::NumTxQueues(3),
                LinkAttribute::NumRxQueues(3),
                LinkAttribute::Mtu(1400),
                LinkAttribute::Address(mac.to_vec()),
            ]
        );
    }

    #[test]
    fn create_veth_wire_layout() {
        let b = create_veth_request("h", "p", 5, None, None, 0).into_bytes(2);
        let attrs = raw_attrs(&b, 16);
        // IFLA_IFNAME "h\0", IFLA_NUM_TX/RX_QUEUES at least 1, no MTU,
        // IFLA_LINKINFO last.
        assert_eq!(attrs[0], (3, b"h\0".to_vec()));
        assert_eq!(attrs[1], (31, 1u32.to_ne_bytes().to_vec()));
        assert_eq!(attrs[2], (32, 1u32.to_ne_bytes().to_vec()));
        assert_eq!(attrs.len(), 4);
        let (ty, info) = &attrs[3];
        assert_eq!(ty & !NLA_F_NESTED, 18);
        // IFLA_INFO_KIND "veth\0" (4 + 5, padded to 12), then IFLA_INFO_DATA.
        assert_eq!(u16::from_ne_bytes([info[0], info[1]]), 9);
        assert_eq!(u16::from_ne_bytes([info[2], info[3]]), 1);
        assert_eq!(&info[4..9], b"veth\0");
        assert_eq!(u16::from_ne_bytes([info[14], info[15]]) & !NLA_F_NESTED, 2);
        // ...holding VETH_INFO_PEER: ifinfomsg, IFNAME "p", NET_NS_FD 5, queues.
        let data = &info[16..];
        assert_eq!(u16::from_ne_bytes([data[2], data[3]]) & !NLA_F_NESTED, 1);
        let peer = &data[4..];
        assert_eq!(&peer[..16], &[0u8; 16]);
        assert_eq!(&peer[16..24], &[6, 0, 3, 0, b'p', 0, 0, 0][..]);
        assert_eq!(u16::from_ne_bytes([peer[26], peer[27]]), 28);
        assert_eq!(&peer[28..32], &5i32.to_ne_bytes());
        // Lengths add up: the peer attribute holds the rest of the message.
        assert_eq!(
            u16::from_ne_bytes([data[0], data[1]]) as usize,
            data.len(),
            "VETH_INFO_PEER spans the rest"
        );
    }

    #[test]
    fn create_veth_without_mtu_and_mac_sends_neither() {
        let req = create_veth_request("h", "p", 5, None, None, 0);
        let l = link(roundtrip(&req, 2, RTM_NEWLINK).1);
        assert!(!l
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Mtu(_) | LinkAttribute::Address(_))));
        let Some(LinkAttribute::LinkInfo(info)) = l.attributes.last() else {
            panic!("IFLA_LINKINFO is not last: {:?}", l.attributes);
        };
        let [_, LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p)))] = &info[..] else {
            panic!("no veth peer: {info:?}");
        };
        assert_eq!(
            p.attributes,
            vec![
                LinkAttribute::IfName("p".into()),
                LinkAttribute::NetNsFd(5),
                LinkAttribute::NumTxQueues(1),
                LinkAttribute::NumRxQueues(1),
            ]
        );
    }

    #[test]
    fn move_link_sends_netns_name_mtu_and_mac() {
        let mac = [0x02, 1, 2, 3, 4, 5];
        let req = move_link_request(42, 9, "eth1", Some(9000), Some(mac));
        let (flags, msg) = roundtrip(&req, 3, RTM_NEWLINK);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        let l = link(msg);
        assert_eq!(l.header.index, 42);
        assert_eq!(
            l.attributes,
            vec![
                LinkAttribute::NetNsFd(9),
                LinkAttribute::IfName("eth1".into()),
                LinkAttribute::Mtu(9000),
                LinkAttribute::Address(mac.to_vec()),
            ]
        );
        let l = link(roundtrip(&move_link_request(42, 9, "e", None, None), 4, RTM_NEWLINK).1);
        assert_eq!(
            l.attributes,
            vec![LinkAttribute::NetNsFd(9), LinkAttribute::IfName("e".into())]
        );
    }

    #[test]
    fn set_up_sets_iff_up_in_flags_and_change_mask() {
        let (flags, msg) = roundtrip(&set_up_request(17), 5, RTM_NEWLINK);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        let l = link(msg);
        assert_eq!(l.header.index, 17);
        assert_eq!(l.header.flags.bits(), libc::IFF_UP as u32);
        assert_eq!(l.header.change_mask.bits(), libc::IFF_UP as u32);
        assert!(l.attributes.is_empty());
    }

    #[test]
    fn a_vxlan_netdev_is_external_with_its_local_port_and_no_learning() {
        let v = Vxlan {
            name: "psovl0-vx".into(),
            local: "192.0.2.1".parse().unwrap(),
            port: 4789,
            underlay: Some(7),
            mtu: Some(1450),
        };
        let (flags, msg) = roundtrip(&vxlan_request(&v), 3, RTM_NEWLINK);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        let l = link(msg);
        assert!(l
            .attributes
            .contains(&LinkAttribute::IfName("psovl0-vx".into())));
        assert!(l.attributes.contains(&LinkAttribute::Mtu(1450)));
        let info = l
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        assert!(info.contains(&LinkInfo::Kind(InfoKind::Vxlan)));
        let data = info
            .iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(d)) => Some(d.clone()),
                _ => None,
            })
            .unwrap();
        for want in [
            InfoVxlan::CollectMetadata(true),
            InfoVxlan::Local("192.0.2.1".parse().unwrap()),
            InfoVxlan::Link(7),
            InfoVxlan::Port(4789),
            InfoVxlan::Learning(false),
        ] {
            assert!(data.contains(&want), "{want:?} missing from {data:?}");
        }
        assert!(
            !data.iter().any(|d| matches!(d, InfoVxlan::Id(_))),
            "{data:?}"
        );
    }

    /// The kernel makes the external VXLAN netdev, and answers where a
    /// peer is: on-link, via a gateway, or nowhere. Root only (a namespace
    /// of its own).
    #[test]
    fn the_kernel_makes_the_vxlan_netdev_and_finds_routes_to_peers() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "SKIP the_kernel_makes_the_vxlan_netdev_and_finds_routes_to_peers: needs root"
            );
            return;
        }
        let ns = format!("psnl{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap()
        };
        assert!(ip(&["netns", "add", &ns]).status.success());
        let path = std::path::PathBuf::from(format!("/var/run/netns/{ns}"));
        let r = crate::netns::NetNs::open(&path).unwrap().run(|| {
            let mut nl = Netlink::open().unwrap();
            let run = |args: &[&str]| {
                let o = std::process::Command::new("ip")
                    .args(args)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "ip {args:?}: {o:?}");
            };
            run(&[
                "link", "add", "under0", "type", "veth", "peer", "name", "under1",
            ]);
            run(&["addr", "add", "192.0.2.1/24", "dev", "under0"]);
            run(&["link", "set", "under1", "up"]);
            run(&["link", "set", "under0", "up"]);
            run(&["route", "add", "198.51.100.0/24", "via", "192.0.2.254"]);
            let under = crate::netdev::ifindex("under0").unwrap();
            nl.create_vxlan(&Vxlan {
                name: "psovl0-vx".into(),
                local: "192.0.2.1".parse().unwrap(),
                port: 4789,
                underlay: Some(under),
                mtu: Some(1450),
            })
            .unwrap();
            let on_link = nl.route_to("192.0.2.7".parse().unwrap()).unwrap();
            let routed = nl.route_to("198.51.100.9".parse().unwrap()).unwrap();
            let nowhere = nl.route_to("203.0.113.1".parse().unwrap()).unwrap();
            // Nobody answers for 192.0.2.7: its neighbour entry is being
            // resolved, or has failed.
            let _ = std::process::Command::new("ping")
                .args(["-c1", "-W1", "192.0.2.7"])
                .output();
            let hops = nl.next_hops(under).unwrap();
            let link = std::process::Command::new("ip")
                .args(["-d", "link", "show", "psovl0-vx"])
                .output()
                .unwrap();
            (
                under,
                on_link,
                routed,
                nowhere,
                hops,
                String::from_utf8_lossy(&link.stdout).to_string(),
            )
        });
        ip(&["netns", "del", &ns]);
        let (under, on_link, routed, nowhere, hops, link) = r.unwrap();
        assert!(
            link.contains("external") && link.contains("local 192.0.2.1"),
            "{link}"
        );
        assert!(
            link.contains("dstport 4789") && link.contains("mtu 1450"),
            "{link}"
        );
        assert!(link.contains("nolearning"), "{link}");
        assert_eq!(on_link, Some((under, "192.0.2.7".parse().unwrap())));
        assert_eq!(routed, Some((under, "192.0.2.254".parse().unwrap())));
        assert_eq!(nowhere, None);
        let ghost: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(
            hops.iter()
                .any(|(a, s)| *a == ghost && matches!(s, NextHop::Resolving | NextHop::Failed)),
            "{hops:?}"
        );
    }

    #[test]
    fn delete_link_is_by_name() {
        let (flags, msg) = roundtrip(&delete_link_request("psw0"), 6, RTM_DELLINK);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        let l = link(msg);
        assert_eq!(l.header.index, 0);
        assert_eq!(l.attributes, vec![LinkAttribute::IfName("psw0".into())]);
    }

    #[test]
    fn add_address_sends_local_address_and_nodad() {
        for (ip, prefix, fam) in [
            ("10.1.2.3", 24, AddressFamily::Inet),
            ("fd00::7", 64, AddressFamily::Inet6),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let req = add_address_request(11, ip, prefix);
            let b = req.clone().into_bytes(8);
            // struct ifaddrmsg: family, prefixlen, flags (IFA_F_NODAD),
            // scope universe, index.
            assert_eq!(b[16 + 1], prefix);
            assert_eq!(b[16 + 2], 0x02);
            assert_eq!(b[16 + 3], 0);
            let (flags, msg) = roundtrip(&req, 8, RTM_NEWADDR);
            assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
            let RouteNetlinkMessage::NewAddress(a) = msg else {
                panic!("not RTM_NEWADDR: {msg:?}");
            };
            assert_eq!(a.header.family, fam);
            assert_eq!(a.header.prefix_len, prefix);
            assert_eq!(a.header.flags, AddressHeaderFlags::Nodad);
            assert_eq!(a.header.scope, AddressScope::Universe);
            assert_eq!(a.header.index, 11);
            assert_eq!(
                a.attributes,
                vec![
                    AddressAttribute::Local(ip),
                    AddressAttribute::Address(ip),
                    AddressAttribute::Flags(AddressFlags::Nodad),
                ]
            );
        }
    }

    #[test]
    fn add_route_via_gateway_and_on_link() {
        let dst: IpAddr = "10.9.0.0".parse().unwrap();
        let gw: IpAddr = "10.1.0.1".parse().unwrap();
        let (flags, msg) = roundtrip(&add_route_request(4, dst, 16, Some(gw)), 10, RTM_NEWROUTE);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        let RouteNetlinkMessage::NewRoute(r) = msg else {
            panic!("not RTM_NEWROUTE: {msg:?}");
        };
        assert_eq!(r.header.address_family, AddressFamily::Inet);
        assert_eq!(r.header.destination_prefix_length, 16);
        assert_eq!(r.header.source_prefix_length, 0);
        assert_eq!(r.header.tos, 0);
        assert_eq!(r.header.table, 254);
        assert_eq!(r.header.protocol, RouteProtocol::Boot);
        assert_eq!(r.header.scope, RouteScope::Universe);
        assert_eq!(r.header.kind, RouteType::Unicast);
        assert!(r.header.flags.is_empty());
        assert_eq!(
            r.attributes,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet("10.9.0.0".parse().unwrap())),
                RouteAttribute::Gateway(RouteAddress::Inet("10.1.0.1".parse().unwrap())),
                RouteAttribute::Oif(4),
            ]
        );
        // A default route on-link: no RTA_DST, no gateway, scope link.
        let any: IpAddr = "::".parse().unwrap();
        let (_, msg) = roundtrip(&add_route_request(4, any, 0, None), 11, RTM_NEWROUTE);
        let RouteNetlinkMessage::NewRoute(r) = msg else {
            panic!("not RTM_NEWROUTE: {msg:?}");
        };
        assert_eq!(r.header.address_family, AddressFamily::Inet6);
        assert_eq!(r.header.destination_prefix_length, 0);
        assert_eq!(r.header.scope, RouteScope::Link);
        assert_eq!(r.attributes, vec![RouteAttribute::Oif(4)]);
    }

    /// An NLMSG_ERROR for `seq` with `code` (0: ACK), as the kernel sends it.
    fn ack(seq: u32, code: i32) -> Vec<u8> {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(code);
        e.header = vec![0u8; 16];
        let mut h = NetlinkHeader::default();
        h.sequence_number = seq;
        let mut m = NetlinkMessage::<RouteNetlinkMessage>::new(h, NetlinkPayload::Error(e));
        m.finalize();
        let mut b = vec![0u8; m.buffer_len()];
        m.serialize(&mut b);
        b
    }

    #[test]
    fn acks_give_ok_or_the_kernels_errno() {
        assert!(matches!(ack_status(&ack(3, 0), 3), Some(Ok(()))));
        for errno in [libc::EEXIST, libc::ENODEV, libc::ENOENT] {
            let r = ack_status(&ack(3, -errno), 3).unwrap();
            assert_eq!(r.unwrap_err().raw_os_error(), Some(errno));
        }
    }

    #[test]
    fn acks_of_other_requests_are_skipped() {
        assert!(ack_status(&ack(2, -libc::EEXIST), 3).is_none());
        // Two messages in one datagram: the second is ours.
        let mut d = ack(2, 0);
        d.extend(ack(3, -libc::ENODEV));
        let r = ack_status(&d, 3).unwrap();
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENODEV));
        assert!(ack_status(&[], 3).is_none());
    }

    #[test]
    fn truncated_answers_are_invalid_data_not_panics() {
        let full = ack(3, -libc::EEXIST);
        for cut in 16..full.len() {
            if let Some(Err(e)) = ack_status(&full[..cut], 3) {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            } else {
                panic!("a message cut at {cut} bytes was not refused");
            }
        }
        // A length field below the header size.
        let mut bad = ack(3, 0);
        bad[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(
            ack_status(&bad, 3).unwrap().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // An NLMSG_ERROR too short for its error code.
        let mut short = vec![0u8; 16];
        short[..4].copy_from_slice(&16u32.to_ne_bytes());
        short[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        short[8..12].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(
            ack_status(&short, 3).unwrap().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
