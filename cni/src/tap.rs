//! VM endpoints: a tap named CNI_IFNAME in the container's netns, for the
//! VMM (qemu, libvirt in KubeVirt's virt-launcher) to open. switchd
//! attaches the tap where it lives, so a VM's frames take no veth hop.
//!
//! The tap is born in the plugin's (the node's) netns under the port's
//! name and then moved and renamed in one netlink request: it keeps the
//! node-wide unique ifindex it was born with, which is how switchd's XDP
//! program tells ports apart (ifindexes are per namespace, and every VM
//! pod's namespace would otherwise number its tap 2).

use crate::endpoint::{mac_string, plugin_err, Endpoint};
use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::reply::{code, CniError, CniResult};
use podswitch_shared::netdev;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The ifreq that TUNSETIFF reads: a name and flags.
#[repr(C)]
struct TunReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn tun_ioctl(fd: &OwnedFd, req: libc::Ioctl, arg: libc::c_ulong, what: &str) -> io::Result<()> {
    // SAFETY: the TUNSET* ioctls that take an integer argument by value,
    // on a /dev/net/tun fd we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Creates a persistent tap `name` here, owned by `owner` (uid, gid), with
/// `multi_queue` when the VMM is to open several queues.
fn make_persistent_tap(
    name: &str,
    owner: Option<(u32, Option<u32>)>,
    multi_queue: bool,
) -> io::Result<()> {
    // SAFETY: open(2) of a constant path; the fd is owned right below.
    let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("opening /dev/net/tun: {e}"),
        ));
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = TunReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    if multi_queue {
        req.flags |= libc::IFF_MULTI_QUEUE as libc::c_short;
    }
    for (d, s) in req
        .name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads (and writes back) a live ifreq-sized struct.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut TunReq) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::from_raw_os_error(
            e.raw_os_error().unwrap_or(libc::EIO),
        ));
    }
    let made = (|| {
        if let Some((uid, gid)) = owner {
            tun_ioctl(
                &fd,
                libc::TUNSETOWNER,
                uid as libc::c_ulong,
                "setting the tap's owner",
            )?;
            if let Some(gid) = gid {
                tun_ioctl(
                    &fd,
                    libc::TUNSETGROUP,
                    gid as libc::c_ulong,
                    "setting the tap's group",
                )?;
            }
        }
        tun_ioctl(&fd, libc::TUNSETPERSIST, 1, "making the tap persistent")
    })();
    // Closing the fd without TUNSETPERSIST deletes the tap again.
    made
}

/// Creates the VM's tap: `pod_if` in `ns`, with the MAC and MTU applied,
/// down (switchd brings it up with the port), no addresses (the guest owns
/// them) and IPv6 off on the namespace's side. `host_name` is its name
/// while it is born here (the port ID: unique per container and ifname).
pub fn create(
    ns: &NetNs,
    host_name: &str,
    pod_if: &str,
    mtu: u32,
    mac: Option<[u8; 6]>,
    owner: Option<(u32, Option<u32>)>,
    queues: u32,
) -> CniResult<Endpoint> {
    if ns.run(|| netdev::ifindex(pod_if).is_ok()).unwrap_or(false) {
        return Err(CniError::new(
            code::PLUGIN,
            format!("interface {pod_if} already exists in the container's network namespace"),
        ));
    }
    if netdev::ifindex(host_name).is_ok() {
        return Err(CniError::new(
            code::PLUGIN,
            format!(
                "host interface {host_name} already exists (is this container already attached?)"
            ),
        ));
    }
    match make_persistent_tap(host_name, owner, queues > 1) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::EEXIST) => {
            return Err(CniError::new(
                code::PLUGIN,
                format!("host interface {host_name} already exists (is this container already attached?)"),
            ))
        }
        Err(e) => return Err(plugin_err(format!("creating tap {host_name}"), e)),
    }
    let mut nl = Netlink::open().map_err(|e| plugin_err("opening netlink".into(), e))?;
    let undo_here = |nl: &mut Netlink| {
        let _ = nl.delete_link(host_name);
    };
    let ifindex = match netdev::ifindex(host_name) {
        Ok(i) => i,
        Err(e) => {
            undo_here(&mut nl);
            return Err(plugin_err(format!("finding tap {host_name}"), e));
        }
    };
    if let Err(e) = nl.move_link(ifindex, ns.fd(), pod_if, Some(mtu), mac) {
        undo_here(&mut nl);
        return Err(plugin_err(
            format!("moving tap {host_name} into the container as {pod_if}"),
            e,
        ));
    }
    let inside = ns
        .run(|| -> io::Result<([u8; 6], u32)> {
            let idx = netdev::ifindex(pod_if).map_err(io::Error::other)?;
            let _ = netdev::disable_ipv6(pod_if);
            Ok((netdev::mac(pod_if).map_err(io::Error::other)?, idx))
        })
        .and_then(|r| r);
    match inside {
        Ok((pod_mac, pod_ifindex)) => Ok(Endpoint {
            host_if: String::new(),
            host_mac: mac_string(pod_mac),
            pod_if: pod_if.to_string(),
            pod_mac,
            pod_ifindex,
        }),
        Err(e) => {
            let _ = delete(ns, pod_if);
            Err(plugin_err(
                format!("configuring tap {pod_if} in the container"),
                e,
            ))
        }
    }
}

/// Deletes the tap `pod_if` in `ns`. Ok if it is already gone.
pub fn delete(ns: &NetNs, pod_if: &str) -> CniResult<()> {
    ns.run(|| crate::endpoint::delete(pod_if))
        .map_err(|e| plugin_err(format!("deleting tap {pod_if}"), e))?
}
