//! A VF's settings as its PF holds them, the rtnetlink messages that set
//! and read them, and the mapping from a podswitch port.
//!
//! The wire format follows include/uapi/linux/if_link.h: an RTM_SETLINK on
//! the PF carries `IFLA_VFINFO_LIST { IFLA_VF_INFO { IFLA_VF_MAC,
//! IFLA_VF_VLAN, IFLA_VF_RATE, IFLA_VF_SPOOFCHK, IFLA_VF_LINK_STATE,
//! IFLA_VF_TRUST } }`, each attribute a struct that starts with the VF
//! index (`struct ifla_vf_mac { __u32 vf; __u8 mac[32]; }`, ...). This is
//! what iproute2's `ip link set PF vf N mac .. vlan .. qos .. max_tx_rate
//! .. min_tx_rate .. spoofchk .. state .. trust ..` sends in one message
//! (ip/iplink.c, iplink_parse_vf), except that iproute2 uses RTM_NEWLINK;
//! RTM_SETLINK reaches the same `do_setlink` in net/core/rtnetlink.c
//! without any risk of creating a link. The kernel applies the attributes
//! of one IFLA_VF_INFO in a fixed order (MAC, VLAN, rate, spoof check, link
//! state, trust; `do_setvfinfo`) and stops at the first the driver
//! refuses, so a failed request may have applied a prefix of them.
//!
//! Reading uses RTM_GETLINK on the PF with `IFLA_EXT_MASK` =
//! `RTEXT_FILTER_VF` (without it the kernel leaves IFLA_VFINFO_LIST out) |
//! `RTEXT_FILTER_SKIP_STATS` (per-VF counters would make the answer for a
//! PF with many VFs needlessly large).

use super::sysfs::EswitchMode;
use super::SriovError;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkMessage, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac,
    VfInfoRate, VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan, VfLinkState as NlLinkState,
};
use netlink_packet_route::RouteNetlinkMessage;
use podswitch_shared::model::{LinkState, MacAddr, PortConfig};
use serde::{Deserialize, Serialize};

/// `IFLA_VF_LINK_STATE`: what link the VF's driver sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VfLinkState {
    /// The VF's link follows the PF's (the physical port).
    Auto,
    /// Always up, even with the PF's cable pulled.
    Enable,
    /// Always down.
    Disable,
}

impl From<VfLinkState> for NlLinkState {
    fn from(s: VfLinkState) -> NlLinkState {
        match s {
            VfLinkState::Auto => NlLinkState::Auto,
            VfLinkState::Enable => NlLinkState::Enable,
            VfLinkState::Disable => NlLinkState::Disable,
        }
    }
}

/// A VF's settings on its PF. `None` means "not set" in a request (the
/// attribute is left out, the VF keeps its value) and "not reported" in an
/// answer.
///
/// - `vlan`/`qos` travel together in IFLA_VF_VLAN (`qos` is the 802.1p
///   priority, 0..7; VLAN 0 means untagged, or priority-tagged with a
///   `qos`); either being set sends both, the other as 0.
/// - `min_tx_rate`/`max_tx_rate` travel together in IFLA_VF_RATE, in
///   Mbit/s, 0 meaning no limit; either being set sends both, the other
///   as 0.
/// - `spoofchk`/`trust`: netlink-packet-route reads a driver's "not
///   reported" (-1) as `false`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VfSettings {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "mac_text")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoofchk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_state: Option<VfLinkState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tx_rate: Option<u32>,
}

/// A VF's MAC as text, zero allowed (an unset VF MAC reads as all zeros,
/// which `MacAddr`'s own deserializer rightly refuses for a port).
mod mac_text {
    use podswitch_shared::model::MacAddr;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => s.collect_str(m),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(de::Error::custom))
            .transpose()
    }
}

