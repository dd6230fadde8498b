//! Finding a VF and everything around it in sysfs, under a configurable
//! root (`/sys` on a node, a generated tree in tests).
//!
//! What is read, with the kernel documents that define it:
//! - `bus/pci/devices/<addr>`: the PCI device (Documentation/ABI/testing/
//!   sysfs-bus-pci); its `physfn` link (VFs only) names the PF, the PF's
//!   `virtfn<N>` links name its VFs by index, `sriov_totalvfs` and
//!   `sriov_numvfs` are the PF's SR-IOV capacity and current VF count
//!   (drivers/pci/iov.c creates all four); `driver` links to the bound
//!   driver and `net/` holds the device's netdevs.
//! - `class/net/<netdev>/{ifindex,phys_switch_id,phys_port_name}`
//!   (Documentation/ABI/testing/sysfs-class-net); reading the last two
//!   fails with EOPNOTSUPP where the driver has no eswitch port.
//! - `class/net/<pf>/compat/devlink/mode`: MLNX_OFED's eswitch mode file.
//!
//! The reading is split from the deciding: the `parse_*` and `pick_*`
//! functions are pure.

use super::{PciAddr, SriovError};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where sysfs is mounted on a node.
pub const DEFAULT_ROOT: &str = "/sys";

/// The eswitch mode of a PF (the port model's, so a port records it).
pub use podswitch_shared::model::EswitchMode;

/// A resolved VF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vf {
    pub pci: PciAddr,
    pub pf_pci: PciAddr,
    /// The VF's index on its PF (`virtfn<index>`), as rtnetlink numbers it.
    pub index: u32,
    /// The PF's netdev (the uplink), through which VFs are configured.
    pub pf_netdev: String,
    pub pf_ifindex: u32,
    /// The driver the VF is bound to (`vfio-pci` to hand it to a VM), if any.
    pub driver: Option<String>,
    /// The VF's own netdev, when it is bound to a network driver.
    pub netdev: Option<String>,
    pub total_vfs: u32,
    pub num_vfs: u32,
    pub mode: EswitchMode,
    /// The VF's representor netdev (switchdev mode only).
    pub representor: Option<String>,
}

impl Vf {
    /// Whether the VF is bound to a userspace (VM) driver rather than a
    /// kernel network driver, as sriov-cni's `UserspaceDrivers` list has it.
    pub fn is_userspace_bound(&self) -> bool {
        matches!(
            self.driver.as_deref(),
            Some("vfio-pci" | "uio_pci_generic" | "igb_uio")
        )
    }
}

/// A sysfs tree.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new(DEFAULT_ROOT)
    }
}

/// Reads a small attribute file, trimmed; `None` when it does not exist.
fn read_attr(path: &Path) -> Result<Option<String>, SriovError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SriovError::Sysfs {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads an attribute the driver may refuse (phys_switch_id answers
/// EOPNOTSUPP without an eswitch port): any failure or empty value is `None`.
fn read_optional(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read_u32(path: &Path) -> Result<Option<u32>, SriovError> {
    match read_attr(path)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| SriovError::Sysfs {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, format!("{s:?} is not a number")),
        }),
    }
}

