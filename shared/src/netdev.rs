//! Netdev settings by ioctl, in the network namespace of the calling
//! thread: index and MAC lookup, admin up/down (a down veth end takes the
//! carrier from its peer, like a pulled cable), queue count, MTU, TX checksum
//! offload, and no IPv6 on a switch port's host end.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_SCHANNELS: u32 = 0x3d;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGRO: u32 = 0x2c;

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("interface {ifname:?} does not exist")]
    NotFound { ifname: String },
    #[error("interface {ifname:?}: {what}: {source}")]
    Io {
        ifname: String,
        what: &'static str,
        source: io::Error,
    },
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: IfReqData,
}

#[repr(C)]
union IfReqData {
    flags: libc::c_short,
    mtu: libc::c_int,
    ptr: *mut libc::c_void,
    hwaddr: libc::sockaddr,
    _pad: [u8; 24],
}

#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

fn ifreq(ifname: &str) -> IfReq {
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: IfReqData { _pad: [0; 24] },
    };
    for (d, s) in r
        .name
        .iter_mut()
        .zip(ifname.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    r
}

/// A socket for interface ioctls: they name interfaces of the network
/// namespace the socket was made in, whichever thread uses it later.
pub fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned immediately.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(
    ifname: &str,
    what: &'static str,
    req: libc::c_ulong,
    r: &mut IfReq,
) -> Result<(), NetdevError> {
    let err = |source| NetdevError::Io {
        ifname: ifname.to_string(),
        what,
        source,
    };
    let s = ctl_socket().map_err(err)?;
    ioctl_on(&s, ifname, what, req, r)
}

fn ioctl_on(
    s: &OwnedFd,
    ifname: &str,
    what: &'static str,
    req: libc::c_ulong,
    r: &mut IfReq,
) -> Result<(), NetdevError> {
    let err = |source| NetdevError::Io {
        ifname: ifname.to_string(),
        what,
        source,
    };
    // SAFETY: `r` is a properly initialised ifreq for this request; for
    // SIOCETHTOOL its data pointer refers to a live ethtool struct.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), req as _, r as *mut IfReq) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODEV) {
            return Err(NetdevError::NotFound {
                ifname: ifname.to_string(),
            });
        }
        return Err(err(e));
    }
    Ok(())
}

/// The interface index, or NotFound.
pub fn ifindex(ifname: &str) -> Result<u32, NetdevError> {
    let nf = || NetdevError::NotFound {
        ifname: ifname.to_string(),
    };
    let c = CString::new(ifname).map_err(|_| nf())?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i != 0 {
        return Ok(i);
    }
    // Only "no such device" means it is gone; anything else (out of file
    // descriptors, ...) is an error of ours.
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) | None => Err(nf()),
        _ => Err(NetdevError::Io {
            ifname: ifname.to_string(),
            what: "look up",
            source: e,
        }),
    }
}

fn flags(ifname: &str) -> Result<libc::c_short, NetdevError> {
    let mut r = ifreq(ifname);
    ioctl(ifname, "read flags", libc::SIOCGIFFLAGS, &mut r)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    Ok(unsafe { r.data.flags })
}

/// Whether the interface is administratively up, asked through `sock`
/// (see `ctl_socket`).
pub fn is_up_on(sock: &OwnedFd, ifname: &str) -> Result<bool, NetdevError> {
    let mut r = ifreq(ifname);
    ioctl_on(sock, ifname, "read flags", libc::SIOCGIFFLAGS, &mut r)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    Ok(unsafe { r.data.flags } & libc::IFF_UP as libc::c_short != 0)
}

/// Sets the interface administratively up or down.
pub fn set_up(ifname: &str, up: bool) -> Result<(), NetdevError> {
    let f = flags(ifname)?;
    let want = if up {
        f | libc::IFF_UP as libc::c_short
    } else {
        f & !(libc::IFF_UP as libc::c_short)
    };
    if want == f {
        return Ok(());
    }
    let mut r = ifreq(ifname);
    r.data.flags = want;
    ioctl(ifname, "set flags", libc::SIOCSIFFLAGS, &mut r)
}

pub fn mtu(ifname: &str) -> Result<u32, NetdevError> {
    let mut r = ifreq(ifname);
    ioctl(ifname, "read MTU", libc::SIOCGIFMTU, &mut r)?;
    // SAFETY: SIOCGIFMTU filled the mtu member.
    Ok(unsafe { r.data.mtu } as u32)
}

/// Makes the netdev's receive queues fit the poll threads and returns how
/// many get a socket: a netdev with more queues than `threads` is cut down
/// to `threads` where the driver lets us (a queue without a socket loses
/// its frames, counted as `no-socket`), and serves its first `threads`
/// where it does not; one with fewer keeps them (the poll threads beyond
/// its queue count hand their frames over). Drivers without channel
/// reporting count as one queue.
pub fn fit_queues(ifname: &str, threads: u32) -> Result<u32, NetdevError> {
    let Some(mut ch) = channels(ifname)? else {
        return Ok(1);
    };
    let threads = threads.max(1);
    let rx = ch.rx_count.max(ch.combined_count).max(1);
    let tx = ch.tx_count.max(ch.combined_count);
    if rx <= threads && tx <= threads {
        return Ok(rx);
    }
    ch.cmd = ETHTOOL_SCHANNELS;
    ch.rx_count = ch.rx_count.min(threads);
    ch.tx_count = ch.tx_count.min(threads);
    ch.combined_count = ch.combined_count.min(threads);
    let mut r = ifreq(ifname);
    r.data.ptr = &mut ch as *mut EthtoolChannels as *mut libc::c_void;
    match ioctl(ifname, "set queue count", SIOCETHTOOL, &mut r) {
        Ok(()) => {}
        // A driver that reports its queues but cannot change them (a tap,
        // whose queues its VMM opens): the first `threads` get sockets, and
        // what arrives on the others is counted as `no-socket` drops.
        Err(NetdevError::Io { source, .. }) if source.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
        Err(e) => return Err(e),
    }
    Ok(rx.min(threads))
}

