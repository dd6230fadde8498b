//! The podswitch object model as it crosses the control socket and the
//! state directory: `VSwitch`, `VPort`, `Nic` and the newtypes that make
//! nonsense unrepresentable (`VlanId` is 1..=4094, `MacAddr` is six bytes).
//!
//! Field names follow DESIGN.md (the CNI config's names: `vlan`, `trunk`
//! with `{minID,maxID}|{id}`, `macSpoofCheck`, `linkState`). Every input
//! struct denies unknown fields: a typo must not silently change a network.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// An 802.1Q VLAN identifier usable on a port: 1..=4094 (0 means "priority
/// tag only" on the wire and 4095 is reserved, so neither is a VLAN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanId(u16);

impl VlanId {
    pub const MIN: u16 = 1;
    pub const MAX: u16 = 4094;
    /// VLAN 1, where a port with neither `vlan` nor `trunk` lives.
    pub const DEFAULT: VlanId = VlanId(1);

    pub fn new(v: u16) -> Result<Self, ModelError> {
        if (Self::MIN..=Self::MAX).contains(&v) {
            Ok(VlanId(v))
        } else {
            Err(ModelError::VlanRange(v as i64))
        }
    }
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Serialize for VlanId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for VlanId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(VlanId::MIN as i64..=VlanId::MAX as i64).contains(&v) {
            return Err(de::Error::custom(ModelError::VlanRange(v)));
        }
        Ok(VlanId(v as u16))
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An Ethernet MAC address, written `02:42:0a:0a:00:05`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
    /// A MAC a NIC may own: unicast and not all-zero.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ModelError::Mac(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mac: MacAddr = s.parse().map_err(de::Error::custom)?;
        if !mac.is_unicast() {
            return Err(de::Error::custom(format!(
                "MAC address {mac} must be unicast and not all-zero"
            )));
        }
        Ok(mac)
    }
}

/// One entry of a trunk's allowed set, in the reference `vlanTrunk` shape:
/// `{"id": 400}` or `{"minID": 200, "maxID": 299}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrunkRange {
    Single(VlanId),
    Range(VlanId, VlanId),
}

impl TrunkRange {
    pub fn bounds(&self) -> (u16, u16) {
        match *self {
            TrunkRange::Single(v) => (v.get(), v.get()),
            TrunkRange::Range(a, b) => (a.get(), b.get()),
        }
    }
}

impl Serialize for TrunkRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match *self {
            TrunkRange::Single(v) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("id", &v)?;
                m.end()
            }
            TrunkRange::Range(a, b) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("minID", &a)?;
                m.serialize_entry("maxID", &b)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for TrunkRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            id: Option<VlanId>,
            #[serde(rename = "minID")]
            min_id: Option<VlanId>,
            #[serde(rename = "maxID")]
            max_id: Option<VlanId>,
        }
        let r = Raw::deserialize(d)?;
        match (r.id, r.min_id, r.max_id) {
            (Some(v), None, None) => Ok(TrunkRange::Single(v)),
            (None, Some(a), Some(b)) if a <= b => Ok(TrunkRange::Range(a, b)),
            (None, Some(a), Some(b)) => Err(de::Error::custom(format!(
                "trunk range minID {a} is greater than maxID {b}"
            ))),
            _ => Err(de::Error::custom(
                "a trunk entry is either {\"id\": N} or {\"minID\": N, \"maxID\": M}",
            )),
        }
    }
}

/// What plugs into a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicKind {
    /// A pod's veth (the host end is attached).
    Veth,
    /// A VM's tap device.
    Tap,
    /// An SR-IOV VF handed to a VM through vfio, attached by its representor.
    Vfio,
    /// A physical NIC carrying 802.1Q-tagged traffic to the fabric.
    Uplink,
    /// A kernel VXLAN netdev for one VNI, which switchd makes itself (see
    /// `Nic::vxlan`): the port's VLAN crosses nodes over the overlay.
    Vxlan,
}

impl fmt::Display for NicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NicKind::Veth => "veth",
            NicKind::Tap => "tap",
            NicKind::Vfio => "vfio",
            NicKind::Uplink => "uplink",
            NicKind::Vxlan => "vxlan",
        })
    }
}

/// The eswitch mode of an SR-IOV PF (devlink's name for it), which
/// decides who switches its VFs' frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EswitchMode {
    /// The NIC switches VFs itself (VEB); VFs have no representors.
    Legacy,
    /// Every VF has a representor netdev on the host; the host switches.
    Switchdev,
}

impl fmt::Display for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Handover::Standby => "standby",
            Handover::Active => "active",
        })
    }
}

impl fmt::Display for EswitchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EswitchMode::Legacy => "legacy",
            EswitchMode::Switchdev => "switchdev",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Nic {
    pub kind: NicKind,
    /// The netdev switchd attaches to: in switchd's network namespace, or
    /// in `netns`. A vfio NIC's is the VF's representor; a VF in legacy
    /// eswitch mode has none (absent: see [`Nic::attaches`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ifname: String,
    /// A tap's network namespace (a path such as `/var/run/netns/x` or
    /// `/proc/PID/ns/net`): switchd attaches the tap where it lives, so a
    /// VM's frames take no veth hop. Absent: switchd's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// A vfio NIC's VF, by PCI address (`0000:18:02.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    /// A vfio NIC's PF eswitch mode. `legacy`: the NIC's own switch
    /// forwards the VF's frames and the PF enforces what it can of the
    /// port (set by the CNI plugin); switchd records the port but never
    /// attaches anything. `switchdev` (or absent): switchd attaches the
    /// representor `ifname` like any netdev.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eswitch_mode: Option<EswitchMode>,
    /// A vxlan NIC's overlay: switchd makes the netdev `ifname` (one end
    /// of a veth pair) and a kernel VXLAN netdev behind it; the port's
    /// VLANs cross to the peers as VNIs (see switchd's overlay module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<VxlanNic>,
}

/// The overlay of a vxlan NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VxlanNic {
    /// The node's underlay address (the outer source).
    pub local: std::net::IpAddr,
    /// UDP destination port.
    #[serde(default = "vxlan_port")]
    pub port: u16,
    /// The underlay netdev (outer frames leave through it; its MTU less
    /// the encapsulation is the overlay's MTU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<String>,
    /// VLAN → VNI for the VLANs whose VNI is not their VLAN ID (a VLAN of
    /// the port not listed here travels as VNI = VLAN ID).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vni: Vec<VniMapping>,
    /// The other nodes' underlay addresses.
    #[serde(default)]
    pub peers: Vec<std::net::IpAddr>,
}

/// One VLAN of an overlay port and the VNI it travels as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VniMapping {
    pub vlan: u16,
    pub vni: u32,
}

fn vxlan_port() -> u16 {
    4789
}

/// Bytes VXLAN adds to a frame on an IPv4 underlay (outer Ethernet, IPv4,
/// UDP, VXLAN headers); an IPv6 underlay adds 20 more.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The most peers an overlay port takes (the overlay program's table).
pub const MAX_VXLAN_PEERS: usize = 256;

impl VxlanNic {
    /// Drops the node's own address from its peers (a list shared by every
    /// node, such as the chart's, names them all).
    pub fn without_self(mut self) -> VxlanNic {
        let me = self.local;
        self.peers.retain(|p| *p != me);
        self
    }

