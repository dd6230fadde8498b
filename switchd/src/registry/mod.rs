//! The registry: the desired state. It owns the VSwitches and VPorts,
//! validates every change (`validate`), assigns IDs and slots, persists it
//! in the state directory (`store`) and publishes the immutable snapshot
//! the poll threads read. It makes no netdev call: the reconciler
//! (`crate::reconcile`) prepares NICs and attaches them, between two
//! short holds of the registry's lock.

mod store;
pub mod validate;

pub use validate::Declared;

use crate::datapath::Dataplane;
use crate::pipeline::acl::Acl;
use crate::pipeline::capture::CaptureTap;
use crate::pipeline::fdb::Slot;
use crate::pipeline::mcast::{McastCounters, McastShared, McastView, Stamp, Tracked};
use crate::pipeline::snapshot::{PortCounters, PortView, Snapshot, SwitchView};
use crate::pipeline::vlan::PortVlan;
use podswitch_shared::model::{
    check_object_name, FdbEntry, Handover, LinkState, MacAddr, MulticastGroup, MulticastMember,
    MulticastRouter, MulticastTable, Nic, NicKind, PortConfig, PortMirroring, PortStatus,
    PortUpdate, SwitchConfig, SwitchUpdate, VPort, VSwitch, VlanId, VlanMode,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use podswitch_shared::model::MAX_MTU;

/// Most live captures running on one port at once.
pub const MAX_CAPTURES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NicMissing(String),
    #[error("{0}")]
    Datapath(String),
    #[error("saving state in {path}: {source}")]
    Persist {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RegistryError {
    /// HTTP status and error code for the API.
    pub fn status_code(&self) -> (u16, &'static str) {
        match self {
            RegistryError::Invalid(_) => (400, "invalid"),
            RegistryError::NotFound(_) => (404, "not-found"),
            RegistryError::Conflict(_) => (409, "conflict"),
            RegistryError::NicMissing(_) => (422, "nic-not-found"),
            RegistryError::Datapath(_) => (500, "datapath"),
            RegistryError::Persist { .. } => (500, "persist"),
        }
    }
}

impl From<podswitch_shared::model::ModelError> for RegistryError {
    fn from(e: podswitch_shared::model::ModelError) -> Self {
        RegistryError::Invalid(e.to_string())
    }
}

struct SwitchEntry {
    sw: VSwitch,
    /// Names the switch's tables in the poll threads (never reused).
    id: u32,
    /// Its multicast table while it snoops (the snooper writes it).
    mcast: Option<Snooping>,
    /// Snooping counters, for the switch's life.
    mcast_counters: Arc<McastCounters>,
}

/// A snooping switch's table: a new one (epoch) each time snooping is
/// turned on, so that turning it off empties the table.
#[derive(Clone)]
struct Snooping {
    epoch: u64,
    shared: Arc<McastShared>,
}

struct PortEntry {
    port: VPort,
    /// The port's place in the data path; `None` for a port switchd
    /// records but never attaches (a VF in legacy eswitch mode, see
    /// `Nic::attaches`): it is not in the snapshot, so it has no FDB
    /// entry, takes no flood copy and is never retried.
    slot: Option<Slot>,
    counters: Arc<PortCounters>,
    acl: Arc<Acl>,
    /// Bumped when the MACs learned behind the port must be forgotten.
    flush_gen: u64,
    /// The running live captures (published on the port's view).
    captures: Option<Arc<[Arc<CaptureTap>]>>,
    /// Frames and drops of the captures that have ended.
    captures_done: (u64, u64),
}

/// A state file's contents, as switchd reads them (fuzzing, tests).
#[doc(hidden)]
pub fn parse_state(bytes: &[u8]) -> Result<impl std::fmt::Debug + serde::Serialize, RegistryError> {
    store::parse(Path::new("state.json"), bytes)
}

/// Serializes what `parse_state` returned, as switchd writes it.
#[doc(hidden)]
pub fn write_state(s: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(s).unwrap_or_default()
}

/// Reads and validates the state directory before switchd serves anything:
/// the directory is made 0700, and a state file that cannot be read, or
/// that a newer switchd wrote, stops the start with the file untouched.
/// Returns the (switches, ports) it holds.
pub fn check_state_dir(dir: &Path) -> Result<(usize, usize), RegistryError> {
    store::prepare_dir(dir).map_err(|source| RegistryError::Persist {
        path: dir.to_path_buf(),
        source,
    })?;
    let s = store::load(dir)?;
    let file = dir.join(store::STATE_FILE);
    if file.exists() {
        // A file an older switchd wrote 0644 names pods and MACs.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| RegistryError::Persist { path: file, source })?;
    }
    Ok((s.switches.len(), s.ports.len()))
}

pub struct Registry {
    dir: PathBuf,
    switches: BTreeMap<String, SwitchEntry>,
    ports: BTreeMap<String, PortEntry>,
    slots: Vec<Option<String>>,
    datapath: Arc<dyn Dataplane>,
    default_aging: u32,
    generation: u64,
    next_switch_id: u32,
    /// Source of `PortEntry::flush_gen` values (never reused).
    next_flush_gen: u64,
    /// What was published last, to send the poll threads only what changed.
    last_ports: Vec<Option<PortView>>,
    last_switches: Vec<SwitchView>,
    /// Slots whose MAC another port of the switch claims too (on the same
    /// VLAN): a live migration's two ports. Kept by `publish`.
    shared_mac_slots: std::collections::HashSet<Slot>,
    /// Wakes the thread that fsyncs the state file and directory.
    syncer: std::sync::mpsc::Sender<()>,
    /// The owner of the multicast tables, started with the first snooping switch.
    snooper: Option<crate::snooper::Snooper>,
    /// Source of `Snooping::epoch` values.
    next_epoch: u64,
    /// Slots a predecessor gave ports (by ID), kept on restore after a
    /// handover so that the XDP maps it handed over stay right.
    preferred_slots: std::collections::HashMap<String, Slot>,
    /// How this switchd took over from its predecessor, if it did.
    handover: Option<podswitch_shared::model::HandoverInfo>,
    /// Per switch, the smallest MTU of its attached vxlan ports (what a
    /// pod's frames may be to cross the overlay); read by /readyz.
    overlay_mtu: Arc<std::sync::Mutex<BTreeMap<String, u32>>>,
}

impl Registry {
    /// Each attached port's slot, by port ID (for a handover).
    pub fn port_slots(&self) -> std::collections::HashMap<String, Slot> {
        self.ports
            .iter()
            .filter_map(|(id, e)| Some((id.clone(), e.slot?)))
            .collect()
    }

    /// Stores a vxlan port's new overlay settings (its peers).
    pub fn set_vxlan(
        &mut self,
        id: &str,
        v: podswitch_shared::model::VxlanNic,
    ) -> Result<VPort, RegistryError> {
        let e = self
            .ports
            .get_mut(id)
            .ok_or_else(|| RegistryError::NotFound(format!("no port with ID {id:?}")))?;
        e.port.nic.vxlan = Some(v);
        self.persist()?;
        self.port(id)
    }

    /// Restore gives these ports these slots where they are free.
    pub fn prefer_slots(&mut self, slots: std::collections::HashMap<String, Slot>) {
        self.preferred_slots = slots;
    }

    /// The counters users read, by port ID, for a successor to go on from.
    pub fn counter_seeds(
        &self,
    ) -> std::collections::HashMap<String, crate::pipeline::snapshot::CounterSeed> {
        self.ports
            .iter()
            .map(|(id, e)| (id.clone(), e.counters.seed()))
            .collect()
    }

    /// Adds a predecessor's counts to the ports' counters.
    pub fn add_counter_seeds(
        &self,
        seeds: &std::collections::HashMap<String, crate::pipeline::snapshot::CounterSeed>,
    ) {
        for (id, s) in seeds {
            if let Some(e) = self.ports.get(id) {
                e.counters.add_seed(s);
            }
        }
    }

    /// Loads the state directory's switches and returns its ports, for
    /// `restore` to re-create one by one.
    pub(crate) fn load(&mut self) -> Result<Vec<VPort>, RegistryError> {
        let stored = store::load(&self.dir)?;
        for sw in stored.switches {
            let name = sw.name.clone();
            self.insert_switch(VSwitch {
                ports: None,
                fdb_entries: None,
                ..sw
            });
            if let Err(e) = self.sync_snooping(&name) {
                log::error!("switch {name}: multicast snooping stays off: {e}");
            }
        }
        Ok(stored.ports)
    }

    pub(crate) fn persist(&self) -> Result<(), RegistryError> {
        store::save(
            &self.dir,
            &self.syncer,
            &store::Stored {
                version: store::STATE_VERSION,
                switches: self.switches.values().map(|e| e.sw.clone()).collect(),
                ports: self.ports.values().map(|e| e.port.clone()).collect(),
            },
        )
    }

    /// An empty state (with the `default` switch) over `dir`. Call
    /// `restore` to load and re-attach what `dir` holds.
    pub fn new(dir: &Path, datapath: Arc<dyn Dataplane>, default_aging: u32) -> Self {
        let mut s = Registry {
            dir: dir.to_path_buf(),
            switches: BTreeMap::new(),
            ports: BTreeMap::new(),
            slots: Vec::new(),
            datapath,
            default_aging,
            generation: 0,
            next_switch_id: 1,
            next_flush_gen: 1,
            last_ports: Vec::new(),
            last_switches: Vec::new(),
            shared_mac_slots: Default::default(),
            syncer: store::start_syncer(dir),
            snooper: None,
            next_epoch: 0,
            preferred_slots: Default::default(),
            handover: None,
            overlay_mtu: Default::default(),
        };
        s.insert_switch(VSwitch {
            name: VSwitch::DEFAULT_NAME.into(),
            aging_seconds: default_aging,
            max_fdb_entries: VSwitch::DEFAULT_MAX_FDB_ENTRIES,
            multicast_snooping: false,
            multicast_flood_unknown: true,
            multicast_membership_seconds: VSwitch::DEFAULT_MEMBERSHIP_SECONDS,
            ports: None,
            fdb_entries: None,
        });
        s
    }

    fn insert_switch(&mut self, sw: VSwitch) {
        let id = self.next_switch_id;
        self.next_switch_id += 1;
        let threads = self.datapath.config().threads();
        self.switches.insert(
            sw.name.clone(),
            SwitchEntry {
                sw,
                id,
                mcast: None,
                mcast_counters: Arc::new(McastCounters::new(threads)),
            },
        );
    }

    /// Makes the switch's snooping what its settings say: starts a new
    /// (empty) table, changes the membership interval, or forgets the
    /// table. Call before `publish`, so the snooper knows a table before
    /// any poll thread sends it events.
    fn sync_snooping(&mut self, name: &str) -> Result<(), RegistryError> {
        let Some(e) = self.switches.get(name) else {
            return Ok(());
        };
        let (id, want, seconds) = (
            e.id,
            e.sw.multicast_snooping,
            e.sw.multicast_membership_seconds,
        );
        let table = match (&e.mcast, want) {
            (None, false) => return Ok(()),
            (Some(_), false) => None,
            (Some(m), true) => Some(m.clone()),
            (None, true) => {
                self.next_epoch += 1;
                Some(Snooping {
                    epoch: self.next_epoch,
                    shared: Arc::new(McastShared::new(e.mcast_counters.clone())),
                })
            }
        };
        if self.snooper.is_none() && table.is_some() {
            let s = crate::snooper::Snooper::start().map_err(|e| {
                RegistryError::Datapath(format!("starting the multicast snooper thread: {e}"))
            })?;
            self.snooper = Some(s);
        }
        if let Some(s) = &self.snooper {
            s.configure(
                id,
                table.as_ref().map(|t| Tracked {
                    epoch: t.epoch,
                    shared: t.shared.clone(),
                    membership_seconds: seconds,
                }),
            );
        }
        if let Some(e) = self.switches.get_mut(name) {
            e.mcast = table;
        }
        Ok(())
    }

    fn flush_gen(&mut self) -> u64 {
        self.next_flush_gen += 1;
        self.next_flush_gen
    }

    /// Builds and publishes the snapshot the poll threads read, with the
    /// slots that changed since the last one (a typed change), so a PATCH
    /// of one port costs the poll threads that port, not a rescan.
    fn publish(&mut self) {
        self.generation += 1;
        self.note_overlay_mtu();
        let index: BTreeMap<&str, usize> = self
            .switches
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut ports: Vec<Option<PortView>> = vec![None; self.slots.len()];
        let events = self.snooper.as_ref().map(|s| s.sender());
        let mut switches: Vec<SwitchView> = self
            .switches
            .values()
            .map(|e| SwitchView {
                id: e.id,
                name: e.sw.name.clone(),
                ports: Vec::new(),
                aging_seconds: e.sw.aging_seconds,
                max_fdb_entries: e.sw.max_fdb_entries,
                statics: Vec::new(),
                mcast: e
                    .mcast
                    .as_ref()
                    .zip(events.clone())
                    .map(|(m, tx)| McastView {
                        shared: m.shared.clone(),
                        epoch: m.epoch,
                        flood_unknown: e.sw.multicast_flood_unknown,
                        uplinks: Vec::new(),
                        events: tx,
                    }),
                mirror_dests: Vec::new(),
                fids: Default::default(),
            })
            .collect();
        // Per switch, (secondary, primary) of its private VLAN ports.
        let mut pvlans: Vec<Vec<(u16, u16)>> = vec![Vec::new(); switches.len()];
        let threads = self.datapath.config().threads() as u32;
        // A MAC that two ports claim (a VM being live-migrated: its target
        // port exists before the VM moves) is learned, not static: it
        // stays where the VM's frames come from and moves with the first
        // one from the other port.
        let mut claims: BTreeMap<(usize, u16, MacAddr), Vec<Slot>> = BTreeMap::new();
        for e in self.ports.values() {
            let Some(&si) = index.get(e.port.switch.as_str()) else {
                continue;
            };
            let Some(slot) = e.slot else { continue };
            let mode = e.port.mode();
            switches[si].ports.push(slot);
            if let (NicKind::Uplink, Some(m)) = (e.port.nic.kind, &mut switches[si].mcast) {
                // Uplinks lead to the fabric's multicast routers: always router ports.
                m.uplinks.push(slot);
            }
            if e.port.port_mirroring == PortMirroring::Destination {
                switches[si].mirror_dests.push(slot);
            }
            if let Some(pv) = &e.port.pvlan {
                let p = pv.primary_id.get();
                pvlans[si].extend(pv.secondaries().iter().map(|s| (s.get(), p)));
            }
            if let (Some(mac), Some(v)) = (e.port.mac, mode.untagged_vlan()) {
                claims.entry((si, v.get(), mac)).or_default().push(slot);
            }
            let served = self
                .datapath
                .attachment(slot)
                .map(|a| a.queues.min(threads))
                .unwrap_or(0);
            ports[slot as usize] = Some(PortView {
                served,
                home: (slot % served.max(1)) as usize,
                flush_gen: e.flush_gen,
                id: e.port.id.clone(),
                slot,
                switch: si,
                vlan: PortVlan::from(&mode),
                up: e.port.link_state == LinkState::Up,
                mac: e.port.mac,
                spoof_check: e.port.mac_spoof_check,
                pcp: e.port.priority.and_then(|p| p.forced_pcp()),
                ip_guard: e.port.ip_spoof_check.then(|| {
                    Arc::new(crate::pipeline::ipguard::IpGuard::new(
                        &e.port.allowed_ips,
                        e.port.mac,
                    ))
                }),
                qos: e.port.qos.clone(),
                dhcp_guard: e.port.dhcp_guard,
                router_guard: e.port.router_guard,
                storm_limit: e.port.storm_limit,
                mirroring: e.port.port_mirroring,
                captures: e.captures.clone(),
                acl: e.acl.clone(),
                counters: e.counters.clone(),
            });
        }
        for m in switches.iter_mut().filter_map(|s| s.mcast.as_mut()) {
            m.uplinks.sort_unstable();
        }
        for (sw, pairs) in switches.iter_mut().zip(pvlans) {
            sw.fids = crate::pipeline::vlan::Fids::new(pairs);
        }
        self.shared_mac_slots.clear();
        for ((si, vlan, mac), slots) in claims {
            if let [slot] = slots[..] {
                switches[si].statics.push((vlan, mac, slot));
            } else {
                self.shared_mac_slots.extend(slots);
            }
        }
        let same_switches = switches.len() == self.last_switches.len()
            && switches.iter().zip(&self.last_switches).all(|(a, b)| {
                (
                    a.id,
                    &a.name,
                    &a.ports,
                    a.aging_seconds,
                    a.max_fdb_entries,
                    &a.statics,
                    &a.fids,
                ) == (
                    b.id,
                    &b.name,
                    &b.ports,
                    b.aging_seconds,
                    b.max_fdb_entries,
                    &b.statics,
                    &b.fids,
                )
            });
        let changed = (same_switches && ports.len() == self.last_ports.len()).then(|| {
            ports
                .iter()
                .zip(&self.last_ports)
                .enumerate()
                .filter(|(_, (a, b))| match (a, b) {
                    (Some(a), Some(b)) => !a.same_as(b),
                    (None, None) => false,
                    _ => true,
                })
                .map(|(i, _)| i as Slot)
                .collect()
        });
        self.last_ports = ports.clone();
        self.last_switches = switches.clone();
        self.datapath.publish(Snapshot {
            generation: self.generation,
            ports,
            switches,
            changed,
        });
    }

    /// What the data path runs with (GET /v1/datapath).
    pub fn datapath_info(&self) -> podswitch_shared::model::DatapathInfo {
        let c = self.datapath.config();
        let cpus: Vec<usize> = c.poll_cpus.iter().flatten().copied().collect();
        podswitch_shared::model::DatapathInfo {
            poll_cpu: cpus.first().copied(),
            poll_cpus: cpus,
            poll_threads: c.threads(),
            xdp_mode: if c.native_xdp { "native" } else { "generic" }.into(),
            umem_frames: c.umem_frames,
            max_ports: crate::datapath::budget::Budget::new(c.umem_frames).max_ports(),
            max_mtu: MAX_MTU,
            ports: self.datapath_ports(),
            attached_ports: self.datapath_ports() - self.detached_ports(),
            threads: self.datapath.threads(),
            handover: self.handover.clone(),
        }
    }

    /// The per-switch overlay MTU, kept current on every publish.
    pub fn overlay_mtu(&self) -> Arc<std::sync::Mutex<BTreeMap<String, u32>>> {
        self.overlay_mtu.clone()
    }

    fn note_overlay_mtu(&self) {
        let mut m: BTreeMap<String, u32> = BTreeMap::new();
        for e in self.ports.values() {
            if e.port.nic.kind != NicKind::Vxlan {
                continue;
            }
            let Some(a) = e.slot.and_then(|s| self.datapath.attachment(s)) else {
                continue;
            };
            let v = m.entry(e.port.switch.clone()).or_insert(a.mtu);
            *v = (*v).min(a.mtu);
        }
        *self.overlay_mtu.lock().unwrap_or_else(|e| e.into_inner()) = m;
    }

    /// Records how this switchd took over (shown by GET /v1/datapath).
    pub fn set_handover(&mut self, h: podswitch_shared::model::HandoverInfo) {
        self.handover = Some(h);
    }

    /// Applies the declared switches, and returns the declared ports that
    /// do not exist yet (a port exists when a port with the same NIC does)
    /// after updating those that do.
    /// Applies the declared switches; returns the declared ports to create
    /// and the updates of those that exist (for the reconciler).
    #[allow(clippy::type_complexity)]
    pub(crate) fn apply_declared_here(
        &mut self,
        d: Declared,
    ) -> Result<(Vec<PortConfig>, Vec<(String, PortUpdate)>), RegistryError> {
        let mut create = Vec::new();
        let mut update = Vec::new();
        for sw in d.switches {
            match self.switches.get_mut(&sw.name) {
                None => {
                    let name = sw.name.clone();
                    self.create_switch(sw)?;
                    log::info!("created declared switch {name}");
                }
                Some(e) => {
                    // A changed declaration (e.g. a helm upgrade) applies.
                    let u = SwitchUpdate {
                        aging_seconds: Some(sw.aging_seconds.unwrap_or(e.sw.aging_seconds).max(1)),
                        max_fdb_entries: Some(
                            sw.max_fdb_entries.unwrap_or(e.sw.max_fdb_entries).max(1),
                        ),
                        multicast_snooping: sw.multicast_snooping,
                        multicast_flood_unknown: sw.multicast_flood_unknown,
                        multicast_membership_seconds: sw.multicast_membership_seconds,
                    };
                    if updated(&e.sw, &u) != e.sw {
                        self.update_switch(&sw.name, u)?;
                        log::info!("updated declared switch {}", sw.name);
                    }
                }
            }
        }
        for p in d.ports {
            let existing = self
                .ports
                .values()
                .find(|e| e.port.nic.same_device(&p.nic))
                .map(|e| (e.port.id.clone(), e.port.nic.attaches()));
            match existing {
                None => create.push(p),
                Some((id, true)) => update.push((id, p.into_declared_update())),
                // Its settings live on the PF, fixed when it was added.
                Some((id, false)) => log::info!(
                    "declared port {} exists as port {id}; a legacy-eswitch VF is not updated live",
                    p.nic.location()
                ),
            }
        }
        Ok((create, update))
    }

    // ---- switches ----

    fn switch_view(&self, e: &SwitchEntry) -> VSwitch {
        VSwitch {
            ports: Some(
                self.ports
                    .values()
                    .filter(|p| p.port.switch == e.sw.name)
                    .count(),
            ),
            fdb_entries: self.datapath.fdb(e.id, false).map(|f| f.len),
            ..e.sw.clone()
        }
    }

    pub fn switches(&self) -> Vec<VSwitch> {
        self.switches
            .values()
            .map(|e| self.switch_view(e))
            .collect()
    }

    pub fn create_switch(&mut self, cfg: SwitchConfig) -> Result<VSwitch, RegistryError> {
        check_object_name("switch name", &cfg.name)?;
        if self.switches.contains_key(&cfg.name) {
            return Err(RegistryError::Conflict(format!(
                "switch {:?} already exists",
                cfg.name
            )));
        }
        let aging = cfg.aging_seconds.unwrap_or(self.default_aging);
        if aging == 0 {
            return Err(RegistryError::Invalid(
                "agingSeconds must be at least 1".into(),
            ));
        }
        let max = cfg
            .max_fdb_entries
            .unwrap_or(VSwitch::DEFAULT_MAX_FDB_ENTRIES);
        if max == 0 {
            return Err(RegistryError::Invalid(
                "maxFdbEntries must be at least 1".into(),
            ));
        }
        let membership = cfg
            .multicast_membership_seconds
            .unwrap_or(VSwitch::DEFAULT_MEMBERSHIP_SECONDS);
        podswitch_shared::model::check_membership_seconds(membership)
            .map_err(RegistryError::Invalid)?;
        self.insert_switch(VSwitch {
            name: cfg.name.clone(),
            aging_seconds: aging,
            max_fdb_entries: max,
            multicast_snooping: cfg.multicast_snooping.unwrap_or(false),
            multicast_flood_unknown: cfg.multicast_flood_unknown.unwrap_or(true),
            multicast_membership_seconds: membership,
            ports: None,
            fdb_entries: None,
        });
        if let Err(e) = self.persist().and_then(|()| self.sync_snooping(&cfg.name)) {
            self.switches.remove(&cfg.name);
            let _ = self.persist();
            return Err(e);
        }
        self.publish();
        let e = &self.switches[&cfg.name];
        Ok(self.switch_view(e))
    }

    pub fn delete_switch(&mut self, name: &str) -> Result<(), RegistryError> {
        if name == VSwitch::DEFAULT_NAME {
            return Err(RegistryError::Conflict(
                "the default switch always exists".into(),
            ));
        }
        if !self.switches.contains_key(name) {
            return Err(RegistryError::NotFound(format!("no switch named {name:?}")));
        }
        let n = self
            .ports
            .values()
            .filter(|p| p.port.switch == name)
            .count();
        if n > 0 {
            return Err(RegistryError::Conflict(format!(
                "switch {name:?} still has {n} port(s); delete them first"
            )));
        }
        let e = self.switches.remove(name);
        if let Err(err) = self.persist() {
            if let Some(e) = e {
                self.switches.insert(name.to_string(), e);
            }
            return Err(err);
        }
        if let (Some(s), Some(e)) = (&self.snooper, e.filter(|e| e.mcast.is_some())) {
            s.configure(e.id, None);
        }
        self.publish();
        Ok(())
    }

    /// `PATCH /v1/switches/{name}`: changes the given settings live.
    /// Turning snooping off empties the multicast table (multicast floods
    /// again); turning it on starts an empty one.
    pub fn update_switch(&mut self, name: &str, u: SwitchUpdate) -> Result<VSwitch, RegistryError> {
        let e = self
            .switches
            .get_mut(name)
            .ok_or_else(|| RegistryError::NotFound(format!("no switch named {name:?}")))?;
        if u.aging_seconds == Some(0) {
            return Err(RegistryError::Invalid(
                "agingSeconds must be at least 1".into(),
            ));
        }
        if u.max_fdb_entries == Some(0) {
            return Err(RegistryError::Invalid(
                "maxFdbEntries must be at least 1".into(),
            ));
        }
        if let Some(s) = u.multicast_membership_seconds {
            podswitch_shared::model::check_membership_seconds(s).map_err(RegistryError::Invalid)?;
        }
        let old = e.sw.clone();
        e.sw = updated(&old, &u);
        if let Err(err) = self.persist() {
            if let Some(e) = self.switches.get_mut(name) {
                e.sw = old;
            }
            return Err(err);
        }
        if let Err(err) = self.sync_snooping(name) {
            if let Some(e) = self.switches.get_mut(name) {
                e.sw = old;
            }
            let _ = self.persist();
            return Err(err);
        }
        self.publish();
        let e = &self.switches[name];
        Ok(self.switch_view(e))
    }

    /// A switch's multicast table (`GET /v1/switches/{name}/mdb`): the
    /// groups with live members, and the router ports. Empty while the
    /// switch does not snoop.
    pub fn mdb(&self, name: &str) -> Result<MulticastTable, RegistryError> {
        let e = self
            .switches
            .get(name)
            .ok_or_else(|| RegistryError::NotFound(format!("no switch named {name:?}")))?;
        let mut t = MulticastTable {
            switch: name.to_string(),
            snooping: e.sw.multicast_snooping,
            ..MulticastTable::default()
        };
        let Some(m) = &e.mcast else {
            return Ok(t);
        };
        let now = crate::clock::now_ns();
        let seconds = |s: &Stamp| s.expires.saturating_sub(now).div_ceil(1_000_000_000);
        // The port a stamp names, while it is still the port that reported.
        let live = |s: &Stamp| {
            let id = self.slots.get(s.slot as usize)?.as_ref()?;
            let p = self.ports.get(id)?;
            (p.flush_gen == s.gen && s.expires > now).then(|| id.clone())
        };
        for p in self.ports.values() {
            if p.port.switch == name && p.port.nic.kind == NicKind::Uplink && p.slot.is_some() {
                t.routers.push(MulticastRouter {
                    port: p.port.id.clone(),
                    kind: "uplink".into(),
                    vlan: None,
                    expires_seconds: None,
                });
            }
        }
        let view = m.shared.table.load();
        for (vlan, list) in view.router_ports() {
            for s in list {
                if let (Some(port), Ok(vlan)) = (live(s), VlanId::new(vlan)) {
                    t.routers.push(MulticastRouter {
                        port,
                        kind: "query".into(),
                        vlan: Some(vlan),
                        expires_seconds: Some(seconds(s)),
                    });
                }
            }
        }
        for (vlan, group, members) in view.groups() {
            let ports: Vec<MulticastMember> = members
                .iter()
                .filter_map(|s| {
                    live(s).map(|port| MulticastMember {
                        port,
                        expires_seconds: seconds(s),
                    })
                })
                .collect();
            if let (false, Ok(vlan)) = (ports.is_empty(), VlanId::new(vlan)) {
                t.groups.push(MulticastGroup { vlan, group, ports });
            }
        }
        t.groups.sort_by_key(|g| (g.vlan, g.group));
        t.routers
            .sort_by(|a, b| (a.vlan, &a.port).cmp(&(b.vlan, &b.port)));
        Ok(t)
    }

    /// Per switch: name, whether it snoops, its (VLAN, group) entries and
    /// its snooping counters (for /metrics).
    pub fn mcast_stats(&self) -> Vec<McastStats> {
        self.switches
            .values()
            .map(|e| {
                let groups = e.mcast.as_ref().map_or(0, |m| m.shared.table.load().len());
                (
                    e.sw.name.clone(),
                    e.sw.multicast_snooping,
                    groups,
                    e.mcast_counters.clone(),
                )
            })
            .collect()
    }

    /// Per switch: (name, ID the poll threads know it by, maxFdbEntries).
    pub fn switch_ids(&self) -> Vec<(String, u32, u32)> {
        self.switches
            .values()
            .map(|e| (e.sw.name.clone(), e.id, e.sw.max_fdb_entries))
            .collect()
    }

    pub fn fdb(&self, name: &str) -> Result<Vec<FdbEntry>, RegistryError> {
        let e = self
            .switches
            .get(name)
            .ok_or_else(|| RegistryError::NotFound(format!("no switch named {name:?}")))?;
        let rows = self
            .datapath
            .fdb(e.id, true)
            .ok_or_else(|| RegistryError::Datapath("the poll threads did not answer".into()))?
            .rows;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let port = self.slots.get(r.slot as usize).cloned().flatten()?;
                Some(FdbEntry {
                    vlan: VlanId::new(r.vlan).ok()?,
                    mac: r.mac,
                    port,
                    kind: if r.is_static { "static" } else { "learned" }.into(),
                    age_seconds: r.age_ns / 1_000_000_000,
                })
            })
            .collect())
    }

    // ---- ports ----

    fn view(&self, e: &PortEntry) -> VPort {
        let Some(slot) = e.slot else {
            // Recorded, never attached: no data path status, no counters.
            return VPort {
                status: Some(PortStatus {
                    reason: Some(not_attached_reason(&e.port.nic)),
                    ..PortStatus::detached()
                }),
                stats: None,
                ..e.port.clone()
            };
        };
        let status = match self.datapath.attachment(slot) {
            Some(a) => PortStatus {
                attached: true,
                ifindex: a.ifindex,
                xdp_mode: a.mode.as_str().into(),
                queues: a.queues,
                mtu: a.mtu,
                ..PortStatus::detached()
            },
            None => PortStatus::detached(),
        };
        VPort {
            status: Some(PortStatus {
                handover: self.handover(e),
                captures: e
                    .captures
                    .iter()
                    .flat_map(|c| c.iter())
                    .map(|t| podswitch_shared::model::CaptureInfo {
                        direction: t.direction.as_str().into(),
                        snaplen: t.snaplen,
                        count: t.count,
                        frames: t.frames(),
                        dropped: t.dropped(),
                    })
                    .collect(),
                ..status
            }),
            stats: Some({
                let mut st = e.counters.to_stats(&e.acl);
                let running = e.captures.iter().flat_map(|c| c.iter());
                st.capture_frames =
                    e.captures_done.0 + running.clone().map(|t| t.frames()).sum::<u64>();
                st.capture_dropped = e.captures_done.1 + running.map(|t| t.dropped()).sum::<u64>();
                let lost = self.datapath.no_socket_drops(slot);
                if lost > 0 {
                    st.drops
                        .insert(crate::pipeline::DropReason::NoSocket.as_str().into(), lost);
                }
                st
            }),
            ..e.port.clone()
        }
    }

    /// The port's part in a MAC handover: only while another port of its
    /// switch has the same MAC on the same VLAN; `active` if the switch's
    /// table sends the MAC to this port, else `standby`.
    fn handover(&self, e: &PortEntry) -> Option<Handover> {
        let slot = e.slot?;
        if !self.shared_mac_slots.contains(&slot) {
            return None;
        }
        let mac = e.port.mac?;
        let vlan = e.port.mode().untagged_vlan()?;
        let sw = self.switches.get(&e.port.switch)?;
        let table = self.datapath.fdb(sw.id, true)?;
        let here = table
            .rows
            .iter()
            .any(|r| r.vlan == vlan.get() && r.mac == mac && r.slot == slot);
        Some(if here {
            Handover::Active
        } else {
            Handover::Standby
        })
    }

    pub fn ports(&self) -> Vec<VPort> {
        self.ports.values().map(|e| self.view(e)).collect()
    }

    pub fn port(&self, id: &str) -> Result<VPort, RegistryError> {
        self.ports
            .get(id)
            .map(|e| self.view(e))
            .ok_or_else(|| RegistryError::NotFound(format!("no port with ID {id:?}")))
    }

    fn alloc_slot(&mut self, id: &str) -> Result<Slot, RegistryError> {
        if let Some(&want) = self.preferred_slots.get(id) {
            let want = want as usize;
            if want < crate::datapath::bpf::MAX_PORTS as usize {
                if self.slots.len() <= want {
                    self.slots.resize(want + 1, None);
                }
                if self.slots[want].is_none() {
                    self.slots[want] = Some(id.to_string());
                    return Ok(want as Slot);
                }
            }
        }
        let slot = match self.slots.iter().enumerate().position(|(i, s)| {
            s.is_none() && !self.preferred_slots.values().any(|p| *p as usize == i)
        }) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if slot >= crate::datapath::bpf::MAX_PORTS as usize {
            self.slots
                .truncate(crate::datapath::bpf::MAX_PORTS as usize);
            return Err(RegistryError::Conflict(format!(
                "switchd serves at most {} ports",
                crate::datapath::bpf::MAX_PORTS
            )));
        }
        self.slots[slot] = Some(id.to_string());
        Ok(slot as Slot)
    }

    fn new_port_id(&self) -> String {
        let mut b = [0u8; 6];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = std::io::Read::read_exact(&mut f, &mut b);
        }
        let mut id: String = b.iter().map(|x| format!("{x:02x}")).collect();
        while self.ports.contains_key(&id) {
            id.push('0');
        }
        id
    }

    /// First half of `create_port`, under the lock: an existing port for
    /// the same container ID + ifname, or the recorded (not yet attached)
    /// new port.
    pub(crate) fn begin_create(&mut self, mut cfg: PortConfig) -> Result<Begun, RegistryError> {
        normalize_nic(&mut cfg.nic);
        if let Some(o) = cfg.owner.as_ref().filter(|o| o.container_id.is_some()) {
            if let Some(e) = self.ports.values().find(|e| {
                e.port
                    .owner
                    .as_ref()
                    .is_some_and(|p| p.container_id == o.container_id && p.ifname == o.ifname)
            }) {
                if e.port.nic == cfg.nic
                    && e.port.switch
                        == cfg
                            .switch
                            .clone()
                            .unwrap_or_else(|| VSwitch::DEFAULT_NAME.into())
                {
                    return Ok(Begun::Exists(Box::new(self.view(e))));
                }
                return Err(RegistryError::Conflict(format!(
                    "container {:?} ifname {:?} already has port {} on NIC {}",
                    o.container_id.as_deref().unwrap_or(""),
                    o.ifname.as_deref().unwrap_or(""),
                    e.port.id,
                    e.port.nic.location()
                )));
            }
        }
        match self.add_port(cfg)? {
            Added::Pending(p) => Ok(Begun::Pending(Box::new(p))),
            Added::Recorded(id) => {
                if let Err(e) = self.persist() {
                    self.remove_port(&id);
                    return Err(e);
                }
                let v = self.port(&id)?;
                log::info!(
                    "recorded port {id} ({}): not attached, {}",
                    v.nic.location(),
                    not_attached_reason(&v.nic)
                );
                Ok(Begun::Recorded(Box::new(v)))
            }
        }
    }

    /// Validates and records the port. A port whose NIC switchd attaches
    /// is published (not attached yet) and `Pending`: `finish_port`
    /// completes it once the attach is done. One whose NIC it never
    /// attaches (a VF in legacy eswitch mode) is `Recorded`, complete but
    /// not saved.
    pub(crate) fn add_port(&mut self, mut cfg: PortConfig) -> Result<Added, RegistryError> {
        normalize_nic(&mut cfg.nic);
        let id = match cfg.id.clone() {
            Some(id) => {
                check_object_name("port ID", &id)?;
                id
            }
            None => self.new_port_id(),
        };
        if self.ports.contains_key(&id) {
            return Err(RegistryError::Conflict(format!(
                "port {id:?} already exists"
            )));
        }
        let switch = cfg
            .switch
            .clone()
            .unwrap_or_else(|| VSwitch::DEFAULT_NAME.into());
        if !self.switches.contains_key(&switch) {
            return Err(RegistryError::NotFound(format!(
                "no switch named {switch:?}"
            )));
        }
        cfg.nic.check()?;
        if let Some(e) = self
            .ports
            .values()
            .find(|e| e.port.nic.same_device(&cfg.nic))
        {
            let how = if e.port.nic.attaches() {
                "already attached as"
            } else {
                "already recorded as"
            };
            return Err(RegistryError::Conflict(format!(
                "NIC {} is {how} port {}",
                e.port.nic.location(),
                e.port.id
            )));
        }
        validate::check_trunk(cfg.trunk.as_deref())?;
        if cfg.nic.kind == NicKind::Uplink && cfg.trunk.is_none() && cfg.vlan.is_none() {
            log::info!(
                "uplink {} has neither trunk nor vlan: it carries VLAN 1 untagged",
                cfg.nic.ifname
            );
        }
        let nic = cfg.nic.clone();
        let link_state = cfg.link_state.unwrap_or_default();
        let mut port = VPort::from_config(id.clone(), switch, cfg);
        port.qos = port.qos.filter(|q| !q.is_empty());
        validate::check_policy(&port)?;
        validate::check_pvlan(&port)?;
        validate::check_overlay(&port)?;
        let vlans = Box::new(port.mode());
        validate::check_pvlan_fit(
            &port,
            self.ports
                .values()
                .map(|e| &e.port)
                .filter(|o| o.switch == port.switch),
        )?;
        if !nic.attaches() {
            validate::check_legacy_vf(&port)?;
        }
        let slot = if nic.attaches() {
            Some(self.alloc_slot(&id)?)
        } else {
            None
        };
        let acl = Arc::new(Acl::new(port.acls.clone(), port.acl_default));
        let flush_gen = self.flush_gen();
        self.ports.insert(
            id.clone(),
            PortEntry {
                port,
                slot,
                counters: Arc::new(PortCounters::new(self.datapath.config().threads())),
                acl,
                flush_gen,
                captures: None,
                captures_done: (0, 0),
            },
        );
        let Some(slot) = slot else {
            return Ok(Added::Recorded(id));
        };
        self.publish();
        Ok(Added::Pending(Pending {
            id,
            slot,
            nic,
            link_up: link_state == LinkState::Up,
            vlans,
        }))
    }

    /// Second half of `create_port`, under the lock again: saves the port
    /// whose NIC the reconciler attached and brought up, or (that failed)
    /// forgets it. When `restoring`, a failure keeps the port (detached)
    /// for `reconcile` to retry: a restart loses no port.
    pub(crate) fn finish_port(
        &mut self,
        p: Pending,
        attached: Result<crate::datapath::Attachment, RegistryError>,
        restoring: bool,
    ) -> Result<String, RegistryError> {
        if self.ports.get(&p.id).and_then(|e| e.slot) != Some(p.slot) {
            // Deleted while it was attaching; the delete's detach, sent
            // after our attach, undoes it.
            return Err(RegistryError::NotFound(format!(
                "port {} was deleted while it was being attached",
                p.id
            )));
        }
        if attached.is_ok() {
            // Now the poll threads serving it are known (PortView::served).
            self.publish();
        }
        if restoring {
            if let Err(e) = attached {
                log::warn!("port {}: {e}; will retry", p.id);
            }
            return Ok(p.id);
        }
        if let Err(e) = attached.and_then(|_| self.persist()) {
            self.remove_port(&p.id);
            // Under our lock, so the slot cannot be someone else's yet.
            let _ = self.datapath.detach(p.slot);
            return Err(e);
        }
        Ok(p.id)
    }

    /// Retries attaching ports that are not attached but whose NIC exists
    /// (a restart racing the old process, a NIC that came back). Ports whose
    /// NIC is gone stay recorded until deleted (the CNI's DEL or GC).
    pub(crate) fn unattached(&self) -> (Arc<dyn Dataplane>, Vec<Pending>) {
        let todo = self
            .ports
            .values()
            .filter_map(|e| Some((e, e.slot?)))
            .filter(|(_, slot)| self.datapath.attachment(*slot).is_none())
            .map(|(e, slot)| Pending {
                id: e.port.id.clone(),
                slot,
                nic: e.port.nic.clone(),
                link_up: e.port.link_state == LinkState::Up,
                vlans: Box::new(e.port.mode()),
            })
            .collect();
        (self.datapath.clone(), todo)
    }

    /// Ports the data path is to serve but does not right now (a port
    /// switchd never attaches is not one: nothing is missing).
    pub fn detached_ports(&self) -> usize {
        self.ports
            .values()
            .filter_map(|e| e.slot)
            .filter(|slot| self.datapath.attachment(*slot).is_none())
            .count()
    }

    /// Ports the data path is to serve (all but those switchd only records).
    pub fn datapath_ports(&self) -> usize {
        self.ports.values().filter(|e| e.slot.is_some()).count()
    }

    fn remove_port(&mut self, id: &str) -> Option<PortEntry> {
        let e = self.ports.remove(id)?;
        // Its live captures end (their streams drain and close).
        for t in e.captures.iter().flat_map(|c| c.iter()) {
            t.close();
        }
        if let Some(slot) = e.slot {
            self.slots[slot as usize] = None;
        }
        // The slot leaves the snapshot: the poll threads forget its MACs.
        self.publish();
        Some(e)
    }

    /// Forgets a port and saves; returns its slot (for the reconciler to
    /// detach), if it had one.
    pub fn delete_port(&mut self, id: &str) -> Result<Option<Slot>, RegistryError> {
        let e = self
            .remove_port(id)
            .ok_or_else(|| RegistryError::NotFound(format!("no port with ID {id:?}")))?;
        log::info!("deleted port {id} ({})", e.port.nic.location());
        self.persist()?;
        Ok(e.slot)
    }

    /// Forgets a port that never got attached (its NIC is gone); returns
    /// whether it was there.
    pub(crate) fn forget_port(&mut self, id: &str) -> bool {
        self.remove_port(id).is_some()
    }

    /// The port ID a slot belongs to, if any.
    pub(crate) fn slot_owner(&self, slot: Slot) -> Option<String> {
        self.slots.get(slot as usize).cloned().flatten()
    }

    /// Publishes again (an attach changed which poll threads serve a port).
    pub fn republish(&mut self) {
        self.publish();
    }

    /// The data path this registry publishes to.
    pub fn datapath(&self) -> Arc<dyn Dataplane> {
        self.datapath.clone()
    }

    /// Starts a live capture of port `id`: a new tap on the port's view,
    /// which the poll threads serving it fill from their next round.
    pub fn start_capture(
        &mut self,
        id: &str,
        r: &crate::wire::pcap::CaptureRequest,
    ) -> Result<Arc<CaptureTap>, RegistryError> {
        let e = self
            .ports
            .get_mut(id)
            .ok_or_else(|| RegistryError::NotFound(format!("no port with ID {id:?}")))?;
        if e.slot.is_none() {
            return Err(RegistryError::Conflict(format!(
                "port {id} is never attached ({}): switchd sees none of its frames",
                e.port.nic.location()
            )));
        }
        let running: &[Arc<CaptureTap>] = e.captures.as_deref().unwrap_or(&[]);
        if running.len() >= MAX_CAPTURES {
            return Err(RegistryError::Conflict(format!(
                "port {id} already has {MAX_CAPTURES} live captures running (the most one \
                 port takes); end one first"
            )));
        }
        let tap = Arc::new(CaptureTap::new(r));
        let all: Vec<Arc<CaptureTap>> = running.iter().chain([&tap]).cloned().collect();
        e.captures = Some(all.into());
        self.publish();
        Ok(tap)
    }

    /// Ends a live capture (its count is reached or its reader went
    /// away): the tap leaves the port's view, its figures are kept.
    pub fn stop_capture(&mut self, id: &str, tap: &Arc<CaptureTap>) {
        tap.close();
        let Some(e) = self.ports.get_mut(id) else {
            return;
        };
        let Some(running) = e.captures.as_deref() else {
            return;
        };
        if !running.iter().any(|t| Arc::ptr_eq(t, tap)) {
            return;
        }
        let rest: Vec<Arc<CaptureTap>> = running
            .iter()
            .filter(|t| !Arc::ptr_eq(t, tap))
            .cloned()
            .collect();
        e.captures = (!rest.is_empty()).then(|| rest.into());
        e.captures_done.0 += tap.frames();
        e.captures_done.1 += tap.dropped();
        self.publish();
    }

    /// Validates a PATCH: the port it would make, and the port as it is.
    pub fn plan_update(&self, id: &str, u: PortUpdate) -> Result<(VPort, VPort), RegistryError> {
        let e = self
            .ports
            .get(id)
            .ok_or_else(|| RegistryError::NotFound(format!("no port with ID {id:?}")))?;
        if !e.port.nic.attaches() {
            return Err(RegistryError::Conflict(format!(
                "port {id} is an SR-IOV VF in legacy eswitch mode ({}): the CNI plugin set \
                 its MAC, VLAN, spoof check, link state and rate on the PF when it was added, \
                 and switchd cannot change them live; delete the attachment and add it again",
                e.port.nic.location()
            )));
        }
        let mut p = e.port.clone();
        p.apply(u);
        p.qos = p.qos.filter(|q| !q.is_empty());
        validate::check_trunk(p.trunk.as_deref())?;
        validate::check_policy(&p)?;
        validate::check_pvlan(&p)?;
        validate::check_overlay(&p)?;
        validate::check_pvlan_fit(
            &p,
            self.ports
                .values()
                .map(|o| &o.port)
                .filter(|o| o.switch == p.switch && o.id != id),
        )?;
        Ok((p, e.port.clone()))
    }

    /// Records a planned PATCH (the reconciler applied its netdev part):
    /// the poll threads get it as a typed change to this one port.
    pub fn commit_update(
        &mut self,
        id: &str,
        p: VPort,
        old: &VPort,
    ) -> Result<VPort, RegistryError> {
        let flush = p.mode() != old.mode() || p.link_state == LinkState::Down || p.mac != old.mac;
        let gen = if flush { Some(self.flush_gen()) } else { None };
        if let Some(e) = self.ports.get_mut(id) {
            if p.acls != e.port.acls || p.acl_default != e.port.acl_default {
                e.acl = Arc::new(Acl::new(p.acls.clone(), p.acl_default));
            }
            if let Some(g) = gen {
                // The poll threads forget the MACs learned behind it.
                e.flush_gen = g;
            }
            e.port = p;
        }
        self.publish();
        if let Err(err) = self.persist() {
            log::error!("port {id} changed live but not saved: {err}");
            return Err(err);
        }
        self.port(id)
    }

    /// Applies a PATCH that has no netdev part (a declared port's update
    /// at start goes through the reconciler instead).
    #[cfg(test)]
    pub fn update_port(&mut self, id: &str, u: PortUpdate) -> Result<VPort, RegistryError> {
        let (p, old) = self.plan_update(id, u)?;
        self.commit_update(id, p, &old)
    }
}

