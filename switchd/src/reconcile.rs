//! The reconciler: makes the netdevs and the data path what the registry
//! says. It alone touches netdevs (existence, MTU, IPv6, admin state) and
//! asks the data path to attach, detach and retry. The flow runs one way:
//! API → registry (validate, record, publish) → reconciler (NIC, attach) →
//! registry (commit) → data path (snapshot).
//!
//! The registry's lock is held only to validate and record and to commit;
//! while the setup thread attaches a NIC (which waits for the kernel),
//! every other request is served.

use crate::datapath::{netdev, Dataplane};
use crate::overlay;
use crate::registry::{Added, Begun, Declared, Registry, RegistryError};
use podswitch_shared::model::{
    LinkState, Nic, NicKind, PortConfig, PortUpdate, VPort, VlanMode, VxlanNic, MAX_MTU,
};
use podswitch_shared::netns::NetNs;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Locks the registry, whatever a panicking holder left.
pub fn lock(s: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn nic_error(nic: &Nic) -> impl Fn(netdev::NetdevError) -> RegistryError + '_ {
    move |e| match e {
        netdev::NetdevError::NotFound { ifname } => RegistryError::NicMissing(match &nic.netns {
            None => format!("NIC {ifname:?} does not exist in switchd's network namespace"),
            Some(ns) => format!("NIC {ifname:?} does not exist in network namespace {ns}"),
        }),
        e => RegistryError::Datapath(e.to_string()),
    }
}

/// Runs `f` in the NIC's network namespace: here, or (a VM's tap) on a
/// thread inside the pod's. A namespace that is gone means the NIC is.
fn in_nic_ns<T: Send>(
    nic: &Nic,
    f: impl FnOnce() -> Result<T, RegistryError> + Send,
) -> Result<T, RegistryError> {
    let Some(path) = &nic.netns else { return f() };
    let ns = NetNs::open(Path::new(path)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RegistryError::NicMissing(format!(
                "network namespace {path} of NIC {:?} is gone",
                nic.ifname
            ))
        } else {
            RegistryError::Datapath(format!("network namespace {path}: {e}"))
        }
    })?;
    ns.run(f)
        .map_err(|e| RegistryError::Datapath(format!("entering {path}: {e}")))?
}

/// Sets the NIC administratively up or down where it lives: the cable
/// plugged or pulled (a pod's veth peer, or a VM's tap, loses carrier).
fn set_link(nic: &Nic, up: bool) -> Result<(), RegistryError> {
    in_nic_ns(nic, || {
        netdev::set_up(&nic.ifname, up).map_err(nic_error(nic))
    })
}

/// Checks the NIC can be a port and prepares it: it exists (an overlay
/// port's netdevs are made), its MTU fits the data path, a pod's or VM's
/// end has no IPv6 of the host's (nor of the VM pod's namespace), and it
/// is down if the port starts down.
/// `queues`: the poll threads (an overlay port's veth gets one queue per
/// thread).
fn prepare_nic(p: &crate::registry::Pending, queues: usize) -> Result<(), RegistryError> {
    let nic = &p.nic;
    if let Some(v) = &nic.vxlan {
        make_overlay(&nic.ifname, v, &p.vlans, queues)?;
    }
    in_nic_ns(nic, || {
        let ifname = &nic.ifname;
        netdev::ifindex(ifname).map_err(nic_error(nic))?;
        let mtu = netdev::mtu(ifname).map_err(nic_error(nic))?;
        if mtu > MAX_MTU {
            return Err(RegistryError::Invalid(format!(
                "NIC {ifname} has MTU {mtu}; the AF_XDP data path carries at most {MAX_MTU}"
            )));
        }
        if nic.kind != NicKind::Uplink {
            if let Err(e) = netdev::disable_ipv6(ifname) {
                log::debug!("disabling IPv6 on {ifname}: {e}");
            }
        }
        if !p.link_up {
            netdev::set_up(ifname, false).map_err(nic_error(nic))?;
        }
        Ok(())
    })
}

fn overlay_error(e: overlay::OverlayError) -> RegistryError {
    if e.missing {
        RegistryError::NicMissing(e.message)
    } else {
        RegistryError::Datapath(e.message)
    }
}

/// Makes (or finds) an overlay port's netdevs and programs and gives them
/// the port's VLANs (`mode`) and peers.
fn make_overlay(
    ifname: &str,
    v: &VxlanNic,
    mode: &VlanMode,
    queues: usize,
) -> Result<(), RegistryError> {
    let vlans = v.vlan_vnis(mode).map_err(RegistryError::Invalid)?;
    let untagged = mode.untagged_vlan().map(|v| v.get());
    overlay::ensure(ifname, v, &vlans, untagged, queues).map_err(overlay_error)?;
    Ok(())
}