    /// The bytes encapsulation adds: 50 on an IPv4 underlay, 70 on IPv6.
    pub fn overhead(&self) -> u32 {
        if self.local.is_ipv6() {
            VXLAN_OVERHEAD + 20
        } else {
            VXLAN_OVERHEAD
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.port == 0 {
            return Err("vxlan port 0 is not a UDP port".into());
        }
        if self.local.is_unspecified() || self.local.is_multicast() {
            return Err(format!(
                "vxlan local {} is not a unicast address",
                self.local
            ));
        }
        if let Some(p) = self
            .peers
            .iter()
            .find(|p| p.is_unspecified() || p.is_multicast() || **p == self.local)
        {
            return Err(format!(
                "vxlan peer {p} is not another node's unicast address"
            ));
        }
        if let Some(p) = self
            .peers
            .iter()
            .find(|p| p.is_ipv4() != self.local.is_ipv4())
        {
            return Err(format!(
                "vxlan peer {p} is not of the underlay's address family (local {})",
                self.local
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(p) = self.peers.iter().find(|p| !seen.insert(**p)) {
            return Err(format!("vxlan peer {p} is listed twice"));
        }
        if self.peers.len() > MAX_VXLAN_PEERS {
            return Err(format!(
                "vxlan has {} peers; an overlay port takes at most {MAX_VXLAN_PEERS}",
                self.peers.len()
            ));
        }
        let mut vlans = std::collections::BTreeSet::new();
        for VniMapping { vlan, vni } in &self.vni {
            if !(1..=4094).contains(vlan) {
                return Err(format!("vxlan vni: VLAN {vlan} is not in 1..=4094"));
            }
            if *vni == 0 || *vni > 0xff_ffff {
                return Err(format!(
                    "vxlan vni: VNI {vni} of VLAN {vlan} is not in 1..=16777215"
                ));
            }
            if !vlans.insert(*vlan) {
                return Err(format!("vxlan vni: VLAN {vlan} is mapped twice"));
            }
        }
        Ok(())
    }

    /// Each VLAN the port carries (`mode`) and its VNI: the port's VLANs,
    /// VNI = VLAN ID unless `vni` says otherwise (an entry for a VLAN the
    /// port does not carry waits until it does, so a trunk can shrink and
    /// grow live). Errors: a private VLAN port, or two VLANs on one VNI.
    pub fn vlan_vnis(&self, mode: &VlanMode) -> Result<BTreeMap<u16, u32>, String> {
        let mut vlans = std::collections::BTreeSet::new();
        match mode {
            VlanMode::Access(v) => {
                vlans.insert(v.get());
            }
            VlanMode::Trunk { allowed, native } => {
                for r in allowed {
                    let (a, b) = r.bounds();
                    vlans.extend(a..=b);
                }
                vlans.extend(native.map(|v| v.get()));
            }
            VlanMode::Private(_) => return Err("a vxlan port cannot be a private VLAN port".into()),
        }
        let mut out = BTreeMap::new();
        let mut by_vni = BTreeMap::new();
        for v in vlans {
            let vni = self
                .vni
                .iter()
                .find(|m| m.vlan == v)
                .map_or(u32::from(v), |m| m.vni);
            if let Some(other) = by_vni.insert(vni, v) {
                return Err(format!(
                    "vxlan: VLANs {other} and {v} would both travel as VNI {vni}"
                ));
            }
            out.insert(v, vni);
        }
        Ok(out)
    }
}

/// `GET /v1/ports/{id}/overlay`: what the overlay behind a vxlan port
/// does (see switchd's overlay module).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayStatus {
    /// Each VLAN the port carries and the VNI it travels as.
    pub vnis: BTreeMap<u16, u32>,
    /// The VLAN of frames the switch sends untagged (access or native).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untagged_vlan: Option<u16>,
    /// The largest frame (IP MTU) that crosses without fragmenting.
    pub mtu: u32,
    pub peers: Vec<OverlayPeer>,
    /// Frames sent to every peer (broadcast, multicast, unknown unicast).
    pub floods: u64,
    pub drops: OverlayDrops,
    /// The last VNI received that no VLAN maps to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_unmapped_vni: Option<u32>,
    /// The last underlay address that sent a frame and is not a peer
    /// (IPv4 underlays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stranger: Option<std::net::IpAddr>,
    /// MACs known to be behind a peer.
    pub learned_macs: u64,
}

/// One peer of an overlay port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayPeer {
    pub address: std::net::IpAddr,
    /// Frames (and their bytes, without the encapsulation) sent to it.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames received from it and taken.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Seconds since its last frame; None if it never sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rx_seconds_ago: Option<f64>,
    /// MACs learned behind it.
    pub learned_macs: u64,
    /// False when the kernel has no route to it, or its next hop does not
    /// answer ARP/ND (failed, or still unanswered).
    pub reachable: bool,
    /// How the kernel reaches it: `on-link via eth0`, `via 10.0.0.1 on
    /// eth0`, `no route`, with the next hop's state.
    pub path: String,
}

/// Frames the overlay dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayDrops {
    /// From a peer, with a VNI no VLAN of the port maps to.
    pub unmapped_vni: u64,
    /// From an underlay address that is not a peer.
    pub not_a_peer: u64,
    /// From the switch, on a VLAN without a VNI.
    pub unmapped_vlan: u64,
    /// From the switch, untagged on a port without an untagged VLAN.
    pub untagged: u64,
    /// A flood with no peer to go to.
    pub no_peers: u64,
    /// The kernel refused the tunnel key or the redirect.
    pub tx_error: u64,
    /// Too short, or a tag that would not come off or go on.
    pub malformed: u64,
}

impl OverlayDrops {
    /// (reason label, count), as /metrics and switchctl name them.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("unmapped-vni", self.unmapped_vni),
            ("not-a-peer", self.not_a_peer),
            ("unmapped-vlan", self.unmapped_vlan),
            ("untagged", self.untagged),
            ("no-peers", self.no_peers),
            ("tx-error", self.tx_error),
            ("malformed", self.malformed),
        ]
    }
}

