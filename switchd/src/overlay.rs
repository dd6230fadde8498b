//! The overlay behind a vxlan port (`"nic": {"kind": "vxlan"}`): the
//! netdevs switchd makes for it, and the TC programs (bpf/vxlan_tc.c) that
//! map the port's VLANs to VNIs, pick the peer, and count.
//!
//! For a port whose `nic.ifname` is `ovl0`:
//!
//! ```text
//!   switch ── ovl0 (AF_XDP, a trunk port) ═veth═ ovl0-t ──tc──▶ ovl0-vx ──▶ underlay
//!                                                    ◀──tc── (external VXLAN)
//! ```
//!
//! The kernel's VXLAN netdev, in external (collect-metadata) mode, carries
//! every VNI; the programs set the VNI and remote of each frame (and read
//! them from each received one). Why this and not encapsulation in
//! switchd: see README "Across nodes" and bench/RESULTS-overlay-mechanism.md.
//!
//! The loaded programs live here, one set per overlay port, keyed by the
//! port's ifname: the control plane writes their maps (VLANs, peers),
//! metrics and the API read their counters. Their tcx links go when
//! switchd exits; a successor (restart or handover) attaches its own at
//! the head, so it decides from the moment it is attached.

use crate::datapath::bpf::{link_create, BPF_TCX_INGRESS};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::SchedClassifier;
use aya::{Ebpf, Pod};
use podswitch_shared::model::{
    OverlayDrops, OverlayPeer, OverlayStatus, VxlanNic, MAX_MTU, MAX_VXLAN_PEERS,
};
use podswitch_shared::{netdev, netlink};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vxlan_tc.o"));

/// `tcx` attach flag: ahead of every program already there.
const BPF_F_BEFORE: u32 = 1 << 3;
/// Outer TTL / hop limit.
const TTL: u8 = 64;
/// A MAC learned behind a peer longer ago than this floods again (the
/// switch's own default aging).
const FDB_AGE_NS: u64 = 300_000_000_000;
/// The overlay MTU without an underlay netdev to read it from.
const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// The overlay program's CONFIG (struct config in vxlan_tc.c).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Config {
    vxlan_ifindex: u32,
    veth_ifindex: u32,
    npeers: u32,
    untagged_vlan: u16,
    v6: u8,
    ttl: u8,
    local: [u32; 4],
    fdb_age_ns: u64,
}

/// A peer's underlay address as the program keys it (struct addr): IPv4
/// as a host-order number in `a[0]` (bpf_tunnel_key's order), IPv6 as its
/// 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Addr {
    a: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PeerStats {
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    last_rx_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct FdbKey {
    mac: [u8; 6],
    vlan: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct FdbVal {
    peer: Addr,
    seen_ns: u64,
}

// SAFETY: each is repr(C) with fields of plain integers laid out without
// padding (Config: 4+4+4+2+1+1+16+8, Addr: 16, PeerStats: 5×8, FdbKey:
// 6+2, FdbVal: 16+8), so any bytes are a valid value and every byte is
// initialised; they mirror the structs of bpf/vxlan_tc.c.
unsafe impl Pod for Config {}
// SAFETY: as above.
unsafe impl Pod for Addr {}
// SAFETY: as above.
unsafe impl Pod for PeerStats {}
// SAFETY: as above.
unsafe impl Pod for FdbKey {}
// SAFETY: as above.
unsafe impl Pod for FdbVal {}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(a) => Addr {
                a: [u32::from(a), 0, 0, 0],
            },
            IpAddr::V6(a) => {
                let o = a.octets();
                let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                Addr {
                    a: [w(0), w(4), w(8), w(12)],
                }
            }
        }
    }
}

impl Addr {
    fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            let mut o = [0u8; 16];
            for (i, w) in self.a.iter().enumerate() {
                o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.a[0]))
        }
    }
}