/// Prepares, attaches and (if the port is up) brings up a recorded port's
/// NIC. Attach first, then up: attaching XDP to a veth that is down costs
/// a fraction of attaching it to one that is up.
fn bring_in(
    dp: &dyn Dataplane,
    p: &crate::registry::Pending,
) -> Result<crate::datapath::Attachment, RegistryError> {
    prepare_nic(p, dp.config().threads())?;
    let a = dp
        .attach(p.slot, &p.nic)
        .map_err(|e| RegistryError::Datapath(format!("attaching {}: {e}", p.nic.location())))?;
    if p.link_up {
        set_link(&p.nic, true)?;
    }
    Ok(a)
}

/// Creates a port and attaches its NIC. Returns the port and whether it
/// was created (false: the same container ID + ifname already had it).
pub fn create_port(
    state: &Mutex<Registry>,
    cfg: PortConfig,
) -> Result<(VPort, bool), RegistryError> {
    let (p, dp) = {
        let mut s = lock(state);
        match s.begin_create(cfg)? {
            Begun::Exists(v) => return Ok((*v, false)),
            Begun::Recorded(v) => return Ok((*v, true)),
            Begun::Pending(p) => (*p, s.datapath()),
        }
    };
    let r = bring_in(dp.as_ref(), &p);
    let mut s = lock(state);
    let id = s.finish_port(p, r, false)?;
    Ok((s.port(&id)?, true))
}

/// Applies a PATCH live: VLAN role, MAC, QoS, guards, ACLs and admin state
/// change without re-attaching the NIC; a link-state change pulls or
/// plugs the cable (the NIC's admin state, so the pod sees its carrier).
pub fn update_port(
    state: &Mutex<Registry>,
    id: &str,
    u: PortUpdate,
) -> Result<VPort, RegistryError> {
    let mut s = lock(state);
    let (p, old) = s.plan_update(id, u)?;
    if let (Some(v), true) = (&p.nic.vxlan, p.mode() != old.mode()) {
        let vlans = v.vlan_vnis(&p.mode()).map_err(RegistryError::Invalid)?;
        let untagged = p.mode().untagged_vlan().map(|v| v.get());
        overlay::set_vlans(&p.nic.ifname, &vlans, untagged).map_err(overlay_error)?;
        log::info!("port {id} ({}): overlay VLANs now {vlans:?}", p.nic.ifname);
    }
    if p.link_state != old.link_state {
        set_link(&p.nic, p.link_state == LinkState::Up)?;
    }
    s.commit_update(id, p, &old)
}

/// Replaces the peers of a vxlan port, live: floods reach exactly the
/// listed peers from then on, a removed peer's counters and learned MACs
/// go (known unicast stops going there too), and the port is stored with
/// its new list.
pub fn set_vxlan_peers(
    state: &Mutex<Registry>,
    id: &str,
    peers: Vec<std::net::IpAddr>,
) -> Result<VPort, RegistryError> {
    let mut s = lock(state);
    let port = s.port(id)?;
    let Some(old) = port.nic.vxlan.clone() else {
        return Err(RegistryError::Invalid(format!(
            "port {id} is a {} port; peers are for vxlan ports",
            port.nic.kind
        )));
    };
    let new = VxlanNic { peers, ..old }.without_self();
    new.validate().map_err(RegistryError::Invalid)?;
    let ifname = &port.nic.ifname;
    let forgotten = overlay::set_peers(ifname, &new.peers).map_err(overlay_error)?;
    log::info!(
        "port {id} ({ifname}): vxlan peers now {:?}; {forgotten} MAC(s) learned behind removed peers forgotten",
        new.peers
    );
    s.set_vxlan(id, new)
}

/// Deletes a port and detaches its NIC (the teardown happens on the setup
/// thread; this returns at once).
pub fn delete_port(state: &Mutex<Registry>, id: &str) -> Result<(), RegistryError> {
    let mut s = lock(state);
    let nic = s.port(id).ok().map(|p| p.nic);
    // Under the lock: the slot cannot be given to a new port before the
    // setup thread has this detach (messages run in order).
    if let Some(slot) = s.delete_port(id)? {
        if let Err(e) = s.datapath().detach(slot) {
            log::warn!("detaching port {id}: {e}");
        }
    }
    drop(s);
    if let Some(nic) = nic.filter(|n| n.vxlan.is_some()) {
        overlay::remove(&nic.ifname);
    }
    Ok(())
}

