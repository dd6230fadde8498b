//! Pod endpoints: a veth pair whose host end stays in the plugin's (the
//! node's) netns and whose other end is the pod's interface. Names are
//! derived from (container ID, ifname), so DEL and GC find them without
//! any state of their own.

use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::reply::{code, CniError, CniOutput, CniResult, IpConfig, Route};
use podswitch_shared::netdev;
use std::io;
use std::net::IpAddr;

/// FNV-1a, 64 bit: a stable hash for interface names and port IDs.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Host-side veth name, also the switchd port ID: "psw" + 12 hex digits.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    format!(
        "psw{:012x}",
        fnv1a(&[container_id, ifname]) & 0xffff_ffff_ffff
    )
}

pub(crate) fn mac_string(m: [u8; 6]) -> String {
    podswitch_shared::model::MacAddr(m).to_string()
}

/// What ADD created.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host_if: String,
    pub host_mac: String,
    pub pod_if: String,
    pub pod_mac: [u8; 6],
    pub pod_ifindex: u32,
}

pub(crate) fn plugin_err(what: String, e: impl std::fmt::Display) -> CniError {
    CniError::new(code::PLUGIN, what).with_details(e.to_string())
}

/// Creates the veth pair with `queues` queues each end (one per switchd
/// poll thread) and configures the pod end (MAC, MTU, TX checksum offload
/// off, RPS to `rps_cpus`, up); the host end stays down for switchd to
/// attach and bring up.
#[allow(clippy::too_many_arguments)]
pub fn create(
    ns: &NetNs,
    host_if: &str,
    pod_if: &str,
    mtu: u32,
    mac: Option<[u8; 6]>,
    queues: u32,
    rps_cpus: Option<&[usize]>,
    gro: bool,
) -> CniResult<Endpoint> {
    let mut nl = Netlink::open().map_err(|e| plugin_err("opening netlink".into(), e))?;
    match nl.create_veth(host_if, pod_if, ns.fd(), Some(mtu), mac, queues) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // Either name is taken: tell which.
            let pod_taken = ns.run(|| netdev::ifindex(pod_if).is_ok()).unwrap_or(false);
            let what = if pod_taken {
                format!("interface {pod_if} already exists in the container's network namespace")
            } else {
                format!(
                    "host interface {host_if} already exists (is this container already attached?)"
                )
            };
            return Err(CniError::new(code::PLUGIN, what));
        }
        Err(e) => {
            return Err(plugin_err(
                format!("creating veth {host_if} <-> {pod_if}"),
                e,
            ))
        }
    }
    let pod = ns
        .run(|| -> io::Result<([u8; 6], u32)> {
            let idx = netdev::ifindex(pod_if).map_err(io::Error::other)?;
            netdev::tx_checksum_off(pod_if).map_err(io::Error::other)?;
            let mut nl = Netlink::open()?;
            nl.set_up(idx)?;
            let mac = netdev::mac(pod_if).map_err(io::Error::other)?;
            if gro {
                netdev::set_gro(pod_if, true).map_err(io::Error::other)?;
            }
            if rps_cpus.is_some() || gro {
                write_sysfs(pod_if, queues, rps_cpus, gro).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("steering receive processing (RPS, threaded NAPI): {e}"),
                    )
                })?;
            }
            Ok((mac, idx))
        })
        .and_then(|r| r);
    let (pod_mac, pod_ifindex) = match pod {
        Ok(v) => v,
        Err(e) => {
            let _ = nl.delete_link(host_if);
            return Err(plugin_err(
                format!("configuring {pod_if} in the container"),
                e,
            ));
        }
    };
    // With TSO off on the host end, the veth hands the pod end's NAPI every
    // frame switchd sends, and the pod's GRO merges them.
    if gro {
        if let Err(e) = netdev::set_tso(host_if, false) {
            let _ = nl.delete_link(host_if);
            return Err(plugin_err(format!("turning TSO off on {host_if}"), e));
        }
    }
    // The host end is a switch port: no IPv6 link-local, no router
    // solicitations from the host stack (switchd does this too, but cannot
    // when its /proc/sys is read-only in an unprivileged container).
    let _ = netdev::disable_ipv6(host_if);
    // The host end stays down: switchd attaches it (cheaper on a down
    // veth) and brings it up according to the port's linkState.
    let host = netdev::mac(host_if).map_err(io::Error::other);
    match host {
        Ok(host_mac) => Ok(Endpoint {
            host_if: host_if.to_string(),
            host_mac: mac_string(host_mac),
            pod_if: pod_if.to_string(),
            pod_mac,
            pod_ifindex,
        }),
        Err(e) => {
            let _ = nl.delete_link(host_if);
            Err(plugin_err(
                format!("configuring host interface {host_if}"),
                e,
            ))
        }
    }
}