// Indexes of STATS (the enum in vxlan_tc.c).
const DROP_UNMAPPED_VNI: u32 = 0;
const DROP_NOT_PEER: u32 = 1;
const DROP_UNMAPPED_VLAN: u32 = 2;
const DROP_UNTAGGED: u32 = 3;
const DROP_NO_PEERS: u32 = 4;
const DROP_TX_ERROR: u32 = 5;
const DROP_MALFORMED: u32 = 6;
const FLOODS: u32 = 7;

/// The netdev names of the overlay port `ifname` (at most 12 characters,
/// so both fit the kernel's 15): the veth's far end and the VXLAN netdev.
pub fn member_names(ifname: &str) -> (String, String) {
    (format!("{ifname}-t"), format!("{ifname}-vx"))
}

/// The loaded programs of one overlay port and what they were told.
struct Overlay {
    _ebpf: Ebpf,
    _links: [OwnedFd; 2],
    config: Array<MapData, Config>,
    vlan_vni: Array<MapData, u32>,
    vni_vlan: BpfHashMap<MapData, u32, u16>,
    peers: Array<MapData, Addr>,
    peer_stats: PerCpuHashMap<MapData, Addr, PeerStats>,
    fdb: BpfHashMap<MapData, FdbKey, FdbVal>,
    stats: PerCpuArray<MapData, u64>,
    last: Array<MapData, u32>,
    cfg: Config,
    vlans: BTreeMap<u16, u32>,
    peer_list: Vec<IpAddr>,
    mtu: u32,
}

static OVERLAYS: Mutex<BTreeMap<String, Overlay>> = Mutex::new(BTreeMap::new());

/// What a predecessor's overlay programs had counted and learned (handed
/// over; see `seeds`), kept until `ensure` loads this switchd's programs.
static SEEDS: Mutex<BTreeMap<String, OverlaySeed>> = Mutex::new(BTreeMap::new());

/// One overlay's counts and learned MACs, carried across a handover so
/// that counters go on and known unicast stays unicast.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OverlaySeed {
    /// (peer, [tx packets, tx bytes, rx packets, rx bytes], ns since its
    /// last frame or None).
    pub peers: Vec<(IpAddr, [u64; 4], Option<u64>)>,
    /// STATS by index (drop reasons, floods).
    pub stats: Vec<u64>,
    /// (MAC, VLAN, peer).
    pub fdb: Vec<([u8; 6], u16, IpAddr)>,
}

fn overlays() -> MutexGuard<'static, BTreeMap<String, Overlay>> {
    OVERLAYS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why making or changing an overlay failed; `missing` when it is the
/// underlay netdev that is not there (the port's NIC is then missing).
#[derive(Debug)]
pub struct OverlayError {
    pub message: String,
    pub missing: bool,
}

impl OverlayError {
    fn new(message: impl Into<String>) -> OverlayError {
        OverlayError {
            message: message.into(),
            missing: false,
        }
    }
}

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> OverlayError + '_ {
    move |e| OverlayError::new(format!("{what}: {e}"))
}

