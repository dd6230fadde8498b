//! The switch state: owns the VSwitches and VPorts, validates every change,
//! applies it to netdevs and the data path, persists it in the state
//! directory (write, fsync, rename) and publishes the snapshot the poll
//! threads read. Only the control plane calls into it, under one lock;
//! attaching a NIC (which waits for the kernel) happens between two short
//! holds of that lock (`create_port`), never under it.

use crate::datapath::{netdev, Datapath};
use crate::pipeline::acl::Acl;
use crate::pipeline::fdb::Slot;
use crate::pipeline::snapshot::{PortCounters, PortView, Snapshot, SwitchView};
use crate::pipeline::vlan::PortVlan;
use podswitch_shared::model::{
    check_ifname, check_object_name, AclAction, FdbEntry, LinkState, NicKind, PortConfig,
    PortStatus, PortUpdate, SwitchConfig, VPort, VSwitch, VlanId, VlanMode,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use podswitch_shared::model::MAX_MTU;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
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

impl StateError {
    /// HTTP status and error code for the API.
    pub fn status_code(&self) -> (u16, &'static str) {
        match self {
            StateError::Invalid(_) => (400, "invalid"),
            StateError::NotFound(_) => (404, "not-found"),
            StateError::Conflict(_) => (409, "conflict"),
            StateError::NicMissing(_) => (422, "nic-not-found"),
            StateError::Datapath(_) => (500, "datapath"),
            StateError::Persist { .. } => (500, "persist"),
        }
    }
}

impl From<podswitch_shared::model::ModelError> for StateError {
    fn from(e: podswitch_shared::model::ModelError) -> Self {
        StateError::Invalid(e.to_string())
    }
}

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

/// What the state directory holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    switches: Vec<VSwitch>,
    ports: Vec<VPort>,
}

const STATE_FILE: &str = "state.json";

struct SwitchEntry {
    sw: VSwitch,
    /// Names the switch's tables in the poll threads (never reused).
    id: u32,
}

struct PortEntry {
    port: VPort,
    slot: Slot,
    counters: Arc<PortCounters>,
    acl: Arc<Acl>,
    /// Bumped when the MACs learned behind the port must be forgotten.
    flush_gen: u64,
}

pub struct State {
    dir: PathBuf,
    switches: BTreeMap<String, SwitchEntry>,
    ports: BTreeMap<String, PortEntry>,
    slots: Vec<Option<String>>,
    datapath: Arc<Datapath>,
    default_aging: u32,
    generation: u64,
    next_switch_id: u32,
    /// Source of `PortEntry::flush_gen` values (never reused).
    next_flush_gen: u64,
    /// What was published last, to send the poll threads only what changed.
    last_ports: Vec<Option<PortView>>,
    last_switches: Vec<SwitchView>,
    /// Wakes the thread that fsyncs the state file and directory.
    syncer: std::sync::mpsc::Sender<()>,
}

/// Starts the thread that makes each saved state durable (fsync of the
/// file, then of the directory for the rename), coalescing bursts.
fn start_syncer(dir: &Path) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let dir = dir.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("switchd-sync".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                let r = std::fs::File::open(dir.join(STATE_FILE))
                    .and_then(|f| f.sync_all())
                    .and_then(|()| std::fs::File::open(&dir))
                    .and_then(|d| d.sync_all());
                if let Err(e) = r {
                    log::error!("syncing {}: {e}", dir.display());
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the state syncer thread ({e}); state is saved without fsync");
    }
    tx
}

impl State {
    /// An empty state (with the `default` switch) over `dir`. Call
    /// `restore` to load and re-attach what `dir` holds.
    pub fn new(dir: &Path, datapath: Datapath, default_aging: u32) -> Self {
        let mut s = State {
            dir: dir.to_path_buf(),
            switches: BTreeMap::new(),
            ports: BTreeMap::new(),
            slots: Vec::new(),
            datapath: Arc::new(datapath),
            default_aging,
            generation: 0,
            next_switch_id: 1,
            next_flush_gen: 1,
            last_ports: Vec::new(),
            last_switches: Vec::new(),
            syncer: start_syncer(dir),
        };
        s.insert_switch(VSwitch {
            name: VSwitch::DEFAULT_NAME.into(),
            aging_seconds: default_aging,
            max_fdb_entries: VSwitch::DEFAULT_MAX_FDB_ENTRIES,
            ports: None,
            fdb_entries: None,
        });
        s
    }

