//! SR-IOV VFs for the `"endpoint": "vfio"` CNI option: everything the
//! plugin needs to hand a VF (given by its PCI address, the `deviceID` the
//! SR-IOV device plugin and Multus pass) to a VM and give it back, testable
//! without hardware.
//!
//! - [`sysfs`]: resolve the VF under a sysfs root (its PF, index, driver,
//!   netdevs, the PF's eswitch mode and the VF's representor).
//! - [`vf`]: the VF's settings on the PF ([`VfSettings`]), the rtnetlink
//!   requests that set and read them, and [`mapping`] from a port's fields.
//! - [`rtnl`]: the request/answer transport ([`Rtnl`]) and its real
//!   implementation on a NETLINK_ROUTE socket.
//! - [`state`]: claims and saved settings per VF ([`add`], [`del`],
//!   [`check`]): ADD saves what it changes, DEL puts it back.
//! - [`devinfo`]: the Device Information file Multus reads.
//!
//! # Switchdev detection
//!
//! Upstream kernels report a PF's eswitch mode only over devlink generic
//! netlink (`DEVLINK_CMD_ESWITCH_GET`, what `devlink dev eswitch show`
//! prints); sysfs has no mode file. Two sysfs signals exist, and we read
//! them in this order (see [`sysfs::Sysfs::resolve`]):
//!
//! 1. `class/net/<pf>/compat/devlink/mode` (`legacy` or `switchdev`), which
//!    NVIDIA's MLNX_OFED mlx5 driver adds. Where present it decides.
//! 2. Otherwise the PF is in switchdev mode when it has a `phys_switch_id`
//!    and some netdev in `class/net` with the same `phys_switch_id` is a VF
//!    representor of this PF (`phys_port_name` `pf<N>vf<M>`, or a bare VF
//!    number from kernels before the devlink port names). Representors
//!    exist only in switchdev mode (kernel
//!    Documentation/networking/representors.rst, switchdev.rst).
//!
//! `phys_switch_id` alone is not enough, although the `isSwitchdev` of
//! k8snetworkplumbingwg/sriovnet (the library ovn-kubernetes and Kube-OVN
//! use for representor lookup) relies on it: ice registers its PF devlink
//! port with a switch id (from the PCI DSN) in both modes, so the id is
//! there in legacy mode too (what mlx5 reports in legacy mode has varied
//! between kernel versions). Representors, in contrast, exist only in
//! switchdev mode, for every driver; looking for them needs no devlink
//! socket.
//! The representor match itself is sriovnet's `GetVfRepresentor` fallback
//! (same switch id, `pf<N>vf<M>`), done over `class/net` rather than the
//! PF's device directory, because representors.rst asks drivers not to
//! parent representors to a PCI device.
//!
//! # Legacy and switchdev mode
//!
//! In legacy mode the NIC's own VEB switches the VF; switchd never sees its
//! traffic, so the port's policy is what the PF can set on the VF (MAC,
//! access VLAN and 802.1p priority, spoof check, link state, transmit rate)
//! and what it cannot (a trunk, receive rate, guards, ACLs) is an error. In
//! switchdev mode switchd attaches the VF's representor like a veth and
//! enforces the port there; the VF itself only gets its MAC (and trust off).

pub mod devinfo;
pub mod rtnl;
pub mod state;
pub mod sysfs;
pub mod vf;

#[cfg(test)]
pub(crate) mod testutil;

pub use devinfo::DeviceInfo;
pub use rtnl::{apply_vf, read_vf, Rtnl, RtnlSocket};
pub use state::{add, check, claims, del, Claim, VfState};
pub use sysfs::{EswitchMode, Sysfs, Vf};
pub use vf::{get_vf_request, mapping, parse_vf_settings, set_vf_request, VfLinkState, VfSettings};

