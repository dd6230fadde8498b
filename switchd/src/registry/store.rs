//! The state directory: the switches and ports that survive a restart,
//! written beside the old file and renamed over it, then made durable by a
//! syncer thread off the request's path.

use super::RegistryError;
use podswitch_shared::model::{VPort, VSwitch};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// What the state directory holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Stored {
    pub version: u32,
    pub switches: Vec<VSwitch>,
    pub ports: Vec<VPort>,
}

pub(super) const STATE_FILE: &str = "state.json";
/// The state file format this switchd writes and the newest it reads.
pub(super) const STATE_VERSION: u32 = 1;

/// Creates the state directory (0700: it names pods and their MACs) or
/// tightens an existing one.
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Starts the thread that makes each saved state durable (fsync of the
/// file, then of the directory for the rename), coalescing bursts.
pub(super) fn start_syncer(dir: &Path) -> std::sync::mpsc::Sender<()> {
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

/// Reads the state directory (an empty state if it has no file yet).
pub(super) fn load(dir: &Path) -> Result<Stored, RegistryError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(b) => parse(&path, &b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(source) => Err(RegistryError::Persist { path, source }),
    }
}

/// Decodes a state file's bytes (`path` names it in errors).
pub(super) fn parse(path: &Path, b: &[u8]) -> Result<Stored, RegistryError> {
    // The version first, so a newer switchd's file is refused for what it
    // is, not for a field this one does not know.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let invalid = |e: serde_json::Error| {
        RegistryError::Invalid(format!(
            "{} is not a valid podswitch state file: {e}",
            path.display()
        ))
    };
    let v: Version = serde_json::from_slice(b).map_err(invalid)?;
    if v.version > STATE_VERSION {
        return Err(RegistryError::Invalid(format!(
            "{} has state version {}, newer than this switchd reads ({STATE_VERSION}): \
             refusing to start, and leaving the file as it is (run the newer switchd, \
             or move the file away to start empty)",
            path.display(),
            v.version
        )));
    }
    serde_json::from_slice(b).map_err(invalid)
}

/// Leaves out of each stored switch the multicast fields that hold their
/// defaults, so that a state file of a node that does not use snooping
/// stays readable by a switchd from before those fields (a rollback:
/// state files refuse unknown fields).
fn omit_switch_defaults(mut v: serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    let defaults = [
        ("multicastSnooping", json!(false)),
        ("multicastFloodUnknown", json!(true)),
        (
            "multicastMembershipSeconds",
            json!(VSwitch::DEFAULT_MEMBERSHIP_SECONDS),
        ),
    ];
    if let Some(switches) = v.get_mut("switches").and_then(|s| s.as_array_mut()) {
        for sw in switches.iter_mut().filter_map(|s| s.as_object_mut()) {
            for (k, d) in &defaults {
                if sw.get(*k) == Some(d) {
                    sw.remove(*k);
                }
            }
        }
    }
    v
}

/// Saves the state: the new file is written beside the old one and
/// renamed over it, so a reader (a restarted switchd) sees the old or the
/// new state, never half of one, even if switchd dies mid-write; the page
/// cache outlives the process. Making it survive a power loss (fsync of the
/// file and the directory) costs ~6 ms on a typical disk, so the syncer
/// thread does it right after, off the request's path: an ADD does not
/// wait for the disk, and after a power loss the pods of the last few
/// milliseconds' changes are gone with the reboot too.
pub(super) fn save(
    dir: &Path,
    syncer: &std::sync::mpsc::Sender<()>,
    stored: &Stored,
) -> Result<(), RegistryError> {
    let path = dir.join(STATE_FILE);
    let err = |source| RegistryError::Persist {
        path: path.clone(),
        source,
    };
    prepare_dir(dir).map_err(err)?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let body = serde_json::to_value(stored)
        .map(omit_switch_defaults)
        .and_then(|v| serde_json::to_vec_pretty(&v))
        .map_err(|e| err(e.into()))?;
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?
    };
    // A file left by an older switchd (0644) is replaced, not reused.
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    f.write_all(&body).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(err)?;
    let _ = syncer.send(());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(snooping: bool) -> VSwitch {
        VSwitch {
            name: "default".into(),
            aging_seconds: VSwitch::DEFAULT_AGING_SECONDS,
            max_fdb_entries: VSwitch::DEFAULT_MAX_FDB_ENTRIES,
            multicast_snooping: snooping,
            multicast_flood_unknown: true,
            multicast_membership_seconds: VSwitch::DEFAULT_MEMBERSHIP_SECONDS,
            ports: None,
            fdb_entries: None,
        }
    }

    #[test]
    fn default_multicast_fields_stay_out_of_the_state_file() {
        let d = std::env::temp_dir().join(format!("psw-store-{}", std::process::id()));
        let (tx, _rx) = std::sync::mpsc::channel();
        for snooping in [false, true] {
            let stored = Stored {
                version: STATE_VERSION,
                switches: vec![switch(snooping)],
                ports: Vec::new(),
            };
            assert!(save(&d, &tx, &stored).is_ok());
            let text = std::fs::read_to_string(d.join(STATE_FILE)).unwrap_or_default();
            // Off: the file is what a switchd from before snooping wrote.
            assert_eq!(text.contains("multicastSnooping"), snooping, "{text}");
            assert!(!text.contains("multicastFloodUnknown"), "{text}");
            assert!(!text.contains("multicastMembershipSeconds"), "{text}");
            let back = load(&d).map(|s| s.switches);
            assert_eq!(back.ok(), Some(vec![switch(snooping)]));
        }
        let _ = std::fs::remove_dir_all(d);
    }
}