/// Makes (or finds) the overlay port's netdevs, loads and attaches its
/// programs if this switchd has not, and tells them the port's VLAN → VNI
/// map, untagged VLAN and peers. The veth gets `queues` queues each end
/// (one per poll thread: native XDP on a veth wants at least as many
/// receive queues as its peer sends on). Returns the overlay's MTU.
pub fn ensure(
    ifname: &str,
    v: &VxlanNic,
    vlans: &BTreeMap<u16, u32>,
    untagged: Option<u16>,
    queues: usize,
) -> Result<u32, OverlayError> {
    let (far, vx) = member_names(ifname);
    let underlay = match &v.underlay {
        Some(u) => Some((
            netdev::ifindex(u).map_err(|e| OverlayError {
                message: format!("the underlay {u} of vxlan NIC {ifname}: {e}"),
                missing: true,
            })?,
            netdev::mtu(u).map_err(err(u))?,
        )),
        None => None,
    };
    let mtu = underlay
        .map_or(DEFAULT_UNDERLAY_MTU, |(_, m)| m)
        .saturating_sub(v.overhead())
        .min(MAX_MTU);
    let mut nl = netlink::Netlink::open().map_err(err("netlink"))?;
    if netdev::ifindex(&vx).is_err() {
        nl.create_vxlan(&netlink::Vxlan {
            name: vx.clone(),
            local: v.local,
            port: v.port,
            underlay: underlay.map(|(i, _)| i),
            mtu: Some(mtu),
        })
        .map_err(err(&vx))?;
        log::info!(
            "made {vx}: external VXLAN, local {}, UDP port {}, MTU {mtu}",
            v.local,
            v.port
        );
    }
    if netdev::ifindex(ifname).is_err() {
        let here = std::fs::File::open("/proc/thread-self/ns/net").map_err(err("own netns"))?;
        let queues = queues.clamp(1, crate::datapath::bpf::MAX_QUEUES as usize) as u32;
        nl.create_veth(ifname, &far, here.as_raw_fd(), Some(mtu), None, queues)
            .map_err(err(ifname))?;
        log::info!("made {ifname} <-> {far}: the overlay port's veth, MTU {mtu}");
    }
    for dev in [&far, &vx] {
        if let Err(e) = netdev::disable_ipv6(dev) {
            log::debug!("disabling IPv6 on {dev}: {e}");
        }
        netdev::set_up(dev, true).map_err(err(dev))?;
    }
    // Decapsulated frames go one by one: GRO on the VXLAN netdev would
    // merge a TCP flow's segments only for the veth to split them again
    // before XDP (measured: 1.1 Gbit/s with it, 1.6 without).
    if let Err(e) = netdev::set_gro(&vx, false) {
        log::warn!("turning GRO off on {vx}: {e}");
    }
    let veth_ifindex = netdev::ifindex(&far).map_err(err(&far))?;
    let vxlan_ifindex = netdev::ifindex(&vx).map_err(err(&vx))?;

    let mut all = overlays();
    // Netdevs made again (someone deleted them): the old links went with
    // the old netdevs, so the programs are loaded and attached anew.
    if all
        .get(ifname)
        .is_some_and(|o| o.cfg.veth_ifindex != veth_ifindex || o.cfg.vxlan_ifindex != vxlan_ifindex)
    {
        all.remove(ifname);
    }
    if !all.contains_key(ifname) {
        let o = load(veth_ifindex, vxlan_ifindex)?;
        log::info!("overlay {ifname}: programs attached to {far} and {vx}");
        all.insert(ifname.to_string(), o);
    }
    let Some(o) = all.get_mut(ifname) else {
        return Err(OverlayError::new("overlay vanished"));
    };
    o.mtu = mtu;
    o.cfg.veth_ifindex = veth_ifindex;
    o.cfg.vxlan_ifindex = vxlan_ifindex;
    o.cfg.v6 = u8::from(v.local.is_ipv6());
    o.cfg.local = Addr::from(v.local).a;
    o.set_vlans(vlans, untagged)?;
    o.set_peers(&v.peers)?;
    let seed = SEEDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(ifname);
    if let Some(seed) = seed {
        o.apply(&seed)?;
        log::info!(
            "overlay {ifname}: counters of {} peer(s) and {} learned MAC(s) taken over",
            seed.peers.len(),
            seed.fdb.len()
        );
    }
    Ok(mtu)
}

