//! Who holds a VF, and what it had before: one JSON file per VF,
//! `<state dir>/<pci address>.json`, written before the VF is changed and
//! removed once DEL has put the saved settings back.
//!
//! - ADD ([`add`]) claims the VF for a container ID + ifname; a VF claimed
//!   by another is refused, the same one is idempotent. The claim is taken
//!   atomically (the complete file is hard-linked into place, which fails
//!   if it exists), so two ADDs racing for one VF cannot both win.
//! - DEL ([`del`]) restores and removes the file; without a file (never
//!   added, already deleted, ADD failed before claiming) it does nothing.
//!   A file claimed by someone else is left alone.
//! - CHECK ([`check`]) compares the VF with what ADD applied.

use super::rtnl::{apply_vf, errno, read_vf, Rtnl};
use super::sysfs::{Sysfs, Vf};
use super::vf::VfSettings;
use super::{PciAddr, SriovError};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A CNI attachment: who may hold a VF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The state file of one claimed VF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VfState {
    pub pci_address: PciAddr,
    pub claim: Claim,
    pub pf_pci_address: PciAddr,
    pub pf_netdev: String,
    pub vf_index: u32,
    /// The VF's values before ADD, for the fields ADD sets.
    pub saved: VfSettings,
    /// What ADD set.
    pub applied: VfSettings,
}

/// The state file of the VF at `pci`.
pub fn state_path(dir: &Path, pci: &PciAddr) -> PathBuf {
    dir.join(format!("{pci}.json"))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SriovError + '_ {
    move |source| SriovError::State {
        path: path.to_path_buf(),
        source,
    }
}

