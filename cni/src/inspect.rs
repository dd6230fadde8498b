//! Reads an interface's MAC, addresses and routes in the calling thread's
//! netns (for CHECK): getifaddrs(3) and /proc/thread-self/net/{route,ipv6_route}.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub struct Live {
    pub mac: String,
    pub addrs: Vec<(IpAddr, u8)>,
    /// Every route in the netns (a default route another interface already
    /// carries counts): (destination, prefix, gateway).
    pub routes: Vec<(IpAddr, u8, Option<IpAddr>)>,
}

fn prefix_len(mask: &[u8]) -> u8 {
    mask.iter().map(|b| b.count_ones() as u8).sum()
}

/// Some(Live) for `ifname`, None if it does not exist here.
pub fn interface(ifname: &str) -> io::Result<Option<Live>> {
    if podswitch_shared::netdev::ifindex(ifname).is_err() {
        return Ok(None);
    }
    let mac = podswitch_shared::netdev::mac(ifname)
        .map(|m| podswitch_shared::model::MacAddr(m).to_string())
        .map_err(io::Error::other)?;
    let mut addrs = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if name != ifname {
            continue;
        }
        // SAFETY: ifa_addr/ifa_netmask are non-null sockaddrs whose family
        // tells their real type, checked before each cast.
        unsafe {
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                    addrs.push((IpAddr::V4(ip), prefix_len(&m.sin_addr.s_addr.to_ne_bytes())));
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in6);
                    addrs.push((
                        IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                        prefix_len(&m.sin6_addr.s6_addr),
                    ));
                }
                _ => {}
            }
        }
    }
    // SAFETY: freeing the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(head) };
    let mut routes = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/thread-self/net/route") {
        for l in t.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                continue;
            }
            let hex = |s: &str| {
                u32::from_str_radix(s, 16)
                    .ok()
                    .map(|v| Ipv4Addr::from(u32::from_be(v)))
            };
            let (Some(dst), Some(gw), Some(mask)) = (hex(f[1]), hex(f[2]), hex(f[7])) else {
                continue;
            };
            let gw = (!gw.is_unspecified()).then_some(IpAddr::V4(gw));
            routes.push((IpAddr::V4(dst), prefix_len(&mask.octets()), gw));
        }
    }
    if let Ok(t) = std::fs::read_to_string("/proc/thread-self/net/ipv6_route") {
        for l in t.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let v6 = |s: &str| u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from);
            let (Some(dst), Ok(p), Some(gw)) = (v6(f[0]), u8::from_str_radix(f[1], 16), v6(f[4]))
            else {
                continue;
            };
            let gw = (!gw.is_unspecified()).then_some(IpAddr::V6(gw));
            routes.push((IpAddr::V6(dst), p, gw));
        }
    }
    Ok(Some(Live { mac, addrs, routes }))
}