use crate::reply::{code, CniError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

/// A PCI address in the kernel's `domain:bus:device.function` form
/// (`0000:18:02.5`), lower case. The domain has 4 to 8 hex digits (VMD
/// domains have 5).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PciAddr(String);

impl PciAddr {
    /// The function number (the digit after the dot).
    pub fn function(&self) -> u32 {
        self.0
            .rsplit('.')
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PciAddr {
    type Err = SriovError;
    fn from_str(s: &str) -> Result<Self, SriovError> {
        if !podswitch_shared::model::is_pci_address(s) {
            return Err(SriovError::BadPciAddress(s.to_string()));
        }
        Ok(PciAddr(s.to_ascii_lowercase()))
    }
}

impl TryFrom<String> for PciAddr {
    type Error = SriovError;
    fn try_from(s: String) -> Result<Self, SriovError> {
        s.parse()
    }
}

impl From<PciAddr> for String {
    fn from(a: PciAddr) -> String {
        a.0
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything that can go wrong with a VF, worded for the CNI error a user
/// reads.
#[derive(Debug, thiserror::Error)]
pub enum SriovError {
    #[error("{0:?} is not a PCI address (expected domain:bus:device.function, e.g. 0000:18:02.5)")]
    BadPciAddress(String),
    #[error("no PCI device {0} on this node ({1} does not exist)")]
    UnknownPciAddress(PciAddr, PathBuf),
    #[error("PCI device {0} is not an SR-IOV virtual function (it has no physfn link){1}")]
    NotAVf(PciAddr, &'static str),
    #[error("physical function {pf} of {vf} has no SR-IOV: {why}")]
    NoSriov {
        pf: PciAddr,
        vf: PciAddr,
        why: String,
    },
    #[error("physical function {pf} of VF {vf} has no network interface (is it bound to its NIC driver?)")]
    PfWithoutNetdev { pf: PciAddr, vf: PciAddr },
    #[error(
        "PF {pf_netdev} is in switchdev mode but VF {vf} (VF {index}) has no representor netdev"
    )]
    NoRepresentor {
        vf: PciAddr,
        pf_netdev: String,
        index: u32,
    },
    #[error("cannot read {path}: {source}")]
    Sysfs { path: PathBuf, source: io::Error },
    #[error("{op} on PF ifindex {ifindex}: {source}")]
    Netlink {
        op: &'static str,
        ifindex: u32,
        source: io::Error,
    },
    #[error("the kernel's answer for PF ifindex {ifindex} lists no VF {vf}")]
    VfNotReported { ifindex: u32, vf: u32 },
    #[error("unexpected netlink answer: {0}")]
    BadAnswer(String),
    #[error("an SR-IOV VF in legacy eswitch mode cannot enforce {0}; put the PF in switchdev mode or drop the setting")]
    Unsupported(String),
    #[error("VF {pci} is already in use by container {container_id} (interface {ifname})")]
    InUse {
        pci: PciAddr,
        container_id: String,
        ifname: String,
    },
    #[error("VF state file {path}: {source}")]
    State { path: PathBuf, source: io::Error },
    #[error("VF state file {path} is not readable state: {msg}")]
    BadState { path: PathBuf, msg: String },
    #[error("VF {pci}: {msg}")]
    Mismatch { pci: PciAddr, msg: String },
    #[error("device-info file {path}: {source}")]
    DeviceInfo { path: PathBuf, source: io::Error },
}

impl From<SriovError> for CniError {
    fn from(e: SriovError) -> CniError {
        let c = match &e {
            // The deviceID names no usable VF: the input is wrong, not the
            // plugin or the node.
            SriovError::BadPciAddress(_)
            | SriovError::UnknownPciAddress(..)
            | SriovError::NotAVf(..)
            | SriovError::NoSriov { .. }
            | SriovError::Unsupported(_) => code::INVALID_CONFIG,
            SriovError::Sysfs { .. } | SriovError::State { .. } | SriovError::DeviceInfo { .. } => {
                code::IO
            }
            _ => code::PLUGIN,
        };
        CniError::new(c, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses() {
        let a: PciAddr = "0000:18:02.5".parse().unwrap();
        assert_eq!(a.as_str(), "0000:18:02.5");
        assert_eq!(a.function(), 5);
        let a: PciAddr = "0000:AF:1F.7".parse().unwrap();
        assert_eq!(a.to_string(), "0000:af:1f.7");
        assert!("10000:e1:00.0".parse::<PciAddr>().is_ok(), "VMD domain");
        // The syntax itself is model::is_pci_address's (tested there).
        for bad in ["", "0000:18:02.8", "../../etc"] {
            let e = bad.parse::<PciAddr>().unwrap_err();
            assert!(matches!(e, SriovError::BadPciAddress(_)), "{bad}");
        }
        let e = "18:02.5".parse::<PciAddr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"18:02.5\" is not a PCI address (expected domain:bus:device.function, e.g. 0000:18:02.5)"
        );
        let j: PciAddr = serde_json::from_str("\"0000:18:00.0\"").unwrap();
        assert_eq!(serde_json::to_string(&j).unwrap(), "\"0000:18:00.0\"");
        assert!(serde_json::from_str::<PciAddr>("\"x\"").is_err());
    }

    #[test]
    fn cni_codes() {
        let e: CniError = SriovError::BadPciAddress("x".into()).into();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let a: PciAddr = "0000:19:00.1".parse().unwrap();
        let e: CniError = SriovError::UnknownPciAddress(a.clone(), "/sys/x".into()).into();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e: CniError = SriovError::NotAVf(a, "").into();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e: CniError = SriovError::InUse {
            pci: "0000:18:02.5".parse().unwrap(),
            container_id: "abc".into(),
            ifname: "net1".into(),
        }
        .into();
        assert_eq!(e.code, code::PLUGIN);
        assert_eq!(
            e.msg,
            "VF 0000:18:02.5 is already in use by container abc (interface net1)"
        );
    }
}