/// What `begin_create` found or made.
pub(crate) enum Begun {
    Exists(Box<VPort>),
    Pending(Box<Pending>),
    /// Created and saved, nothing to attach (see `Nic::attaches`).
    Recorded(Box<VPort>),
}

/// What `add_port` made.
pub(crate) enum Added {
    /// Recorded and published; its NIC is to be attached.
    Pending(Pending),
    /// Recorded (not saved yet) and complete: switchd never attaches it.
    Recorded(String),
}

/// A switch's multicast snooping for /metrics: name, whether it snoops,
/// its (VLAN, group) entries, its counters.
pub type McastStats = (String, bool, usize, Arc<McastCounters>);

/// `sw` with the settings `u` gives.
fn updated(sw: &VSwitch, u: &SwitchUpdate) -> VSwitch {
    VSwitch {
        aging_seconds: u.aging_seconds.unwrap_or(sw.aging_seconds),
        max_fdb_entries: u.max_fdb_entries.unwrap_or(sw.max_fdb_entries),
        multicast_snooping: u.multicast_snooping.unwrap_or(sw.multicast_snooping),
        multicast_flood_unknown: u
            .multicast_flood_unknown
            .unwrap_or(sw.multicast_flood_unknown),
        multicast_membership_seconds: u
            .multicast_membership_seconds
            .unwrap_or(sw.multicast_membership_seconds),
        ..sw.clone()
    }
}

