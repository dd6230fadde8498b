//! The CNI verbs for `"endpoint": "vfio"`: an SR-IOV VF, named by its PCI
//! address (`runtimeConfig.deviceID`, else `deviceID`), handed to a VM.
//!
//! ADD, in order (each step undone, in reverse, if a later one fails):
//! 1. resolve the VF in sysfs ([`Sysfs::resolve`]) and work out, without
//!    touching anything, the port and what the PF must set on the VF
//!    ([`mapping`]); refuse a VF another attachment holds;
//! 2. IPAM ADD (the guest owns the address: it is returned, set nowhere);
//! 3. register the port with switchd: in switchdev mode
//!    `nic: {kind: vfio, ifname: <representor>, pciAddress, eswitchMode:
//!    switchdev}`, which switchd attaches like a veth; in legacy mode
//!    `nic: {kind: vfio, pciAddress, eswitchMode: legacy}`, which switchd
//!    records and never attaches (the NIC's own switch forwards the VF);
//! 4. claim the VF and apply its settings through the PF ([`state::add`]:
//!    the old values are saved first);
//! 5. write the Device Information file Multus reads ([`devinfo`]).
//!
//! DEL removes the port, puts back every VF this attachment holds (found
//! by its claim files, so DEL needs no deviceID), removes the device-info
//! file and releases the address; each step is idempotent, and every step
//! runs even when one fails (the first failure is returned, so the runtime
//! retries). CHECK compares the VF ([`state::check`]) and the port with
//! the configuration.
//!
//! Everything outside the process comes in through [`Io`] (the rtnetlink
//! transport, switchd's port API, the IPAM plugin) and the configuration
//! (`sysfsRoot`, `vfStateDir`, `runtimeConfig.CNIDeviceInfoFile`), so the
//! verbs run in unit tests against a generated sysfs tree and a recording
//! kernel double.