/// Whether `s` is a PCI address in the kernel's `domain:bus:device.function`
/// form (`0000:18:02.5`; the domain has 4 to 8 hex digits, VMD domains 5).
pub fn is_pci_address(s: &str) -> bool {
    fn hex(s: &str, min: usize, max: usize) -> bool {
        (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
    }
    let mut parts = s.split(':');
    let (Some(domain), Some(bus), Some(devfn), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((dev, func)) = devfn.split_once('.') else {
        return false;
    };
    let dev_ok = hex(dev, 2, 2) && u8::from_str_radix(dev, 16).is_ok_and(|d| d < 32);
    let func_ok = func.len() == 1 && func.bytes().all(|b| (b'0'..=b'7').contains(&b));
    hex(domain, 4, 8) && hex(bus, 2, 2) && dev_ok && func_ok
}

impl Nic {
    pub fn new(kind: NicKind, ifname: impl Into<String>) -> Nic {
        Nic {
            kind,
            ifname: ifname.into(),
            netns: None,
            pci_address: None,
            eswitch_mode: None,
            vxlan: None,
        }
    }

    /// Whether switchd attaches a netdev for this NIC: every NIC but an
    /// SR-IOV VF in legacy eswitch mode, whose frames the NIC's own
    /// switch forwards (switchd never sees them).
    pub fn attaches(&self) -> bool {
        !(self.kind == NicKind::Vfio && self.eswitch_mode == Some(EswitchMode::Legacy))
    }

    /// Whether `self` and `other` name the same device: the same VF (PCI
    /// address), or the same netdev in the same namespace.
    pub fn same_device(&self, other: &Nic) -> bool {
        let same_vf = match (&self.pci_address, &other.pci_address) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        let same_netdev =
            !self.ifname.is_empty() && self.ifname == other.ifname && self.netns == other.netns;
        same_vf || same_netdev
    }

    /// Where the NIC is, for messages: `eth0`, `eth0 in /var/run/netns/x`,
    /// `ens1f0_0 (VF 0000:18:02.0)` or `VF 0000:18:02.0 (legacy eswitch)`.
    pub fn location(&self) -> String {
        match (&self.netns, &self.pci_address) {
            (Some(ns), _) => format!("{} in {ns}", self.ifname),
            (None, Some(pci)) if !self.attaches() => format!("VF {pci} (legacy eswitch)"),
            (None, Some(pci)) => format!("{} (VF {pci})", self.ifname),
            (None, None) => self.ifname.clone(),
        }
    }

    /// Checks the fields a client sent: the name (absent only on a VF in
    /// legacy eswitch mode), a namespace only on a tap, given as an
    /// absolute path, and a PCI address and eswitch mode only on vfio.
    pub fn check(&self) -> Result<(), ModelError> {
        let invalid = |m: String| Err(ModelError::Invalid(m));
        match (&self.vxlan, self.kind) {
            (Some(v), NicKind::Vxlan) => {
                v.validate().map_err(ModelError::Invalid)?;
                if self.ifname.is_empty() || self.ifname.len() > 12 || self.netns.is_some() {
                    return invalid(format!(
                        "a vxlan NIC names the netdev switchd makes in its own namespace \
                         (nic.ifname, 1 to 12 characters, no nic.netns), not {:?}",
                        self.ifname
                    ));
                }
            }
            (None, NicKind::Vxlan) => {
                return invalid("a vxlan NIC needs nic.vxlan: {\"local\", \"peers\"}".into())
            }
            (Some(_), k) => {
                return invalid(format!(
                    "nic.vxlan is for vxlan NICs only (this NIC is a {k})"
                ))
            }
            (None, _) => {}
        }
        let vfio = self.kind == NicKind::Vfio;
        if let Some(a) = &self.pci_address {
            if !vfio {
                return invalid(format!(
                    "nic.pciAddress is for vfio NICs only (this NIC is a {})",
                    self.kind
                ));
            }
            if !is_pci_address(a) {
                return invalid(format!(
                    "nic.pciAddress {a:?} is not a PCI address (expected \
                     domain:bus:device.function, e.g. 0000:18:02.5)"
                ));
            }
        }
        if let Some(m) = self.eswitch_mode {
            if !vfio {
                return invalid(format!(
                    "nic.eswitchMode is for vfio NICs only (this NIC is a {})",
                    self.kind
                ));
            }
            if m == EswitchMode::Legacy && self.pci_address.is_none() {
                return invalid(
                    "a vfio NIC in legacy eswitch mode needs nic.pciAddress: \
                     the VF has no netdev here, its PCI address names it"
                        .into(),
                );
            }
        }
        if !self.attaches() {
            if !self.ifname.is_empty() {
                return invalid(format!(
                    "a vfio NIC in legacy eswitch mode has no netdev for switchd to \
                     attach (the NIC's own switch forwards the VF's frames); leave \
                     nic.ifname out, not {:?}",
                    self.ifname
                ));
            }
        } else if self.ifname.is_empty() {
            let what = if vfio {
                " (the VF's representor netdev; a VF in legacy eswitch mode has none: \
                 give nic.pciAddress and nic.eswitchMode \"legacy\" instead)"
            } else {
                ""
            };
            return invalid(format!(
                "nic.ifname is required for kind {}{what}",
                self.kind
            ));
        } else {
            check_ifname(&self.ifname)?;
        }
        if let Some(ns) = &self.netns {
            if self.kind != NicKind::Tap {
                return invalid(format!(
                    "nic.netns is for taps only (this NIC is a {})",
                    self.kind
                ));
            }
            if !ns.starts_with('/') || ns.len() > 4096 || ns.contains('\0') {
                return invalid(format!("nic.netns must be an absolute path, not {ns:?}"));
            }
        }
        Ok(())
    }
}

/// Administrative state of a port; `down` pulls the cable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    #[default]
    Up,
    Down,
}

/// Who a port belongs to (the CNI fills this in).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Owner {
    #[serde(
        rename = "containerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// The CNI network (conflist `name`) that created the port; GC scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// What a port does with the 802.1p priority bits of what it sends, when
/// the frame leaves tagged (a trunk, the uplink): Hyper-V's
/// `IeeePriorityTag`, sriov-cni's `vlanQoS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Priority {
    pub mode: PriorityMode,
    /// 0..7, with `mode: set` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcp: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorityMode {
    /// Keep the PCP of the pod's own (priority) tag; untagged: 0.
    Trust,
    /// Always 0.
    Reset,
    /// Always `pcp`.
    Set,
}

impl Priority {
    pub fn validate(&self) -> Result<(), String> {
        match (self.mode, self.pcp) {
            (PriorityMode::Set, Some(p)) if p <= 7 => Ok(()),
            (PriorityMode::Set, Some(p)) => Err(format!("priority.pcp {p} is outside 0..7")),
            (PriorityMode::Set, None) => Err("priority mode set needs pcp (0..7)".into()),
            (_, Some(_)) => Err("priority.pcp is for mode set only".into()),
            (_, None) => Ok(()),
        }
    }

    /// The PCP every frame of the port leaves with, or None to keep the
    /// frame's own (trust).
    pub fn forced_pcp(&self) -> Option<u8> {
        match self.mode {
            PriorityMode::Trust => None,
            PriorityMode::Reset => Some(0),
            PriorityMode::Set => self.pcp,
        }
    }
}

/// A port's part in port mirroring among the ports of its switch
/// (Hyper-V's `PortMirroring`): a `destination` port receives a copy of
/// every frame each `source` port of the same switch sends and receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMirroring {
    #[default]
    None,
    Source,
    Destination,
}

impl fmt::Display for PortMirroring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortMirroring::None => "none",
            PortMirroring::Source => "source",
            PortMirroring::Destination => "destination",
        })
    }
}

impl FromStr for PortMirroring {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(PortMirroring::None),
            "source" => Ok(PortMirroring::Source),
            "destination" => Ok(PortMirroring::Destination),
            _ => Err(format!(
                "portMirroring is none, source or destination, not {s:?}"
            )),
        }
    }
}

/// A private VLAN port (RFC 5517; Hyper-V's `Set-VMNetworkAdapterVlan
/// -Isolated|-Community|-Promiscuous`): an untagged port whose frames
/// enter on the secondary VLAN (isolated, community) or on the primary
/// (promiscuous), and which receives only what its mode lets it: the
/// primary (isolated), its community and the primary (community), the
/// primary and the listed secondaries (promiscuous).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pvlan {
    pub mode: PvlanMode,
    #[serde(rename = "primaryID")]
    pub primary_id: VlanId,
    /// Isolated and community ports: the secondary VLAN.
    #[serde(
        rename = "secondaryID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub secondary_id: Option<VlanId>,
    /// Promiscuous ports: the secondary VLANs it talks to.
    #[serde(
        rename = "secondaryIDs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub secondary_ids: Vec<VlanId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PvlanMode {
    /// Talks to promiscuous ports only.
    Isolated,
    /// Talks to its own community and to promiscuous ports.
    Community,
    /// Talks to every port of the primary VLAN and the listed secondaries.
    Promiscuous,
}

impl PvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PvlanMode::Isolated => "isolated",
            PvlanMode::Community => "community",
            PvlanMode::Promiscuous => "promiscuous",
        }
    }
}

/// Left out of a port's JSON (and state file) when `none`.
impl OmitWhenEmpty for PortMirroring {
    fn omit(&self) -> bool {
        *self == PortMirroring::None
    }
}

impl Pvlan {
    /// Checks the fields that belong together (the switch-wide rules, a
    /// secondary VLAN with one primary and one type, are switchd's).
    pub fn validate(&self) -> Result<(), String> {
        let p = self.primary_id;
        match (self.mode, self.secondary_id, self.secondary_ids.is_empty()) {
            (PvlanMode::Promiscuous, None, false) => {
                let mut seen = std::collections::BTreeSet::new();
                for s in &self.secondary_ids {
                    if *s == p {
                        return Err(format!(
                            "pvlan.secondaryIDs lists {s}, the primary VLAN: a secondary VLAN differs from its primary"
                        ));
                    }
                    if !seen.insert(*s) {
                        return Err(format!("pvlan.secondaryIDs lists {s} twice"));
                    }
                }
                Ok(())
            }
            (PvlanMode::Promiscuous, _, true) => Err(
                "a promiscuous pvlan port needs secondaryIDs (a non-empty list of the secondary VLANs it serves)"
                    .into(),
            ),
            (PvlanMode::Promiscuous, Some(_), false) => Err(
                "a promiscuous pvlan port takes secondaryIDs (a list), not secondaryID".into(),
            ),
            (m, Some(s), true) if s == p => Err(format!(
                "pvlan {} port: secondaryID {s} equals primaryID: a secondary VLAN differs from its primary",
                m.as_str()
            )),
            (_, Some(_), true) => Ok(()),
            (m, None, _) => Err(format!(
                "a {} pvlan port needs secondaryID (its secondary VLAN)",
                m.as_str()
            )),
            (m, Some(_), false) => Err(format!(
                "a {} pvlan port takes secondaryID, not secondaryIDs (that list is for promiscuous ports)",
                m.as_str()
            )),
        }
    }