/// The PCI address in the kernel's lower case, so that one VF is one
/// port whatever case the client wrote.
fn normalize_nic(nic: &mut Nic) {
    if let Some(v) = nic.vxlan.take() {
        nic.vxlan = Some(v.without_self());
    }
    if let Some(a) = &mut nic.pci_address {
        a.make_ascii_lowercase();
    }
}

/// Why a port whose NIC switchd never attaches is not attached.
fn not_attached_reason(nic: &Nic) -> String {
    format!(
        "{}: the NIC's own switch forwards its frames and the PF enforces the port's MAC, \
         VLAN, spoof check, link state and transmit rate; switchd does not forward it",
        nic.location()
    )
}

/// A port recorded and published whose NIC is being attached.
pub(crate) struct Pending {
    pub id: String,
    pub slot: Slot,
    pub nic: Nic,
    pub link_up: bool,
    /// The port's VLANs (an overlay port maps them to VNIs).
    pub vlans: Box<VlanMode>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::fake::FakeDataplane;
    use podswitch_shared::model::{EswitchMode, Nic, Owner, Qos, TrunkRange};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("psw-registry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn cfg(ifname: &str, vlan: u16) -> PortConfig {
        PortConfig {
            vlan: Some(VlanId::new(vlan).unwrap()),
            ..PortConfig::on(Nic::new(NicKind::Veth, ifname))
        }
    }

