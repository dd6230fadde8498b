//! Loads switchd's own XDP program (bpf/xdp_redirect.c, compiled by
//! build.rs) with aya and manages its two maps: PORTS (ifindex → slot) and
//! XSKS (slot → AF_XDP socket). The program is loaded once and attached to
//! every port's netdev through a bpf_link, which the kernel removes when
//! switchd exits, however it exits.

use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues, XskMap};
use aya::programs::Xdp;
use aya::Ebpf;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdp_redirect.o"));

/// Most ports (PORTS size in the BPF object).
pub const MAX_PORTS: u32 = 4096;
/// Most queues per port with a socket, so the most poll threads (XSKS is
/// keyed by slot × MAX_QUEUES + queue).
pub const MAX_QUEUES: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("loading the XDP program: {0}")]
    Load(String),
    #[error("attaching XDP to ifindex {ifindex}: {message}")]
    Attach { ifindex: u32, message: String },
    #[error("updating BPF map {map}: {message}")]
    Map { map: &'static str, message: String },
}

/// How a port's netdev is to run the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpChoice {
    /// Native where the driver can, else generic (the default).
    PreferNative,
    /// Native or not at all (an overlay port's veth: see setup.rs).
    NativeOnly,
    /// Generic (`--xdp-mode generic`).
    Generic,
}

/// How the program runs on one netdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the driver (veth, tun, most NICs).
    Native,
    /// In the generic skb path, for drivers without XDP support.
    Generic,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
        }
    }
}

pub struct XdpProgram {
    /// The loaded object, when this switchd loaded it (None: handed over).
    _ebpf: Option<Ebpf>,
    prog: OwnedFd,
    ports: BpfHashMap<MapData, u32, u32>,
    xsks: XskMap<MapData>,
    nosock: NoSocketCounts,
    /// The program's fds kept for a handover: PORTS, XSKS, NOSOCK.
    map_fds: [OwnedFd; 3],
    /// ifindex → the bpf_link attaching the program there, and how.
    links: HashMap<u32, (OwnedFd, Mode)>,
}

/// The kernel objects of a loaded and attached program, as handed to a
/// successor (fds travel by SCM_RIGHTS, see handover.rs).
pub struct ProgramFds {
    pub prog: OwnedFd,
    pub maps: [OwnedFd; 3],
    pub links: Vec<(u32, Mode, OwnedFd)>,
}

/// The program's per-slot count of frames that arrived on a queue without
/// a socket (NOSOCK, one value per CPU), readable from any thread; empty
/// once released (after a handover: the successor holds the map).
#[derive(Clone)]
pub struct NoSocketCounts(Arc<Mutex<Option<PerCpuArray<MapData, u64>>>>);

impl NoSocketCounts {
    /// Frames of `slot` dropped for want of a socket, summed over CPUs.
    pub fn get(&self, slot: u32) -> u64 {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.as_ref()
            .and_then(|m| m.get(&slot, 0).ok())
            .map(|v| v.iter().copied().fold(0, u64::wrapping_add))
            .unwrap_or(0)
    }

    fn reset(&self, slot: u32) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = m.as_mut() else { return };
        if let Ok(cpus) = aya::util::nr_cpus() {
            if let Ok(zero) = PerCpuValues::try_from(vec![0u64; cpus]) {
                let _ = m.set(slot, zero, 0);
            }
        }
    }

    /// Closes this process's handle on the map.
    pub fn release(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
/// tcx at ingress (the overlay's TC programs).
pub(crate) const BPF_TCX_INGRESS: u32 = 46;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The head of `union bpf_attr` for BPF_LINK_CREATE; the rest is zero.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 6],
}