/// Loads the state directory and re-attaches every stored port whose NIC
/// still exists; ports whose NIC is gone are dropped (their pod is gone),
/// ports whose attach fails otherwise are kept for `reconcile` to retry.
/// Returns (re-attached, dropped).
pub fn restore(state: &Mutex<Registry>) -> Result<(usize, usize), RegistryError> {
    let stored = lock(state).load()?;
    let (mut ok, mut dropped) = (0, 0);
    for port in stored {
        let begun = {
            let mut s = lock(state);
            s.add_port(port.to_config()).map(|p| (p, s.datapath()))
        };
        let r = match begun {
            // Nothing to attach (a VF in legacy eswitch mode): recorded again.
            Ok((Added::Recorded(id), _)) => Ok(id),
            Ok((Added::Pending(p), dp)) => match prepare_nic(&p, dp.config().threads()) {
                Err(e @ RegistryError::NicMissing(_)) => {
                    let mut s = lock(state);
                    s.forget_port(&p.id);
                    Err(e)
                }
                _ => {
                    let r = bring_in(dp.as_ref(), &p);
                    lock(state).finish_port(p, r, true)
                }
            },
            Err(e) => Err(e),
        };
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                log::warn!(
                    "dropping stored port {} ({}): {e}",
                    port.id,
                    port.nic.location()
                );
                dropped += 1;
            }
        }
    }
    lock(state).persist()?;
    Ok((ok, dropped))
}

/// Retries attaching ports that are not attached but whose NIC exists
/// (a restart racing the old process, a NIC that came back). Ports whose
/// NIC is gone stay recorded until deleted (the CNI's DEL or GC).
pub fn reconcile(state: &Mutex<Registry>) {
    let (dp, todo): (Arc<dyn Dataplane>, _) = lock(state).unattached();
    for p in todo {
        // An overlay port's netdevs are switchd's to make again.
        if p.nic.vxlan.is_none()
            && in_nic_ns(&p.nic, || {
                netdev::ifindex(&p.nic.ifname).map_err(nic_error(&p.nic))
            })
            .is_err()
        {
            continue;
        }
        let (id, slot, ifname) = (p.id.clone(), p.slot, p.nic.location());
        // A NIC that came back (or was re-created under the same name) is
        // new to the kernel: prepared and brought up like a new port's.
        match bring_in(dp.as_ref(), &p) {
            Ok(_) => {
                let mut s = lock(state);
                match s.slot_owner(slot) {
                    Some(owner) if owner == id => {
                        s.republish();
                        log::info!("port {id}: re-attached {ifname}")
                    }
                    // Reused by a port being attached now: its own attach
                    // (a different NIC) replaces ours.
                    Some(_) => {}
                    // Deleted meanwhile: undo ours.
                    None => {
                        let _ = dp.detach(slot);
                    }
                }
            }
            Err(e) => log::debug!("port {id}: attach {ifname} still failing: {e}"),
        }
    }
}

/// Makes again the netdevs (and programs) of overlay ports whose far end
/// or VXLAN netdev someone deleted while the port stayed attached.
pub fn heal_overlays(state: &Mutex<Registry>) {
    let (ports, threads) = {
        let s = lock(state);
        (s.ports(), s.datapath().config().threads())
    };
    for p in ports {
        let Some(v) = &p.nic.vxlan else { continue };
        if !overlay::stale(&p.nic.ifname) {
            continue;
        }
        match make_overlay(&p.nic.ifname, v, &p.mode(), threads) {
            Ok(()) => log::info!("port {}: overlay netdevs made again", p.id),
            Err(e) => log::warn!("port {}: making the overlay's netdevs again: {e}", p.id),
        }
    }
}

/// Creates the declared switches and ports that do not exist yet and
/// updates those that do.
pub fn apply_declared(state: &Mutex<Registry>, d: Declared) -> Result<(), RegistryError> {
    let (create, update) = lock(state).apply_declared_here(d)?;
    for (id, u) in update {
        update_port(state, &id, u)?;
    }
    for p in create {
        let nic = p.nic.location();
        let (port, _) = create_port(state, p)?;
        log::info!("created declared port {} on {nic}", port.id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::fake::FakeDataplane;

    #[test]
    fn a_missing_nic_fails_the_create_and_leaves_nothing() {
        let d = std::env::temp_dir().join(format!("psw-reconcile-{}", std::process::id()));
        let fake = Arc::new(FakeDataplane::default());
        let reg = Mutex::new(Registry::new(&d, fake.clone(), 300));
        let cfg = PortConfig::on(Nic::new(NicKind::Veth, "pswnosuchnic0"));
        let e = create_port(&reg, cfg).unwrap_err();
        assert!(matches!(e, RegistryError::NicMissing(_)), "{e}");
        assert!(lock(&reg).ports().is_empty());
        assert!(fake.attached.lock().unwrap().is_empty(), "never attached");
        assert!(fake.last().ports.iter().all(|p| p.is_none()));
        let _ = std::fs::remove_dir_all(d);
    }
}
