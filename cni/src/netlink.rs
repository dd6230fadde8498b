//! The few rtnetlink requests the plugin makes, on a plain NETLINK_ROUTE
//! socket: create a veth pair with its peer in the pod's netns, set a link
//! up, delete a link, add an address and a route. Synchronous and small on
//! purpose: a CNI ADD is latency-critical and runs for milliseconds.
//!
//! A netlink socket acts in the network namespace it was created in, so
//! pod-side requests use a socket opened on a thread inside that netns.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// A netlink request under construction: header, fixed part, attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(ty, &b)
    }

    fn begin(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(&mut self, seq: u32) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

/// `struct ifinfomsg` with an index and flag change.
fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// A NETLINK_ROUTE socket in the netns of the thread that opened it.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: setting SO_RCVTIMEO from a live timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Netlink { fd, seq: 1 })
    }

    /// Sends a request and waits for its acknowledgement.
    fn request(&mut self, msg: &mut Msg) -> io::Result<()> {
        self.seq += 1;
        let seq = self.seq;
        let b = msg.finish(seq);
        // SAFETY: sending our own buffer on our own socket (kernel is the peer).
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                b.as_ptr() as *const libc::c_void,
                b.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: receiving into a live buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq =
                    u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
                if len < 16 || off + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink answer",
                    ));
                }
                if ty == NLMSG_ERROR && mseq == seq && len >= 20 {
                    let code = i32::from_ne_bytes([
                        buf[off + 16],
                        buf[off + 17],
                        buf[off + 18],
                        buf[off + 19],
                    ]);
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                off += (len + 3) & !3;
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
        let queues = queues.max(1);
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.raw(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, host);
        m.attr_u32(IFLA_NUM_TX_QUEUES, queues)
            .attr_u32(IFLA_NUM_RX_QUEUES, queues);
        if let Some(mtu) = mtu {
            m.attr_u32(IFLA_MTU, mtu);
        }
        m.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA);
        m.begin(VETH_INFO_PEER).raw(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, peer);
        m.attr_u32(IFLA_NET_NS_FD, peer_ns as u32);
        m.attr_u32(IFLA_NUM_TX_QUEUES, queues)
            .attr_u32(IFLA_NUM_RX_QUEUES, queues);
        if let Some(mtu) = mtu {
            m.attr_u32(IFLA_MTU, mtu);
        }
        if let Some(mac) = peer_mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        m.end().end().end();
        self.request(&mut m)
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
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.raw(&ifinfomsg(ifindex as i32, 0, 0));
        m.attr_u32(IFLA_NET_NS_FD, ns as u32);
        m.attr_str(IFLA_IFNAME, name);
        if let Some(mtu) = mtu {
            m.attr_u32(IFLA_MTU, mtu);
        }
        if let Some(mac) = mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        self.request(&mut m)
    }

    pub fn set_up(&mut self, ifindex: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        let up = libc::IFF_UP as u32;
        m.raw(&ifinfomsg(ifindex as i32, up, up));
        self.request(&mut m)
    }

    /// Deletes a link by name; NotFound if it does not exist.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_DELLINK, 0);
        m.raw(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        self.request(&mut m)
    }

    /// Adds `ip/prefix` to the interface (no duplicate address detection:
    /// IPAM already made it unique, and DAD would delay the pod's start).
    pub fn add_address(&mut self, ifindex: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        let mut hdr = [0u8; 8];
        hdr[0] = family(&ip);
        hdr[1] = prefix;
        hdr[2] = IFA_F_NODAD as u8;
        hdr[3] = RT_SCOPE_UNIVERSE;
        hdr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        m.raw(&hdr);
        let b = ip_bytes(&ip);
        m.attr(IFA_LOCAL, &b).attr(IFA_ADDRESS, &b);
        m.attr_u32(IFA_FLAGS, IFA_F_NODAD);
        self.request(&mut m)
    }

    /// Adds a route to `dst/prefix` via `gw` (or on-link when `gw` is None).
    pub fn add_route(
        &mut self,
        ifindex: u32,
        dst: IpAddr,
        prefix: u8,
        gw: Option<IpAddr>,
    ) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        let hdr = [
            family(&dst),
            prefix,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            if gw.is_some() {
                RT_SCOPE_UNIVERSE
            } else {
                RT_SCOPE_LINK
            },
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        m.raw(&hdr);
        if prefix > 0 {
            m.attr(RTA_DST, &ip_bytes(&dst));
        }
        if let Some(g) = gw {
            m.attr(RTA_GATEWAY, &ip_bytes(&g));
        }
        m.attr_u32(RTA_OIF, ifindex);
        self.request(&mut m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_have_lengths_and_padding() {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.raw(&ifinfomsg(0, 0, 0));
        m.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let b = m.finish(7).to_vec();
        assert_eq!(
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize,
            b.len()
        );
        assert_eq!(b.len() % 4, 0);
        // nest header at 32: len 4 + ("veth\0" attr: 4 + 5 -> padded 12) = 16
        assert_eq!(u16::from_ne_bytes([b[32], b[33]]), 16);
        assert_eq!(
            u16::from_ne_bytes([b[34], b[35]]),
            IFLA_LINKINFO | NLA_F_NESTED
        );
        assert_eq!(&b[40..44], b"veth");
    }
}
