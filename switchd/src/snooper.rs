//! The snooper: the control-plane owner of the switches' multicast tables.
//!
//! One thread. Poll threads send it the membership events of the IGMP/MLD
//! messages they forward (`pipeline::mcast::Snooped`, try_send on a bounded
//! queue: a full queue loses events, counted per switch, and never stalls
//! a poll thread); the registry tells it which switches snoop
//! (`ToSnooper::Configure`). It alone writes the tables (`Mdb`): it applies
//! each batch of events, ages the tables every second on its own timer
//! (so aging never waits for the registry's lock), and publishes each
//! changed table as an immutable `MdbView` through the switch's `ArcSwap`,
//! which the poll threads read per frame and the API when listing.

use crate::pipeline::mcast::{McastShared, Mdb, MdbView, Outcome, ToSnooper, Tracked};
use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events (and configuration messages) the queue holds.
pub const QUEUE: usize = 4096;
/// How often the tables are aged.
const TICK: Duration = Duration::from_secs(1);

/// The handle on the snooper thread; it ends when every sender (this one
/// and the clones in published snapshots) is gone.
#[derive(Debug)]
pub struct Snooper {
    tx: SyncSender<ToSnooper>,
}

impl Snooper {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Snooper> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("switchd-mcast".into())
            .spawn(move || run(rx))?;
        Ok(Snooper { tx })
    }

    /// The queue, for the poll threads (through the snapshot).
    pub fn sender(&self) -> SyncSender<ToSnooper> {
        self.tx.clone()
    }

    /// Starts tracking switch `switch` with `table`, changes its
    /// membership interval (same epoch), or (None) forgets it. Waits while
    /// the queue is full: the snooper drains it without ever blocking.
    pub fn configure(&self, switch: u32, table: Option<Tracked>) {
        let _ = self.tx.send(ToSnooper::Configure { switch, table });
    }
}

struct Switch {
    epoch: u64,
    shared: Arc<McastShared>,
    mdb: Mdb,
    dirty: bool,
}

fn handle(switches: &mut HashMap<u32, Switch>, m: ToSnooper, now: u64) {
    match m {
        ToSnooper::Configure {
            switch,
            table: None,
        } => {
            if let Some(s) = switches.remove(&switch) {
                s.shared.table.store(Arc::new(MdbView::default()));
            }
        }
        ToSnooper::Configure {
            switch,
            table: Some(t),
        } => match switches.get_mut(&switch) {
            Some(s) if s.epoch == t.epoch => {
                s.dirty |= s.mdb.set_interval(t.membership_seconds, now);
            }
            _ => {
                t.shared.table.store(Arc::new(MdbView::default()));
                switches.insert(
                    switch,
                    Switch {
                        epoch: t.epoch,
                        shared: t.shared,
                        mdb: Mdb::new(t.membership_seconds),
                        dirty: false,
                    },
                );
            }
        },
        ToSnooper::Snooped(e) => {
            // Events of a switch that stopped snooping (or restarted it
            // since) are for a table that is gone.
            let Some(s) = switches.get_mut(&e.switch).filter(|s| s.epoch == e.epoch) else {
                return;
            };
            s.shared.counters.count(&e.event);
            match s.mdb.apply(e.vlan, e.slot, e.gen, e.event, now) {
                Outcome::Changed => s.dirty = true,
                Outcome::Unchanged => {}
                Outcome::Refused => s.shared.counters.count_refused(),
            }
        }
    }
}

fn run(rx: mpsc::Receiver<ToSnooper>) {
    let mut switches: HashMap<u32, Switch> = HashMap::new();
    let mut next_age = Instant::now() + TICK;
    loop {
        let wait = next_age.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(m) => {
                let now = crate::clock::now_ns();
                handle(&mut switches, m, now);
                // The rest of a burst, then one publication for all of it.
                for m in rx.try_iter().take(QUEUE) {
                    handle(&mut switches, m, now);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_age {
            let now = crate::clock::now_ns();
            for s in switches.values_mut() {
                s.dirty |= s.mdb.age(now);
            }
            next_age = Instant::now() + TICK;
        }
        for s in switches.values_mut().filter(|s| s.dirty) {
            s.shared.table.store(Arc::new(s.mdb.view()));
            s.dirty = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::mcast::{Event, McastCounters, Snooped};
    use std::net::IpAddr;

    fn wait_for(shared: &McastShared, f: impl Fn(&MdbView) -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if f(&shared.table.load()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn events_become_a_published_table_that_ages_and_is_emptied() {
        let s = Snooper::start().unwrap();
        let shared = Arc::new(McastShared::new(Arc::new(McastCounters::new(1))));
        s.configure(
            7,
            Some(Tracked {
                epoch: 1,
                shared: shared.clone(),
                membership_seconds: 1,
            }),
        );
        let g: IpAddr = "239.1.2.3".parse().unwrap();
        let ev = |epoch, event| {
            ToSnooper::Snooped(Snooped {
                switch: 7,
                epoch,
                vlan: 100,
                slot: 3,
                gen: 0,
                event,
            })
        };
        s.sender().try_send(ev(0, Event::Join(g))).unwrap(); // an old epoch: ignored
        s.sender().try_send(ev(1, Event::Join(g))).unwrap();
        s.sender().try_send(ev(1, Event::Query)).unwrap();
        assert!(wait_for(&shared, |v| v.members(100, g).len() == 1
            && v.routers(100).len() == 1));
        assert_eq!(
            shared
                .counters
                .reports
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // One second without a report: aged out.
        assert!(wait_for(&shared, |v| v.is_empty()));
        s.sender().try_send(ev(1, Event::Join(g))).unwrap();
        assert!(wait_for(&shared, |v| v.len() == 1));
        s.configure(7, None);
        assert!(wait_for(&shared, |v| v.is_empty()));
    }
}
