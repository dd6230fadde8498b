//! Loads switchd's own XDP program (bpf/xdp_redirect.c, compiled by
//! build.rs) with aya and manages its two maps: PORTS (ifindex → slot) and
//! XSKS (slot → AF_XDP socket). The program is loaded once and attached to
//! every port's netdev through a bpf_link, which the kernel removes when
//! switchd exits, however it exits.

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues, XskMap};
use aya::programs::{xdp::XdpLinkId, Xdp, XdpMode};
use aya::Ebpf;
use std::collections::HashMap;
use std::os::fd::RawFd;
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
    ebpf: Ebpf,
    ports: BpfHashMap<MapData, u32, u32>,
    xsks: XskMap<MapData>,
    nosock: NoSocketCounts,
    links: HashMap<u32, XdpLinkId>,
}

/// The program's per-slot count of frames that arrived on a queue without
/// a socket (NOSOCK, one value per CPU), readable from any thread.
#[derive(Clone)]
pub struct NoSocketCounts(Arc<Mutex<PerCpuArray<MapData, u64>>>);

impl NoSocketCounts {
    /// Frames of `slot` dropped for want of a socket, summed over CPUs.
    pub fn get(&self, slot: u32) -> u64 {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&slot, 0)
            .map(|v| v.iter().copied().fold(0, u64::wrapping_add))
            .unwrap_or(0)
    }

    fn reset(&self, slot: u32) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(cpus) = aya::util::nr_cpus() {
            if let Ok(zero) = PerCpuValues::try_from(vec![0u64; cpus]) {
                let _ = m.set(slot, zero, 0);
            }
        }
    }
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
        let ports = ebpf
            .take_map("PORTS")
            .ok_or_else(|| load(&"map PORTS missing"))?;
        let ports = BpfHashMap::try_from(ports).map_err(|e| load(&e))?;
        let xsks = ebpf
            .take_map("XSKS")
            .ok_or_else(|| load(&"map XSKS missing"))?;
        let xsks = XskMap::try_from(xsks).map_err(|e| load(&e))?;
        let nosock = ebpf
            .take_map("NOSOCK")
            .ok_or_else(|| load(&"map NOSOCK missing"))?;
        let nosock = PerCpuArray::try_from(nosock).map_err(|e| load(&e))?;
        Ok(XdpProgram {
            ebpf,
            ports,
            xsks,
            nosock: NoSocketCounts(Arc::new(Mutex::new(nosock))),
            links: HashMap::new(),
        })
    }

    fn prog(&mut self) -> &mut Xdp {
        // The program was found and converted in `load`; the object is ours.
        #[allow(clippy::expect_used)]
        self.ebpf
            .program_mut("podswitch_xdp")
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("program checked at load")
    }

    /// Attaches the program to `ifindex`: native if `prefer_native` and
    /// the driver can, else generic.
    pub fn attach(&mut self, ifindex: u32, prefer_native: bool) -> Result<Mode, BpfError> {
        if self.links.contains_key(&ifindex) {
            return Err(BpfError::Attach {
                ifindex,
                message: "already attached".into(),
            });
        }
        let native = if prefer_native {
            self.prog()
                .attach_to_if_index(ifindex, XdpMode::Driver)
                .map_err(|e| e.to_string())
        } else {
            Err("generic XDP requested".to_string())
        };
        let (link, mode) = match native {
            Ok(l) => (l, Mode::Native),
            Err(e) => {
                if prefer_native {
                    log::warn!("native XDP on ifindex {ifindex} failed ({e}); using generic XDP");
                }
                let l = self
                    .prog()
                    .attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(|e| BpfError::Attach {
                        ifindex,
                        message: e.to_string(),
                    })?;
                (l, Mode::Generic)
            }
        };
        self.links.insert(ifindex, link);
        Ok(mode)
    }

    pub fn detach(&mut self, ifindex: u32) {
        if let Some(link) = self.links.remove(&ifindex) {
            if let Err(e) = self.prog().detach(link) {
                // The netdev is gone already: the kernel dropped the link.
                log::debug!("detaching XDP from ifindex {ifindex}: {e}");
            }
        }
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

    pub fn unbind(&mut self, ifindex: u32, slot: u32, queues: u32) {
        let _ = self.ports.remove(&ifindex);
        for q in 0..queues.min(MAX_QUEUES) {
            let _ = self.xsks.unset(slot * MAX_QUEUES + q);
        }
    }
}