impl VfSettings {
    /// This value for each field `fields` sets, `None` for the others:
    /// what to save before applying `fields`, and so what to put back.
    pub fn only_fields_of(&self, fields: &VfSettings) -> VfSettings {
        fn keep<T: Copy>(v: Option<T>, f: Option<impl Sized>) -> Option<T> {
            f.and(v)
        }
        let vlan_attr = fields.vlan.is_some() || fields.qos.is_some();
        let rate_attr = fields.min_tx_rate.is_some() || fields.max_tx_rate.is_some();
        VfSettings {
            mac: keep(self.mac, fields.mac),
            vlan: self.vlan.filter(|_| vlan_attr),
            qos: self.qos.filter(|_| vlan_attr),
            spoofchk: keep(self.spoofchk, fields.spoofchk),
            trust: keep(self.trust, fields.trust),
            link_state: keep(self.link_state, fields.link_state),
            min_tx_rate: self.min_tx_rate.filter(|_| rate_attr),
            max_tx_rate: self.max_tx_rate.filter(|_| rate_attr),
        }
    }

    /// `base`, with the fields it lacks taken from `more`.
    pub fn fill_missing(base: &VfSettings, more: &VfSettings) -> VfSettings {
        VfSettings {
            mac: base.mac.or(more.mac),
            vlan: base.vlan.or(more.vlan),
            qos: base.qos.or(more.qos),
            spoofchk: base.spoofchk.or(more.spoofchk),
            trust: base.trust.or(more.trust),
            link_state: base.link_state.or(more.link_state),
            min_tx_rate: base.min_tx_rate.or(more.min_tx_rate),
            max_tx_rate: base.max_tx_rate.or(more.max_tx_rate),
        }
    }

    /// How `self` (the VF now) differs from `wanted` in the fields
    /// `wanted` sets, one line each (empty: it matches). A field sent as
    /// 0 because its partner was set (VLAN with only a qos, ...) is
    /// compared as 0.
    pub fn differences(&self, wanted: &VfSettings) -> Vec<String> {
        let mut d = Vec::new();
        let mut cmp = |name: &str, have: String, want: Option<String>| {
            if let Some(want) = want {
                if have != want {
                    d.push(format!("{name} is {have}, expected {want}"));
                }
            }
        };
        let show = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
        let vlan_attr = wanted.vlan.is_some() || wanted.qos.is_some();
        let rate_attr = wanted.min_tx_rate.is_some() || wanted.max_tx_rate.is_some();
        let zero_if = |set: bool, v: Option<u32>| if set { Some(v.unwrap_or(0)) } else { None };
        cmp(
            "mac",
            show(self.mac.map(|m| m.to_string())),
            wanted.mac.map(|m| m.to_string()),
        );
        cmp(
            "vlan",
            show(self.vlan.map(|v| v.to_string())),
            zero_if(vlan_attr, wanted.vlan.map(u32::from)).map(|v| v.to_string()),
        );
        cmp(
            "qos",
            show(self.qos.map(|v| v.to_string())),
            zero_if(vlan_attr, wanted.qos.map(u32::from)).map(|v| v.to_string()),
        );
        cmp(
            "spoofchk",
            show(self.spoofchk.map(|v| v.to_string())),
            wanted.spoofchk.map(|v| v.to_string()),
        );
        cmp(
            "trust",
            show(self.trust.map(|v| v.to_string())),
            wanted.trust.map(|v| v.to_string()),
        );
        cmp(
            "link state",
            show(self.link_state.map(|v| format!("{v:?}").to_lowercase())),
            wanted.link_state.map(|v| format!("{v:?}").to_lowercase()),
        );
        cmp(
            "min_tx_rate",
            show(self.min_tx_rate.map(|v| v.to_string())),
            zero_if(rate_attr, wanted.min_tx_rate).map(|v| v.to_string()),
        );
        cmp(
            "max_tx_rate",
            show(self.max_tx_rate.map(|v| v.to_string())),
            zero_if(rate_attr, wanted.max_tx_rate).map(|v| v.to_string()),
        );
        d
    }

    pub fn is_empty(&self) -> bool {
        *self == VfSettings::default()
    }
}

