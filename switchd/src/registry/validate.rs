//! Validation of the registry's input: the port fields that belong
//! together (security, QoS, trunk lists) and the `--switches-file` shape.

use super::RegistryError;
use podswitch_shared::model::{AclAction, PortConfig, SwitchConfig, VPort};
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