    fn insert_switch(&mut self, sw: VSwitch) {
        let id = self.next_switch_id;
        self.next_switch_id += 1;
        self.switches
            .insert(sw.name.clone(), SwitchEntry { sw, id });
    }

    fn flush_gen(&mut self) -> u64 {
        self.next_flush_gen += 1;
        self.next_flush_gen
    }

    /// Loads the state directory's switches and returns its ports, for
    /// `restore` to re-create one by one.
    fn load(&mut self) -> Result<Vec<VPort>, StateError> {
        let path = self.dir.join(STATE_FILE);
        let stored: Stored = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                StateError::Invalid(format!(
                    "{} is not a valid podswitch state file: {e}",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(source) => return Err(StateError::Persist { path, source }),
        };
        for sw in stored.switches {
            self.insert_switch(VSwitch {
                ports: None,
                fdb_entries: None,
                ..sw
            });
        }
        Ok(stored.ports)
    }

    /// Saves the state: the new file is written beside the old one and
    /// renamed over it, so a reader (a restarted switchd) sees the old or
    /// the new state, never half of one, even if switchd dies mid-write;
    /// the page cache outlives the process. Making it survive a power loss
    /// (fsync of the file and the directory) costs ~6 ms on a typical disk,
    /// so the syncer thread does it right after, off the request's path:
    /// an ADD does not wait for the disk, and after a power loss the pods
    /// of the last few milliseconds' changes are gone with the reboot too.
    fn persist(&self) -> Result<(), StateError> {
        let stored = Stored {
            version: 1,
            switches: self.switches.values().map(|e| e.sw.clone()).collect(),
            ports: self.ports.values().map(|e| e.port.clone()).collect(),
        };
        let path = self.dir.join(STATE_FILE);
        let err = |source| StateError::Persist {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let body = serde_json::to_vec_pretty(&stored).map_err(|e| err(e.into()))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(err)?;
        let _ = self.syncer.send(());
        Ok(())
    }

    /// Builds and publishes the snapshot the poll threads read, with the
    /// slots that changed since the last one (a typed change), so a PATCH
    /// of one port costs the poll threads that port, not a rescan.
    fn publish(&mut self) {
        self.generation += 1;
        let index: BTreeMap<&str, usize> = self
            .switches
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut ports: Vec<Option<PortView>> = vec![None; self.slots.len()];
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
            })
            .collect();
        let threads = self.datapath.config().threads() as u32;
        for e in self.ports.values() {
            let Some(&si) = index.get(e.port.switch.as_str()) else {
                continue;
            };
            let mode = e.port.mode();
            switches[si].ports.push(e.slot);
            if let Some(mac) = e.port.mac {
                let home = match &mode {
                    VlanMode::Access(v) => Some(*v),
                    VlanMode::Trunk { native, .. } => *native,
                };
                if let Some(v) = home {
                    switches[si].statics.push((v.get(), mac, e.slot));
                }
            }
            let served = self
                .datapath
                .attachment(e.slot)
                .map(|a| a.queues.min(threads))
                .unwrap_or(0);
            ports[e.slot as usize] = Some(PortView {
                served,
                home: (e.slot % served.max(1)) as usize,
                flush_gen: e.flush_gen,
                id: e.port.id.clone(),
                slot: e.slot,
                switch: si,
                vlan: PortVlan::from(&mode),
                up: e.port.link_state == LinkState::Up,
                mac: e.port.mac,
                spoof_check: e.port.mac_spoof_check,
                qos: e.port.qos.clone(),
                dhcp_guard: e.port.dhcp_guard,
                router_guard: e.port.router_guard,
                storm_limit: e.port.storm_limit,
                acl: e.acl.clone(),
                counters: e.counters.clone(),
            });
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
                ) == (
                    b.id,
                    &b.name,
                    &b.ports,
                    b.aging_seconds,
                    b.max_fdb_entries,
                    &b.statics,
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
            ports: self.ports.len(),
            attached_ports: self.ports.len() - self.detached_ports(),
            threads: self.datapath.threads(),
        }
    }

