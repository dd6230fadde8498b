//! The forwarding database of one VSwitch: (VLAN, MAC) → port slot, with
//! learning, aging, a size limit, MAC moves and static entries.
//!
//! Time is passed in (nanoseconds on a monotonic clock) so aging is tested
//! without sleeping. Aged entries are ignored on lookup and removed by
//! `sweep`, which the datapath calls from its housekeeping tick.
//!
//! Each poll thread owns one `Fdb` per switch: no lock. What one thread
//! learns it announces to the others (`Learned::announce`), which take it
//! in with `learn_remote`; a live entry is announced again every quarter
//! of the aging time, so no thread ages out a MAC that another still sees.

use podswitch_shared::model::MacAddr;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A port's position in the datapath's port table.
pub type Slot = u32;

/// Keys are (VLAN << 48 | MAC) in a u64; this mixes them cheaply.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | *b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn key(vlan: u16, mac: MacAddr) -> u64 {
    let m = mac.0;
    ((vlan as u64) << 48) | u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
}

fn unkey(k: u64) -> (u16, MacAddr) {
    let b = k.to_be_bytes();
    (
        (k >> 48) as u16,
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]]),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    slot: Slot,
    last_seen: u64,
    /// When this thread last announced the entry to the others.
    announced: u64,
    is_static: bool,
}

/// What `learn` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    /// Seen again behind the same port; `announce`: time to tell the
    /// other poll threads again (a quarter of the aging time passed).
    Refreshed {
        announce: bool,
    },
    /// The MAC was known behind another port and now lives here.
    Moved {
        from: Slot,
    },
    /// The table is full; the MAC was not learned (its frames still flood).
    LimitReached,
    /// A static entry owns this MAC; nothing changed.
    Static,
}

impl Learned {
    /// Whether the other poll threads should hear of it.
    pub fn announce(self) -> bool {
        matches!(
            self,
            Learned::New | Learned::Moved { .. } | Learned::Refreshed { announce: true }
        )
    }
}

/// One row, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub vlan: u16,
    pub mac: MacAddr,
    pub slot: Slot,
    pub is_static: bool,
    pub age_ns: u64,
}

#[derive(Debug)]
pub struct Fdb {
    map: HashMap<u64, Entry, BuildHasherDefault<KeyHasher>>,
    learned: usize,
    aging_ns: u64,
    limit: usize,
    /// Learn attempts refused because the table was full.
    pub limit_hits: u64,
    /// MAC moves seen.
    pub moves: u64,
}

impl Fdb {
    pub fn new(aging_secs: u32, limit: u32) -> Self {
        Fdb {
            map: HashMap::default(),
            learned: 0,
            aging_ns: aging_secs as u64 * 1_000_000_000,
            limit: limit as usize,
            limit_hits: 0,
            moves: 0,
        }
    }