    /// The VLAN the port's frames are classified on: the secondary for
    /// isolated and community ports, the primary for promiscuous ones.
    pub fn ingress_vlan(&self) -> VlanId {
        match (self.mode, self.secondary_id) {
            (PvlanMode::Promiscuous, _) | (_, None) => self.primary_id,
            (_, Some(s)) => s,
        }
    }

    /// The VLANs whose frames the port receives (RFC 5517 §2).
    pub fn member_vlans(&self) -> Vec<VlanId> {
        match self.mode {
            PvlanMode::Isolated => vec![self.primary_id],
            PvlanMode::Community => std::iter::once(self.primary_id)
                .chain(self.secondary_id)
                .collect(),
            PvlanMode::Promiscuous => std::iter::once(self.primary_id)
                .chain(self.secondary_ids.iter().copied())
                .collect(),
        }
    }

    /// The secondary VLANs the port names.
    pub fn secondaries(&self) -> Vec<VlanId> {
        match self.mode {
            PvlanMode::Promiscuous => self.secondary_ids.clone(),
            _ => self.secondary_id.into_iter().collect(),
        }
    }
}

/// `isolated:100:101`, `community:100:102`, `promiscuous:100:101,102`
/// (switchctl's form).
impl fmt::Display for Pvlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s: Vec<String> = self.secondaries().iter().map(|v| v.to_string()).collect();
        write!(
            f,
            "{}:{}:{}",
            self.mode.as_str(),
            self.primary_id,
            s.join(",")
        )
    }
}

impl FromStr for Pvlan {
    type Err = ModelError;
    /// The `Display` form; validated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ModelError::Invalid(format!(
                "pvlan {s:?}: {why} (want isolated:PRIMARY:SECONDARY, community:PRIMARY:SECONDARY \
                 or promiscuous:PRIMARY:SECONDARY[,SECONDARY...])"
            ))
        };
        let mut parts = s.split(':');
        let (Some(mode), Some(primary), Some(secondary), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("three fields separated by ':'"));
        };
        let mode = match mode {
            "isolated" => PvlanMode::Isolated,
            "community" => PvlanMode::Community,
            "promiscuous" => PvlanMode::Promiscuous,
            _ => return Err(bad("mode is isolated, community or promiscuous")),
        };
        let vid = |t: &str| -> Result<VlanId, ModelError> {
            let n: u16 = t
                .trim()
                .parse()
                .map_err(|_| bad(&format!("{t:?} is not a VLAN ID")))?;
            VlanId::new(n)
        };
        let primary_id = vid(primary)?;
        let secondaries = secondary
            .split(',')
            .map(vid)
            .collect::<Result<Vec<_>, _>>()?;
        let p = match mode {
            PvlanMode::Promiscuous => Pvlan {
                mode,
                primary_id,
                secondary_id: None,
                secondary_ids: secondaries,
            },
            _ => match secondaries[..] {
                [one] => Pvlan {
                    mode,
                    primary_id,
                    secondary_id: Some(one),
                    secondary_ids: Vec::new(),
                },
                _ => return Err(bad("an isolated or community port has one secondary VLAN")),
            },
        };
        p.validate().map_err(ModelError::Invalid)?;
        Ok(p)
    }
}

/// Per-port QoS: maximum rate and burst each way (bits per second and
/// bits, as in the CNI `bandwidth` capability) and the Hyper-V
/// minimum-bandwidth weight. "ingress" is what the pod receives, "egress"
/// what it sends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Qos {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
    /// 1..=100: share of a congested egress port relative to other senders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bandwidth_weight: Option<u32>,
}

impl Qos {
    /// Checks ranges; a rate of 0 or a burst without its rate is an error.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate, burst) in [
            ("ingress", self.ingress_rate, self.ingress_burst),
            ("egress", self.egress_rate, self.egress_burst),
        ] {
            match (rate, burst) {
                (Some(0), _) => {
                    return Err(format!(
                        "qos.{name}Rate must be at least 1 bit/s (omit it for no limit)"
                    ))
                }
                (None, Some(_)) => return Err(format!("qos.{name}Burst needs qos.{name}Rate")),
                (Some(r), _) if r > 400_000_000_000 => {
                    return Err(format!("qos.{name}Rate {r} is above 400 Gbit/s"))
                }
                (_, Some(b)) if b > 1 << 40 => {
                    return Err(format!("qos.{name}Burst {b} is too large"))
                }
                _ => {}
            }
        }
        if let Some(w) = self.min_bandwidth_weight {
            if !(1..=100).contains(&w) {
                return Err(format!("qos.minBandwidthWeight {w} is outside 1..100"));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == Qos::default()
    }
}

/// Which frames an ACL rule sees, from the pod's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclDirection {
    /// Frames to the pod.
    Inbound,
    /// Frames from the pod.
    Outbound,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    #[default]
    Allow,
    Deny,
    /// Count the frame and go on to the next rule.
    Meter,
}

/// An IP prefix, written "10.0.0.0/8" or "fd00::/64" (a bare address is /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        match (self.addr, ip) {
            (V4(n), V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (V6(n), V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: std::net::IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A port or port range, written "80" or "1000-2000".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl PortRange {
    pub fn contains(&self, p: u16) -> bool {
        (self.0..=self.1).contains(&p)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == self.1 {
            s.collect_str(&self.0)
        } else {
            s.collect_str(&format_args!("{}-{}", self.0, self.1))
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let s = match &v {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            _ => {
                return Err(de::Error::custom(
                    "a port range is \"80\", 80 or \"1000-2000\"",
                ))
            }
        };
        let bad = || de::Error::custom(format!("{s:?} is not a port or port range (0..65535)"));
        let (a, b) = s.split_once('-').unwrap_or((&s, &s));
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a > b {
            return Err(bad());
        }
        Ok(PortRange(a, b))
    }
}

/// An IP protocol: "tcp", "udp", "icmp", "icmpv6" or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol(pub u8);

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            6 => s.serialize_str("tcp"),
            17 => s.serialize_str("udp"),
            1 => s.serialize_str("icmp"),
            58 => s.serialize_str("icmpv6"),
            n => s.serialize_u8(n),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "tcp" => Ok(Protocol(6)),
                "udp" => Ok(Protocol(17)),
                "icmp" => Ok(Protocol(1)),
                "icmpv6" => Ok(Protocol(58)),
                _ => Err(de::Error::custom(format!(
                    "unknown protocol {s:?} (tcp, udp, icmp, icmpv6 or a number)"
                ))),
            },
            serde_json::Value::Number(n) => n
                .as_u64()
                .filter(|n| *n <= 255)
                .map(|n| Protocol(n as u8))
                .ok_or_else(|| de::Error::custom(format!("protocol {n} is outside 0..255"))),
            _ => Err(de::Error::custom("a protocol is a name or a number")),
        }
    }
}

/// One ACL rule. Every given field must match; "local" is the pod's side
/// (source of outbound frames, destination of inbound ones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AclRule {
    pub direction: AclDirection,
    pub action: AclAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ports: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ports: Option<PortRange>,
}

/// Most ACL rules on one port.
pub const MAX_ACL_RULES: usize = 1024;