/// The state of the VF at `pci`, if claimed.
pub fn load(dir: &Path, pci: &PciAddr) -> Result<Option<VfState>, SriovError> {
    let path = state_path(dir, pci);
    match fs::read(&path) {
        Ok(b) => parse(&path, &b).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn parse(path: &Path, b: &[u8]) -> Result<VfState, SriovError> {
    serde_json::from_slice(b).map_err(|e| SriovError::BadState {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Writes `state` to a temporary file in `dir` (synced), for linking or
/// renaming into place.
fn write_temp(dir: &Path, state: &VfState) -> Result<PathBuf, SriovError> {
    let tmp = dir.join(format!(".{}.{}.tmp", state.pci_address, std::process::id()));
    let json = serde_json::to_vec_pretty(state).map_err(|e| SriovError::BadState {
        path: tmp.clone(),
        msg: e.to_string(),
    })?;
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&json)
        .and_then(|_| f.sync_all())
        .map_err(io_err(&tmp))?;
    Ok(tmp)
}

/// Creates the state file; `Ok(false)` if one exists already.
fn create_exclusive(dir: &Path, state: &VfState) -> Result<bool, SriovError> {
    let path = state_path(dir, &state.pci_address);
    let tmp = write_temp(dir, state)?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn replace(dir: &Path, state: &VfState) -> Result<(), SriovError> {
    let path = state_path(dir, &state.pci_address);
    let tmp = write_temp(dir, state)?;
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

fn remove(dir: &Path, pci: &PciAddr) -> Result<(), SriovError> {
    let path = state_path(dir, pci);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
        _ => Ok(()),
    }
}

fn in_use(s: &VfState) -> SriovError {
    SriovError::InUse {
        pci: s.pci_address.clone(),
        container_id: s.claim.container_id.clone(),
        ifname: s.claim.ifname.clone(),
    }
}

/// ADD: claims `vf` for `claim`, saves the VF's current values of the
/// fields `wanted` sets, then applies `wanted`. Idempotent for the same
/// claim (applies `wanted` again, saving the values of fields it did not
/// set before); refused with [`SriovError::InUse`] for another. If
/// applying fails, the saved values are put back and the claim dropped
/// when that works (else the claim stays, so that DEL retries).
pub fn add(
    rtnl: &mut dyn Rtnl,
    dir: &Path,
    vf: &Vf,
    claim: &Claim,
    wanted: &VfSettings,
) -> Result<VfState, SriovError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    if let Some(old) = load(dir, &vf.pci)? {
        if old.claim != *claim {
            return Err(in_use(&old));
        }
    }
    let current = read_vf(rtnl, vf.pf_ifindex, vf.index)?;
    let fresh = VfState {
        pci_address: vf.pci.clone(),
        claim: claim.clone(),
        pf_pci_address: vf.pf_pci.clone(),
        pf_netdev: vf.pf_netdev.clone(),
        vf_index: vf.index,
        saved: current.only_fields_of(wanted),
        applied: wanted.clone(),
    };
    let state = if create_exclusive(dir, &fresh)? {
        fresh
    } else {
        let old = load(dir, &vf.pci)?.ok_or_else(|| SriovError::BadState {
            path: state_path(dir, &vf.pci),
            msg: "vanished while being claimed".into(),
        })?;
        if old.claim != *claim {
            return Err(in_use(&old));
        }
        // Again for the same attachment: what was saved stays saved; a
        // field set only now is saved from the VF as it is.
        let state = VfState {
            saved: VfSettings::fill_missing(&old.saved, &fresh.saved),
            ..fresh
        };
        if state != old {
            replace(dir, &state)?;
        }
        state
    };
    if let Err(e) = apply_vf(rtnl, vf.pf_ifindex, vf.index, wanted) {
        if apply_vf(rtnl, vf.pf_ifindex, vf.index, &state.saved).is_ok() {
            let _ = remove(dir, &vf.pci);
        }
        return Err(e);
    }
    Ok(state)
}

/// Whether a failure to find or reach the VF means it is gone (VFs are
/// destroyed with their settings when sriov_numvfs is lowered, a PF can
/// be unbound): nothing is left to restore.
fn vf_gone(e: &SriovError) -> bool {
    match e {
        SriovError::UnknownPciAddress(..)
        | SriovError::NotAVf(..)
        | SriovError::NoSriov { .. }
        | SriovError::PfWithoutNetdev { .. }
        | SriovError::VfNotReported { .. } => true,
        SriovError::Netlink { source, .. } => errno(source) == Some(libc::ENODEV),
        _ => false,
    }
}

/// DEL: puts back what ADD saved on the VF at `pci` and drops the claim.
/// Does nothing when the VF is not claimed, or claimed by another
/// attachment; drops the claim without restoring when the VF is gone or
/// is no longer the VF that was claimed (same address, other PF or
/// index). A failed restore keeps the claim, so that DEL can be retried.
pub fn del(
    rtnl: &mut dyn Rtnl,
    sysfs: &Sysfs,
    dir: &Path,
    pci: &PciAddr,
    claim: &Claim,
) -> Result<(), SriovError> {
    let Some(state) = load(dir, pci)? else {
        return Ok(());
    };
    if state.claim != *claim {
        return Ok(());
    }
    let restored = sysfs.locate(pci.as_str()).and_then(|loc| {
        if loc.pf_pci != state.pf_pci_address || loc.index != state.vf_index {
            return Ok(());
        }
        apply_vf(rtnl, loc.pf_ifindex, loc.index, &state.saved)
    });
    match restored {
        Err(e) if !vf_gone(&e) => Err(e),
        _ => remove(dir, pci),
    }
}

/// CHECK: the VF is claimed by `claim` and still has what ADD applied.
pub fn check(rtnl: &mut dyn Rtnl, dir: &Path, vf: &Vf, claim: &Claim) -> Result<(), SriovError> {
    let mismatch = |msg: String| SriovError::Mismatch {
        pci: vf.pci.clone(),
        msg,
    };
    let state = load(dir, &vf.pci)?.ok_or_else(|| mismatch("is not claimed".into()))?;
    if state.claim != *claim {
        return Err(in_use(&state));
    }
    let now = read_vf(rtnl, vf.pf_ifindex, vf.index)?;
    let diffs = now.differences(&state.applied);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(mismatch(diffs.join("; ")))
    }
}

/// Every claimed VF in `dir` (for GC: claims whose attachment is gone).
pub fn claims(dir: &Path) -> Result<Vec<VfState>, SriovError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.ends_with(".json") && !n.starts_with('.')) {
            let b = fs::read(&path).map_err(io_err(&path))?;
            out.push(parse(&path, &b)?);
        }
    }
    out.sort_by(|a, b| a.pci_address.cmp(&b.pci_address));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::sysfs::EswitchMode;
    use super::super::testutil::{Fixture, FixtureMode, RecordingRtnl, TempDir, PF_IFINDEX};
    use super::super::vf::{mapping, VfLinkState};
    use super::*;
    use netlink_packet_route::link::{
        LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate, VfInfoSpoofCheck, VfInfoTrust,
        VfInfoVlan, VfLinkState as NlLinkState,
    };
    use podswitch_shared::model::{Nic, NicKind, PortConfig, Qos, VlanId};

    const VF: &str = "0000:18:02.1";

    struct Env {
        fx: Fixture,
        dir: TempDir,
        kernel: RecordingRtnl,
        vf: Vf,
    }

    impl Env {
        /// DEL of VF 1 by attachment `who`.
        fn del_as(&mut self, who: &str) -> Result<(), SriovError> {
            del(
                &mut self.kernel,
                &self.fx.sysfs(),
                self.dir.path(),
                &pci(),
                &claim(who),
            )
        }
    }

    /// A legacy-mode NIC whose VF 1 was configured by someone before us.
    fn env() -> Env {
        let fx = Fixture::new(FixtureMode::Legacy);
        let vf = fx.sysfs().resolve(VF).unwrap();
        let mut kernel = RecordingRtnl::new(PF_IFINDEX, 4);
        kernel.vfs.insert(1, before());
        Env {
            fx,
            dir: TempDir::new("vfstate"),
            kernel,
            vf,
        }
    }

    fn before() -> VfSettings {
        VfSettings {
            mac: Some("02:00:00:00:00:99".parse().unwrap()),
            vlan: Some(10),
            qos: Some(0),
            spoofchk: Some(false),
            trust: Some(true),
            link_state: Some(VfLinkState::Enable),
            min_tx_rate: Some(0),
            max_tx_rate: Some(100),
        }
    }

    fn wanted() -> VfSettings {
        let mut p = PortConfig::on(Nic {
            pci_address: Some(VF.into()),
            eswitch_mode: Some(EswitchMode::Legacy),
            ..Nic::new(NicKind::Vfio, "")
        });
        p.mac = Some("02:42:0a:0a:00:05".parse().unwrap());
        p.vlan = Some(VlanId::new(100).unwrap());
        p.mac_spoof_check = Some(true);
        p.qos = Some(Qos {
            egress_rate: Some(1_000_000_000),
            ..Qos::default()
        });
        mapping(&p, None, EswitchMode::Legacy).unwrap()
    }

    fn claim(c: &str) -> Claim {
        Claim {
            container_id: c.into(),
            ifname: "net1".into(),
        }
    }

    fn pci() -> PciAddr {
        VF.parse().unwrap()
    }

    #[test]
    fn add_then_del_restores_the_old_settings() {
        let mut e = env();
        let st = add(&mut e.kernel, e.dir.path(), &e.vf, &claim("a"), &wanted()).unwrap();
        assert_eq!(st.saved, before());
        assert_eq!(e.kernel.vfs[&1].max_tx_rate, Some(1000));
        assert_eq!(e.kernel.vfs[&1].vlan, Some(100));
        assert_eq!(e.kernel.vfs[&1].trust, Some(false));
        assert_eq!(load(e.dir.path(), &pci()).unwrap(), Some(st.clone()));
        assert_eq!(e.kernel.requests.len(), 2, "GETLINK, SETLINK");
        check(&mut e.kernel, e.dir.path(), &e.vf, &claim("a")).unwrap();

        e.del_as("a").unwrap();
        assert_eq!(e.kernel.vfs[&1], before());
        assert_eq!(load(e.dir.path(), &pci()).unwrap(), None);
        // DEL's request puts back every field ADD had set.
        let setlinks = e.kernel.setlinks();
        assert_eq!(setlinks.len(), 2);
        let mac = [2, 0, 0, 0, 0, 0x99];
        assert_eq!(
            setlinks[1],
            (
                PF_IFINDEX,
                vec![LinkVfInfo(vec![
                    VfInfo::Mac(VfInfoMac::new(1, &mac)),
                    VfInfo::Vlan(VfInfoVlan::new(1, 10, 0)),
                    VfInfo::Rate(VfInfoRate::new(1, 0, 100)),
                    VfInfo::SpoofCheck(VfInfoSpoofCheck::new(1, false)),
                    VfInfo::LinkState(VfInfoLinkState::new(1, NlLinkState::Enable)),
                    VfInfo::Trust(VfInfoTrust::new(1, true)),
                ])]
            )
        );
    }

    #[test]
    fn claims_are_exclusive_and_idempotent() {
        let mut e = env();
        add(&mut e.kernel, e.dir.path(), &e.vf, &claim("a"), &wanted()).unwrap();
        let n = e.kernel.requests.len();
        let err = add(&mut e.kernel, e.dir.path(), &e.vf, &claim("b"), &wanted()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VF 0000:18:02.1 is already in use by container a (interface net1)"
        );
        assert_eq!(e.kernel.requests.len(), n, "the VF was not touched");
        let other_if = Claim {
            ifname: "net2".into(),
            ..claim("a")
        };
        assert!(matches!(
            add(&mut e.kernel, e.dir.path(), &e.vf, &other_if, &wanted()),
            Err(SriovError::InUse { .. })
        ));

        // Same attachment again: fine, and the saved values stay the ones
        // from before the first ADD.
        let again = add(&mut e.kernel, e.dir.path(), &e.vf, &claim("a"), &wanted()).unwrap();
        assert_eq!(again.saved, before());
        assert_eq!(claims(e.dir.path()).unwrap(), vec![again]);

        // DEL from someone else changes nothing.
        let n = e.kernel.requests.len();
        e.del_as("b").unwrap();
        assert_eq!(e.kernel.requests.len(), n);
        assert!(load(e.dir.path(), &pci()).unwrap().is_some());

        e.del_as("a").unwrap();
        assert_eq!(e.kernel.vfs[&1], before());
        // Now b may have it.
        add(&mut e.kernel, e.dir.path(), &e.vf, &claim("b"), &wanted()).unwrap();
    }

    #[test]
    fn del_twice_and_without_add() {
        let mut e = env();
        e.del_as("a").unwrap();
        assert!(e.kernel.requests.is_empty());
        // A state dir that does not exist yet.
        let missing = e.dir.path().join("nope");
        del(&mut e.kernel, &e.fx.sysfs(), &missing, &pci(), &claim("a")).unwrap();

        add(&mut e.kernel, e.dir.path(), &e.vf, &claim("a"), &wanted()).unwrap();
        e.del_as("a").unwrap();
        let n = e.kernel.requests.len();
        e.del_as("a").unwrap();
        assert_eq!(e.kernel.requests.len(), n, "the second DEL does nothing");
        assert_eq!(e.kernel.vfs[&1], before());
    }

    #[test]
    fn a_failed_add_puts_things_back() {
        let mut e = env();
        e.kernel.fail_setlinks = vec![libc::EOPNOTSUPP];
        let err = add(&mut e.kernel, e.dir.path(), &e.vf, &claim("a"), &wanted()).unwrap_err();
        let SriovError::Netlink { source, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(source.raw_os_error(), Some(libc::EOPNOTSUPP));
        assert_eq!(
            e.kernel.setlinks().len(),
            2,
            "the failed one, then the restore"
        );
        assert_eq!(load(e.dir.path(), &pci()).unwrap(), None, "no claim left");
        assert_eq!(e.kernel.vfs[&1], before());

        // When the restore fails too, the claim stays for DEL to finish.
        e.kernel.fail_setlinks = vec![libc::EOPNOTSUPP, libc::EIO];
        add(&mut e.kernel, e.dir.path(), &e.vf, &claim("a"), &wanted()).unwrap_err();
        assert!(load(e.dir.path(), &pci()).unwrap().is_some());
        e.kernel.fail_setlinks = vec![libc::EIO];
        let err = e.del_as("a");
        assert!(err.is_err());
        assert!(
            load(e.dir.path(), &pci()).unwrap().is_some(),
            "kept for a retry"
        );
        e.del_as("a").unwrap();
        assert_eq!(load(e.dir.path(), &pci()).unwrap(), None);
    }

    #[test]
    fn del_of_a_vf_that_is_gone_drops_the_claim() {
        let mut e = env();
        add(&mut e.kernel, e.dir.path(), &e.vf, &claim("a"), &wanted()).unwrap();
        // sriov_numvfs lowered: the VF and its links disappear.
        fs::remove_file(e.fx.root().join("bus/pci/devices").join(VF)).unwrap();
        let n = e.kernel.requests.len();
        e.del_as("a").unwrap();
        assert_eq!(e.kernel.requests.len(), n);
        assert_eq!(load(e.dir.path(), &pci()).unwrap(), None);
    }

    #[test]
    fn check_finds_drift() {
        let mut e = env();
        let err = check(&mut e.kernel, e.dir.path(), &e.vf, &claim("a")).unwrap_err();
        assert_eq!(err.to_string(), "VF 0000:18:02.1: is not claimed");
        add(&mut e.kernel, e.dir.path(), &e.vf, &claim("a"), &wanted()).unwrap();
        e.kernel.vfs.get_mut(&1).unwrap().vlan = Some(5);
        e.kernel.vfs.get_mut(&1).unwrap().spoofchk = Some(false);
        let err = check(&mut e.kernel, e.dir.path(), &e.vf, &claim("a")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VF 0000:18:02.1: vlan is 5, expected 100; spoofchk is false, expected true"
        );
        let err = check(&mut e.kernel, e.dir.path(), &e.vf, &claim("b")).unwrap_err();
        assert!(matches!(err, SriovError::InUse { .. }));
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        let e = env();
        fs::write(e.dir.path().join(format!("{VF}.json")), "{").unwrap();
        let err = load(e.dir.path(), &pci()).unwrap_err();
        assert!(matches!(err, SriovError::BadState { .. }), "{err}");
        assert!(claims(e.dir.path()).is_err());
    }
}