    /// What the reconciler does around an attach, minus the netdev part.
    fn create(r: &mut Registry, c: PortConfig) -> Result<String, RegistryError> {
        match r.begin_create(c)? {
            Begun::Exists(v) | Begun::Recorded(v) => Ok(v.id),
            Begun::Pending(p) => {
                let a = r
                    .datapath()
                    .attach(p.slot, &p.nic)
                    .map_err(|e| RegistryError::Datapath(e.to_string()));
                r.finish_port(*p, a, false)
            }
        }
    }

    fn registry(name: &str) -> (Registry, Arc<FakeDataplane>, PathBuf) {
        let fake = Arc::new(FakeDataplane::default());
        let d = dir(name);
        (Registry::new(&d, fake.clone(), 300), fake, d)
    }

    #[test]
    fn a_port_is_recorded_published_and_saved() {
        let (mut r, fake, d) = registry("create");
        let id = create(&mut r, cfg("pswa", 100)).unwrap();
        let snap = fake.last();
        let pv = snap.ports[0].as_ref().unwrap();
        assert_eq!((pv.id.as_str(), pv.served, pv.home), (id.as_str(), 1, 0));
        assert_eq!(snap.switches[0].ports, vec![0]);
        assert!(r.port(&id).unwrap().status.unwrap().attached);
        let saved = std::fs::read_to_string(d.join("state.json")).unwrap();
        assert!(saved.contains("pswa"));
        // A second registry on the same directory finds it.
        let fake2 = Arc::new(FakeDataplane::default());
        let mut r2 = Registry::new(&d, fake2, 300);
        let ports = r2.load().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].to_config().nic.ifname, "pswa");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_successor_gives_restored_ports_the_slots_handed_over() {
        let (mut r, _fake, d) = registry("slots");
        let a = create(&mut r, cfg("pswa", 100)).unwrap();
        let b = create(&mut r, cfg("pswb", 100)).unwrap();
        let c = create(&mut r, cfg("pswc", 100)).unwrap();
        r.delete_port(&a).unwrap();
        let slots = r.port_slots();
        assert_eq!((slots[&b], slots[&c]), (1, 2));
        // Stored in ID order, which need not be slot order: the successor
        // still gives each its slot, and a new port takes a free one.
        let mut r2 = Registry::new(&d, Arc::new(FakeDataplane::default()), 300);
        r2.prefer_slots(slots.clone());
        for p in r2.load().unwrap().into_iter().rev() {
            match r2.add_port(p.to_config()).unwrap() {
                Added::Pending(p) => assert_eq!(Some(&p.slot), slots.get(&p.id)),
                Added::Recorded(id) => panic!("{id} was only recorded"),
            }
        }
        r2.prefer_slots(Default::default());
        let n = create(&mut r2, cfg("pswn", 100)).unwrap();
        assert_eq!(r2.port_slots()[&n], 0);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_patch_is_a_typed_change_to_one_port() {
        let (mut r, fake, d) = registry("patch");
        let a = create(&mut r, cfg("pswa", 100)).unwrap();
        create(&mut r, cfg("pswb", 100)).unwrap();
        let before = fake.last();
        let u = PortUpdate {
            qos: Some(Some(Qos {
                egress_rate: Some(50_000_000),
                ..Qos::default()
            })),
            ..PortUpdate::default()
        };
        let (p, old) = r.plan_update(&a, u).unwrap();
        r.commit_update(&a, p, &old).unwrap();
        let after = fake.last();
        assert_eq!(after.generation, before.generation + 1);
        assert_eq!(
            after.changed.as_deref(),
            Some(&[0][..]),
            "only port a changed"
        );
        let (fa, fb) = (
            before.ports[0].as_ref().unwrap().flush_gen,
            after.ports[0].as_ref().unwrap().flush_gen,
        );
        assert_eq!(fa, fb, "a QoS change keeps the port's learned MACs");
        // A VLAN change forgets them.
        let u = PortUpdate {
            vlan: Some(Some(VlanId::new(200).unwrap())),
            ..PortUpdate::default()
        };
        r.update_port(&a, u).unwrap();
        assert_ne!(fake.last().ports[0].as_ref().unwrap().flush_gen, fb);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn snooping_is_set_live_listed_and_emptied_when_off() {
        use crate::pipeline::mcast::{Event, Snooped, ToSnooper};
        let (mut r, fake, d) = registry("mcast");
        let sw = r
            .create_switch(SwitchConfig {
                name: "mc".into(),
                aging_seconds: None,
                max_fdb_entries: None,
                multicast_snooping: Some(true),
                multicast_flood_unknown: None,
                multicast_membership_seconds: Some(30),
            })
            .unwrap();
        assert!(sw.multicast_snooping && sw.multicast_flood_unknown);
        let a = create(
            &mut r,
            PortConfig {
                switch: Some("mc".into()),
                ..cfg("pswa", 100)
            },
        )
        .unwrap();
        let up = create(
            &mut r,
            PortConfig {
                switch: Some("mc".into()),
                trunk: Some(vec![TrunkRange::Single(VlanId::new(100).unwrap())]),
                ..PortConfig::on(Nic::new(NicKind::Uplink, "eth1"))
            },
        )
        .unwrap();
        let snap = fake.last();
        let view = snap.switches.iter().find(|s| s.name == "mc").unwrap();
        let m = view.mcast.as_ref().expect("snooping is published");
        assert_eq!(m.uplinks, vec![1]);
        assert!(snap
            .switches
            .iter()
            .find(|s| s.name == "default")
            .unwrap()
            .mcast
            .is_none());
        // A poll thread's event reaches the snooper, and the API lists it.
        let g: std::net::IpAddr = "239.1.2.3".parse().unwrap();
        let gen = snap.ports[0].as_ref().unwrap().flush_gen;
        m.events
            .try_send(ToSnooper::Snooped(Snooped {
                switch: view.id,
                epoch: m.epoch,
                vlan: 100,
                slot: 0,
                gen,
                event: Event::Join(g),
            }))
            .unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while r.mdb("mc").unwrap().groups.is_empty() && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let t = r.mdb("mc").unwrap();
        assert_eq!(t.groups.len(), 1, "{t:?}");
        assert_eq!(
            (t.groups[0].group, t.groups[0].ports[0].port.as_str()),
            (g, a.as_str())
        );
        assert!((29..=30).contains(&t.groups[0].ports[0].expires_seconds));
        assert_eq!(
            (t.routers[0].port.as_str(), t.routers[0].kind.as_str()),
            (up.as_str(), "uplink")
        );
        let stats = r.mcast_stats();
        let (_, on, groups, c) = stats.iter().find(|s| s.0 == "mc").unwrap();
        assert!(*on && *groups == 1);
        assert_eq!(c.reports.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Bad values are refused and change nothing.
        let bad = SwitchUpdate {
            multicast_membership_seconds: Some(0),
            multicast_snooping: Some(false),
            ..SwitchUpdate::default()
        };
        assert!(matches!(
            r.update_switch("mc", bad),
            Err(RegistryError::Invalid(_))
        ));
        assert!(matches!(
            r.update_switch("nope", SwitchUpdate::default()),
            Err(RegistryError::NotFound(_))
        ));
        assert!(r.mdb("mc").unwrap().snooping);
        // Off: the table is empty at once and the data path floods.
        let off = SwitchUpdate {
            multicast_snooping: Some(false),
            ..SwitchUpdate::default()
        };
        assert!(!r.update_switch("mc", off).unwrap().multicast_snooping);
        let t = r.mdb("mc").unwrap();
        assert!(!t.snooping && t.groups.is_empty() && t.routers.is_empty());
        let snap = fake.last();
        assert!(snap.switches.iter().all(|s| s.mcast.is_none()));
        // On again, with other settings: a fresh, empty table; saved.
        let on = SwitchUpdate {
            multicast_snooping: Some(true),
            multicast_flood_unknown: Some(false),
            aging_seconds: Some(60),
            ..SwitchUpdate::default()
        };
        let sw = r.update_switch("mc", on).unwrap();
        assert!(sw.multicast_snooping && !sw.multicast_flood_unknown && sw.aging_seconds == 60);
        assert!(r.mdb("mc").unwrap().groups.is_empty());
        let snap = fake.last();
        let m = snap.switches.iter().find_map(|s| s.mcast.as_ref()).unwrap();
        assert!(!m.flood_unknown);
        let mut r2 = Registry::new(&d, Arc::new(FakeDataplane::default()), 300);
        r2.load().unwrap();
        let sw = r2.switches().into_iter().find(|s| s.name == "mc").unwrap();
        assert!(sw.multicast_snooping && sw.multicast_membership_seconds == 30);
        assert!(r2.mdb("mc").unwrap().snooping);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn mirroring_and_captures_are_published_live() {
        use crate::wire::pcap::{CaptureRequest, Direction};
        let (mut r, fake, d) = registry("mirror");
        let a = create(&mut r, cfg("pswa", 100)).unwrap();
        let b = create(&mut r, cfg("pswb", 200)).unwrap();
        let u = |m| PortUpdate {
            port_mirroring: Some(m),
            ..PortUpdate::default()
        };
        r.update_port(&a, u(PortMirroring::Source)).unwrap();
        r.update_port(&b, u(PortMirroring::Destination)).unwrap();
        let snap = fake.last();
        assert_eq!(snap.switches[0].mirror_dests, vec![1]);
        let pa = snap.ports[0].as_ref().unwrap();
        assert_eq!(pa.mirroring, PortMirroring::Source);
        assert!(pa.captures.is_none(), "nobody captures: nothing to look at");
        // A capture is a typed change to its port only, and keeps its MACs.
        let req = CaptureRequest {
            direction: Direction::In,
            count: Some(3),
            snaplen: 64,
        };
        let t1 = r.start_capture(&a, &req).unwrap();
        let t2 = r.start_capture(&a, &CaptureRequest::default()).unwrap();
        let snap2 = fake.last();
        assert_eq!(snap2.changed.as_deref(), Some(&[0][..]));
        let taps = snap2.ports[0].as_ref().unwrap().captures.clone().unwrap();
        assert!(Arc::ptr_eq(&taps[0], &t1) && Arc::ptr_eq(&taps[1], &t2));
        assert_eq!(snap2.ports[0].as_ref().unwrap().flush_gen, pa.flush_gen);
        let st = r.port(&a).unwrap().status.unwrap();
        assert_eq!(st.captures.len(), 2);
        assert_eq!(
            (st.captures[0].direction.as_str(), st.captures[0].count),
            ("in", Some(3))
        );
        for _ in 2..MAX_CAPTURES {
            r.start_capture(&a, &req).unwrap();
        }
        let e = r.start_capture(&a, &req).unwrap_err();
        assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
        assert!(matches!(
            r.start_capture("nosuch", &req),
            Err(RegistryError::NotFound(_))
        ));
        // Ending one unpublishes it and keeps its figures.
        t1.offer(
            crate::wire::pcap::Dir::In,
            1,
            60,
            std::iter::once(&[0u8; 60][..]),
        );
        r.stop_capture(&a, &t1);
        r.stop_capture(&a, &t1); // twice: no harm
        assert!(t1.is_closed());
        let left = fake.last().ports[0]
            .as_ref()
            .unwrap()
            .captures
            .clone()
            .unwrap();
        assert_eq!(left.len(), MAX_CAPTURES - 1);
        assert!(!left.iter().any(|t| Arc::ptr_eq(t, &t1)));
        assert_eq!(r.port(&a).unwrap().stats.unwrap().capture_frames, 1);
        // Deleting the port ends the rest.
        r.delete_port(&a).unwrap();
        assert!(t2.is_closed());
        // Off again: no destination left.
        r.update_port(&b, u(PortMirroring::None)).unwrap();
        assert!(fake.last().switches[0].mirror_dests.is_empty());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_reused_slot_starts_with_no_learned_macs() {
        let (mut r, fake, d) = registry("reuse");
        let a = create(&mut r, cfg("pswa", 100)).unwrap();
        let old = fake.last().ports[0].as_ref().unwrap().flush_gen;
        assert_eq!(r.delete_port(&a).unwrap(), Some(0));
        assert!(fake.last().ports[0].is_none());
        create(&mut r, cfg("pswc", 100)).unwrap();
        let snap = fake.last();
        let now = snap.ports[0].as_ref().unwrap();
        assert_eq!(now.slot, 0, "the slot is reused");
        assert_ne!(now.flush_gen, old, "so the poll threads flush it");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn bad_ports_are_refused_and_leave_nothing() {
        let (mut r, fake, d) = registry("bad");
        let mut c = cfg("pswa", 100);
        c.trunk = Some(Vec::<TrunkRange>::new());
        assert!(matches!(create(&mut r, c), Err(RegistryError::Invalid(_))));
        let mut c = cfg("pswa", 100);
        c.mac_spoof_check = Some(true);
        assert!(matches!(create(&mut r, c), Err(RegistryError::Invalid(_))));
        create(&mut r, cfg("pswa", 100)).unwrap();
        assert!(matches!(
            create(&mut r, cfg("pswa", 200)),
            Err(RegistryError::Conflict(_))
        ));
        assert_eq!(r.ports().len(), 1);
        assert_eq!(fake.last().ports.iter().flatten().count(), 1);
        let _ = std::fs::remove_dir_all(d);
    }

    fn pv(ifname: &str, spec: &str) -> PortConfig {
        PortConfig {
            pvlan: Some(spec.parse().unwrap()),
            ..PortConfig::on(Nic::new(NicKind::Veth, ifname))
        }
    }

    fn invalid(r: Result<impl std::fmt::Debug, RegistryError>, why: &str) {
        match r {
            Err(RegistryError::Invalid(m)) => assert!(m.contains(why), "{m:?} lacks {why:?}"),
            other => panic!("want 400 with {why:?}, got {other:?}"),
        }
    }

    #[test]
    fn private_vlans_keep_one_primary_and_type_per_secondary() {
        let (mut r, fake, d) = registry("pvlan");
        let iso = create(&mut r, pv("pswi", "isolated:100:101")).unwrap();
        create(&mut r, pv("pswc", "community:100:102")).unwrap();
        create(&mut r, pv("pswp", "promiscuous:100:101,102")).unwrap();
        create(&mut r, pv("pswi2", "isolated:100:101")).unwrap();
        // Secondaries share the primary's filtering database.
        let snap = fake.last();
        let f = &snap.switches[0].fids;
        assert_eq!(
            (f.of(101), f.of(102), f.of(100), f.of(7)),
            (100, 100, 100, 7)
        );
        // A secondary with another primary or another type; a primary
        // that is someone's secondary; an ordinary port on a private VLAN.
        invalid(
            create(&mut r, pv("pswx", "community:100:101")),
            "isolated secondary",
        );
        invalid(
            create(&mut r, pv("pswx", "isolated:200:102")),
            "primary 100",
        );
        invalid(create(&mut r, pv("pswx", "isolated:101:300")), "primary");
        invalid(
            create(&mut r, pv("pswx", "promiscuous:200:100")),
            "primary VLAN",
        );
        invalid(create(&mut r, cfg("pswx", 101)), "ordinary port");
        invalid(create(&mut r, cfg("pswx", 100)), "ordinary port");
        let mut c = pv("pswx", "isolated:100:101");
        c.vlan = Some(VlanId::new(5).unwrap());
        invalid(create(&mut r, c), "excludes vlan and trunk");
        let mut c = pv("pswx", "isolated:100:101");
        c.nic = Nic::new(NicKind::Uplink, "pswx");
        invalid(create(&mut r, c), "trunk");
        // A trunk (the uplink) carries them tagged; another primary's
        // secondaries are its own business.
        let mut up = PortConfig::on(Nic::new(NicKind::Uplink, "pswu"));
        up.trunk = Some(vec![TrunkRange::Range(
            VlanId::new(100).unwrap(),
            VlanId::new(102).unwrap(),
        )]);
        create(&mut r, up).unwrap();
        create(&mut r, pv("pswy", "community:200:201")).unwrap();
        // Another switch has its own private VLANs.
        r.create_switch(SwitchConfig {
            name: "other".into(),
            aging_seconds: None,
            max_fdb_entries: None,
            multicast_snooping: None,
            multicast_flood_unknown: None,
            multicast_membership_seconds: None,
        })
        .unwrap();
        let mut c = pv("pswz", "community:100:101");
        c.switch = Some("other".into());
        create(&mut r, c).unwrap();
        assert_eq!(r.ports().len(), 7);

        // PATCH: checked against the others; live; forgets learned MACs.
        let before = fake.last().ports[0].as_ref().unwrap().flush_gen;
        let to = |s: &str| PortUpdate {
            pvlan: Some(Some(s.parse().unwrap())),
            ..PortUpdate::default()
        };
        invalid(r.update_port(&iso, to("community:100:101")), "isolated");
        // The only isolated port of 101 left would be pswi2: still isolated.
        let p = r.update_port(&iso, to("community:100:102")).unwrap();
        assert_eq!(p.pvlan.unwrap().to_string(), "community:100:102");
        assert_ne!(fake.last().ports[0].as_ref().unwrap().flush_gen, before);
        let u = PortUpdate {
            vlan: Some(Some(VlanId::new(5).unwrap())),
            ..PortUpdate::default()
        };
        invalid(r.update_port(&iso, u), "excludes vlan");
        let u = PortUpdate {
            vlan: Some(Some(VlanId::new(5).unwrap())),
            pvlan: Some(None),
            ..PortUpdate::default()
        };
        let p = r.update_port(&iso, u).unwrap();
        assert!(p.pvlan.is_none() && p.vlan.map(VlanId::get) == Some(5));
        let _ = std::fs::remove_dir_all(d);
    }

    fn legacy_vf(pci: &str) -> PortConfig {
        PortConfig {
            mac: Some("02:00:00:00:00:05".parse().unwrap()),
            vlan: Some(VlanId::new(100).unwrap()),
            owner: Some(Owner {
                container_id: Some("c1".into()),
                ifname: Some("net1".into()),
                ..Owner::default()
            }),
            ..PortConfig::on(Nic {
                pci_address: Some(pci.into()),
                eswitch_mode: Some(EswitchMode::Legacy),
                ..Nic::new(NicKind::Vfio, "")
            })
        }
    }

    #[test]
    fn a_legacy_vf_port_is_recorded_and_kept_out_of_the_data_path() {
        let (mut r, fake, d) = registry("legacy");
        let veth = create(&mut r, cfg("pswa", 100)).unwrap();
        let id = match r.begin_create(legacy_vf("0000:18:02.3")).unwrap() {
            Begun::Recorded(v) => v.id,
            _ => panic!("a legacy VF's port has nothing to attach"),
        };
        // Not in the snapshot: no slot, no static FDB entry for its MAC,
        // no flood copy.
        let snap = fake.last();
        assert_eq!(snap.ports.iter().flatten().count(), 1);
        assert_eq!(snap.switches[0].ports, vec![0]);
        assert!(snap.switches[0]
            .statics
            .iter()
            .all(|(_, m, _)| m.to_string() != "02:00:00:00:00:05"));
        let v = r.port(&id).unwrap();
        let st = v.status.clone().unwrap();
        assert!(!st.attached);
        assert!(
            st.reason.as_deref().unwrap().starts_with(
                "VF 0000:18:02.3 (legacy eswitch): the NIC's own switch forwards its frames"
            ),
            "{st:?}"
        );
        assert!(v.stats.is_none(), "switchd counts none of its frames");
        // Nothing to retry, nothing missing for readiness.
        assert_eq!(r.detached_ports(), 0);
        assert!(r.unattached().1.is_empty());
        let info = r.datapath_info();
        assert_eq!((info.ports, info.attached_ports), (1, 1));
        // The same container's ADD again gets it back; another port on the
        // VF (any case) is a conflict.
        let again = r.begin_create(legacy_vf("0000:18:02.3")).unwrap();
        assert!(matches!(again, Begun::Exists(v) if v.id == id));
        let mut other = legacy_vf("0000:18:02.3");
        other.owner = None;
        other.nic.pci_address = Some("0000:18:02.3".to_uppercase());
        let e = create(&mut r, other).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("NIC VF 0000:18:02.3 (legacy eswitch) is already recorded as port {id}")
        );
        // Its settings live on the PF: no live change.
        let e = r
            .plan_update(
                &id,
                PortUpdate {
                    vlan: Some(None),
                    ..PortUpdate::default()
                },
            )
            .err()
            .unwrap();
        assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
        // Saved, and recorded again from the state directory.
        let saved = std::fs::read_to_string(d.join("state.json")).unwrap();
        assert!(saved.contains("\"eswitchMode\": \"legacy\""), "{saved}");
        let fake2 = Arc::new(FakeDataplane::default());
        let mut r2 = Registry::new(&d, fake2.clone(), 300);
        for p in r2.load().unwrap() {
            if let Added::Pending(p) = r2.add_port(p.to_config()).unwrap() {
                assert_eq!(p.id, veth);
            }
        }
        assert_eq!(r2.ports().len(), 2);
        assert_eq!(r2.detached_ports(), 1, "only the veth waits for its attach");
        assert_eq!(r2.delete_port(&id).unwrap(), None, "no slot to detach");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn vfio_nics_are_validated() {
        let (mut r, _fake, d) = registry("vfio-bad");
        let bad = |nic: Nic| {
            let mut c = legacy_vf("0000:18:02.3");
            c.nic = nic;
            c
        };
        let legacy = |pci: Option<&str>, ifname: &str| Nic {
            pci_address: pci.map(String::from),
            eswitch_mode: Some(EswitchMode::Legacy),
            ..Nic::new(NicKind::Vfio, ifname)
        };
        for (c, words) in [
            (
                bad(legacy(Some("18:02.3"), "")),
                "nic.pciAddress \"18:02.3\" is not a PCI address",
            ),
            (bad(legacy(None, "")), "needs nic.pciAddress"),
            (
                bad(legacy(Some("0000:18:02.3"), "ens1f0_3")),
                "leave nic.ifname out",
            ),
            (
                bad(Nic {
                    pci_address: Some("0000:18:02.3".into()),
                    ..Nic::new(NicKind::Veth, "pswa")
                }),
                "nic.pciAddress is for vfio NICs only",
            ),
            (
                bad(Nic::new(NicKind::Vfio, "")),
                "nic.ifname is required for kind vfio (the VF's representor",
            ),
            (
                PortConfig {
                    trunk: Some(vec![TrunkRange::Single(VlanId::new(5).unwrap())]),
                    storm_limit: Some(10),
                    ..legacy_vf("0000:18:02.3")
                },
                "cannot have a trunk, stormLimit",
            ),
        ] {
            let e = create(&mut r, c).unwrap_err();
            assert!(matches!(e, RegistryError::Invalid(_)), "{e}");
            assert!(e.to_string().contains(words), "{words}: {e}");
        }
        assert!(r.ports().is_empty());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_switchdev_vf_port_attaches_its_representor() {
        let (mut r, fake, d) = registry("switchdev");
        let c = PortConfig {
            vlan: Some(VlanId::new(100).unwrap()),
            ..PortConfig::on(Nic {
                pci_address: Some("0000:18:02.0".into()),
                eswitch_mode: Some(EswitchMode::Switchdev),
                ..Nic::new(NicKind::Vfio, "ens1f0_0")
            })
        };
        let id = create(&mut r, c).unwrap();
        assert!(r.port(&id).unwrap().status.unwrap().attached);
        assert_eq!(fake.last().ports.iter().flatten().count(), 1);
        // The representor is one NIC, whatever the PCI address says.
        let e = create(&mut r, cfg("ens1f0_0", 5)).unwrap_err();
        assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
        assert_eq!(r.delete_port(&id).unwrap(), Some(0));
        let _ = std::fs::remove_dir_all(d);
    }
}