    pub fn set_aging(&mut self, aging_secs: u32) {
        self.aging_ns = aging_secs as u64 * 1_000_000_000;
    }

    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit as usize;
    }

    fn alive(&self, e: &Entry, now: u64) -> bool {
        e.is_static || now.saturating_sub(e.last_seen) < self.aging_ns
    }

    /// Records that `mac` on `vlan` was seen entering through `slot`.
    pub fn learn(&mut self, vlan: u16, mac: MacAddr, slot: Slot, now: u64) -> Learned {
        let k = key(vlan, mac);
        let aging_ns = self.aging_ns;
        if let Some(e) = self.map.get_mut(&k) {
            if e.is_static {
                return Learned::Static;
            }
            let expired = now.saturating_sub(e.last_seen) >= aging_ns;
            let from = e.slot;
            e.last_seen = now;
            e.slot = slot;
            return if from == slot || expired {
                let announce = expired || now.saturating_sub(e.announced) >= aging_ns / 4;
                if announce {
                    e.announced = now;
                }
                Learned::Refreshed { announce }
            } else {
                e.announced = now;
                self.moves += 1;
                Learned::Moved { from }
            };
        }
        if self.learned >= self.limit {
            self.limit_hits += 1;
            return Learned::LimitReached;
        }
        self.insert_learned(k, slot, now);
        Learned::New
    }

    /// Takes in what another poll thread learned: like `learn`, but not
    /// counted (the thread that saw it counts moves and refusals) and not
    /// announced again.
    pub fn learn_remote(&mut self, vlan: u16, mac: MacAddr, slot: Slot, now: u64) {
        let k = key(vlan, mac);
        if let Some(e) = self.map.get_mut(&k) {
            if !e.is_static {
                e.slot = slot;
                e.last_seen = now;
                e.announced = now;
            }
            return;
        }
        if self.learned >= self.limit {
            return;
        }
        self.insert_learned(k, slot, now);
    }

    fn insert_learned(&mut self, k: u64, slot: Slot, now: u64) {
        self.map.insert(
            k,
            Entry {
                slot,
                last_seen: now,
                announced: now,
                is_static: false,
            },
        );
        self.learned += 1;
    }

    /// The port behind `mac` on `vlan`, if known and not aged out.
    pub fn lookup(&self, vlan: u16, mac: MacAddr, now: u64) -> Option<Slot> {
        self.map
            .get(&key(vlan, mac))
            .filter(|e| self.alive(e, now))
            .map(|e| e.slot)
    }

    /// Replaces every static entry with `entries` (vlan, mac, slot). A
    /// learned entry for the same key is taken over. A static entry that
    /// is no longer listed becomes a learned one on the same port (fresh
    /// at `now`): its MAC keeps flowing there until frames move it (a
    /// second port claimed the MAC for a VM's migration) or it ages out.
    pub fn set_static(&mut self, entries: &[(u16, MacAddr, Slot)], now: u64) {
        let listed: std::collections::HashSet<u64> =
            entries.iter().map(|&(v, m, _)| key(v, m)).collect();
        let mut demoted = 0;
        self.map.retain(|k, e| {
            if !e.is_static {
                return true;
            }
            if listed.contains(k) {
                return false;
            }
            e.is_static = false;
            e.last_seen = now;
            e.announced = now;
            demoted += 1;
            true
        });
        self.learned += demoted;
        for &(vlan, mac, slot) in entries {
            let prev = self.map.insert(
                key(vlan, mac),
                Entry {
                    slot,
                    last_seen: 0,
                    announced: 0,
                    is_static: true,
                },
            );
            if matches!(prev, Some(e) if !e.is_static) {
                self.learned -= 1;
            }
        }
    }

    /// Forgets every learned MAC behind `slot` (port down, moved, deleted).
    pub fn flush_port(&mut self, slot: Slot) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.is_static || e.slot != slot);
        let removed = before - self.map.len();
        self.learned -= removed;
        removed
    }

    /// Removes aged entries; returns how many.
    pub fn sweep(&mut self, now: u64) -> usize {
        let aging_ns = self.aging_ns;
        let before = self.map.len();
        self.map
            .retain(|_, e| e.is_static || now.saturating_sub(e.last_seen) < aging_ns);
        let removed = before - self.map.len();
        self.learned -= removed;
        removed
    }

    /// Live entries (learned and static).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn rows(&self, now: u64) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .map
            .iter()
            .filter(|(_, e)| self.alive(e, now))
            .map(|(k, e)| {
                let (vlan, mac) = unkey(*k);
                Row {
                    vlan,
                    mac,
                    slot: e.slot,
                    is_static: e.is_static,
                    age_ns: if e.is_static {
                        0
                    } else {
                        now.saturating_sub(e.last_seen)
                    },
                }
            })
            .collect();
        rows.sort_by_key(|r| (r.vlan, r.mac));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    fn m(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn learn_lookup_per_vlan() {
        let mut f = Fdb::new(300, 10);
        assert_eq!(f.learn(10, m(1), 3, 0), Learned::New);
        assert_eq!(f.lookup(10, m(1), SEC), Some(3));
        assert_eq!(f.lookup(20, m(1), SEC), None, "keyed by VLAN too");
        assert_eq!(
            f.learn(10, m(1), 3, 2 * SEC),
            Learned::Refreshed { announce: false }
        );
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn announced_when_new_moved_or_every_quarter_aging() {
        let mut f = Fdb::new(300, 10);
        assert!(f.learn(1, m(1), 0, 0).announce());
        assert!(!f.learn(1, m(1), 0, 10 * SEC).announce());
        assert!(
            f.learn(1, m(1), 0, 76 * SEC).announce(),
            "a quarter of 300 s passed"
        );
        assert!(!f.learn(1, m(1), 0, 77 * SEC).announce());
        assert!(f.learn(1, m(1), 4, 78 * SEC).announce(), "moved");
    }

    #[test]
    fn remote_learns_are_not_counted_or_echoed() {
        let mut f = Fdb::new(300, 10);
        f.learn_remote(1, m(1), 2, 0);
        assert_eq!(f.lookup(1, m(1), SEC), Some(2));
        f.learn_remote(1, m(1), 3, SEC);
        assert_eq!(f.lookup(1, m(1), SEC), Some(3));
        assert_eq!(f.moves, 0, "the thread that saw the move counts it");
        assert!(
            !f.learn(1, m(1), 3, 2 * SEC).announce(),
            "just heard of it: no echo"
        );
        f.set_static(&[(1, m(9), 5)], 0);
        f.learn_remote(1, m(9), 1, 3 * SEC);
        assert_eq!(f.lookup(1, m(9), 3 * SEC), Some(5), "static wins");
    }

    #[test]
    fn aging() {
        let mut f = Fdb::new(300, 10);
        f.learn(1, m(1), 0, 0);
        assert_eq!(f.lookup(1, m(1), 299 * SEC), Some(0));
        assert_eq!(
            f.lookup(1, m(1), 300 * SEC),
            None,
            "aged out at exactly the aging time"
        );
        f.learn(1, m(2), 0, 200 * SEC);
        assert_eq!(f.sweep(301 * SEC), 1);
        assert_eq!(f.rows(301 * SEC).len(), 1);
        // Configurable aging applies to existing entries.
        f.set_aging(10);
        assert_eq!(f.lookup(1, m(2), 211 * SEC), None);
    }

    #[test]
    fn mac_move() {
        let mut f = Fdb::new(300, 10);
        f.learn(1, m(1), 0, 0);
        assert_eq!(f.learn(1, m(1), 5, SEC), Learned::Moved { from: 0 });
        assert_eq!(f.lookup(1, m(1), SEC), Some(5));
        assert_eq!(f.moves, 1);
        // Relearning after expiry on another port is not a move.
        assert_eq!(
            f.learn(1, m(1), 6, 400 * SEC),
            Learned::Refreshed { announce: true }
        );
        assert_eq!(f.moves, 1);
    }

    #[test]
    fn limit_reached() {
        let mut f = Fdb::new(300, 2);
        assert_eq!(f.learn(1, m(1), 0, 0), Learned::New);
        assert_eq!(f.learn(1, m(2), 0, 0), Learned::New);
        assert_eq!(f.learn(1, m(3), 0, 0), Learned::LimitReached);
        assert_eq!(f.lookup(1, m(3), 0), None);
        assert_eq!(f.limit_hits, 1);
        // Refreshing a known MAC still works at the limit.
        assert_eq!(f.learn(1, m(1), 1, 0), Learned::Moved { from: 0 });
        // Space frees up after aging.
        f.sweep(301 * SEC);
        assert_eq!(f.learn(1, m(3), 0, 301 * SEC), Learned::New);
    }

    #[test]
    fn static_entries_win_and_do_not_age() {
        let mut f = Fdb::new(1, 1);
        f.learn(7, m(9), 2, 0);
        f.set_static(&[(7, m(9), 4)], 0);
        assert_eq!(f.learn(7, m(9), 2, 0), Learned::Static);
        assert_eq!(f.lookup(7, m(9), 1000 * SEC), Some(4));
        // Static entries do not count against the learning limit.
        assert_eq!(f.learn(7, m(1), 2, 0), Learned::New);
        assert_eq!(f.flush_port(4), 0, "flush keeps static entries");
        f.set_static(&[], 5 * SEC);
        // No longer static: learned on the same port, moved by frames, aged.
        assert_eq!(f.lookup(7, m(9), 5 * SEC), Some(4));
        assert_eq!(f.flush_port(4), 1);
        assert_eq!(f.lookup(7, m(9), 5 * SEC), None);
    }

    #[test]
    fn a_demoted_static_entry_moves_with_the_first_frame_and_ages() {
        // A VM's MAC is static on port 4; its migration target (port 6)
        // claims it too, so the switch demotes it: traffic stays on 4 ...
        let mut f = Fdb::new(300, 10);
        f.set_static(&[(7, m(9), 4)], 0);
        f.set_static(&[], SEC);
        assert_eq!(f.lookup(7, m(9), 2 * SEC), Some(4));
        // ... until the VM announces itself from port 6.
        assert_eq!(f.learn(7, m(9), 6, 3 * SEC), Learned::Moved { from: 4 });
        assert_eq!(f.lookup(7, m(9), 3 * SEC), Some(6));
        assert_eq!(f.flush_port(4), 0, "the old port holds nothing");
        // Once the old port is gone the MAC is static on the new one.
        f.set_static(&[(7, m(9), 6)], 4 * SEC);
        assert_eq!(f.learn(7, m(9), 4, 5 * SEC), Learned::Static);
        assert_eq!(f.lookup(7, m(9), 1000 * SEC), Some(6));
        // A demoted entry nobody refreshes ages like any learned one.
        f.set_static(&[], 10 * SEC);
        assert_eq!(f.lookup(7, m(9), 311 * SEC), None);
    }

    #[test]
    fn flush_port() {
        let mut f = Fdb::new(300, 10);
        f.learn(1, m(1), 0, 0);
        f.learn(2, m(2), 0, 0);
        f.learn(1, m(3), 1, 0);
        assert_eq!(f.flush_port(0), 2);
        assert_eq!(f.len(), 1);
        assert_eq!(f.learn(1, m(4), 0, 0), Learned::New);
    }

    #[test]
    fn rows_sorted() {
        let mut f = Fdb::new(300, 10);
        f.learn(2, m(1), 0, 0);
        f.learn(1, m(2), 1, 0);
        let r = f.rows(5 * SEC);
        assert_eq!((r[0].vlan, r[0].mac, r[0].age_ns), (1, m(2), 5 * SEC));
        assert_eq!(r[1].vlan, 2);
    }
}