/// The IFLA_VF_* attributes for `s`, in the kernel's order of application.
fn vf_attributes(vf: u32, s: &VfSettings) -> Vec<VfInfo> {
    let mut a = Vec::new();
    if let Some(mac) = s.mac {
        a.push(VfInfo::Mac(VfInfoMac::new(vf, &mac.0)));
    }
    if s.vlan.is_some() || s.qos.is_some() {
        let (vlan, qos) = (s.vlan.unwrap_or(0), s.qos.unwrap_or(0));
        a.push(VfInfo::Vlan(VfInfoVlan::new(vf, vlan.into(), qos.into())));
    }
    if s.min_tx_rate.is_some() || s.max_tx_rate.is_some() {
        let (min, max) = (s.min_tx_rate.unwrap_or(0), s.max_tx_rate.unwrap_or(0));
        a.push(VfInfo::Rate(VfInfoRate::new(vf, min, max)));
    }
    if let Some(on) = s.spoofchk {
        a.push(VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, on)));
    }
    if let Some(state) = s.link_state {
        a.push(VfInfo::LinkState(VfInfoLinkState::new(vf, state.into())));
    }
    if let Some(on) = s.trust {
        a.push(VfInfo::Trust(VfInfoTrust::new(vf, on)));
    }
    a
}

fn request(msg: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut nl = NetlinkMessage::from(msg);
    nl.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    nl.finalize();
    nl
}

/// RTM_SETLINK on the PF `pf_ifindex` setting VF `vf` to `s` (only the
/// fields `s` sets). The transport fills in the sequence number.
pub fn set_vf_request(
    pf_ifindex: u32,
    vf: u32,
    s: &VfSettings,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut link = LinkMessage::default();
    link.header.index = pf_ifindex;
    link.attributes
        .push(LinkAttribute::VfInfoList(vec![LinkVfInfo(vf_attributes(
            vf, s,
        ))]));
    request(RouteNetlinkMessage::SetLink(link))
}

/// RTM_GETLINK for the PF `pf_ifindex` with its VF list.
pub fn get_vf_request(pf_ifindex: u32) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut link = LinkMessage::default();
    link.header.index = pf_ifindex;
    link.attributes.push(LinkAttribute::ExtMask(vec![
        LinkExtentMask::Vf,
        LinkExtentMask::SkipStats,
    ]));
    request(RouteNetlinkMessage::GetLink(link))
}

pub(super) fn vf_id(info: &VfInfo) -> Option<u32> {
    Some(match info {
        VfInfo::Mac(v) => v.vf_id,
        VfInfo::Vlan(v) => v.vf_id,
        VfInfo::Rate(v) => v.vf_id,
        VfInfo::TxRate(v) => v.vf_id,
        VfInfo::SpoofCheck(v) => v.vf_id,
        VfInfo::LinkState(v) => v.vf_id,
        VfInfo::Trust(v) => v.vf_id,
        _ => return None,
    })
}

/// One IFLA_VF_INFO as settings.
pub(super) fn settings_of(infos: &[VfInfo]) -> Result<VfSettings, SriovError> {
    let mut s = VfSettings::default();
    let mut legacy_rate = None;
    for info in infos {
        match info {
            VfInfo::Mac(m) => {
                let mut b = [0u8; 6];
                b.copy_from_slice(&m.mac[..6]);
                s.mac = Some(MacAddr(b));
            }
            VfInfo::Vlan(v) => {
                let bad = || SriovError::BadAnswer(format!("VF VLAN {} qos {}", v.vlan_id, v.qos));
                s.vlan = Some(u16::try_from(v.vlan_id).map_err(|_| bad())?);
                s.qos = Some(u8::try_from(v.qos).map_err(|_| bad())?);
            }
            VfInfo::Rate(r) => {
                s.min_tx_rate = Some(r.min_tx_rate);
                s.max_tx_rate = Some(r.max_tx_rate);
            }
            VfInfo::TxRate(r) => legacy_rate = Some(r.rate),
            VfInfo::SpoofCheck(c) => s.spoofchk = Some(c.enabled),
            VfInfo::Trust(t) => s.trust = Some(t.enabled),
            VfInfo::LinkState(l) => {
                s.link_state = Some(match l.state {
                    NlLinkState::Auto => VfLinkState::Auto,
                    NlLinkState::Enable => VfLinkState::Enable,
                    NlLinkState::Disable => VfLinkState::Disable,
                    other => return Err(SriovError::BadAnswer(format!("VF link state {other:?}"))),
                })
            }
            _ => {}
        }
    }
    if s.max_tx_rate.is_none() {
        s.max_tx_rate = legacy_rate;
    }
    Ok(s)
}