/// Gives the calling thread a mount namespace of its own with a fresh
/// sysfs on /sys, so that /sys/class/net shows the thread's network
/// namespace (sysfs shows the namespace of whoever mounted it). For a
/// short-lived thread that entered a pod's netns; never call it on a
/// thread that lives on.
pub fn mount_private_sysfs() -> io::Result<()> {
    // SAFETY: unshare/mount on this thread only; arguments are valid
    // NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_FS) != 0 {
            return Err(io::Error::last_os_error());
        }
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            private,
            std::ptr::null(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::mount(
            c"sysfs".as_ptr(),
            c"/sys".as_ptr(),
            c"sysfs".as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The netdev's channels (ETHTOOL_GCHANNELS); None where the driver does
/// not report them.
fn channels(ifname: &str) -> Result<Option<EthtoolChannels>, NetdevError> {
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let mut r = ifreq(ifname);
    r.data.ptr = &mut ch as *mut EthtoolChannels as *mut libc::c_void;
    match ioctl(ifname, "read channels", SIOCETHTOOL, &mut r) {
        Ok(()) => Ok(Some(ch)),
        Err(NetdevError::Io { source, .. }) if source.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The receive queues the netdev has now (for a tap: those its VMM has
/// opened; one where the driver does not report channels).
pub fn rx_queues(ifname: &str) -> Result<u32, NetdevError> {
    Ok(channels(ifname)?
        .map(|c| c.rx_count.max(c.combined_count).max(1))
        .unwrap_or(1))
}

/// Keeps the host stack off a port's netdev (no link-local address, no
/// router solicitations or MLD leaking into the pod's segment). Fails
/// harmlessly where IPv6 is disabled or absent.
pub fn disable_ipv6(ifname: &str) -> io::Result<()> {
    std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        "1",
    )
}

/// The interface's MAC address.
pub fn mac(ifname: &str) -> Result<[u8; 6], NetdevError> {
    let mut r = ifreq(ifname);
    ioctl(ifname, "read MAC", libc::SIOCGIFHWADDR, &mut r)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member; sa_data starts with the MAC.
    let sa = unsafe { r.data.hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(m)
}

fn ethtool_set(ifname: &str, cmd: u32, on: bool, what: &'static str) -> Result<(), NetdevError> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut v = EthtoolValue {
        cmd,
        data: on as u32,
    };
    let mut r = ifreq(ifname);
    r.data.ptr = &mut v as *mut EthtoolValue as *mut libc::c_void;
    ioctl(ifname, what, SIOCETHTOOL, &mut r)
}

/// Turns TX checksum offload off (and with it TSO/GSO, which need it).
/// Frames then leave with complete checksums, which the AF_XDP copy-mode
/// path requires: it forwards bytes and never finishes a partial checksum.
pub fn tx_checksum_off(ifname: &str) -> Result<(), NetdevError> {
    ethtool_set(
        ifname,
        ETHTOOL_STXCSUM,
        false,
        "turn TX checksum offload off",
    )
}

/// Turns generic receive offload on or off.
pub fn set_gro(ifname: &str, on: bool) -> Result<(), NetdevError> {
    ethtool_set(ifname, ETHTOOL_SGRO, on, "set GRO")
}

/// Turns TCP segmentation offload on or off. A veth whose sending end has
/// TSO off hands the receiving end's NAPI (and so its GRO) every frame.
pub fn set_tso(ifname: &str, on: bool) -> Result<(), NetdevError> {
    ethtool_set(ifname, ETHTOOL_STSO, on, "set TSO")
}

/// The online CPUs, from /sys (e.g. "0-3,6").
pub fn online_cpus() -> Vec<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    parse_cpu_list(&s)
}

/// Parses a CPU list given by a user ("2-5", "0,2,4", "3"): every part
/// must parse, ranges must go up, no CPU twice.
pub fn parse_cpu_list_strict(s: &str) -> Result<Vec<usize>, String> {
    let mut v: Vec<usize> = Vec::new();
    for part in s.trim().split(',') {
        let bad = || format!("{part:?} in CPU list {s:?} is not a CPU number or range like 2-5");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.trim().parse::<usize>().map_err(|_| bad())?,
                    b.trim().parse::<usize>().map_err(|_| bad())?,
                );
                if a > b {
                    return Err(bad());
                }
                v.extend(a..=b);
            }
            None => v.push(part.trim().parse::<usize>().map_err(|_| bad())?),
        }
    }
    let mut sorted = v.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != v.len() {
        return Err(format!("CPU list {s:?} names a CPU twice"));
    }
    Ok(v)
}

fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<usize>().ok()),
        }
    }
    v
}

/// A CPU mask in sysfs' format (hex, 32-bit groups separated by commas).
pub fn cpu_mask(cpus: &[usize]) -> String {
    let max = cpus.iter().copied().max().unwrap_or(0);
    let mut groups = vec![0u32; max / 32 + 1];
    for &c in cpus {
        groups[c / 32] |= 1 << (c % 32);
    }
    groups
        .iter()
        .rev()
        .map(|g| format!("{g:08x}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_masks() {
        assert_eq!(parse_cpu_list("0-3,6\n"), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert_eq!(cpu_mask(&[0]), "00000001");
        assert_eq!(cpu_mask(&[0, 2, 33]), "00000002,00000005");
    }
}