/// Largest MTU of a port's netdev (pod veth, tap, uplink): the CNI's and
/// the API's limits both come from here. Frames longer than one UMEM chunk
/// travel as AF_XDP multi-buffer frames.
pub const MAX_MTU: u32 = 9000;
/// Smallest MTU (IPv4's minimum).
pub const MIN_MTU: u32 = 68;

/// How a port setting appears in each form: `opt` settings are optional
/// (absent: none; `null` in a PATCH clears them), `def` settings always
/// have a value (absent: the type's default; a PATCH sets, never clears).
#[doc(hidden)]
#[macro_export]
macro_rules! __port_field {
    (view opt $t:ty) => { Option<$t> };
    (view def $t:ty) => { $t };
    (update opt $t:ty) => { Option<Option<$t>> };
    (update def $t:ty) => { Option<$t> };
    (from_config opt $v:expr) => { $v };
    (from_config def $v:expr) => { $v.unwrap_or_default() };
    (to_config opt $v:expr) => { $v };
    (to_config def $v:expr) => { Some($v) };
    (declared opt $v:expr) => { Some($v) };
    (declared def $v:expr) => { $v };
}

/// Whether a `VPort` field is left out of its JSON (an empty option or
/// list; a flag or an enum is always written).
pub trait OmitWhenEmpty {
    fn omit(&self) -> bool;
}
impl<T> OmitWhenEmpty for Option<T> {
    fn omit(&self) -> bool {
        self.is_none()
    }
}
impl<T> OmitWhenEmpty for Vec<T> {
    fn omit(&self) -> bool {
        self.is_empty()
    }
}
macro_rules! never_omit {
    ($($t:ty),*) => { $(impl OmitWhenEmpty for $t { fn omit(&self) -> bool { false } })* };
}
never_omit!(bool, LinkState, AclAction);

/// The one definition of a port's settings. It generates the three forms
/// of a port (so a new setting is added here once, and every form, the
/// conversions between them and the state file follow):
/// - `PortConfig`: `POST /v1/ports` and `--switches-file`, every setting
///   optional;
/// - `PortUpdate`: the `PATCH` body, absent = unchanged;
/// - `VPort`: the port as stored and answered, with its defaults filled in.
macro_rules! port_settings {
    ($( $(#[$doc:meta])* $kind:ident $field:ident : $t:ty; )*) => {
        /// `POST /v1/ports` body.
        #[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct PortConfig {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub id: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub switch: Option<String>,
            pub nic: Nic,
            $( $(#[$doc])*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $field: Option<$t>, )*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub owner: Option<Owner>,
        }

        /// `PATCH /v1/ports/{id}` body: absent fields are unchanged; `null`
        /// clears an optional setting (`vlan`, `trunk`, `mac`, `qos`, ...).
        #[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct PortUpdate {
            $( $(#[$doc])*
            #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
            pub $field: $crate::__port_field!(update $kind $t), )*
        }

        /// A VPort as stored and as answered by the API.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct VPort {
            pub id: String,
            pub switch: String,
            pub nic: Nic,
            $( $(#[$doc])*
            #[serde(default, skip_serializing_if = "OmitWhenEmpty::omit")]
            pub $field: $crate::__port_field!(view $kind $t), )*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub owner: Option<Owner>,
            /// Runtime status, filled in by switchd; never stored.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<PortStatus>,
            /// Counters, filled in by switchd; never stored.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub stats: Option<PortStats>,
        }

        impl VPort {
            /// The port a `PortConfig` describes, defaults filled in.
            pub fn from_config(id: String, switch: String, c: PortConfig) -> VPort {
                VPort {
                    id,
                    switch,
                    nic: c.nic,
                    $( $field: $crate::__port_field!(from_config $kind c.$field), )*
                    owner: c.owner,
                    status: None,
                    stats: None,
                }
            }

            /// The `PortConfig` that re-creates this port (a restart).
            pub fn to_config(&self) -> PortConfig {
                PortConfig {
                    id: Some(self.id.clone()),
                    switch: Some(self.switch.clone()),
                    nic: self.nic.clone(),
                    $( $field: $crate::__port_field!(to_config $kind self.$field.clone()), )*
                    owner: self.owner.clone(),
                }
            }

            /// Applies a PATCH: every setting it names.
            pub fn apply(&mut self, u: PortUpdate) {
                $( if let Some(v) = u.$field { self.$field = v; } )*
            }
        }

        impl PortConfig {
            /// A port on `nic` with every setting left to its default.
            pub fn on(nic: Nic) -> PortConfig {
                PortConfig {
                    id: None,
                    switch: None,
                    nic,
                    $( $field: None, )*
                    owner: None,
                }
            }

            /// The PATCH that makes an existing port what this declaration
            /// says (a changed `--switches-file`): optional settings it
            /// leaves out are cleared, others it leaves out are unchanged.
            pub fn into_declared_update(self) -> PortUpdate {
                PortUpdate {
                    $( $field: $crate::__port_field!(declared $kind self.$field), )*
                }
            }
        }
    };
}

port_settings! {
    opt mac: MacAddr;
    opt vlan: VlanId;
    opt trunk: Vec<TrunkRange>;
    /// A private VLAN port (excludes `vlan` and `trunk`).
    opt pvlan: Pvlan;
    def mac_spoof_check: bool;
    /// IP, ARP and ND spoof guard: what the port sends must carry one of
    /// `allowedIPs` (see switchd's pipeline/ipguard.rs for the exceptions).
    def ip_spoof_check: bool;
    /// The addresses the port may send from (the CNI fills them from IPAM).
    #[serde(rename = "allowedIPs")]
    def allowed_ips: Vec<std::net::IpAddr>;
    def link_state: LinkState;
    opt qos: Qos;
    /// 802.1p: trust, reset or set the priority bits (absent: trust).
    opt priority: Priority;
    def dhcp_guard: bool;
    def router_guard: bool;
    /// Most broadcast, multicast and unknown-unicast frames per second from the port.
    opt storm_limit: u32;
    def acls: Vec<AclRule>;
    def acl_default: AclAction;
    /// Port mirroring: none (default), source or destination.
    def port_mirroring: PortMirroring;
}

impl PortConfig {
    /// The settings of this port that a VF in legacy eswitch mode cannot
    /// enforce (the NIC's VEB switches its frames, with only what the PF
    /// sets on the VF: MAC, access VLAN, 802.1p, spoof check, link state,
    /// transmit rate): a trunk, receive-side QoS, the guards, the storm
    /// limit and ACLs. Empty: the port can be a legacy VF's.
    pub fn unenforceable_on_legacy_vf(&self) -> Vec<&'static str> {
        let qos = self.qos.clone().unwrap_or_default();
        [
            (
                self.trunk.as_ref().is_some_and(|t| !t.is_empty()),
                "a trunk",
            ),
            (qos.ingress_rate.is_some(), "qos.ingressRate"),
            (qos.ingress_burst.is_some(), "qos.ingressBurst"),
            (self.dhcp_guard == Some(true), "dhcpGuard"),
            (self.ip_spoof_check == Some(true), "ipSpoofCheck"),
            (self.router_guard == Some(true), "routerGuard"),
            (self.storm_limit.is_some(), "stormLimit"),
            (self.pvlan.is_some(), "pvlan"),
            (self.acls.as_ref().is_some_and(|a| !a.is_empty()), "acls"),
            (self.acl_default == Some(AclAction::Deny), "aclDefault deny"),
            (
                self.port_mirroring
                    .is_some_and(|m| m != PortMirroring::None),
                "portMirroring",
            ),
        ]
        .into_iter()
        .filter(|(bad, _)| *bad)
        .map(|(_, what)| what)
        .collect()
    }
}

/// Per-port counters as reported by the API (summed over poll threads).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Times the port's own MAC moved here from another port of the
    /// switch (a migrated VM announcing itself).
    #[serde(default)]
    pub mac_handovers: u64,
    /// Frames waiting in the port's shaper to it (qos.ingressRate) and
    /// from it (qos.egressRate), sampled once a second.
    #[serde(default)]
    pub ingress_queued: u64,
    #[serde(default)]
    pub egress_queued: u64,
    /// Dropped frames by reason (switchd's `DropReason`: `malformed`,
    /// `vlan`, `spoof`, `ip-spoof`, `link-down`, `qos`, ...); only reasons
    /// seen so far are listed.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Frames each ACL rule matched, in rule order (reset when the rules change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl_hits: Vec<u64>,
    /// Mirror copies sent to this port (a `destination`); the copies that
    /// could not be made or queued are under `drops["mirror"]`.
    #[serde(default)]
    pub mirror_copies: u64,
    /// Frames live captures of this port took, and those they lost to a
    /// full capture ring (every capture so far, the running ones included).
    #[serde(default)]
    pub capture_frames: u64,
    #[serde(default)]
    pub capture_dropped: u64,
}

/// A PATCH field that is present: `null` is `Some(None)` for an optional
/// setting (clear it) and an error for one that always has a value.
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl VPort {
    /// The VLAN mode this port's fields describe.
    pub fn mode(&self) -> VlanMode {
        if let Some(p) = &self.pvlan {
            return VlanMode::Private(p.clone());
        }
        VlanMode::from_fields(self.vlan, self.trunk.as_deref())
    }
}

impl PortStatus {
    /// A port the data path does not serve (yet).
    pub fn detached() -> PortStatus {
        PortStatus {
            attached: false,
            ifindex: 0,
            xdp_mode: "none".into(),
            queues: 0,
            mtu: 0,
            handover: None,
            reason: None,
            captures: Vec::new(),
        }
    }
}

/// What only the daemon knows about a port right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortStatus {
    /// The datapath has an AF_XDP socket on the NIC.
    pub attached: bool,
    pub ifindex: u32,
    /// "native" or "generic" XDP.
    pub xdp_mode: String,
    /// Queues of the NIC with a socket (one per poll thread at most).
    #[serde(default)]
    pub queues: u32,
    /// The NIC's MTU when it was attached.
    #[serde(default)]
    pub mtu: u32,
    /// Only while another port of the switch has the same MAC (a VM's
    /// live migration): `standby` (the switch sends the MAC's traffic to
    /// the other port) or `active` (to this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<Handover>,
    /// Why the port is not attached, where that is by design rather than
    /// a fault (a VF in legacy eswitch mode: the NIC forwards its frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The live captures running on the port now
    /// (`GET /v1/ports/{id}/capture`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<CaptureInfo>,
}