/// The last component of a symlink's target (`../0000:18:00.0` ->
/// `0000:18:00.0`); `None` when the link does not exist.
fn link_name(path: &Path) -> Result<Option<String>, SriovError> {
    match fs::read_link(path) {
        Ok(t) => Ok(t.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SriovError::Sysfs {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A directory's entry names, sorted; empty when it does not exist.
fn entries(dir: &Path) -> Result<Vec<String>, SriovError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SriovError::Sysfs {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A VF representor's `phys_port_name`: `pf<N>vf<M>` (devlink's name for
/// a PCI VF port, net/devlink/port.c) gives `(Some(N), M)`; a bare number
/// (older mlx5 kernels, before "net/mlx5e: Move to use common phys port
/// names for vport representors"; sriovnet accepts it too) gives
/// `(None, M)`.
pub fn parse_vf_port_name(name: &str) -> Option<(Option<u32>, u32)> {
    if let Some(n) = digits(name) {
        return Some((None, n));
    }
    let rest = name.strip_prefix("pf")?;
    let (pf, vf) = rest.split_once("vf")?;
    Some((Some(digits(pf)?), digits(vf)?))
}

/// An uplink's `phys_port_name` `p<N>` (devlink's physical port name).
pub fn parse_uplink_port_name(name: &str) -> Option<u32> {
    digits(name.strip_prefix('p')?)
}

/// Whether a `phys_port_name` names a representor of some function (PF,
/// VF or SF, with or without a controller prefix), not an uplink.
fn is_representor_name(name: &str) -> bool {
    let name = name
        .strip_prefix('c')
        .and_then(|r| r.find('p').map(|i| &r[i..]))
        .unwrap_or(name);
    name.starts_with("pf") || digits(name).is_some()
}

/// The PF's own netdev among those under its PCI device: mlx5 parents its
/// representors to the PF device too, so `net/` may hold `ens1f0` and
/// `ens1f0_0..`. An uplink (`p<N>`) wins; otherwise the first that is not
/// a representor.
pub fn pick_pf_netdev(candidates: &[(String, Option<String>)]) -> Option<String> {
    candidates
        .iter()
        .find(|(_, port)| port.as_deref().and_then(parse_uplink_port_name).is_some())
        .or_else(|| {
            candidates
                .iter()
                .find(|(_, port)| !port.as_deref().is_some_and(is_representor_name))
        })
        .map(|(name, _)| name.clone())
}

/// The VF index whose `virtfn<N>` link points at `vf`.
fn pick_vf_index(links: &[(String, Option<String>)], vf: &PciAddr) -> Option<u32> {
    links.iter().find_map(|(name, target)| {
        let n = digits(name.strip_prefix("virtfn")?)?;
        (target.as_deref() == Some(vf.as_str())).then_some(n)
    })
}

/// Where a VF sits: the part of [`Vf`] that needs no eswitch knowledge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfLocation {
    pub pci: PciAddr,
    pub pf_pci: PciAddr,
    pub index: u32,
    pub pf_netdev: String,
    pub pf_ifindex: u32,
    pub total_vfs: u32,
    pub num_vfs: u32,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pci_dir(&self, a: &PciAddr) -> PathBuf {
        self.root.join("bus/pci/devices").join(a.as_str())
    }

    fn net_dir(&self, netdev: &str) -> PathBuf {
        self.root.join("class/net").join(netdev)
    }

    /// A netdev's ifindex.
    pub fn ifindex(&self, netdev: &str) -> Result<u32, SriovError> {
        let path = self.net_dir(netdev).join("ifindex");
        read_u32(&path)?.ok_or(SriovError::Sysfs {
            path,
            source: io::ErrorKind::NotFound.into(),
        })
    }

    /// Resolves a VF from its PCI address: the device, its PF and index,
    /// the PF's netdev, the VF's driver and netdev, the eswitch mode and
    /// (in switchdev mode) the representor.
    pub fn resolve(&self, pci: &str) -> Result<Vf, SriovError> {
        let loc = self.locate(pci)?;
        let dev = self.pci_dir(&loc.pci);
        let driver = link_name(&dev.join("driver"))?;
        let netdev = entries(&dev.join("net"))?.into_iter().next();
        let (mode, representor) = self.switching(&loc)?;
        Ok(Vf {
            pci: loc.pci,
            pf_pci: loc.pf_pci,
            index: loc.index,
            pf_netdev: loc.pf_netdev,
            pf_ifindex: loc.pf_ifindex,
            driver,
            netdev,
            total_vfs: loc.total_vfs,
            num_vfs: loc.num_vfs,
            mode,
            representor,
        })
    }

    /// The VF's PF, index and the PF's netdev; every "this is not a usable
    /// VF" error comes from here.
    pub fn locate(&self, pci: &str) -> Result<VfLocation, SriovError> {
        let pci: PciAddr = pci.parse()?;
        let dev = self.pci_dir(&pci);
        if fs::metadata(&dev).is_err() {
            return Err(SriovError::UnknownPciAddress(pci, dev));
        }
        let Some(pf_name) = link_name(&dev.join("physfn"))? else {
            let hint = if dev.join("sriov_totalvfs").exists() {
                ": it is a physical function; pass one of its VFs"
            } else {
                ""
            };
            return Err(SriovError::NotAVf(pci, hint));
        };
        let pf_pci: PciAddr = pf_name.parse()?;
        let pf_dir = self.pci_dir(&pf_pci);
        let no_sriov = |why: String| SriovError::NoSriov {
            pf: pf_pci.clone(),
            vf: pci.clone(),
            why,
        };
        let total_vfs = match read_u32(&pf_dir.join("sriov_totalvfs"))? {
            None => return Err(no_sriov("it has no sriov_totalvfs".into())),
            Some(0) => return Err(no_sriov("its sriov_totalvfs is 0".into())),
            Some(n) => n,
        };
        let num_vfs = read_u32(&pf_dir.join("sriov_numvfs"))?.unwrap_or(0);
        let links = entries(&pf_dir)?
            .into_iter()
            .filter(|n| n.starts_with("virtfn"))
            .map(|n| link_name(&pf_dir.join(&n)).map(|t| (n, t)))
            .collect::<Result<Vec<_>, _>>()?;
        let index = pick_vf_index(&links, &pci)
            .ok_or_else(|| no_sriov(format!("{pci} is not among its virtfn links")))?;
        let pf_netdev = self.pf_netdev(&pf_dir).ok_or(SriovError::PfWithoutNetdev {
            pf: pf_pci.clone(),
            vf: pci.clone(),
        })?;
        let pf_ifindex = self.ifindex(&pf_netdev)?;
        Ok(VfLocation {
            pci,
            pf_pci,
            index,
            pf_netdev,
            pf_ifindex,
            total_vfs,
            num_vfs,
        })
    }

    fn pf_netdev(&self, pf_dir: &Path) -> Option<String> {
        let net = pf_dir.join("net");
        let candidates: Vec<(String, Option<String>)> = entries(&net)
            .ok()?
            .into_iter()
            .map(|n| {
                let port = read_optional(&net.join(&n).join("phys_port_name"));
                (n, port)
            })
            .collect();
        pick_pf_netdev(&candidates)
    }

    /// The eswitch mode (see the module documentation of `sriov` for the
    /// rules and why) and, in switchdev mode, the VF's representor.
    fn switching(&self, loc: &VfLocation) -> Result<(EswitchMode, Option<String>), SriovError> {
        let pf = self.net_dir(&loc.pf_netdev);
        let compat = read_optional(&pf.join("compat/devlink/mode"));
        let reps = match read_optional(&pf.join("phys_switch_id")) {
            Some(switch_id) => {
                let pf_num = read_optional(&pf.join("phys_port_name"))
                    .as_deref()
                    .and_then(parse_uplink_port_name)
                    .unwrap_or_else(|| loc.pf_pci.function());
                self.representors(&switch_id, pf_num, &loc.pf_netdev)?
            }
            None => Vec::new(),
        };
        let mode = match compat.as_deref() {
            Some("switchdev") => EswitchMode::Switchdev,
            Some(_) => EswitchMode::Legacy,
            None if reps.is_empty() => EswitchMode::Legacy,
            None => EswitchMode::Switchdev,
        };
        if mode == EswitchMode::Legacy {
            return Ok((mode, None));
        }
        let rep = reps
            .into_iter()
            .find(|(vf, _)| *vf == loc.index)
            .map(|(_, name)| name)
            .ok_or_else(|| SriovError::NoRepresentor {
                vf: loc.pci.clone(),
                pf_netdev: loc.pf_netdev.clone(),
                index: loc.index,
            })?;
        Ok((mode, Some(rep)))
    }

    /// Every VF representor of PF number `pf_num` on the eswitch
    /// `switch_id`, as (VF index, netdev), from `class/net`.
    pub fn representors(
        &self,
        switch_id: &str,
        pf_num: u32,
        pf_netdev: &str,
    ) -> Result<Vec<(u32, String)>, SriovError> {
        let mut reps = Vec::new();
        for name in entries(&self.root.join("class/net"))? {
            if name == pf_netdev {
                continue;
            }
            let dir = self.net_dir(&name);
            if read_optional(&dir.join("phys_switch_id")).as_deref() != Some(switch_id) {
                continue;
            }
            let port = read_optional(&dir.join("phys_port_name"));
            match port.as_deref().and_then(parse_vf_port_name) {
                Some((Some(pf), vf)) if pf == pf_num => reps.push((vf, name)),
                Some((None, vf)) => reps.push((vf, name)),
                _ => {}
            }
        }
        Ok(reps)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Fixture, FixtureMode};
    use super::*;

    #[test]
    fn port_names() {
        assert_eq!(parse_vf_port_name("pf0vf3"), Some((Some(0), 3)));
        assert_eq!(parse_vf_port_name("pf1vf12"), Some((Some(1), 12)));
        assert_eq!(parse_vf_port_name("7"), Some((None, 7)));
        for no in [
            "p0", "pf0", "pf0sf1", "c1pf0vf1", "pfxvf1", "pf0vf", "", "eth0",
        ] {
            assert_eq!(parse_vf_port_name(no), None, "{no}");
        }
        assert_eq!(parse_uplink_port_name("p1"), Some(1));
        assert_eq!(parse_uplink_port_name("pf0vf1"), None);
        assert_eq!(parse_uplink_port_name("p"), None);
    }

    #[test]
    fn pf_netdev_is_the_uplink_not_a_representor() {
        let c = |v: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
            v.iter()
                .map(|(n, p)| (n.to_string(), p.map(str::to_string)))
                .collect()
        };
        let mlx = c(&[
            ("ens1f0_0", Some("pf0vf0")),
            ("ens1f0", Some("p0")),
            ("ens1f0_1", Some("pf0vf1")),
        ]);
        assert_eq!(pick_pf_netdev(&mlx).as_deref(), Some("ens1f0"));
        let plain = c(&[("eth4", None)]);
        assert_eq!(pick_pf_netdev(&plain).as_deref(), Some("eth4"));
        let old = c(&[("eth4_0", Some("0")), ("eth4", None)]);
        assert_eq!(pick_pf_netdev(&old).as_deref(), Some("eth4"));
        let dpu = c(&[("pf0hpf", Some("c1pf0")), ("p0", Some("p0"))]);
        assert_eq!(pick_pf_netdev(&dpu).as_deref(), Some("p0"));
        assert_eq!(pick_pf_netdev(&[]), None);
    }

    #[test]
    fn resolves_a_vfio_vf_in_switchdev_mode() {
        let fx = Fixture::new(FixtureMode::Switchdev);
        let vf = fx.sysfs().resolve("0000:18:02.0").unwrap();
        assert_eq!(vf.pci.as_str(), "0000:18:02.0");
        assert_eq!(vf.pf_pci.as_str(), "0000:18:00.0");
        assert_eq!(vf.index, 0);
        assert_eq!(vf.pf_netdev, "ens1f0");
        assert_eq!(vf.pf_ifindex, 4);
        assert_eq!(vf.driver.as_deref(), Some("vfio-pci"));
        assert!(vf.is_userspace_bound());
        assert_eq!(vf.netdev, None);
        assert_eq!((vf.total_vfs, vf.num_vfs), (8, 4));
        assert_eq!(vf.mode, EswitchMode::Switchdev);
        assert_eq!(vf.representor.as_deref(), Some("ens1f0_0"));
    }

    #[test]
    fn resolves_a_net_bound_vf_and_its_netdev() {
        let fx = Fixture::new(FixtureMode::Switchdev);
        let vf = fx.sysfs().resolve("0000:18:02.1").unwrap();
        assert_eq!(vf.index, 1);
        assert_eq!(vf.driver.as_deref(), Some("mlx5_core"));
        assert!(!vf.is_userspace_bound());
        assert_eq!(vf.netdev.as_deref(), Some("ens1f0v1"));
        // The representor of VF 1 on this switch, not the one with the
        // same port name on another NIC's switch.
        assert_eq!(vf.representor.as_deref(), Some("ens1f0_1"));
        let unbound = fx.sysfs().resolve("0000:18:02.2").unwrap();
        assert_eq!((unbound.index, unbound.driver), (2, None));
        assert_eq!(unbound.representor.as_deref(), Some("ens1f0_2"));
    }

    #[test]
    fn legacy_mode_has_no_representor() {
        // ice-like: the PF keeps its phys_switch_id in legacy mode.
        let fx = Fixture::new(FixtureMode::Legacy);
        let vf = fx.sysfs().resolve("0000:18:02.3").unwrap();
        assert_eq!(vf.index, 3);
        assert_eq!(vf.mode, EswitchMode::Legacy);
        assert_eq!(vf.representor, None);
    }

    #[test]
    fn ofed_compat_mode_file_decides() {
        let fx = Fixture::new(FixtureMode::Switchdev);
        fx.write("class/net/ens1f0/compat/devlink/mode", "legacy\n");
        let vf = fx.sysfs().resolve("0000:18:02.0").unwrap();
        assert_eq!((vf.mode, vf.representor), (EswitchMode::Legacy, None));

        let fx = Fixture::new(FixtureMode::Switchdev);
        fx.write("class/net/ens1f0/compat/devlink/mode", "switchdev\n");
        let vf = fx.sysfs().resolve("0000:18:02.3").unwrap();
        assert_eq!(vf.representor.as_deref(), Some("ens1f0_3"));

        // switchdev per the mode file, but no representor for the VF.
        let fx = Fixture::new(FixtureMode::Legacy);
        fx.write("class/net/ens1f0/compat/devlink/mode", "switchdev\n");
        let e = fx.sysfs().resolve("0000:18:02.3").unwrap_err();
        assert_eq!(
            e.to_string(),
            "PF ens1f0 is in switchdev mode but VF 0000:18:02.3 (VF 3) has no representor netdev"
        );
    }

    #[test]
    fn legacy_numeric_representor_names() {
        let fx = Fixture::new(FixtureMode::Switchdev);
        fx.write("class/net/ens1f0_2/phys_port_name", "2\n");
        let vf = fx.sysfs().resolve("0000:18:02.2").unwrap();
        assert_eq!(vf.representor.as_deref(), Some("ens1f0_2"));
    }

    #[test]
    fn pf_number_from_pci_function_without_uplink_port_name() {
        let fx = Fixture::new(FixtureMode::Switchdev);
        fx.remove("class/net/ens1f0/phys_port_name");
        let vf = fx.sysfs().resolve("0000:18:02.1").unwrap();
        assert_eq!(vf.representor.as_deref(), Some("ens1f0_1"));
    }

    #[test]
    fn bad_input() {
        let fx = Fixture::new(FixtureMode::Switchdev);
        let s = fx.sysfs();
        let e = s.resolve("18:02.0").unwrap_err();
        assert!(matches!(e, SriovError::BadPciAddress(_)), "{e}");

        let e = s.resolve("0000:19:02.0").unwrap_err();
        assert!(matches!(e, SriovError::UnknownPciAddress(..)), "{e}");
        assert!(e
            .to_string()
            .starts_with("no PCI device 0000:19:02.0 on this node"));

        let e = s.resolve("0000:00:1f.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "PCI device 0000:00:1f.0 is not an SR-IOV virtual function (it has no physfn link)"
        );
        let e = s.resolve("0000:18:00.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "PCI device 0000:18:00.0 is not an SR-IOV virtual function (it has no physfn \
             link): it is a physical function; pass one of its VFs"
        );

        // A function claiming a PF without SR-IOV as its parent.
        let e = s.resolve("0000:18:0a.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "physical function 0000:18:00.1 of 0000:18:0a.0 has no SR-IOV: it has no sriov_totalvfs"
        );
        fx.write("bus/pci/devices/0000:18:00.1/sriov_totalvfs", "0\n");
        let e = s.resolve("0000:18:0a.0").unwrap_err();
        assert!(e.to_string().ends_with("its sriov_totalvfs is 0"), "{e}");
        fx.write("bus/pci/devices/0000:18:00.1/sriov_totalvfs", "4\n");
        let e = s.resolve("0000:18:0a.0").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("0000:18:0a.0 is not among its virtfn links"),
            "{e}"
        );

        let e = s.resolve("0000:3b:02.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "physical function 0000:3b:00.0 of VF 0000:3b:02.0 has no network interface \
             (is it bound to its NIC driver?)"
        );
    }
}