    /// Applies the declared switches, and returns the declared ports that
    /// do not exist yet (a port exists when a port with the same NIC does)
    /// after updating those that do.
    fn apply_declared_here(&mut self, d: Declared) -> Result<Vec<PortConfig>, StateError> {
        let mut create = Vec::new();
        for sw in d.switches {
            match self.switches.get_mut(&sw.name) {
                None => {
                    let name = sw.name.clone();
                    self.create_switch(sw)?;
                    log::info!("created declared switch {name}");
                }
                Some(e) => {
                    // A changed declaration (e.g. a helm upgrade) applies.
                    let aging = sw.aging_seconds.unwrap_or(e.sw.aging_seconds).max(1);
                    let max = sw.max_fdb_entries.unwrap_or(e.sw.max_fdb_entries).max(1);
                    if (aging, max) != (e.sw.aging_seconds, e.sw.max_fdb_entries) {
                        e.sw.aging_seconds = aging;
                        e.sw.max_fdb_entries = max;
                        log::info!("updated declared switch {}", sw.name);
                        self.persist()?;
                        self.publish();
                    }
                }
            }
        }
        for p in d.ports {
            let existing = self
                .ports
                .values()
                .find(|e| e.port.nic.ifname == p.nic.ifname)
                .map(|e| e.port.id.clone());
            match existing {
                None => create.push(p),
                Some(id) => {
                    self.update_port(&id, p.into_declared_update())?;
                }
            }
        }
        Ok(create)
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

    pub fn create_switch(&mut self, cfg: SwitchConfig) -> Result<VSwitch, StateError> {
        check_object_name("switch name", &cfg.name)?;
        if self.switches.contains_key(&cfg.name) {
            return Err(StateError::Conflict(format!(
                "switch {:?} already exists",
                cfg.name
            )));
        }
        let aging = cfg.aging_seconds.unwrap_or(self.default_aging);
        if aging == 0 {
            return Err(StateError::Invalid(
                "agingSeconds must be at least 1".into(),
            ));
        }
        let max = cfg
            .max_fdb_entries
            .unwrap_or(VSwitch::DEFAULT_MAX_FDB_ENTRIES);
        if max == 0 {
            return Err(StateError::Invalid(
                "maxFdbEntries must be at least 1".into(),
            ));
        }
        self.insert_switch(VSwitch {
            name: cfg.name.clone(),
            aging_seconds: aging,
            max_fdb_entries: max,
            ports: None,
            fdb_entries: None,
        });
        if let Err(e) = self.persist() {
            self.switches.remove(&cfg.name);
            return Err(e);
        }
        self.publish();
        let e = &self.switches[&cfg.name];
        Ok(self.switch_view(e))
    }

    pub fn delete_switch(&mut self, name: &str) -> Result<(), StateError> {
        if name == VSwitch::DEFAULT_NAME {
            return Err(StateError::Conflict(
                "the default switch always exists".into(),
            ));
        }
        if !self.switches.contains_key(name) {
            return Err(StateError::NotFound(format!("no switch named {name:?}")));
        }
        let n = self
            .ports
            .values()
            .filter(|p| p.port.switch == name)
            .count();
        if n > 0 {
            return Err(StateError::Conflict(format!(
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
        self.publish();
        Ok(())
    }

    /// Per switch: (name, MAC moves, MACs not learned because the table was full).
    pub fn fdb_counters(&self) -> Vec<(String, u64, u64)> {
        self.switches
            .values()
            .map(|e| {
                let f = self.datapath.fdb(e.id, false).unwrap_or_default();
                (e.sw.name.clone(), f.moves, f.limit_hits)
            })
            .collect()
    }

    pub fn fdb(&self, name: &str) -> Result<Vec<FdbEntry>, StateError> {
        let e = self
            .switches
            .get(name)
            .ok_or_else(|| StateError::NotFound(format!("no switch named {name:?}")))?;
        let rows = self
            .datapath
            .fdb(e.id, true)
            .ok_or_else(|| StateError::Datapath("the poll threads did not answer".into()))?
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
        let status = self.datapath.attachment(e.slot).map(|a| PortStatus {
            attached: true,
            ifindex: a.ifindex,
            xdp_mode: a.mode.as_str().into(),
            queues: a.queues,
            mtu: a.mtu,
        });
        VPort {
            status: Some(status.unwrap_or(PortStatus {
                attached: false,
                ifindex: 0,
                xdp_mode: "none".into(),
                queues: 0,
                mtu: 0,
            })),
            stats: Some(e.counters.to_stats(&e.acl)),
            ..e.port.clone()
        }
    }

    pub fn ports(&self) -> Vec<VPort> {
        self.ports.values().map(|e| self.view(e)).collect()
    }

    pub fn port(&self, id: &str) -> Result<VPort, StateError> {
        self.ports
            .get(id)
            .map(|e| self.view(e))
            .ok_or_else(|| StateError::NotFound(format!("no port with ID {id:?}")))
    }

    fn alloc_slot(&mut self, id: &str) -> Result<Slot, StateError> {
        let slot = match self.slots.iter().position(|s| s.is_none()) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if slot >= crate::datapath::bpf::MAX_PORTS as usize {
            self.slots
                .truncate(crate::datapath::bpf::MAX_PORTS as usize);
            return Err(StateError::Conflict(format!(
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

    /// Checks the security and QoS fields of a port.
    fn check_policy(p: &VPort) -> Result<(), StateError> {
        if p.mac_spoof_check && p.mac.is_none() {
            return Err(StateError::Invalid(
                "macSpoofCheck needs the port's mac".into(),
            ));
        }
        if let Some(q) = &p.qos {
            q.validate().map_err(StateError::Invalid)?;
        }
        if p.storm_limit == Some(0) {
            return Err(StateError::Invalid(
                "stormLimit must be at least 1 frame/s (omit it for no limit)".into(),
            ));
        }
        if p.acls.len() > podswitch_shared::model::MAX_ACL_RULES {
            return Err(StateError::Invalid(format!(
                "{} ACL rules; a port takes at most {}",
                p.acls.len(),
                podswitch_shared::model::MAX_ACL_RULES
            )));
        }
        if p.acl_default == AclAction::Meter {
            return Err(StateError::Invalid("aclDefault is allow or deny".into()));
        }
        Ok(())
    }

    fn check_trunk(
        trunk: Option<&[podswitch_shared::model::TrunkRange]>,
    ) -> Result<(), StateError> {
        if trunk.is_some_and(|t| t.is_empty()) {
            return Err(StateError::Invalid(
                "trunk lists no VLAN, so the port would carry nothing tagged; use null (or omit it) for an access port"
                    .into(),
            ));
        }
        Ok(())
    }

    /// First half of `create_port`, under the lock: an existing port for
    /// the same container ID + ifname, or the recorded (not yet attached)
    /// new port.
    fn begin_create(&mut self, cfg: PortConfig) -> Result<Begun, StateError> {
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
                return Err(StateError::Conflict(format!(
                    "container {:?} ifname {:?} already has port {} on NIC {}",
                    o.container_id.as_deref().unwrap_or(""),
                    o.ifname.as_deref().unwrap_or(""),
                    e.port.id,
                    e.port.nic.ifname
                )));
            }
        }
        Ok(Begun::Pending(self.add_port(cfg)?))
    }

    /// Validates, prepares the NIC and records the port (published, not
    /// attached yet); `finish_port` completes it once the attach is done.
    fn add_port(&mut self, cfg: PortConfig) -> Result<Pending, StateError> {
        let id = match cfg.id.clone() {
            Some(id) => {
                check_object_name("port ID", &id)?;
                id
            }
            None => self.new_port_id(),
        };
        if self.ports.contains_key(&id) {
            return Err(StateError::Conflict(format!("port {id:?} already exists")));
        }
        let switch = cfg.switch.clone().unwrap_or_else(|| VSwitch::DEFAULT_NAME.into());
        if !self.switches.contains_key(&switch) {
            return Err(StateError::NotFound(format!("no switch named {switch:?}")));
        }
        check_ifname(&cfg.nic.ifname)?;
        if let Some(e) = self
            .ports
            .values()
            .find(|e| e.port.nic.ifname == cfg.nic.ifname)
        {
            return Err(StateError::Conflict(format!(
                "NIC {} is already attached as port {}",
                cfg.nic.ifname, e.port.id
            )));
        }
        Self::check_trunk(cfg.trunk.as_deref())?;
        if cfg.nic.kind == NicKind::Uplink && cfg.trunk.is_none() && cfg.vlan.is_none() {
            log::info!(
                "uplink {} has neither trunk nor vlan: it carries VLAN 1 untagged",
                cfg.nic.ifname
            );
        }
        let ifname = cfg.nic.ifname.clone();
        let missing = |e: netdev::NetdevError| match e {
            netdev::NetdevError::NotFound { ifname } => StateError::NicMissing(format!(
                "NIC {ifname:?} does not exist in switchd's network namespace"
            )),
            e => StateError::Datapath(e.to_string()),
        };
        netdev::ifindex(&ifname).map_err(missing)?;
        let mtu = netdev::mtu(&ifname).map_err(missing)?;
        if mtu > MAX_MTU {
            return Err(StateError::Invalid(format!(
                "NIC {ifname} has MTU {mtu}; the AF_XDP data path carries at most {MAX_MTU}"
            )));
        }
        if cfg.nic.kind != NicKind::Uplink {
            if let Err(e) = netdev::disable_ipv6(&ifname) {
                log::debug!("disabling IPv6 on {ifname}: {e}");
            }
        }
        let link_state = cfg.link_state.unwrap_or_default();
        if link_state == LinkState::Down {
            netdev::set_up(&ifname, false).map_err(missing)?;
        }

        let slot = self.alloc_slot(&id)?;
        let mut port = VPort::from_config(id.clone(), switch, cfg);
        port.qos = port.qos.filter(|q| !q.is_empty());
        if let Err(e) = Self::check_policy(&port) {
            self.slots[slot as usize] = None;
            return Err(e);
        }
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
            },
        );
        self.publish();
        Ok(Pending {
            id,
            slot,
            ifname,
            link_up: link_state == LinkState::Up,
        })
    }

    /// Second half of `create_port`, under the lock again: brings the NIC
    /// up and saves the port, or (attach failed) forgets it. When
    /// `restoring`, an attach failure keeps the port (detached) for
    /// `reconcile` to retry: a restart loses no port.
    fn finish_port(
        &mut self,
        p: Pending,
        attached: Result<crate::datapath::Attachment, crate::datapath::DatapathError>,
        restoring: bool,
    ) -> Result<String, StateError> {
        if self.ports.get(&p.id).map(|e| e.slot) != Some(p.slot) {
            // Deleted while it was attaching; the delete's detach, sent
            // after our attach, undoes it.
            return Err(StateError::NotFound(format!(
                "port {} was deleted while it was being attached",
                p.id
            )));
        }
        // Attach first, then bring the NIC up: attaching XDP to a veth that
        // is down costs a fraction of attaching it to one that is up.
        let attached = attached
            .map_err(|e| StateError::Datapath(format!("attaching {}: {e}", p.ifname)))
            .and_then(|a| {
                if p.link_up {
                    netdev::set_up(&p.ifname, true)
                        .map_err(|e| StateError::Datapath(e.to_string()))?;
                }
                Ok(a)
            });
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
            return Err(e);
        }
        Ok(p.id)
    }

    /// Retries attaching ports that are not attached but whose NIC exists
    /// (a restart racing the old process, a NIC that came back). Ports whose
    /// NIC is gone stay recorded until deleted (the CNI's DEL or GC).
    fn unattached(&self) -> (Arc<Datapath>, Vec<(String, Slot, String)>) {
        let todo = self
            .ports
            .values()
            .filter(|e| self.datapath.attachment(e.slot).is_none())
            .map(|e| (e.port.id.clone(), e.slot, e.port.nic.ifname.clone()))
            .collect();
        (self.datapath.clone(), todo)
    }

    /// Ports not attached to the data path right now.
    pub fn detached_ports(&self) -> usize {
        self.ports
            .values()
            .filter(|e| self.datapath.attachment(e.slot).is_none())
            .count()
    }

    fn remove_port(&mut self, id: &str) -> Option<PortEntry> {
        let e = self.ports.remove(id)?;
        self.slots[e.slot as usize] = None;
        self.publish();
        // The slot left the snapshot: the poll threads forget its MACs.
        if let Err(err) = self.datapath.detach(e.slot) {
            log::warn!("detaching port {id}: {err}");
        }
        Some(e)
    }

    pub fn delete_port(&mut self, id: &str) -> Result<(), StateError> {
        let e = self
            .remove_port(id)
            .ok_or_else(|| StateError::NotFound(format!("no port with ID {id:?}")))?;
        log::info!("deleted port {id} ({})", e.port.nic.ifname);
        self.persist()
    }

    /// Applies a PATCH live: VLAN role, MAC, spoof check and admin state
    /// change without re-attaching the NIC.
    pub fn update_port(&mut self, id: &str, u: PortUpdate) -> Result<VPort, StateError> {
        let e = self
            .ports
            .get(id)
            .ok_or_else(|| StateError::NotFound(format!("no port with ID {id:?}")))?;
        let mut p = e.port.clone();
        p.apply(u);
        p.qos = p.qos.filter(|q| !q.is_empty());
        Self::check_trunk(p.trunk.as_deref())?;
        Self::check_policy(&p)?;
        let old = e.port.clone();
        if p.link_state != old.link_state {
            netdev::set_up(&p.nic.ifname, p.link_state == LinkState::Up)
                .map_err(|e| StateError::Datapath(e.to_string()))?;
        }
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
}

/// What `begin_create` found or made.
enum Begun {
    Exists(Box<VPort>),
    Pending(Pending),
}

/// A port recorded and published whose NIC is being attached.
struct Pending {
    id: String,
    slot: Slot,
    ifname: String,
    link_up: bool,
}

/// Locks the state, whatever a panicking holder left.
pub fn lock_state(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates a port and attaches its NIC. Returns the port and whether it
/// was created (false: the same container ID + ifname already had it).
/// The lock is held only to validate and record, and to finish: while the
/// setup thread attaches, every other request is served.
pub fn create_port(state: &Mutex<State>, cfg: PortConfig) -> Result<(VPort, bool), StateError> {
    let (p, dp) = {
        let mut s = lock_state(state);
        match s.begin_create(cfg)? {
            Begun::Exists(v) => return Ok((*v, false)),
            Begun::Pending(p) => (p, s.datapath.clone()),
        }
    };
    let r = dp.attach(p.slot, &p.ifname);
    let mut s = lock_state(state);
    let id = s.finish_port(p, r, false)?;
    Ok((s.port(&id)?, true))
}

/// Loads the state directory and re-attaches every stored port whose NIC
/// still exists; ports whose NIC is gone are dropped (their pod is gone).
/// Returns (re-attached, dropped).
pub fn restore(state: &Mutex<State>) -> Result<(usize, usize), StateError> {
    let stored = lock_state(state).load()?;
    let (mut ok, mut dropped) = (0, 0);
    for p in stored {
        let cfg = p.to_config();
        let begun = {
            let mut s = lock_state(state);
            s.add_port(cfg).map(|pending| (pending, s.datapath.clone()))
        };
        let r = begun.and_then(|(pending, dp)| {
            let r = dp.attach(pending.slot, &pending.ifname);
            lock_state(state).finish_port(pending, r, true)
        });
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                log::warn!("dropping stored port {} ({}): {e}", p.id, p.nic.ifname);
                dropped += 1;
            }
        }
    }
    lock_state(state).persist()?;
    Ok((ok, dropped))
}

/// Retries attaching ports that are not attached but whose NIC exists
/// (a restart racing the old process, a NIC that came back). Ports whose
/// NIC is gone stay recorded until deleted (the CNI's DEL or GC).
pub fn reconcile(state: &Mutex<State>) {
    let (dp, todo) = lock_state(state).unattached();
    for (id, slot, ifname) in todo {
        if netdev::ifindex(&ifname).is_err() {
            continue;
        }
        // The port may have been deleted meanwhile: attach only a slot
        // that still belongs to it, and detach again if it went away.
        match dp.attach(slot, &ifname) {
            Ok(_) => {
                let mut s = lock_state(state);
                match s.slots.get(slot as usize).cloned().flatten() {
                    Some(owner) if owner == id => {
                        s.publish();
                        log::info!("port {id}: re-attached {ifname}")
                    }
                    // Reused by a port being attached now: its own attach
                    // (a different NIC) replaces ours.
                    Some(_) => {}
                    None => {
                        let _ = dp.detach(slot);
                    }
                }
            }
            Err(e) => log::debug!("port {id}: attach {ifname} still failing: {e}"),
        }
    }
}

/// Creates the declared switches and ports that do not exist yet and
/// updates those that do.
pub fn apply_declared(state: &Mutex<State>, d: Declared) -> Result<(), StateError> {
    let create = lock_state(state).apply_declared_here(d)?;
    for p in create {
        let nic = p.nic.ifname.clone();
        let (port, _) = create_port(state, p)?;
        log::info!("created declared port {} on {nic}", port.id);
    }
    Ok(())
}