/// One running live capture of a port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureInfo {
    /// `in` (what the pod sends), `out` (what the switch sends it) or `both`.
    pub direction: String,
    pub snaplen: u32,
    /// Frames it stops after, if it was given a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Frames taken so far, and lost to its full ring.
    pub frames: u64,
    pub dropped: u64,
}

/// A port's part in a MAC handover (see `PortStatus::handover`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handover {
    Standby,
    Active,
}

/// A port's 802.1Q role, derived from `vlan` and `trunk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VlanMode {
    /// Untagged in and out, on one VLAN.
    Access(VlanId),
    /// Tagged for the allowed set; untagged frames belong to `native`.
    Trunk {
        allowed: Vec<TrunkRange>,
        native: Option<VlanId>,
    },
    /// A private VLAN port: untagged, classified and filtered by `pvlan`.
    Private(Pvlan),
}

impl VlanMode {
    /// The VLAN of untagged frames (a port's own MAC lives there): the
    /// access VLAN, or a trunk's native VLAN if it has one. A private VLAN
    /// port's MAC is filed under its primary VLAN (shared learning).
    pub fn untagged_vlan(&self) -> Option<VlanId> {
        match self {
            VlanMode::Access(v) => Some(*v),
            VlanMode::Trunk { native, .. } => *native,
            VlanMode::Private(p) => Some(p.primary_id),
        }
    }

    pub fn from_fields(vlan: Option<VlanId>, trunk: Option<&[TrunkRange]>) -> Self {
        match trunk {
            Some(t) => VlanMode::Trunk {
                allowed: t.to_vec(),
                native: vlan,
            },
            None => VlanMode::Access(vlan.unwrap_or(VlanId::DEFAULT)),
        }
    }
}

/// `POST /v1/switches` body.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SwitchConfig {
    pub name: String,
    /// Seconds a learned MAC lives without traffic (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aging_seconds: Option<u32>,
    /// Most learned MACs this switch holds (default 8192).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fdb_entries: Option<u32>,
    /// IGMP/MLD snooping (default off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_snooping: Option<bool>,
    /// Snooping: whether a group nobody joined floods (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_flood_unknown: Option<bool>,
    /// Snooping: seconds a membership lives without a report (default 260).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_membership_seconds: Option<u32>,
}

/// `PATCH /v1/switches/{name}` body: the fields given change, live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SwitchUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aging_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fdb_entries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_snooping: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_flood_unknown: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_membership_seconds: Option<u32>,
}

/// Most `multicastMembershipSeconds` a switch takes (a day).
pub const MAX_MEMBERSHIP_SECONDS: u32 = 86_400;

/// Checks `multicastMembershipSeconds`.
pub fn check_membership_seconds(s: u32) -> Result<(), String> {
    if (1..=MAX_MEMBERSHIP_SECONDS).contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "multicastMembershipSeconds {s} is outside 1..{MAX_MEMBERSHIP_SECONDS}"
        ))
    }
}

/// A VSwitch as stored and answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VSwitch {
    pub name: String,
    pub aging_seconds: u32,
    pub max_fdb_entries: u32,
    /// IGMP/MLD snooping: IP multicast goes only to the ports that joined
    /// its group and to the ports that lead to a multicast router.
    #[serde(default)]
    pub multicast_snooping: bool,
    /// Snooping: a group nobody joined floods (true) or goes to the
    /// router ports only (false).
    #[serde(default = "yes")]
    pub multicast_flood_unknown: bool,
    /// Snooping: seconds a membership (and a router port learned from a
    /// query) lives without being refreshed.
    #[serde(default = "membership_seconds")]
    pub multicast_membership_seconds: u32,
    /// Number of ports on the switch (answered, never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<usize>,
    /// Forwarding-table entries (answered, never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdb_entries: Option<usize>,
}

impl VSwitch {
    pub const DEFAULT_NAME: &'static str = "default";
    pub const DEFAULT_AGING_SECONDS: u32 = 300;
    pub const DEFAULT_MAX_FDB_ENTRIES: u32 = 8192;
    /// RFC 3376's membership interval: robustness 2 × query interval 125 s
    /// + query response interval 10 s.
    pub const DEFAULT_MEMBERSHIP_SECONDS: u32 = 260;
}

fn yes() -> bool {
    true
}

fn membership_seconds() -> u32 {
    VSwitch::DEFAULT_MEMBERSHIP_SECONDS
}

/// A switch's multicast table (`GET /v1/switches/{name}/mdb`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MulticastTable {
    pub switch: String,
    pub snooping: bool,
    /// (VLAN, group) with the ports that joined it.
    pub groups: Vec<MulticastGroup>,
    /// Ports that lead to a multicast router.
    pub routers: Vec<MulticastRouter>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MulticastGroup {
    pub vlan: VlanId,
    pub group: std::net::IpAddr,
    pub ports: Vec<MulticastMember>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MulticastMember {
    pub port: String,
    /// Seconds until the membership ages out unless a report refreshes it.
    pub expires_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MulticastRouter {
    pub port: String,
    /// "uplink" (always a router port, on every VLAN it carries) or
    /// "query" (a query arrived on it, on `vlan`; ages out).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<VlanId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_seconds: Option<u64>,
}

/// One forwarding-table row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FdbEntry {
    pub vlan: VlanId,
    pub mac: MacAddr,
    pub port: String,
    /// "learned" or "static".
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds since the MAC was last seen (0 for static entries).
    pub age_seconds: u64,
}

/// How the data path runs (`GET /v1/datapath`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapathInfo {
    /// CPU the first poll thread is pinned to; pods' receive processing
    /// is steered off the poll CPUs (RPS) so it does not compete with them.
    pub poll_cpu: Option<usize>,
    /// CPUs the poll threads are pinned to (empty when unpinned).
    #[serde(default)]
    pub poll_cpus: Vec<usize>,
    /// Poll threads; the CNI gives pod veths this many queues.
    #[serde(default = "one")]
    pub poll_threads: usize,
    /// Preferred XDP mode: "native" or "generic".
    pub xdp_mode: String,
    /// UMEM frames of each poll thread.
    pub umem_frames: u32,
    /// Ports the frame budget admits (per poll thread's UMEM).
    #[serde(default)]
    pub max_ports: u32,
    /// Largest MTU a port may have.
    #[serde(default)]
    pub max_mtu: u32,
    pub ports: usize,
    pub attached_ports: usize,
    /// Each poll thread's share of the work.
    #[serde(default)]
    pub threads: Vec<PollThreadInfo>,
    /// How this switchd took the data path over from its predecessor
    /// (absent after an ordinary start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<HandoverInfo>,
}