fn load(veth_ifindex: u32, vxlan_ifindex: u32) -> Result<Overlay, OverlayError> {
    let load =
        |e: &dyn std::fmt::Display| OverlayError::new(format!("loading the overlay programs: {e}"));
    let mut ebpf = Ebpf::load(PROGRAM).map_err(|e| load(&e))?;
    let mut attach = |name: &str, ifindex: u32| -> Result<OwnedFd, OverlayError> {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| load(&format!("{name} missing from the object")))?
            .try_into()
            .map_err(|e| load(&e))?;
        prog.load().map_err(|e| load(&e))?;
        let fd = prog
            .fd()
            .map_err(|e| load(&e))?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| load(&e))?;
        link_create(&fd, ifindex, BPF_TCX_INGRESS, BPF_F_BEFORE)
            .map_err(|e| load(&format!("attaching {name} to ifindex {ifindex} (tcx): {e}")))
    };
    let links = [
        attach("podswitch_to_overlay", veth_ifindex)?,
        attach("podswitch_from_overlay", vxlan_ifindex)?,
    ];
    macro_rules! take {
        ($name:literal) => {
            ebpf.take_map($name)
                .ok_or_else(|| load(&concat!("map ", $name, " missing")))?
                .try_into()
                .map_err(|e: aya::maps::MapError| load(&e))?
        };
    }
    let o = Overlay {
        config: take!("CONFIG"),
        vlan_vni: take!("VLAN_VNI"),
        vni_vlan: take!("VNI_VLAN"),
        peers: take!("PEERS"),
        peer_stats: take!("PEER_STATS"),
        fdb: take!("FDB"),
        stats: take!("STATS"),
        last: take!("LAST"),
        _ebpf: ebpf,
        _links: links,
        cfg: Config {
            ttl: TTL,
            fdb_age_ns: FDB_AGE_NS,
            ..Config::default()
        },
        vlans: BTreeMap::new(),
        peer_list: Vec::new(),
        mtu: 0,
    };
    Ok(o)
}

fn map_err(what: &'static str) -> impl Fn(aya::maps::MapError) -> OverlayError {
    move |e| OverlayError::new(format!("overlay map {what}: {e}"))
}

impl Overlay {
    fn write_config(&mut self) -> Result<(), OverlayError> {
        self.config.set(0, self.cfg, 0).map_err(map_err("CONFIG"))
    }