/// VF `vf`'s settings from the answer to [`get_vf_request`].
pub fn parse_vf_settings(
    answers: &[NetlinkMessage<RouteNetlinkMessage>],
    pf_ifindex: u32,
    vf: u32,
) -> Result<VfSettings, SriovError> {
    let link = answers
        .iter()
        .find_map(|m| match &m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l))
                if l.header.index == pf_ifindex =>
            {
                Some(l)
            }
            _ => None,
        })
        .ok_or_else(|| SriovError::BadAnswer(format!("no RTM_NEWLINK for ifindex {pf_ifindex}")))?;
    let entry = link
        .attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::VfInfoList(l) => Some(l),
            _ => None,
        })
        .flatten()
        .find(|LinkVfInfo(infos)| infos.iter().find_map(vf_id) == Some(vf))
        .ok_or(SriovError::VfNotReported {
            ifindex: pf_ifindex,
            vf,
        })?;
    settings_of(&entry.0)
}

/// Bits per second to the VF rate limiter's Mbit/s, rounded up (so a
/// limit never becomes "no limit"), saturating.
pub fn mbit_ceil(bits_per_second: u64) -> u32 {
    u32::try_from(bits_per_second.div_ceil(1_000_000)).unwrap_or(u32::MAX)
}

/// What the PF should set on the VF for a port with these fields; `pcp`
/// is the port's 802.1p priority (0..7) where it sets one.
///
/// Legacy mode (the NIC switches the VF):
/// - `mac` -> MAC; access `vlan` -> VLAN (none: 0, untagged) with `pcp`
///   as its qos (0 if none);
/// - `macSpoofCheck` -> spoofchk when given (absent: the NIC's default
///   stays, which is on for most drivers);
/// - trust always off (no promiscuous mode or MAC changes from the VM);
/// - `linkState` up -> `auto`, down -> `disable`. `auto` rather than
///   `enable` because a port that is up should behave like a cable
///   plugged into the physical port: the VM sees the uplink's carrier
///   and a guest bond can fail over, where `enable` would show a link
///   that goes nowhere;
/// - `qos.egressRate` (bit/s the VM sends) -> max_tx_rate in Mbit/s
///   rounded up (absent: 0, no limit); min_tx_rate 0, because the model
///   has only a relative minimum-bandwidth weight, no absolute rate;
///   `qos.egressBurst` has no VF equivalent and is not enforced;
/// - a trunk, ingress QoS, the guards, the storm limit and ACLs cannot be
///   enforced: error.
///
/// Switchdev mode: switchd enforces the port on the representor, so the
/// VF only gets the MAC (when given) and trust off.
pub fn mapping(
    port: &PortConfig,
    pcp: Option<u8>,
    mode: EswitchMode,
) -> Result<VfSettings, SriovError> {
    if let Some(p) = pcp.filter(|p| *p > 7) {
        return Err(SriovError::Unsupported(format!(
            "802.1p priority {p} (it is 0..7)"
        )));
    }
    if mode == EswitchMode::Switchdev {
        return Ok(VfSettings {
            mac: port.mac,
            trust: Some(false),
            ..VfSettings::default()
        });
    }
    let unsupported = port.unenforceable_on_legacy_vf();
    if !unsupported.is_empty() {
        return Err(SriovError::Unsupported(unsupported.join(", ")));
    }
    let link_state = match port.link_state.unwrap_or_default() {
        LinkState::Up => VfLinkState::Auto,
        LinkState::Down => VfLinkState::Disable,
    };
    let egress = port.qos.as_ref().and_then(|q| q.egress_rate);
    Ok(VfSettings {
        mac: port.mac,
        vlan: Some(port.vlan.map_or(0, |v| v.get())),
        qos: Some(pcp.unwrap_or(0)),
        spoofchk: port.mac_spoof_check,
        trust: Some(false),
        link_state: Some(link_state),
        min_tx_rate: Some(0),
        max_tx_rate: Some(egress.map_or(0, mbit_ceil)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_ACK;
    use netlink_packet_route::link::VfInfoTxRate;
    use podswitch_shared::model::{AclAction, Nic, NicKind, Qos, TrunkRange, VlanId};

    fn decode(msg: &NetlinkMessage<RouteNetlinkMessage>) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        NetlinkMessage::deserialize(&buf).unwrap()
    }

    fn port() -> PortConfig {
        PortConfig::on(Nic {
            pci_address: Some("0000:18:02.5".into()),
            eswitch_mode: Some(EswitchMode::Legacy),
            ..Nic::new(NicKind::Vfio, "")
        })
    }

    #[test]
    fn get_request_asks_for_vfs_without_stats() {
        let m = decode(&get_vf_request(4));
        assert_eq!(m.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(l)) = m.payload else {
            panic!("not a GETLINK: {m:?}");
        };
        assert_eq!(l.header.index, 4);
        assert_eq!(
            l.attributes,
            vec![LinkAttribute::ExtMask(vec![
                LinkExtentMask::Vf,
                LinkExtentMask::SkipStats
            ])]
        );
    }

    #[test]
    fn parses_the_legacy_tx_rate() {
        let infos = vec![
            VfInfo::Mac(VfInfoMac::new(1, &[0; 6])),
            VfInfo::TxRate(VfInfoTxRate::new(1, 300)),
        ];
        let s = settings_of(&infos).unwrap();
        assert_eq!((s.max_tx_rate, s.min_tx_rate), (Some(300), None));
        assert_eq!(s.mac, Some(MacAddr([0; 6])));
    }

    #[test]
    fn rates_round_up_to_mbit() {
        assert_eq!(mbit_ceil(0), 0);
        assert_eq!(mbit_ceil(1), 1);
        assert_eq!(mbit_ceil(1_000_000), 1);
        assert_eq!(mbit_ceil(1_000_001), 2);
        assert_eq!(mbit_ceil(400_000_000_000), 400_000);
        assert_eq!(mbit_ceil(u64::MAX), u32::MAX);
    }

    #[test]
    fn maps_a_legacy_access_port() {
        let mut p = port();
        p.mac = Some("02:42:0a:0a:00:05".parse().unwrap());
        p.vlan = Some(VlanId::new(100).unwrap());
        p.mac_spoof_check = Some(true);
        p.link_state = Some(LinkState::Up);
        p.qos = Some(Qos {
            egress_rate: Some(50_500_000),
            egress_burst: Some(400_000),
            min_bandwidth_weight: Some(30),
            ..Qos::default()
        });
        let s = mapping(&p, Some(5), EswitchMode::Legacy).unwrap();
        assert_eq!(
            s,
            VfSettings {
                mac: Some("02:42:0a:0a:00:05".parse().unwrap()),
                vlan: Some(100),
                qos: Some(5),
                spoofchk: Some(true),
                trust: Some(false),
                link_state: Some(VfLinkState::Auto),
                min_tx_rate: Some(0),
                max_tx_rate: Some(51),
            }
        );
        p.link_state = Some(LinkState::Down);
        p.qos = None;
        p.vlan = None;
        p.mac_spoof_check = None;
        let s = mapping(&p, None, EswitchMode::Legacy).unwrap();
        assert_eq!(s.link_state, Some(VfLinkState::Disable));
        assert_eq!((s.vlan, s.qos, s.max_tx_rate), (Some(0), Some(0), Some(0)));
        assert_eq!(s.spoofchk, None);
    }

    #[test]
    fn legacy_mode_refuses_what_it_cannot_enforce() {
        let mut p = port();
        p.trunk = Some(vec![TrunkRange::Single(VlanId::new(200).unwrap())]);
        let e = mapping(&p, None, EswitchMode::Legacy).unwrap_err();
        assert_eq!(
            e.to_string(),
            "an SR-IOV VF in legacy eswitch mode cannot enforce a trunk; put the PF in \
             switchdev mode or drop the setting"
        );
        p.qos = Some(Qos {
            ingress_rate: Some(1_000_000),
            ..Qos::default()
        });
        p.acl_default = Some(AclAction::Deny);
        let e = mapping(&p, None, EswitchMode::Legacy).unwrap_err();
        assert!(
            e.to_string()
                .contains("a trunk, qos.ingressRate, aclDefault deny;"),
            "{e}"
        );
        // The same port is fine in switchdev mode: switchd enforces it.
        let s = mapping(&p, None, EswitchMode::Switchdev).unwrap();
        assert_eq!(
            s,
            VfSettings {
                trust: Some(false),
                ..VfSettings::default()
            }
        );
        let e = mapping(&port(), Some(8), EswitchMode::Legacy).unwrap_err();
        assert!(e.to_string().contains("802.1p priority 8"), "{e}");
    }

    #[test]
    fn saved_fields_follow_the_applied_ones() {
        let now = VfSettings {
            mac: Some(MacAddr([0; 6])),
            vlan: Some(7),
            qos: Some(1),
            spoofchk: Some(true),
            trust: Some(true),
            link_state: Some(VfLinkState::Enable),
            min_tx_rate: Some(10),
            max_tx_rate: Some(20),
        };
        let applied = VfSettings {
            mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            qos: Some(3),
            trust: Some(false),
            max_tx_rate: Some(5),
            ..VfSettings::default()
        };
        let saved = now.only_fields_of(&applied);
        assert_eq!(
            saved,
            VfSettings {
                mac: Some(MacAddr([0; 6])),
                vlan: Some(7),
                qos: Some(1),
                trust: Some(true),
                min_tx_rate: Some(10),
                max_tx_rate: Some(20),
                ..VfSettings::default()
            }
        );
        assert_eq!(now.differences(&now), Vec::<String>::new());
        assert_eq!(
            now.differences(&applied),
            vec![
                "mac is 00:00:00:00:00:00, expected 02:00:00:00:00:01",
                "vlan is 7, expected 0",
                "qos is 1, expected 3",
                "trust is true, expected false",
                "min_tx_rate is 10, expected 0",
                "max_tx_rate is 20, expected 5",
            ]
        );
        let j = serde_json::to_string(&saved).unwrap();
        assert_eq!(
            j,
            r#"{"mac":"00:00:00:00:00:00","vlan":7,"qos":1,"trust":true,"minTxRate":10,"maxTxRate":20}"#
        );
        assert_eq!(serde_json::from_str::<VfSettings>(&j).unwrap(), saved);
        assert_eq!(
            serde_json::from_str::<VfSettings>("{}").unwrap(),
            VfSettings::default()
        );
        assert!(serde_json::from_str::<VfSettings>(r#"{"vlans":1}"#).is_err());
    }
}

/// The requests against the kernel's wire format, through the recording
/// transport (encode, decode as the kernel would, answer).
#[cfg(test)]
mod wire_tests {
    use super::super::rtnl::read_vf;
    use super::super::testutil::{roundtrip, RecordingRtnl};
    use super::*;

    /// A typical legacy port: every IFLA_VF_* attribute and value, the
    /// PF ifindex, the message type and flags.
    #[test]
    fn setlink_for_a_typical_port() {
        let mut p = PortConfig::on(podswitch_shared::model::Nic {
            pci_address: Some("0000:18:02.5".into()),
            eswitch_mode: Some(EswitchMode::Legacy),
            ..podswitch_shared::model::Nic::new(podswitch_shared::model::NicKind::Vfio, "")
        });
        p.mac = Some("02:42:0a:0a:00:05".parse().unwrap());
        p.vlan = Some(podswitch_shared::model::VlanId::new(100).unwrap());
        p.mac_spoof_check = Some(true);
        p.qos = Some(podswitch_shared::model::Qos {
            egress_rate: Some(250_000_000),
            ..Default::default()
        });
        let s = mapping(&p, Some(3), EswitchMode::Legacy).unwrap();
        let msg = set_vf_request(7, 5, &s);
        let mut bytes = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut bytes);

        // Decoded as the kernel sees it.
        let m = roundtrip(&msg);
        assert_eq!(m.header.message_type, 19, "RTM_SETLINK");
        assert_eq!(m.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(m.header.length as usize, bytes.len());
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(l)) = m.payload else {
            panic!("not a SETLINK");
        };
        assert_eq!(l.header.index, 7);
        assert_eq!(u8::from(l.header.interface_family), 0, "AF_UNSPEC");
        let mac = [0x02, 0x42, 0x0a, 0x0a, 0x00, 0x05];
        let expected = vec![LinkVfInfo(vec![
            VfInfo::Mac(VfInfoMac::new(5, &mac)),
            VfInfo::Vlan(VfInfoVlan::new(5, 100, 3)),
            VfInfo::Rate(VfInfoRate::new(5, 0, 250)),
            VfInfo::SpoofCheck(VfInfoSpoofCheck::new(5, true)),
            VfInfo::LinkState(VfInfoLinkState::new(5, NlLinkState::Auto)),
            VfInfo::Trust(VfInfoTrust::new(5, false)),
        ])];
        assert_eq!(
            l.attributes,
            vec![LinkAttribute::VfInfoList(expected.clone())]
        );
        // Through the transport, the kernel double applies exactly that.
        let mut k = RecordingRtnl::new(7, 6);
        super::super::rtnl::apply_vf(&mut k, 7, 5, &s).unwrap();
        assert_eq!(k.setlinks(), vec![(7, expected)]);
        assert_eq!(read_vf(&mut k, 7, 5).unwrap(), s);

        // And byte by byte against include/uapi/linux/if_link.h, not
        // trusting the library: ifinfomsg (16 bytes) after the header,
        // IFLA_VFINFO_LIST (22) > IFLA_VF_INFO (1) > the structs.
        let u16_at = |o: usize| u16::from_ne_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
        assert_eq!(u32_at(16 + 4), 7, "ifi_index");
        let list = 32;
        assert_eq!(u16_at(list + 2) & 0x3fff, 22);
        assert_eq!(u16_at(list) as usize, bytes.len() - list);
        let info = list + 4;
        assert_eq!(u16_at(info + 2) & 0x3fff, 1);
        let mut attrs = Vec::new();
        let mut o = info + 4;
        while o < bytes.len() {
            let (len, ty) = (u16_at(o) as usize, u16_at(o + 2));
            attrs.push((ty, len, bytes[o + 4..o + len].to_vec()));
            o += (len + 3) & !3;
        }
        let words = |v: &[u32]| v.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
        let mut mac_struct = words(&[5]);
        mac_struct.extend_from_slice(&mac);
        mac_struct.resize(4 + 32, 0);
        assert_eq!(
            attrs,
            vec![
                (1, 4 + 36, mac_struct),          // IFLA_VF_MAC: ifla_vf_mac
                (2, 4 + 12, words(&[5, 100, 3])), // IFLA_VF_VLAN: ifla_vf_vlan
                (6, 4 + 12, words(&[5, 0, 250])), // IFLA_VF_RATE: ifla_vf_rate
                (4, 4 + 8, words(&[5, 1])),       // IFLA_VF_SPOOFCHK
                (5, 4 + 8, words(&[5, 0])),       // IFLA_VF_LINK_STATE: auto
                (9, 4 + 8, words(&[5, 0])),       // IFLA_VF_TRUST
            ]
        );
    }

    /// The kernel answers an IFLA_VF_INFO without attributes with EINVAL
    /// (`do_setvfinfo` starts from -EINVAL): nothing to set, nothing sent.
    #[test]
    fn empty_settings_send_nothing() {
        let mut k = RecordingRtnl::new(4, 1);
        super::super::rtnl::apply_vf(&mut k, 4, 0, &VfSettings::default()).unwrap();
        assert!(k.requests.is_empty());
    }

    #[test]
    fn getlink_answer_parses_into_one_vfs_settings() {
        let mut k = RecordingRtnl::new(4, 4);
        let v2 = VfSettings {
            mac: Some("02:00:00:00:00:02".parse().unwrap()),
            vlan: Some(300),
            qos: Some(6),
            spoofchk: Some(false),
            trust: Some(true),
            link_state: Some(VfLinkState::Disable),
            min_tx_rate: Some(100),
            max_tx_rate: Some(2000),
        };
        k.vfs.insert(2, v2.clone());
        assert_eq!(read_vf(&mut k, 4, 2).unwrap(), v2);
        let fresh = read_vf(&mut k, 4, 0).unwrap();
        assert_eq!(fresh.mac, Some(MacAddr([0; 6])));
        assert_eq!(fresh.spoofchk, Some(true));
        let e = read_vf(&mut k, 4, 9).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the kernel's answer for PF ifindex 4 lists no VF 9"
        );
        let e = read_vf(&mut k, 5, 0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("reading the VF settings (RTM_GETLINK) on PF ifindex 5: "),
            "{e}"
        );
        assert!(matches!(
            parse_vf_settings(&[], 4, 0),
            Err(SriovError::BadAnswer(_))
        ));
    }
}
