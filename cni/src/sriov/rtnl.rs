//! The rtnetlink transport: a request goes out, the answers before its
//! acknowledgement come back. [`RtnlSocket`] is the real one; tests use a
//! recording double that decodes each request as the kernel would.

use super::vf::{get_vf_request, parse_vf_settings, set_vf_request, VfSettings};
use super::SriovError;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;

/// How long a request waits for the kernel's answer.
pub const TIMEOUT_SECS: i64 = 5;

/// Sends one rtnetlink request and returns the messages answering it.
pub trait Rtnl {
    /// `msg` is sent with NLM_F_REQUEST | NLM_F_ACK and a fresh sequence
    /// number. Returns the answers that came before the acknowledgement
    /// (the RTM_NEWLINK for a GETLINK, nothing for a SETLINK); the
    /// kernel's NACK is an error with its errno (see [`errno`]).
    fn request(
        &mut self,
        msg: NetlinkMessage<RouteNetlinkMessage>,
    ) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>>;
}

/// The kernel refused a request and said why (extended ACK).
#[derive(Debug)]
pub struct KernelError {
    pub errno: i32,
    pub message: String,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = io::Error::from_raw_os_error(self.errno);
        write!(f, "{os}: {}", self.message)
    }
}

impl std::error::Error for KernelError {}

/// The errno behind a transport error, whether or not the kernel added a
/// message to it.
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
        .or_else(|| e.get_ref()?.downcast_ref::<KernelError>().map(|k| k.errno))
}

fn kernel_error(errno: i32, message: Option<String>) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    match message {
        None => os,
        Some(message) => io::Error::new(os.kind(), KernelError { errno, message }),
    }
}

const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The human-readable message of an extended ACK: `echoed` is what
/// follows the error code in an NLMSG_ERROR (the request's header, or the
/// whole request without NLM_F_CAPPED, then the NLMSGERR_ATTR_* TLVs when
/// `flags` has NLM_F_ACK_TLVS).
pub fn extack_message(flags: u16, echoed: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echo_len = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        u32::from_ne_bytes(echoed.get(..4)?.try_into().ok()?) as usize
    };
    let mut off = align4(echo_len);
    while off + 4 <= echoed.len() {
        let len = u16::from_ne_bytes([echoed[off], echoed[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([echoed[off + 2], echoed[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > echoed.len() {
            return None;
        }
        if ty == NLMSGERR_ATTR_MSG {
            let s = &echoed[off + 4..off + len];
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned()).filter(|m| !m.is_empty());
        }
        off += align4(len);
    }
    None
}

/// The netlink messages in one datagram.
pub fn split_datagram(buf: &[u8]) -> io::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink message",
            ));
        }
        out.push(&buf[off..off + len]);
        off += align4(len);
    }
    Ok(out)
}

/// What one answer to request `seq` means for it.
enum Step {
    More(NetlinkMessage<RouteNetlinkMessage>),
    Done,
    Skip,
}

fn step(raw: &[u8], seq: u32) -> io::Result<Step> {
    let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if m.header.sequence_number != seq {
        return Ok(Step::Skip);
    }
    let flags = m.header.flags;
    match m.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(Step::Done),
            Some(code) => Err(kernel_error(
                code.get().saturating_neg(),
                extack_message(flags, &e.header),
            )),
        },
        NetlinkPayload::Done(_) => Ok(Step::Done),
        NetlinkPayload::InnerMessage(_) => Ok(Step::More(m)),
        _ => Ok(Step::Skip),
    }
}

/// A NETLINK_ROUTE socket in the network namespace of the thread that
/// opened it (the PF's: the host's). Blocking, with a receive timeout of
/// [`TIMEOUT_SECS`].
pub struct RtnlSocket {
    sock: Socket,
    seq: u32,
}

impl RtnlSocket {
    pub fn open() -> io::Result<RtnlSocket> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Older kernels lack these; the answers are then plainer.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let tv = libc::timeval {
            tv_sec: TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO on a socket we own, from a live timeval whose
        // size we pass.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RtnlSocket { sock, seq: 0 })
    }

    fn recv_retrying(&self, buf: &mut Vec<u8>, flags: libc::c_int) -> io::Result<usize> {
        loop {
            match self.sock.recv(buf, flags) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {TIMEOUT_SECS} s"),
                    ))
                }
                r => return r,
            }
        }
    }

    /// One whole datagram, however large (a PF with many VFs answers
    /// GETLINK with tens of kilobytes).
    fn recv_datagram(&self) -> io::Result<Vec<u8>> {
        let mut peek = Vec::new();
        let len = self.recv_retrying(&mut peek, libc::MSG_PEEK | libc::MSG_TRUNC)?;
        let mut buf = Vec::with_capacity(len.max(16));
        let got = self.recv_retrying(&mut buf, 0)?;
        if got > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "netlink answer truncated",
            ));
        }
        Ok(buf)
    }
}

impl Rtnl for RtnlSocket {
    fn request(
        &mut self,
        mut msg: NetlinkMessage<RouteNetlinkMessage>,
    ) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        msg.header.sequence_number = seq;
        msg.header.flags |= NLM_F_REQUEST | NLM_F_ACK;
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut answers = Vec::new();
        loop {
            let data = self.recv_datagram()?;
            for raw in split_datagram(&data)? {
                match step(raw, seq)? {
                    Step::More(m) => answers.push(m),
                    Step::Done => return Ok(answers),
                    Step::Skip => {}
                }
            }
        }
    }
}