    /// The VLAN → VNI map both ways, and the untagged VLAN.
    fn set_vlans(
        &mut self,
        vlans: &BTreeMap<u16, u32>,
        untagged: Option<u16>,
    ) -> Result<(), OverlayError> {
        for (vlan, vni) in &self.vlans {
            if vlans.get(vlan) != Some(vni) {
                self.vlan_vni
                    .set(u32::from(*vlan), 0, 0)
                    .map_err(map_err("VLAN_VNI"))?;
                match self.vni_vlan.remove(vni) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err("VNI_VLAN")(e)),
                }
            }
        }
        for (vlan, vni) in vlans {
            self.vni_vlan
                .insert(*vni, *vlan, 0)
                .map_err(map_err("VNI_VLAN"))?;
            self.vlan_vni
                .set(u32::from(*vlan), *vni, 0)
                .map_err(map_err("VLAN_VNI"))?;
        }
        self.vlans = vlans.clone();
        self.cfg.untagged_vlan = untagged.unwrap_or(0);
        self.write_config()
    }

    /// The peers: the table floods go to, the counters (kept for a peer
    /// that stays), and the MACs learned behind a removed peer forgotten.
    /// Returns how many MACs were forgotten.
    fn set_peers(&mut self, peers: &[IpAddr]) -> Result<usize, OverlayError> {
        let peers = &peers[..peers.len().min(MAX_VXLAN_PEERS)];
        let cpus =
            aya::util::nr_cpus().map_err(|(what, e)| OverlayError::new(format!("{what}: {e}")))?;
        for p in peers.iter().filter(|p| !self.peer_list.contains(p)) {
            let zero = PerCpuValues::try_from(vec![PeerStats::default(); cpus])
                .map_err(|e| OverlayError::new(format!("per-CPU values: {e}")))?;
            self.peer_stats
                .insert(Addr::from(*p), zero, 0)
                .map_err(map_err("PEER_STATS"))?;
        }
        // Fewer peers first (a flood never reads a stale entry), the table,
        // then more peers.
        self.cfg.npeers = self.cfg.npeers.min(peers.len() as u32);
        self.write_config()?;
        for (i, p) in peers.iter().enumerate() {
            self.peers
                .set(i as u32, Addr::from(*p), 0)
                .map_err(map_err("PEERS"))?;
        }
        self.cfg.npeers = peers.len() as u32;
        self.write_config()?;
        let gone: Vec<Addr> = self
            .peer_list
            .iter()
            .filter(|p| !peers.contains(p))
            .map(|p| Addr::from(*p))
            .collect();
        for g in &gone {
            match self.peer_stats.remove(g) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("PEER_STATS")(e)),
            }
        }
        let mut forgotten = 0;
        if !gone.is_empty() {
            let stale: Vec<FdbKey> = self
                .fdb
                .iter()
                .filter_map(|r| r.ok())
                .filter(|(_, v)| gone.contains(&v.peer))
                .map(|(k, _)| k)
                .collect();
            for k in &stale {
                if self.fdb.remove(k).is_ok() {
                    forgotten += 1;
                }
            }
        }
        self.peer_list = peers.to_vec();
        Ok(forgotten)
    }

    /// A peer's counters summed over CPUs (its last frame: the latest).
    fn peer_totals(&self, ip: &IpAddr) -> PeerStats {
        let mut s = PeerStats::default();
        if let Ok(per_cpu) = self.peer_stats.get(&Addr::from(*ip), 0) {
            for c in per_cpu.iter() {
                s.tx_packets += c.tx_packets;
                s.tx_bytes += c.tx_bytes;
                s.rx_packets += c.rx_packets;
                s.rx_bytes += c.rx_bytes;
                s.last_rx_ns = s.last_rx_ns.max(c.last_rx_ns);
            }
        }
        s
    }

    /// Starts fresh maps from a predecessor's counts and MACs (on the
    /// first CPU's slots; readers sum over CPUs). Peers no longer listed
    /// are skipped.
    fn apply(&mut self, seed: &OverlaySeed) -> Result<(), OverlayError> {
        let cpus =
            aya::util::nr_cpus().map_err(|(what, e)| OverlayError::new(format!("{what}: {e}")))?;
        let now = monotonic_ns();
        let per_cpu = |first: PeerStats| {
            let mut v = vec![PeerStats::default(); cpus];
            v[0] = first;
            PerCpuValues::try_from(v).map_err(|e| OverlayError::new(format!("per-CPU values: {e}")))
        };
        for (ip, [tx_packets, tx_bytes, rx_packets, rx_bytes], ago) in &seed.peers {
            if !self.peer_list.contains(ip) {
                continue;
            }
            let s = PeerStats {
                tx_packets: *tx_packets,
                tx_bytes: *tx_bytes,
                rx_packets: *rx_packets,
                rx_bytes: *rx_bytes,
                last_rx_ns: ago.map_or(0, |a| now.saturating_sub(a).max(1)),
            };
            self.peer_stats
                .insert(Addr::from(*ip), per_cpu(s)?, 0)
                .map_err(map_err("PEER_STATS"))?;
        }
        for (i, n) in seed.stats.iter().enumerate().take(FLOODS as usize + 1) {
            let mut v = vec![0u64; cpus];
            v[0] = *n;
            let v = PerCpuValues::try_from(v)
                .map_err(|e| OverlayError::new(format!("per-CPU values: {e}")))?;
            self.stats.set(i as u32, v, 0).map_err(map_err("STATS"))?;
        }
        for (mac, vlan, peer) in seed.fdb.iter().filter(|f| self.peer_list.contains(&f.2)) {
            let k = FdbKey {
                mac: *mac,
                vlan: *vlan,
            };
            let v = FdbVal {
                peer: Addr::from(*peer),
                seen_ns: now,
            };
            self.fdb.insert(k, v, 0).map_err(map_err("FDB"))?;
        }
        Ok(())
    }

    fn stat(&self, i: u32) -> u64 {
        self.stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}

/// Whether the overlay port `ifname`'s programs sit on netdevs that are
/// gone (someone deleted the far end or the VXLAN netdev while the port's
/// own end stayed attached): `ensure` makes them again.
pub fn stale(ifname: &str) -> bool {
    let all = overlays();
    let Some(o) = all.get(ifname) else {
        return false;
    };
    let (far, vx) = member_names(ifname);
    netdev::ifindex(&far).ok() != Some(o.cfg.veth_ifindex)
        || netdev::ifindex(&vx).ok() != Some(o.cfg.vxlan_ifindex)
}