use crate::config::{Args, Env, NetConf};
use crate::reply::{code, CniError, CniOutput, CniResult, Interface};
use crate::sriov::{
    self, devinfo, state, Claim, DeviceInfo, EswitchMode, PciAddr, Rtnl, Sysfs, Vf,
};
use podswitch_shared::model::{MacAddr, Nic, NicKind, PortConfig, VPort};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where VF claims and saved settings live by default (`vfStateDir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/podswitch/vfio";

/// switchd's port API, as the vfio verbs use it.
pub trait Switchd {
    /// `POST /v1/ports`.
    fn create_port(&self, port: &PortConfig) -> CniResult<VPort>;
    /// `DELETE /v1/ports/{id}`; a port that does not exist is `Ok`.
    fn delete_port(&self, id: &str) -> CniResult<()>;
    /// `GET /v1/ports/{id}`.
    fn port(&self, id: &str) -> CniResult<VPort>;
}

/// The delegated IPAM plugin, run with this attachment's environment.
pub trait Ipam {
    /// ADD: its result, if it printed one.
    fn add(&self) -> CniResult<Option<Value>>;
    fn del(&self) -> CniResult<()>;
    fn check(&self) -> CniResult<()>;
}

/// What the vfio verbs do I/O through (besides files under the
/// configured directories).
pub struct Io<'a> {
    /// The PF's rtnetlink (the node's network namespace).
    pub rtnl: &'a mut dyn Rtnl,
    pub switchd: &'a dyn Switchd,
    pub ipam: &'a dyn Ipam,
}

/// The files a vfio attachment uses, from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub sysfs_root: PathBuf,
    pub state_dir: PathBuf,
    /// `runtimeConfig.CNIDeviceInfoFile`, else Multus' name for the
    /// attachment in the spec's directory ([`devinfo::path`]).
    pub device_info_file: PathBuf,
}

impl Paths {
    pub fn of(conf: &NetConf, env: &Env) -> Paths {
        Paths {
            sysfs_root: conf
                .sysfs_root
                .clone()
                .unwrap_or_else(|| PathBuf::from(sriov::sysfs::DEFAULT_ROOT)),
            state_dir: conf
                .vf_state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            device_info_file: conf
                .runtime_config
                .cni_device_info_file
                .clone()
                .unwrap_or_else(|| {
                    devinfo::path(
                        Path::new(devinfo::DEFAULT_DIR),
                        &conf.name,
                        &env.container_id,
                        &env.ifname,
                    )
                }),
        }
    }

    /// A device-info path the runtime passed must be absolute (a relative
    /// one would land wherever the plugin happens to run).
    fn device_info_ok(&self) -> bool {
        self.device_info_file.is_absolute()
    }
}

/// The VF's PCI address: `runtimeConfig.deviceID` (the SR-IOV device
/// plugin's allocation, through Multus), else `deviceID`.
pub fn device_id(conf: &NetConf) -> CniResult<PciAddr> {
    let (id, key) = match (&conf.runtime_config.device_id, &conf.device_id) {
        (Some(id), _) => (id, "runtimeConfig.deviceID"),
        (None, Some(id)) => (id, "deviceID"),
        (None, None) => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "\"endpoint\": \"vfio\" needs the VF's PCI address: runtimeConfig.deviceID \
                 (declare the deviceID capability, as the SR-IOV device plugin and Multus \
                 expect) or deviceID in the configuration",
            ))
        }
    };
    id.parse()
        .map_err(|e: sriov::SriovError| CniError::new(code::INVALID_CONFIG, format!("{key}: {e}")))
}

fn claim(env: &Env) -> Claim {
    Claim {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    }
}

/// The NIC of the VF's port (see the module documentation).
pub fn nic(vf: &Vf) -> Nic {
    Nic {
        pci_address: Some(vf.pci.to_string()),
        eswitch_mode: Some(vf.mode),
        ..Nic::new(NicKind::Vfio, vf.representor.clone().unwrap_or_default())
    }
}

/// The port ADD registers for `vf`.
pub fn port_config(
    conf: &NetConf,
    env: &Env,
    args: &Args,
    port_id: &str,
    vf: &Vf,
    mac: Option<MacAddr>,
) -> PortConfig {
    conf.port(env, args, port_id, nic(vf), mac)
}

/// The ADD result: the representor as the host-side interface (switchdev
/// mode), then the VF in the sandbox with its PCI address; every IPAM
/// address on the VF.
pub fn result(env: &Env, vf: &Vf, mac: Option<MacAddr>, ipam: &CniOutput) -> CniOutput {
    let mut interfaces = Vec::new();
    if let Some(rep) = &vf.representor {
        interfaces.push(Interface {
            name: rep.clone(),
            ..Interface::default()
        });
    }
    interfaces.push(Interface {
        name: env.ifname.clone(),
        mac: mac.map(|m| m.to_string()).unwrap_or_default(),
        mtu: None,
        sandbox: env.netns.clone(),
        pci_id: vf.pci.to_string(),
    });
    CniOutput::for_endpoint(interfaces, ipam)
}

/// What ADD has done so far, undone in reverse on failure.
#[derive(Default)]
struct Rollback {
    ipam: bool,
    port: Option<String>,
    /// The VF this ADD claimed (not one the same attachment held before).
    claimed: Option<PciAddr>,
    device_info: Option<PathBuf>,
}

impl Rollback {
    fn undo(&mut self, io: &mut Io, paths: &Paths, claim: &Claim) {
        if let Some(p) = self.device_info.take() {
            if let Err(e) = devinfo::remove(&p) {
                eprintln!("podswitch: rollback: {e}");
            }
        }
        if let Some(pci) = self.claimed.take() {
            let sysfs = Sysfs::new(&paths.sysfs_root);
            if let Err(e) = state::del(io.rtnl, &sysfs, &paths.state_dir, &pci, claim) {
                eprintln!("podswitch: rollback: restoring VF {pci}: {e} (DEL retries it)");
            }
        }
        if let Some(id) = self.port.take() {
            if let Err(e) = io.switchd.delete_port(&id) {
                eprintln!("podswitch: rollback: removing port {id}: {e}");
            }
        }
        if std::mem::take(&mut self.ipam) {
            if let Err(e) = io.ipam.del() {
                eprintln!("podswitch: rollback: releasing the address failed: {e}");
            }
        }
    }
}

/// Adds context to a failure to configure the VF through its PF.
fn vf_err(vf: &Vf, e: sriov::SriovError) -> CniError {
    let in_use = matches!(e, sriov::SriovError::InUse { .. });
    let e = CniError::from(e);
    if in_use {
        return e;
    }
    CniError::new(
        e.code,
        format!(
            "configuring VF {} (VF {} of PF {}): {}",
            vf.pci, vf.index, vf.pf_netdev, e.msg
        ),
    )
    .with_details(e.details)
}

/// ADD for a vfio endpoint; `port_id` is the switchd port's ID.
pub fn add(conf: &NetConf, env: &Env, args: &Args, port_id: &str, io: &mut Io) -> CniResult<Value> {
    let paths = Paths::of(conf, env);
    if !paths.device_info_ok() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "runtimeConfig.CNIDeviceInfoFile must be an absolute path, not {:?}",
                paths.device_info_file
            ),
        ));
    }
    let pci = device_id(conf)?;
    let vf = Sysfs::new(&paths.sysfs_root).resolve(pci.as_str())?;
    let mac = conf.wanted_mac(args)?;
    let port = port_config(conf, env, args, port_id, &vf, mac);
    let wanted = sriov::mapping(&port, port.priority.and_then(|p| p.forced_pcp()), vf.mode)?;
    if port.mac_spoof_check == Some(true) && mac.is_none() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "macSpoofCheck on a vfio endpoint needs its MAC (runtimeConfig.mac or CNI_ARGS \
             MAC): the VF's MAC is not known before the guest sets one",
        ));
    }
    let claim = claim(env);
    // Another attachment's VF is refused before anything is done; the
    // claim itself (step 4) is atomic, for two ADDs racing.
    let held = state::load(&paths.state_dir, &vf.pci)?;
    if let Some(s) = &held {
        if s.claim != claim {
            return Err(sriov::SriovError::InUse {
                pci: vf.pci.clone(),
                container_id: s.claim.container_id.clone(),
                ifname: s.claim.ifname.clone(),
            }
            .into());
        }
    }
    let mut rb = Rollback::default();
    let r = (|| -> CniResult<Value> {
        let ipam_out = match io.ipam.add()? {
            Some(v) => {
                rb.ipam = true;
                CniOutput::parse(&v)?
            }
            None => CniOutput::default(),
        };
        let mut port = port.clone();
        if port.ip_spoof_check == Some(true) {
            port.allowed_ips = Some(ipam_out.addresses());
        }
        let created = io.switchd.create_port(&port)?;
        rb.port = Some(created.id);
        if held.is_none() {
            // Set before the call: a failed claim may stay (state::add
            // keeps it when it cannot restore), and DEL of it retries.
            rb.claimed = Some(vf.pci.clone());
        }
        state::add(io.rtnl, &paths.state_dir, &vf, &claim, &wanted).map_err(|e| vf_err(&vf, e))?;
        devinfo::write(&paths.device_info_file, &DeviceInfo::for_vf(&vf))?;
        rb.device_info = Some(paths.device_info_file.clone());
        Ok(result(env, &vf, mac, &ipam_out).to_version(&conf.cni_version))
    })();
    if r.is_err() {
        rb.undo(io, &paths, &claim);
    }
    r
}

/// The VFs whose claim files in `dir` name this attachment. Files that
/// cannot be read are skipped (with a warning): one corrupt file must not
/// stop every DEL.
pub fn claimed_by(dir: &Path, claim: &Claim) -> Vec<PciAddr> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pci) = name
            .strip_suffix(".json")
            .filter(|_| !name.starts_with('.'))
            .and_then(|n| n.parse::<PciAddr>().ok())
        else {
            continue;
        };
        match state::load(dir, &pci) {
            Ok(Some(s)) if s.claim == *claim => out.push(pci),
            Ok(_) => {}
            Err(e) => eprintln!("podswitch: skipping {}: {e}", entry.path().display()),
        }
    }
    out.sort();
    out
}

/// DEL for a vfio endpoint. Succeeds when repeated, after a failed ADD,
/// and without a deviceID.
pub fn del(conf: &NetConf, env: &Env, port_id: &str, io: &mut Io) -> CniResult<()> {
    let paths = Paths::of(conf, env);
    let claim = claim(env);
    let mut first_err: Option<CniError> = None;
    let mut note = |r: CniResult<()>| {
        if let Err(e) = r {
            eprintln!("podswitch: DEL: {e}");
            first_err.get_or_insert(e);
        }
    };
    // switchd stops forwarding the VF first; a switchd that is down fails
    // the DEL after the rest is done (the port would come back with it).
    note(io.switchd.delete_port(port_id));
    let mut vfs = claimed_by(&paths.state_dir, &claim);
    if let Ok(pci) = device_id(conf) {
        if !vfs.contains(&pci) {
            vfs.push(pci);
        }
    }
    let sysfs = Sysfs::new(&paths.sysfs_root);
    for pci in vfs {
        note(
            state::del(io.rtnl, &sysfs, &paths.state_dir, &pci, &claim).map_err(|e| {
                let e = CniError::from(e);
                CniError::new(e.code, format!("restoring VF {pci}: {}", e.msg))
            }),
        );
    }
    if paths.device_info_ok() {
        note(devinfo::remove(&paths.device_info_file).map_err(CniError::from));
    }
    note(io.ipam.del());
    first_err.map_or(Ok(()), Err)
}

/// CHECK for a vfio endpoint against `prev` (the ADD's result).
pub fn check(
    conf: &NetConf,
    env: &Env,
    port_id: &str,
    prev: &CniOutput,
    io: &mut Io,
) -> CniResult<()> {
    let fail = |m: String| Err(CniError::new(code::PLUGIN, m));
    let paths = Paths::of(conf, env);
    let Some(iface) = prev
        .interfaces
        .iter()
        .find(|i| i.name == env.ifname && !i.sandbox.is_empty())
    else {
        return fail(format!(
            "prevResult has no interface {} in a sandbox",
            env.ifname
        ));
    };
    let pci = match device_id(conf) {
        Ok(p) => p,
        // Without a deviceID, the VF the ADD reported.
        Err(e) if iface.pci_id.is_empty() => return Err(e),
        Err(_) => iface.pci_id.parse()?,
    };
    if !iface.pci_id.is_empty() && !iface.pci_id.eq_ignore_ascii_case(pci.as_str()) {
        return fail(format!(
            "prevResult names VF {} for {}, the configuration {pci}",
            iface.pci_id, env.ifname
        ));
    }
    let vf = Sysfs::new(&paths.sysfs_root).resolve(pci.as_str())?;
    state::check(io.rtnl, &paths.state_dir, &vf, &claim(env))?;
    let port = io.switchd.port(port_id)?;
    if port.owner.as_ref().and_then(|o| o.container_id.as_deref())
        != Some(env.container_id.as_str())
    {
        return fail(format!("port {port_id} belongs to another container"));
    }
    let want = nic(&vf);
    if port.nic != want {
        return fail(format!(
            "port {port_id} is on NIC {} ({:?} eswitch), but VF {pci} is now {} ({} eswitch)",
            port.nic.location(),
            port.nic.eswitch_mode,
            want.location(),
            vf.mode
        ));
    }
    if vf.mode == EswitchMode::Switchdev && !port.status.as_ref().is_some_and(|s| s.attached) {
        return fail(format!(
            "port {port_id} (representor {}) is not attached to switchd's data path",
            port.nic.ifname
        ));
    }
    if port.vlan != conf.vlan || port.trunk != conf.trunk || port.pvlan != conf.pvlan {
        return fail(format!(
            "port {port_id} has a different VLAN setting than the configuration"
        ));
    }
    if port.qos != conf.effective_qos() {
        return fail(format!(
            "port {port_id} has a different QoS setting than the configuration"
        ));
    }
    io.ipam.check()
}

#[cfg(test)]
mod tests;