/// VF `vf`'s current settings, read from its PF.
pub fn read_vf(rtnl: &mut dyn Rtnl, pf_ifindex: u32, vf: u32) -> Result<VfSettings, SriovError> {
    let answers =
        rtnl.request(get_vf_request(pf_ifindex))
            .map_err(|source| SriovError::Netlink {
                op: "reading the VF settings (RTM_GETLINK)",
                ifindex: pf_ifindex,
                source,
            })?;
    parse_vf_settings(&answers, pf_ifindex, vf)
}

/// Sets the fields `s` sets on VF `vf` of the PF, in one request.
pub fn apply_vf(
    rtnl: &mut dyn Rtnl,
    pf_ifindex: u32,
    vf: u32,
    s: &VfSettings,
) -> Result<(), SriovError> {
    if s.is_empty() {
        return Ok(());
    }
    rtnl.request(set_vf_request(pf_ifindex, vf, s))
        .map(drop)
        .map_err(|source| SriovError::Netlink {
            op: "setting the VF (RTM_SETLINK)",
            ifindex: pf_ifindex,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{ErrorMessage, NetlinkHeader, NLMSG_ERROR};
    use std::num::NonZeroI32;

    fn tlv(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = ((4 + data.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    #[test]
    fn extended_ack_messages() {
        let mut capped = vec![0u8; 16];
        capped.extend(tlv(2, &7u32.to_ne_bytes()));
        capped.extend(tlv(NLMSGERR_ATTR_MSG, b"VF index out of range\0"));
        assert_eq!(
            extack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &capped).as_deref(),
            Some("VF index out of range")
        );
        assert_eq!(extack_message(NLM_F_CAPPED, &capped), None);
        // Uncapped: the whole 24-byte request is echoed first.
        let mut full = 24u32.to_ne_bytes().to_vec();
        full.resize(24, 0);
        full.extend(tlv(NLMSGERR_ATTR_MSG, b"nope\0"));
        assert_eq!(
            extack_message(NLM_F_ACK_TLVS, &full).as_deref(),
            Some("nope")
        );
        // Garbage never panics.
        assert_eq!(extack_message(NLM_F_ACK_TLVS, &[1, 2]), None);
        assert_eq!(
            extack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &[0; 18]),
            None
        );
    }

    fn nack(seq: u32, errno: i32, flags: u16, echoed: Vec<u8>) -> Vec<u8> {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(-errno);
        e.header = echoed;
        let mut h = NetlinkHeader::default();
        h.sequence_number = seq;
        h.flags = flags;
        let mut m = NetlinkMessage::<RouteNetlinkMessage>::new(h, NetlinkPayload::Error(e));
        m.finalize();
        assert_eq!(m.header.message_type, NLMSG_ERROR);
        let mut b = vec![0u8; m.buffer_len()];
        m.serialize(&mut b);
        b
    }

    #[test]
    fn a_nack_keeps_its_errno() {
        let raw = nack(9, libc::EOPNOTSUPP, NLM_F_CAPPED, vec![0; 16]);
        let Err(e) = step(&raw, 9) else {
            panic!("a NACK is an error")
        };
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
        assert_eq!(errno(&e), Some(libc::EOPNOTSUPP));

        let mut echoed = vec![0u8; 16];
        echoed.extend(tlv(NLMSGERR_ATTR_MSG, b"no spoof check here\0"));
        let raw = nack(9, libc::EOPNOTSUPP, NLM_F_CAPPED | NLM_F_ACK_TLVS, echoed);
        let Err(e) = step(&raw, 9) else {
            panic!("a NACK is an error")
        };
        assert_eq!(errno(&e), Some(libc::EOPNOTSUPP));
        assert!(
            e.to_string()
                .ends_with("(os error 95): no spoof check here"),
            "{e}"
        );

        // Another request's answer is skipped; an ACK ends the request.
        assert!(matches!(step(&raw, 8), Ok(Step::Skip)));
        let ack = nack(3, 0, 0, vec![0; 16]);
        assert!(matches!(step(&ack, 3), Ok(Step::Done)));
    }

    /// The real socket against this machine's kernel, harmlessly: the
    /// VF list of `lo` (it has none), and a SETLINK on an ifindex that
    /// does not exist (ENODEV, or EPERM without CAP_NET_ADMIN).
    #[test]
    fn real_socket_round_trips_with_the_kernel() {
        let mut sock = match RtnlSocket::open() {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: geteuid has no preconditions.
                let root = unsafe { libc::geteuid() } == 0;
                assert!(!root, "no NETLINK_ROUTE socket as root: {e}");
                eprintln!("no NETLINK_ROUTE socket here ({e}); skipped");
                return;
            }
        };
        let e = read_vf(&mut sock, 1, 0).unwrap_err();
        assert!(
            matches!(e, SriovError::VfNotReported { ifindex: 1, vf: 0 }),
            "{e}"
        );
        let s = VfSettings {
            trust: Some(false),
            ..VfSettings::default()
        };
        let e = apply_vf(&mut sock, 0x7fff_fff0, 0, &s).unwrap_err();
        let SriovError::Netlink { source, .. } = &e else {
            panic!("{e}");
        };
        assert!(
            matches!(errno(source), Some(libc::ENODEV | libc::EPERM)),
            "{e}"
        );
        // The socket still works after a NACK (sequence numbers advance).
        assert!(read_vf(&mut sock, 1, 0).is_err());
    }

    #[test]
    fn datagrams_split_into_messages() {
        let a = nack(1, 1, 0, vec![0; 16]);
        let b = nack(2, 2, 0, vec![0; 16]);
        let mut both = a.clone();
        both.extend_from_slice(&b);
        let parts = split_datagram(&both).unwrap();
        assert_eq!(parts, vec![&a[..], &b[..]]);
        assert!(split_datagram(&both[..both.len() - 1]).is_err());
        assert!(split_datagram(&[]).unwrap().is_empty());
    }
}
