//! Validation of the registry's input: the port fields that belong
//! together (security, QoS, trunk lists, private VLANs), the rules a port
//! must keep with the other ports of its switch (a secondary VLAN has one
//! primary and one type) and the `--switches-file` shape.

use super::RegistryError;
use podswitch_shared::model::{
    AclAction, NicKind, PortConfig, PvlanMode, SwitchConfig, VPort, VlanMode,
};
use serde::Deserialize;

/// Switches and ports declared in `--switches-file` (e.g. by the Helm
/// chart): created at start when missing, left alone when present.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    #[serde(default)]
    pub switches: Vec<SwitchConfig>,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

/// Checks the security and QoS fields of a port.
pub fn check_policy(p: &VPort) -> Result<(), RegistryError> {
    if p.mac_spoof_check && p.mac.is_none() {
        return Err(RegistryError::Invalid(
            "macSpoofCheck needs the port's mac".into(),
        ));
    }
    if let Some(q) = &p.qos {
        q.validate().map_err(RegistryError::Invalid)?;
    }
    if let Some(pr) = &p.priority {
        pr.validate().map_err(RegistryError::Invalid)?;
    }
    if p.storm_limit == Some(0) {
        return Err(RegistryError::Invalid(
            "stormLimit must be at least 1 frame/s (omit it for no limit)".into(),
        ));
    }
    if p.acls.len() > podswitch_shared::model::MAX_ACL_RULES {
        return Err(RegistryError::Invalid(format!(
            "{} ACL rules; a port takes at most {}",
            p.acls.len(),
            podswitch_shared::model::MAX_ACL_RULES
        )));
    }
    if p.acl_default == AclAction::Meter {
        return Err(RegistryError::Invalid("aclDefault is allow or deny".into()));
    }
    Ok(())
}

/// Checks a port whose NIC is an SR-IOV VF in legacy eswitch mode: it
/// may only have what the PF can enforce on the VF (the NIC's own switch
/// forwards its frames; switchd never sees them).
pub fn check_legacy_vf(p: &VPort) -> Result<(), RegistryError> {
    let bad = p.to_config().unenforceable_on_legacy_vf();
    if bad.is_empty() {
        return Ok(());
    }
    Err(RegistryError::Invalid(format!(
        "a vfio port in legacy eswitch mode cannot have {}: the NIC's own switch forwards \
         the VF's frames and only the PF's VF settings apply (put the PF in switchdev mode, \
         or drop the setting)",
        bad.join(", ")
    )))
}

pub fn check_trunk(
    trunk: Option<&[podswitch_shared::model::TrunkRange]>,
) -> Result<(), RegistryError> {
    if trunk.is_some_and(|t| t.is_empty()) {
        return Err(RegistryError::Invalid(
            "trunk lists no VLAN, so the port would carry nothing tagged; use null (or omit it) for an access port"
                .into(),
        ));
    }
    Ok(())
}

/// Checks an overlay port's VLANs against its VLAN → VNI map: every VLAN
/// gets a VNI of its own, and the map names only VLANs the port carries.
pub fn check_overlay(p: &VPort) -> Result<(), RegistryError> {
    match &p.nic.vxlan {
        Some(v) => v
            .vlan_vnis(&p.mode())
            .map(|_| ())
            .map_err(RegistryError::Invalid),
        None => Ok(()),
    }
}

/// Checks a private VLAN port's own fields.
pub fn check_pvlan(p: &VPort) -> Result<(), RegistryError> {
    let Some(pv) = &p.pvlan else {
        return Ok(());
    };
    if p.vlan.is_some() || p.trunk.is_some() {
        return Err(RegistryError::Invalid(
            "pvlan excludes vlan and trunk: a private VLAN port is untagged on its own VLANs \
             (clear them in the same request, e.g. \"vlan\": null)"
                .into(),
        ));
    }
    if p.nic.kind == NicKind::Uplink {
        return Err(RegistryError::Invalid(
            "an uplink carries private VLANs as a trunk (list the primary and the secondary \
             VLANs in its trunk); pvlan is for the ports of pods and VMs"
                .into(),
        ));
    }
    pv.validate().map_err(RegistryError::Invalid)
}

/// What a port makes of one VLAN, for the switch-wide rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum VlanUse {
    /// The primary VLAN of its private VLAN.
    Primary,
    /// A secondary VLAN of `primary`; `kind` None: named by a
    /// promiscuous port, which does not say whether isolated or community.
    Secondary {
        primary: u16,
        kind: Option<PvlanMode>,
    },
    /// Untagged frames of an ordinary port (access VLAN, trunk's native).
    Plain,
}

fn vlan_uses(p: &VPort) -> Vec<(u16, VlanUse)> {
    match p.mode() {
        VlanMode::Private(pv) => {
            let primary = pv.primary_id.get();
            let kind = (pv.mode != PvlanMode::Promiscuous).then_some(pv.mode);
            std::iter::once((primary, VlanUse::Primary))
                .chain(
                    pv.secondaries()
                        .into_iter()
                        .map(|s| (s.get(), VlanUse::Secondary { primary, kind })),
                )
                .collect()
        }
        m => m
            .untagged_vlan()
            .map(|v| (v.get(), VlanUse::Plain))
            .into_iter()
            .collect(),
    }
}

fn describe(u: VlanUse) -> String {
    match u {
        VlanUse::Primary => "a primary VLAN".into(),
        VlanUse::Secondary {
            primary,
            kind: Some(PvlanMode::Isolated),
        } => format!("an isolated secondary VLAN of primary {primary}"),
        VlanUse::Secondary {
            primary,
            kind: Some(_),
        } => format!("a community secondary VLAN of primary {primary}"),
        VlanUse::Secondary {
            primary,
            kind: None,
        } => format!("a secondary VLAN of primary {primary}"),
        VlanUse::Plain => "an ordinary port's access (or native) VLAN".into(),
    }
}

/// Checks that port `p` keeps the private-VLAN rules with `others` (the
/// other ports of its switch): each secondary VLAN belongs to one primary
/// and is of one type (isolated or community); no VLAN is both a primary
/// and a secondary; and no ordinary port sends untagged into a private
/// VLAN (it would bypass the rules; trunks such as the uplink carry them
/// tagged, which RFC 5517 asks for).
pub fn check_pvlan_fit<'a>(
    p: &VPort,
    others: impl IntoIterator<Item = &'a VPort>,
) -> Result<(), RegistryError> {
    let mine = vlan_uses(p);
    for o in others {
        for (v, theirs) in vlan_uses(o) {
            for &(w, ours) in &mine {
                if v != w {
                    continue;
                }
                let clash = match (ours, theirs) {
                    (VlanUse::Plain, VlanUse::Plain) | (VlanUse::Primary, VlanUse::Primary) => {
                        false
                    }
                    (
                        VlanUse::Secondary {
                            primary: a,
                            kind: ka,
                        },
                        VlanUse::Secondary {
                            primary: b,
                            kind: kb,
                        },
                    ) => a != b || matches!((ka, kb), (Some(x), Some(y)) if x != y),
                    _ => true,
                };
                if clash {
                    return Err(RegistryError::Invalid(format!(
                        "VLAN {v} would be {} here, but it is {} on switch {:?} (port {}); \
                         a secondary VLAN belongs to one primary and one type, and an ordinary \
                         port cannot share a private VLAN",
                        describe(ours),
                        describe(theirs),
                        p.switch,
                        o.id
                    )));
                }
            }
        }
    }
    Ok(())
}