/// The handover through which this switchd took over (`GET /v1/datapath`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoverInfo {
    /// The predecessor's process ID and version.
    pub from_pid: u32,
    pub from_version: String,
    /// When it happened (seconds since the Unix epoch).
    pub at: f64,
    /// From the offer's arrival to polling every adopted port, in ms (the
    /// predecessor's poll threads stopped just before the offer left).
    pub took_ms: u64,
    pub ports_adopted: usize,
    /// Frames that were in the predecessor's hands (shaper queues, between
    /// poll threads), dropped; frames in the kernel's rings are kept.
    pub frames_dropped: u64,
}

/// One poll thread (`GET /v1/datapath`, `switchctl datapath`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollThreadInfo {
    pub index: usize,
    /// CPU it is pinned to, if any.
    pub cpu: Option<usize>,
    /// Linux thread ID (for per-thread CPU time in /proc).
    pub tid: u32,
    /// Port queues it serves.
    pub ports: u32,
    /// UMEM frames on its free list (the rest are in rings or in flight).
    pub free_frames: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Frames handed to / taken from other poll threads (ports with fewer
    /// queues than threads, rate limiters homed on another thread).
    pub handoff_out: u64,
    pub handoff_in: u64,
    /// CPU time the thread has used, in seconds.
    pub cpu_seconds: f64,
}

fn one() -> usize {
    1
}