/// Steers the pod interface's receive processing (RPS) to `rps` (keeps it
/// off switchd's poll CPUs, where frames switchd transmits would otherwise
/// be processed inside its sendto() and halve its throughput), and with
/// `threaded` gives its NAPI (where GRO runs) a kernel thread of its own.
/// Runs on a thread inside the pod's netns; sysfs shows the netns of
/// whoever mounted it, so the thread mounts a fresh sysfs in a private
/// mount namespace of its own.
fn write_sysfs(pod_if: &str, queues: u32, rps: Option<&[usize]>, threaded: bool) -> io::Result<()> {
    netdev::mount_private_sysfs()?;
    if let Some(cpus) = rps {
        for q in 0..queues.max(1) {
            std::fs::write(
                format!("/sys/class/net/{pod_if}/queues/rx-{q}/rps_cpus"),
                netdev::cpu_mask(cpus),
            )?;
        }
    }
    if threaded {
        std::fs::write(format!("/sys/class/net/{pod_if}/threaded"), "1")?;
    }
    Ok(())
}

/// Deletes the link `name` of the calling thread's namespace (a veth pair
/// by its host end, a VM's tap inside its pod). Ok if it is already gone.
pub fn delete(host_if: &str) -> CniResult<()> {
    let mut nl = Netlink::open().map_err(|e| plugin_err("opening netlink".into(), e))?;
    match nl.delete_link(host_if) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENOENT)) => Ok(()),
        Err(e) => Err(plugin_err(format!("deleting {host_if}"), e)),
    }
}

/// Parses "10.1.2.3/24".
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let p: u8 = p.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (p <= max).then_some((ip, p))
}

/// Applies IPAM's addresses and routes to the pod interface. A route
/// without a gateway uses the gateway of an address of its family, as the
/// reference plugins do; without one it is on-link.
pub fn configure_ips(
    ns: &NetNs,
    ifindex: u32,
    ips: &[IpConfig],
    routes: &[Route],
) -> CniResult<()> {
    let mut addrs = Vec::new();
    for ip in ips {
        let (a, p) = parse_cidr(&ip.address).ok_or_else(|| {
            CniError::new(
                code::DECODE,
                format!("IPAM returned a bad address {:?}", ip.address),
            )
        })?;
        let gw = match &ip.gateway {
            Some(g) => Some(g.parse::<IpAddr>().map_err(|_| {
                CniError::new(code::DECODE, format!("IPAM returned a bad gateway {g:?}"))
            })?),
            None => None,
        };
        addrs.push((a, p, gw));
    }
    let mut rts = Vec::new();
    for r in routes {
        let (dst, p) = parse_cidr(&r.dst).ok_or_else(|| {
            CniError::new(
                code::DECODE,
                format!("IPAM returned a bad route {:?}", r.dst),
            )
        })?;
        let gw = match &r.gw {
            Some(g) => Some(g.parse::<IpAddr>().map_err(|_| {
                CniError::new(
                    code::DECODE,
                    format!("IPAM returned a bad route gateway {g:?}"),
                )
            })?),
            None => addrs
                .iter()
                .filter(|(a, _, _)| a.is_ipv4() == dst.is_ipv4())
                .find_map(|(_, _, g)| *g),
        };
        rts.push((dst, p, gw));
    }
    ns.run(|| -> io::Result<()> {
        let mut nl = Netlink::open()?;
        for (a, p, _) in &addrs {
            nl.add_address(ifindex, *a, *p)?;
        }
        for (dst, p, gw) in &rts {
            match nl.add_route(ifindex, *dst, *p, *gw) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                r => r?,
            }
        }
        Ok(())
    })
    .and_then(|r| r)
    .map_err(|e| plugin_err("adding addresses and routes in the container".into(), e))
}

/// The result interfaces for an endpoint: host end (a veth's; a tap has
/// none), then the pod end.
pub fn interfaces(ep: &Endpoint, netns: &str, mtu: u32) -> Vec<crate::reply::Interface> {
    let mut v = Vec::new();
    if !ep.host_if.is_empty() {
        v.push(crate::reply::Interface {
            name: ep.host_if.clone(),
            mac: ep.host_mac.clone(),
            mtu: None,
            sandbox: String::new(),
            pci_id: String::new(),
        });
    }
    v.push(crate::reply::Interface {
        name: ep.pod_if.clone(),
        mac: mac_string(ep.pod_mac),
        mtu: Some(mtu),
        sandbox: netns.to_string(),
        pci_id: String::new(),
    });
    v
}

/// Builds the ADD result from IPAM's answer: every IP on the pod's
/// interface (the last one).
pub fn result(ep: &Endpoint, netns: &str, mtu: u32, ipam: &CniOutput) -> CniOutput {
    CniOutput::for_endpoint(interfaces(ep, netns, mtu), ipam)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = host_ifname("abc", "eth0");
        assert_eq!(a, host_ifname("abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("psw"));
        assert_ne!(a, host_ifname("abc", "eth1"));
        assert_ne!(host_ifname("ab", "ceth0"), host_ifname("abc", "eth0"));
    }

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("10.0.0.1/24"),
            Some(("10.0.0.1".parse().unwrap(), 24))
        );
        assert_eq!(parse_cidr("fd00::1/64").map(|x| x.1), Some(64));
        assert_eq!(parse_cidr("10.0.0.1/33"), None);
        assert_eq!(parse_cidr("10.0.0.1"), None);
    }
}