/// Old side of a handover: every overlay's counts and learned MACs.
pub fn seeds() -> BTreeMap<String, OverlaySeed> {
    let all = overlays();
    let now = monotonic_ns();
    all.iter()
        .map(|(ifname, o)| {
            let v6 = o.cfg.v6 != 0;
            let peers = o
                .peer_list
                .iter()
                .map(|ip| {
                    let s = o.peer_totals(ip);
                    let ago = (s.last_rx_ns != 0).then(|| now.saturating_sub(s.last_rx_ns));
                    (
                        *ip,
                        [s.tx_packets, s.tx_bytes, s.rx_packets, s.rx_bytes],
                        ago,
                    )
                })
                .collect();
            let stats = (0..=FLOODS).map(|i| o.stat(i)).collect();
            let fdb = o
                .fdb
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, v)| (k.mac, k.vlan, v.peer.ip(v6)))
                .collect();
            (ifname.clone(), OverlaySeed { peers, stats, fdb })
        })
        .collect()
}

/// New side of a handover: what `ensure` starts each overlay's fresh
/// programs from.
pub fn set_seeds(seeds: BTreeMap<String, OverlaySeed>) {
    *SEEDS.lock().unwrap_or_else(|e| e.into_inner()) = seeds;
}

/// Replaces the peers of the overlay port `ifname`, live. Returns how many
/// MACs learned behind removed peers were forgotten.
pub fn set_peers(ifname: &str, peers: &[IpAddr]) -> Result<usize, OverlayError> {
    let mut all = overlays();
    let o = all
        .get_mut(ifname)
        .ok_or_else(|| OverlayError::new(format!("overlay {ifname} is not attached")))?;
    o.set_peers(peers)
}

/// Replaces the VLAN → VNI map of the overlay port `ifname`, live.
pub fn set_vlans(
    ifname: &str,
    vlans: &BTreeMap<u16, u32>,
    untagged: Option<u16>,
) -> Result<(), OverlayError> {
    let mut all = overlays();
    let o = all
        .get_mut(ifname)
        .ok_or_else(|| OverlayError::new(format!("overlay {ifname} is not attached")))?;
    o.set_vlans(vlans, untagged)
}

/// Detaches the overlay port's programs and removes its netdevs (the
/// port is deleted).
pub fn remove(ifname: &str) {
    overlays().remove(ifname);
    let (_, vx) = member_names(ifname);
    let r = netlink::Netlink::open().and_then(|mut nl| {
        // The veth's far end goes with it.
        for dev in [ifname, vx.as_str()] {
            match nl.delete_link(dev) {
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                r => r?,
            }
        }
        Ok(())
    });
    if let Err(e) = r {
        log::warn!("removing overlay {ifname}: {e}");
    }
}

/// Lets go of every overlay program (after a handover the successor's,
/// attached ahead of ours, decide; this drops our links).
pub fn release_all() {
    overlays().clear();
}