/// Attaches `prog` to `ifindex` through a bpf_link (the link goes when
/// its last fd is closed, however switchd exits; fds of it can be handed
/// to a successor).
pub(crate) fn link_create(
    prog: &OwnedFd,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> std::io::Result<OwnedFd> {
    let attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
        ..Default::default()
    };
    // SAFETY: bpf(2) reads `attr`, a live repr(C) value of the size
    // passed, laid out as the kernel's link_create attributes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const LinkCreateAttr,
            std::mem::size_of::<LinkCreateAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh link fd, now ours.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> BpfError {
    move |e| BpfError::Map {
        map,
        message: e.to_string(),
    }
}

impl XdpProgram {
    pub fn load() -> Result<Self, BpfError> {
        let load = |e: &dyn std::fmt::Display| BpfError::Load(e.to_string());
        let mut ebpf = Ebpf::load(PROGRAM).map_err(|e| load(&e))?;
        let prog: &mut Xdp = ebpf
            .program_mut("podswitch_xdp")
            .ok_or_else(|| load(&"program podswitch_xdp missing from object"))?
            .try_into()
            .map_err(|e| load(&e))?;
        prog.load().map_err(|e| load(&e))?;
        let prog_fd = prog
            .fd()
            .map_err(|e| load(&e))?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| load(&e))?;
        let mut take = |name: &str| -> Result<(Map, OwnedFd), BpfError> {
            let m = ebpf
                .take_map(name)
                .ok_or_else(|| load(&format!("map {name} missing")))?;
            let fd = match &m {
                Map::HashMap(d) | Map::XskMap(d) | Map::PerCpuArray(d) => {
                    d.fd().as_fd().try_clone_to_owned().map_err(|e| load(&e))?
                }
                _ => return Err(load(&format!("map {name} has an unexpected type"))),
            };
            Ok((m, fd))
        };
        let (ports, ports_fd) = take("PORTS")?;
        let (xsks, xsks_fd) = take("XSKS")?;
        let (nosock, nosock_fd) = take("NOSOCK")?;
        Self::assemble(
            Some(ebpf),
            prog_fd,
            [ports, xsks, nosock],
            [ports_fd, xsks_fd, nosock_fd],
            HashMap::new(),
        )
    }

    /// Takes over the program, maps and links a predecessor handed over:
    /// nothing is loaded or attached again.
    pub fn adopt(fds: ProgramFds) -> Result<Self, BpfError> {
        let load = |e: &dyn std::fmt::Display| BpfError::Load(format!("handed over: {e}"));
        let [a, b, c] = fds.maps;
        let map = |fd: &OwnedFd| -> Result<Map, BpfError> {
            let d =
                MapData::from_fd(fd.try_clone().map_err(|e| load(&e))?).map_err(|e| load(&e))?;
            Map::from_map_data(d).map_err(|e| load(&e))
        };
        let maps = [map(&a)?, map(&b)?, map(&c)?];
        let links = fds
            .links
            .into_iter()
            .map(|(ifindex, mode, fd)| (ifindex, (fd, mode)))
            .collect();
        Self::assemble(None, fds.prog, maps, [a, b, c], links)
    }

    fn assemble(
        ebpf: Option<Ebpf>,
        prog: OwnedFd,
        maps: [Map; 3],
        map_fds: [OwnedFd; 3],
        links: HashMap<u32, (OwnedFd, Mode)>,
    ) -> Result<Self, BpfError> {
        let load = |e: &dyn std::fmt::Display| BpfError::Load(e.to_string());
        let [ports, xsks, nosock] = maps;
        Ok(XdpProgram {
            _ebpf: ebpf,
            prog,
            ports: BpfHashMap::try_from(ports).map_err(|e| load(&e))?,
            xsks: XskMap::try_from(xsks).map_err(|e| load(&e))?,
            nosock: NoSocketCounts(Arc::new(Mutex::new(Some(
                PerCpuArray::try_from(nosock).map_err(|e| load(&e))?,
            )))),
            map_fds,
            links,
        })
    }

    /// Duplicates of the program's, maps' and links' fds, for a successor.
    pub fn export(&self) -> std::io::Result<ProgramFds> {
        let [a, b, c] = &self.map_fds;
        Ok(ProgramFds {
            prog: self.prog.try_clone()?,
            maps: [a.try_clone()?, b.try_clone()?, c.try_clone()?],
            links: self
                .links
                .iter()
                .map(|(i, (fd, m))| Ok((*i, *m, fd.try_clone()?)))
                .collect::<std::io::Result<_>>()?,
        })
    }

    /// Whether the program is attached to `ifindex` (and how).
    pub fn attached(&self, ifindex: u32) -> Option<Mode> {
        self.links.get(&ifindex).map(|(_, m)| *m)
    }

    /// Attaches the program to `ifindex` as `xdp` says (native where the
    /// driver can, falling back to generic unless `NativeOnly`). A link
    /// handed over by a predecessor for the same ifindex is kept as it is.
    pub fn attach(&mut self, ifindex: u32, xdp: XdpChoice) -> Result<Mode, BpfError> {
        if let Some(m) = self.attached(ifindex) {
            return Ok(m);
        }
        let prefer_native = xdp != XdpChoice::Generic;
        let native = if prefer_native {
            link_create(&self.prog, ifindex, BPF_XDP, XDP_FLAGS_DRV_MODE)
        } else {
            Err(std::io::Error::other("generic XDP requested"))
        };
        let (link, mode) = match native {
            Ok(l) => (l, Mode::Native),
            Err(e) if xdp == XdpChoice::NativeOnly => {
                return Err(BpfError::Attach {
                    ifindex,
                    message: format!("native XDP, which this port needs: {e}"),
                })
            }
            Err(e) => {
                if prefer_native {
                    log::warn!("native XDP on ifindex {ifindex} failed ({e}); using generic XDP");
                }
                let l =
                    link_create(&self.prog, ifindex, BPF_XDP, XDP_FLAGS_SKB_MODE).map_err(|e| {
                        BpfError::Attach {
                            ifindex,
                            message: e.to_string(),
                        }
                    })?;
                (l, Mode::Generic)
            }
        };
        self.links.insert(ifindex, (link, mode));
        Ok(mode)
    }

    /// Detaches the program from `ifindex`: closing the link's last fd
    /// does it (the kernel already dropped it if the netdev is gone).
    pub fn detach(&mut self, ifindex: u32) {
        self.links.remove(&ifindex);
    }

    /// The per-slot no-socket counts, for the control plane to read.
    pub fn no_socket_counts(&self) -> NoSocketCounts {
        self.nosock.clone()
    }

    /// Zeroes `slot`'s no-socket count: its port was deleted, and the next
    /// port to take the slot starts from nothing.
    pub fn forget_slot(&mut self, slot: u32) {
        self.nosock.reset(slot);
    }

    /// Routes frames entering `ifindex` on queue `i` to `xsk_fds[i]`,
    /// the sockets of port `slot`.
    pub fn bind(&mut self, ifindex: u32, slot: u32, xsk_fds: &[RawFd]) -> Result<(), BpfError> {
        for (q, fd) in xsk_fds.iter().enumerate() {
            self.xsks
                .set(slot * MAX_QUEUES + q as u32, *fd, 0)
                .map_err(map_err("XSKS"))?;
        }
        self.ports
            .insert(ifindex, slot, 0)
            .map_err(map_err("PORTS"))
    }

    /// Forgets `ifindex` only (its slot's sockets belong to another port now).
    pub fn unbind_ifindex(&mut self, ifindex: u32) {
        let _ = self.ports.remove(&ifindex);
    }

    pub fn unbind(&mut self, ifindex: u32, slot: u32, queues: u32) {
        let _ = self.ports.remove(&ifindex);
        for q in 0..queues.min(MAX_QUEUES) {
            let _ = self.xsks.unset(slot * MAX_QUEUES + q);
        }
    }
}