/// An error body: `{"code": "...", "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("VLAN ID {0} is outside 1..4094")]
    VlanRange(i64),
    #[error("{0:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)")]
    Mac(String),
    #[error("{what} {name:?} is invalid: {why}")]
    Name {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Checks a Linux interface name (1..=15 bytes, no '/', ':' or whitespace).
pub fn check_ifname(name: &str) -> Result<(), ModelError> {
    let err = |why| ModelError::Name {
        what: "interface name",
        name: name.to_string(),
        why,
    };
    if name.is_empty() || name.len() > 15 {
        return Err(err("must be 1 to 15 bytes long"));
    }
    if name == "." || name == ".." {
        return Err(err("is reserved"));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(err(
            "must not contain '/', ':', whitespace or control characters",
        ));
    }
    Ok(())
}

/// Checks a switch name or port ID: 1..=64 of `[A-Za-z0-9._-]`, starting
/// with an alphanumeric (they appear in URLs and file names).
pub fn check_object_name(what: &'static str, name: &str) -> Result<(), ModelError> {
    let err = |why| ModelError::Name {
        what,
        name: name.to_string(),
        why,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(err("must be 1 to 64 characters long"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(err("must start with a letter or digit"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(err("may only contain letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vxlan(vnis: &[(u16, u32)]) -> VxlanNic {
        VxlanNic {
            local: "192.0.2.1".parse().unwrap(),
            port: 4789,
            underlay: None,
            vni: vnis
                .iter()
                .map(|&(vlan, vni)| VniMapping { vlan, vni })
                .collect(),
            peers: vec!["192.0.2.2".parse().unwrap()],
        }
    }

    #[test]
    fn an_overlay_maps_each_vlan_of_the_port_to_its_vni() {
        let v = |n| VlanId::new(n).unwrap();
        let trunk = VlanMode::Trunk {
            allowed: vec![
                TrunkRange::Single(v(100)),
                TrunkRange::Range(v(200), v(202)),
            ],
            native: Some(v(300)),
        };
        let m = vxlan(&[(200, 5200), (999, 7)]).vlan_vnis(&trunk).unwrap();
        // VNI = VLAN ID unless mapped; an entry for a VLAN the port does
        // not carry waits.
        let want: BTreeMap<u16, u32> =
            [(100, 100), (200, 5200), (201, 201), (202, 202), (300, 300)].into();
        assert_eq!(m, want);
        assert_eq!(
            vxlan(&[]).vlan_vnis(&VlanMode::Access(v(7))).unwrap(),
            [(7, 7)].into()
        );
        let e = vxlan(&[(100, 201)]).vlan_vnis(&trunk).unwrap_err();
        assert!(e.contains("both travel as VNI 201"), "{e}");
    }

    #[test]
    fn an_overlay_checks_its_vnis_and_peers() {
        assert!(vxlan(&[(100, 5100)]).validate().is_ok());
        for (nic, why) in [
            (vxlan(&[(100, 0)]), "VNI 0"),
            (vxlan(&[(100, 1 << 24)]), "VNI 16777216"),
            (vxlan(&[(0, 5)]), "VLAN 0"),
            (
                VxlanNic {
                    peers: vec!["2001:db8::2".parse().unwrap()],
                    ..vxlan(&[])
                },
                "address family",
            ),
            (
                VxlanNic {
                    peers: vec!["192.0.2.1".parse().unwrap()],
                    ..vxlan(&[])
                },
                "not another node",
            ),
        ] {
            let e = nic.validate().unwrap_err();
            assert!(e.contains(why), "{e} (wanted {why})");
        }
        let v6 = VxlanNic {
            local: "2001:db8::1".parse().unwrap(),
            peers: vec![],
            ..vxlan(&[])
        };
        assert_eq!((vxlan(&[]).overhead(), v6.overhead()), (50, 70));
        let e = vxlan(&[(100, 5100), (100, 5101)]).validate().unwrap_err();
        assert!(e.contains("VLAN 100 is mapped twice"), "{e}");
        let json = r#"{"local": "192.0.2.1", "vni": [{"vlan": 100, "vni": 5100}], "peers": []}"#;
        let parsed: VxlanNic = serde_json::from_str(json).unwrap();
        assert_eq!(
            parsed.vni,
            vec![VniMapping {
                vlan: 100,
                vni: 5100
            }]
        );
        assert_eq!(parsed.port, 4789);
    }

    #[test]
    fn vlan_bounds() {
        assert!(serde_json::from_str::<VlanId>("0").is_err());
        assert!(serde_json::from_str::<VlanId>("4095").is_err());
        assert!(serde_json::from_str::<VlanId>("-3").is_err());
        assert_eq!(
            serde_json::from_str::<VlanId>("4094").ok(),
            Some(VlanId(4094))
        );
        let e = serde_json::from_str::<VlanId>("5000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("5000 is outside 1..4094"), "{e}");
    }

    #[test]
    fn mac_roundtrip_and_rejects() {
        let m: MacAddr = "02:42:0A:0a:00:05".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:0a:0a:00:05");
        assert!("02:42:0a:0a:00".parse::<MacAddr>().is_err());
        assert!("02:42:0a:0a:00:05:06".parse::<MacAddr>().is_err());
        assert!("zz:42:0a:0a:00:05".parse::<MacAddr>().is_err());
        assert!(serde_json::from_str::<MacAddr>("\"01:00:5e:00:00:01\"").is_err());
        assert!(serde_json::from_str::<MacAddr>("\"00:00:00:00:00:00\"").is_err());
    }

    #[test]
    fn trunk_shapes() {
        let t: Vec<TrunkRange> =
            serde_json::from_str(r#"[{"minID":200,"maxID":299},{"id":400}]"#).unwrap();
        assert_eq!(t[0].bounds(), (200, 299));
        assert_eq!(t[1].bounds(), (400, 400));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"[{"minID":200,"maxID":299},{"id":400}]"#
        );
        assert!(serde_json::from_str::<TrunkRange>(r#"{"minID":300,"maxID":200}"#).is_err());
        assert!(serde_json::from_str::<TrunkRange>(r#"{"id":1,"minID":2,"maxID":3}"#).is_err());
        assert!(serde_json::from_str::<TrunkRange>(r#"{"vid":1}"#).is_err());
        assert!(serde_json::from_str::<TrunkRange>(r#"{"id":4095}"#).is_err());
    }

    #[test]
    fn port_config_denies_unknown_fields() {
        let e = serde_json::from_str::<PortConfig>(
            r#"{"nic":{"kind":"veth","ifname":"a"},"vlam":100}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `vlam`"), "{e}");
    }

    #[test]
    fn patch_null_clears() {
        let u: PortUpdate = serde_json::from_str(r#"{"trunk":null}"#).unwrap();
        assert_eq!(u.trunk, Some(None));
        assert_eq!(u.vlan, None);
        let u: PortUpdate = serde_json::from_str(r#"{"vlan":7}"#).unwrap();
        assert_eq!(u.vlan, Some(Some(VlanId(7))));
    }

    #[test]
    fn mode_from_fields() {
        assert_eq!(
            VlanMode::from_fields(None, None),
            VlanMode::Access(VlanId(1))
        );
        let t = [TrunkRange::Single(VlanId(5))];
        assert_eq!(
            VlanMode::from_fields(Some(VlanId(9)), Some(&t)),
            VlanMode::Trunk {
                allowed: t.to_vec(),
                native: Some(VlanId(9))
            }
        );
    }

    #[test]
    fn pvlan_shapes_and_rules() {
        let p: Pvlan =
            serde_json::from_str(r#"{"mode": "isolated", "primaryID": 100, "secondaryID": 101}"#)
                .unwrap();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.ingress_vlan(), VlanId(101));
        assert_eq!(p.member_vlans(), vec![VlanId(100)]);
        assert_eq!(p.to_string(), "isolated:100:101");
        let c: Pvlan = "community:100:102".parse().unwrap();
        assert_eq!(c.member_vlans(), vec![VlanId(100), VlanId(102)]);
        assert_eq!(c.ingress_vlan(), VlanId(102));
        let m: Pvlan = serde_json::from_str(
            r#"{"mode": "promiscuous", "primaryID": 100, "secondaryIDs": [101, 102]}"#,
        )
        .unwrap();
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(m.ingress_vlan(), VlanId(100));
        assert_eq!(m.secondaries(), vec![VlanId(101), VlanId(102)]);
        assert_eq!(m.to_string(), "promiscuous:100:101,102");
        assert_eq!("promiscuous:100:101,102".parse::<Pvlan>().unwrap(), m);
        // JSON round trip keeps the fixed names.
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"mode": "promiscuous", "primaryID": 100, "secondaryIDs": [101, 102]})
        );
        for (bad, why) in [
            (
                r#"{"mode": "isolated", "primaryID": 100, "secondaryID": 100}"#,
                "differs",
            ),
            (
                r#"{"mode": "community", "primaryID": 100}"#,
                "needs secondaryID",
            ),
            (
                r#"{"mode": "promiscuous", "primaryID": 100, "secondaryIDs": []}"#,
                "needs secondaryIDs",
            ),
            (
                r#"{"mode": "promiscuous", "primaryID": 100, "secondaryIDs": [101, 100]}"#,
                "primary",
            ),
            (
                r#"{"mode": "promiscuous", "primaryID": 100, "secondaryIDs": [101, 101]}"#,
                "twice",
            ),
            (
                r#"{"mode": "isolated", "primaryID": 100, "secondaryID": 101, "secondaryIDs": [102]}"#,
                "not secondaryIDs",
            ),
        ] {
            let p: Pvlan = serde_json::from_str(bad).unwrap();
            let e = p.validate().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(serde_json::from_str::<Pvlan>(
            r#"{"mode": "isolated", "primaryID": 100, "secondaryID": 4095}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Pvlan>(r#"{"mode": "private", "primaryID": 1}"#).is_err());
        for bad in [
            "isolated:100",
            "isolated:100:101,102",
            "isolated:100:100",
            "weird:1:2",
            "community:0:5",
            "promiscuous:100:x",
        ] {
            assert!(bad.parse::<Pvlan>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pvlan_is_a_vlan_mode() {
        let mut c =
            PortConfig::on(serde_json::from_str(r#"{"kind": "veth", "ifname": "x"}"#).unwrap());
        c.pvlan = Some("isolated:100:101".parse().unwrap());
        assert_eq!(c.unenforceable_on_legacy_vf(), vec!["pvlan"]);
        let v = VPort::from_config("p".into(), "default".into(), c);
        assert!(matches!(v.mode(), VlanMode::Private(_)));
        assert_eq!(v.mode().untagged_vlan(), Some(VlanId(100)));
    }

    #[test]
    fn names() {
        assert!(check_ifname("psw3f9a1c2e").is_ok());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_object_name("port ID", "p-1.x_y").is_ok());
        assert!(check_object_name("port ID", "../etc").is_err());
        assert!(check_object_name("port ID", "a b").is_err());
    }

    #[test]
    fn pci_addresses() {
        for ok in ["0000:18:02.5", "0000:AF:1F.7", "10000:e1:00.0"] {
            assert!(is_pci_address(ok), "{ok}");
        }
        for bad in [
            "",
            "18:02.5",
            "0000:18:02",
            "0000:18:02.8",
            "0000:18:20.0",
            "0000:1:02.5",
            "0000:18:02.5 ",
            "000g:18:02.5",
            "0000:18:02.5:1",
            "../../etc",
            "0000:18:02.55",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }

    #[test]
    fn vfio_nics() {
        let legacy: Nic = serde_json::from_str(
            r#"{"kind":"vfio","pciAddress":"0000:18:02.3","eswitchMode":"legacy"}"#,
        )
        .unwrap();
        assert!(!legacy.attaches());
        assert!(legacy.check().is_ok());
        assert_eq!(legacy.location(), "VF 0000:18:02.3 (legacy eswitch)");
        assert_eq!(
            serde_json::to_string(&legacy).unwrap(),
            r#"{"kind":"vfio","pciAddress":"0000:18:02.3","eswitchMode":"legacy"}"#
        );
        let rep = Nic {
            pci_address: Some("0000:18:02.0".into()),
            eswitch_mode: Some(EswitchMode::Switchdev),
            ..Nic::new(NicKind::Vfio, "ens1f0_0")
        };
        assert!(rep.attaches() && rep.check().is_ok());
        assert_eq!(rep.location(), "ens1f0_0 (VF 0000:18:02.0)");
        assert!(!rep.same_device(&legacy));
        let upper = Nic {
            pci_address: Some("0000:18:02.3".to_uppercase()),
            ..legacy.clone()
        };
        assert!(upper.same_device(&legacy));
        assert!(Nic::new(NicKind::Veth, "a").same_device(&Nic::new(NicKind::Tap, "a")));
        assert!(!Nic::new(NicKind::Veth, "").same_device(&legacy));
        let e = serde_json::from_str::<Nic>(r#"{"kind":"vfio","ifname":"x","pci":"y"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `pci`"), "{e}");
        let e = Nic::new(NicKind::Uplink, "")
            .check()
            .unwrap_err()
            .to_string();
        assert_eq!(e, "nic.ifname is required for kind uplink");
        let e = Nic {
            eswitch_mode: Some(EswitchMode::Switchdev),
            ..Nic::new(NicKind::Tap, "t")
        }
        .check()
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "nic.eswitchMode is for vfio NICs only (this NIC is a tap)"
        );
    }
}