/// Now on the clock bpf_ktime_get_ns reads (CLOCK_MONOTONIC), in ns.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass, which lives here.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// What an operator sees of the overlay port `ifname`: its VLAN → VNI
/// map, each peer's counters and whether the kernel can reach it, and what
/// was dropped and why. None if this switchd has no such overlay.
pub fn status(ifname: &str) -> Option<OverlayStatus> {
    let all = overlays();
    let o = all.get(ifname)?;
    let v6 = o.cfg.v6 != 0;
    let now = monotonic_ns();
    let mut learned: BTreeMap<Addr, u64> = BTreeMap::new();
    for (_, v) in o.fdb.iter().filter_map(|r| r.ok()) {
        *learned.entry(v.peer).or_default() += 1;
    }
    let mut nl = netlink::Netlink::open().ok();
    let mut hops: BTreeMap<u32, Vec<(IpAddr, netlink::NextHop)>> = BTreeMap::new();
    let peers = o
        .peer_list
        .iter()
        .map(|ip| {
            let key = Addr::from(*ip);
            let s = o.peer_totals(ip);
            let (reachable, path) = match nl.as_mut().map(|n| n.route_to(*ip)) {
                None | Some(Err(_)) => (true, "unknown (netlink failed)".to_string()),
                Some(Ok(None)) => (false, "no route".to_string()),
                Some(Ok(Some((oif, hop)))) => {
                    let table = hops.entry(oif).or_insert_with(|| {
                        nl.as_mut()
                            .and_then(|n| n.next_hops(oif).ok())
                            .unwrap_or_default()
                    });
                    let state = table
                        .iter()
                        .find(|(a, _)| *a == hop)
                        .map_or(netlink::NextHop::Unknown, |(_, s)| *s);
                    let dev = netdev_name(oif);
                    let via = if hop == *ip {
                        format!("on-link via {dev}")
                    } else {
                        format!("via {hop} on {dev}")
                    };
                    match state {
                        netlink::NextHop::Failed => {
                            (false, format!("{via}: the next hop does not answer"))
                        }
                        // Resolution is retried on every frame sent, so a
                        // dead next hop under traffic mostly shows as this.
                        netlink::NextHop::Resolving => {
                            (false, format!("{via}: the next hop does not answer yet"))
                        }
                        netlink::NextHop::Resolved => (true, via),
                        netlink::NextHop::Unknown => (true, format!("{via}: not resolved yet")),
                    }
                }
            };
            OverlayPeer {
                address: *ip,
                tx_packets: s.tx_packets,
                tx_bytes: s.tx_bytes,
                rx_packets: s.rx_packets,
                rx_bytes: s.rx_bytes,
                last_rx_seconds_ago: (s.last_rx_ns != 0)
                    .then(|| now.saturating_sub(s.last_rx_ns) as f64 / 1e9),
                learned_macs: learned.get(&key).copied().unwrap_or(0),
                reachable,
                path,
            }
        })
        .collect();
    let last = |i: u32| o.last.get(&i, 0).ok().filter(|v| *v != 0);
    Some(OverlayStatus {
        vnis: o.vlans.clone(),
        untagged_vlan: (o.cfg.untagged_vlan != 0).then_some(o.cfg.untagged_vlan),
        mtu: o.mtu,
        peers,
        floods: o.stat(FLOODS),
        drops: OverlayDrops {
            unmapped_vni: o.stat(DROP_UNMAPPED_VNI),
            not_a_peer: o.stat(DROP_NOT_PEER),
            unmapped_vlan: o.stat(DROP_UNMAPPED_VLAN),
            untagged: o.stat(DROP_UNTAGGED),
            no_peers: o.stat(DROP_NO_PEERS),
            tx_error: o.stat(DROP_TX_ERROR),
            malformed: o.stat(DROP_MALFORMED),
        },
        last_unmapped_vni: last(0),
        last_stranger: if v6 {
            None
        } else {
            last(1).map(|a| Addr { a: [a, 0, 0, 0] }.ip(false))
        },
        learned_macs: learned.values().sum(),
    })
}

fn netdev_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf,
    // which is that long, and returns null when there is no such index.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_keyed_as_the_program_reads_tunnel_keys() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(Addr::from(v4).a, [0xc000_0201, 0, 0, 0]);
        assert_eq!(Addr::from(v4).ip(false), v4);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let a = Addr::from(v6);
        // The 16 bytes in network order, whatever the host's.
        let bytes: Vec<u8> = a.a.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(bytes[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(a.ip(true), v6);
    }

    #[test]
    fn the_structs_are_the_programs_sizes() {
        assert_eq!(std::mem::size_of::<Config>(), 40);
        assert_eq!(std::mem::size_of::<Addr>(), 16);
        assert_eq!(std::mem::size_of::<PeerStats>(), 40);
        assert_eq!(std::mem::size_of::<FdbKey>(), 8);
        assert_eq!(std::mem::size_of::<FdbVal>(), 24);
    }

    #[test]
    fn member_names_fit_the_kernel() {
        let (far, vx) = member_names("abcdefghijkl");
        assert_eq!((far.len(), vx.len()), (14, 15));
    }
}
