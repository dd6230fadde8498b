//! Multicast snooping (IGMPv1/v2/v3, MLDv1/v2; RFC 4541), the pure part:
//! what an IP multicast frame is to the snooper (`classify`), the
//! membership events an IGMP or MLD message carries (`events`), the table
//! the control plane keeps (`Mdb`: (VLAN, group) → member ports with
//! expiry, and router ports learned from queries) and the immutable view
//! of it that the data path reads (`MdbView`), and which ports of a VLAN a
//! frame goes to (`select`).
//!
//! Who does what: a poll thread classifies every IP multicast frame of a
//! snooping switch, forwards it by the published view, and sends the events
//! of an IGMP/MLD message to the snooper thread (`crate::snooper`) over a
//! bounded channel (try_send; a full channel is counted, never waited on).
//! The snooper alone owns the `Mdb`s: it applies the events, ages them
//! every second and publishes a new `MdbView` through `ArcSwap`. Nothing on
//! the data path locks.
//!
//! Sources: a membership is "any source" (EXCLUDE mode, what an
//! any-source join reports) or a short list of sources (INCLUDE mode, a
//! source-specific join). The list is kept only to notice the BLOCK of its
//! last source (a source-specific leave); forwarding ignores sources.
//!
//! A membership and a router port carry the port's `flush_gen` of when
//! they were reported: a port whose VLAN role, MAC or admin state changed
//! since (or a new port in the slot) is no member until it reports again.

use super::fdb::Slot;
use crate::wire::ethernet::{self, HEADER_LEN, TAG_LEN};
use crate::wire::ip::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, PROTO_ICMPV6};
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

pub const PROTO_IGMP: u8 = 2;
const IGMP_QUERY: u8 = 0x11;
const IGMPV1_REPORT: u8 = 0x12;
const IGMPV2_REPORT: u8 = 0x16;
const IGMPV2_LEAVE: u8 = 0x17;
const IGMPV3_REPORT: u8 = 0x22;
const MLD_QUERY: u8 = 130;
const MLDV1_REPORT: u8 = 131;
const MLDV1_DONE: u8 = 132;
const MLDV2_REPORT: u8 = 143;

/// Group record types of IGMPv3 and MLDv2 reports (RFC 3376 4.2.12).
const MODE_IS_INCLUDE: u8 = 1;
const MODE_IS_EXCLUDE: u8 = 2;
const CHANGE_TO_INCLUDE: u8 = 3;
const CHANGE_TO_EXCLUDE: u8 = 4;
const ALLOW_NEW_SOURCES: u8 = 5;
const BLOCK_OLD_SOURCES: u8 = 6;

/// Most sources an INCLUDE-mode membership remembers; with more it counts
/// as any-source (it then ends by a leave or by aging, not by a BLOCK).
pub const MAX_SOURCES: usize = 32;
/// Most (VLAN, group) entries one switch's table holds; a join beyond is
/// refused (counted), and its group floods as an unknown one.
pub const MAX_GROUPS: usize = 4096;

/// Whether frames to `group` always flood: IPv4 224.0.0.0/24 (RFC 4541
/// 2.1.2: routing protocols, mDNS), and IPv6 groups of interface-local
/// or link-local scope (ff01::/16, ff02::/16; RFC 4541 section 3 names
/// only the all-nodes ff02::1, but flooding the whole link scope keeps
/// neighbour discovery's solicited-node groups independent of reports
/// that age out when there is no querier).
pub fn always_floods(group: IpAddr) -> bool {
    match group {
        IpAddr::V4(a) => a.octets()[..3] == [224, 0, 0],
        IpAddr::V6(a) => a.segments()[0] & 0x000f <= 2,
    }
}

/// A group whose membership the snooper tracks.
pub fn tracked(group: IpAddr) -> bool {
    group.is_multicast() && !always_floods(group)
}

/// What an IP multicast frame is to a snooping switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Forwarded as without snooping (to every port of the VLAN): not IP
    /// multicast, or to a group that always floods.
    Flood,
    /// An IGMP or MLD query: floods; its port leads to a router.
    Query,
    /// A membership report, leave or done: to the router ports only
    /// (RFC 4541 2.1.1), so that hosts do not suppress their own reports.
    Report,
    /// Data to a tracked group: to its members and the router ports.
    Data(IpAddr),
}

/// The parts of an IP header the snooper reads.
struct Ip<'a> {
    src: IpAddr,
    dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    proto: u8,
    /// The whole upper-layer message, when the packet holds all of it and
    /// is not a fragment.
    msg: Option<&'a [u8]>,
    /// Upper-layer length of an IPv6 packet (for the checksum).
    upper_len: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn v4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn v6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

fn ip_header(ethertype: u16, l3: &[u8]) -> Option<Ip<'_>> {
    match ethertype {
        ETHERTYPE_IPV4 => {
            if l3.len() < 20 || l3[0] >> 4 != 4 {
                return None;
            }
            let ihl = (l3[0] & 0x0f) as usize * 4;
            let total = be16(l3, 2)? as usize;
            let fragment = be16(l3, 6)? & 0x3fff != 0;
            let whole = ihl >= 20 && total >= ihl && total <= l3.len() && !fragment;
            Some(Ip {
                src: IpAddr::V4(v4(&l3[12..16])),
                dst: IpAddr::V4(v4(&l3[16..20])),
                proto: l3[9],
                msg: whole.then(|| &l3[ihl..total]),
                upper_len: 0,
            })
        }
        ETHERTYPE_IPV6 => {
            let p = ip::parse(ETHERTYPE_IPV6, l3)?;
            let end = 40 + be16(l3, 4)? as usize;
            let whole = !p.l4_unknown && p.l4_off <= end && end <= l3.len();
            Some(Ip {
                src: p.src,
                dst: p.dst,
                proto: p.proto,
                msg: whole.then(|| &l3[p.l4_off..end]),
                upper_len: end.saturating_sub(p.l4_off),
            })
        }
        _ => None,
    }
}

/// The one's-complement sum of `data` added to `acc`.
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

fn folds_to_zero(mut acc: u64) -> bool {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc == 0xffff
}

/// An IGMP or MLD message with a valid checksum and the length its type
/// needs: (type, the message).
fn control<'a>(ip: &Ip<'a>) -> Option<(u8, &'a [u8])> {
    let msg = ip.msg?;
    let t = *msg.first()?;
    match (ip.proto, ip.src, ip.dst) {
        (PROTO_IGMP, _, _) => {
            let min = match t {
                IGMP_QUERY | IGMPV1_REPORT | IGMPV2_REPORT | IGMPV2_LEAVE | IGMPV3_REPORT => 8,
                _ => return None,
            };
            (msg.len() >= min && folds_to_zero(sum(msg, 0))).then_some((t, msg))
        }
        (PROTO_ICMPV6, IpAddr::V6(src), IpAddr::V6(dst)) => {
            let min = match t {
                MLD_QUERY | MLDV1_REPORT | MLDV1_DONE => 24,
                MLDV2_REPORT => 8,
                _ => return None,
            };
            if msg.len() < min {
                return None;
            }
            let mut acc = sum(&src.octets(), 0);
            acc = sum(&dst.octets(), acc);
            acc += ip.upper_len as u64 + PROTO_ICMPV6 as u64;
            folds_to_zero(sum(msg, acc)).then_some((t, msg))
        }
        _ => None,
    }
}

/// What the L3 packet `l3` (of EtherType `ethertype`) is to the snooper.
pub fn classify(ethertype: u16, l3: &[u8]) -> Class {
    let Some(ip) = ip_header(ethertype, l3) else {
        return Class::Flood;
    };
    if !ip.dst.is_multicast() {
        return Class::Flood;
    }
    match control(&ip) {
        Some((IGMP_QUERY | MLD_QUERY, _)) => Class::Query,
        Some(_) => Class::Report,
        None if always_floods(ip.dst) => Class::Flood,
        None => Class::Data(ip.dst),
    }
}

/// A membership change an IGMP/MLD message reports, for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A query from a multicast router (or querier): its port is a router
    /// port. Not for queries from 0.0.0.0 (a proxy's), per RFC 4541.
    Query,
    /// Any-source membership: IGMPv1/v2 or MLDv1 report, IS_EX, TO_EX.
    Join(IpAddr),
    /// A source-specific membership wants `source` (IS_IN, TO_IN, ALLOW);
    /// `reset` starts a new source list (the first source of IS_IN/TO_IN).
    Include {
        group: IpAddr,
        source: IpAddr,
        reset: bool,
    },
    /// `source` is no longer wanted (BLOCK); the last one of a source list
    /// ends the membership.
    Block { group: IpAddr, source: IpAddr },
    /// The membership ends at once (IGMPv2 leave, MLDv1 done, TO_IN{} and
    /// IS_IN{}): a pod port has one host behind it (fast leave).
    Leave(IpAddr),
}

/// One group record of an IGMPv3/MLDv2 report, as events.
fn record(
    rtype: u8,
    group: IpAddr,
    sources: impl Iterator<Item = IpAddr>,
    f: &mut impl FnMut(Event),
) {
    if !tracked(group) {
        return;
    }
    let mut sources = sources.peekable();
    match rtype {
        MODE_IS_INCLUDE | CHANGE_TO_INCLUDE if sources.peek().is_none() => f(Event::Leave(group)),
        MODE_IS_INCLUDE | CHANGE_TO_INCLUDE => {
            for (i, source) in sources.enumerate() {
                f(Event::Include {
                    group,
                    source,
                    reset: i == 0,
                })
            }
        }
        MODE_IS_EXCLUDE | CHANGE_TO_EXCLUDE => f(Event::Join(group)),
        ALLOW_NEW_SOURCES => {
            for source in sources {
                f(Event::Include {
                    group,
                    source,
                    reset: false,
                })
            }
        }
        BLOCK_OLD_SOURCES => {
            for source in sources {
                f(Event::Block { group, source })
            }
        }
        // RFC 3376 4.2.12: unknown record types are ignored.
        _ => {}
    }
}

/// The group records of an IGMPv3 (`alen` 4) or MLDv2 (`alen` 16) report
/// starting at `at`, each as events; a record cut short ends the walk.
fn records(msg: &[u8], at: usize, count: u16, alen: usize, f: &mut impl FnMut(Event)) {
    let addr = |b: &[u8]| {
        if alen == 4 {
            IpAddr::V4(v4(b))
        } else {
            IpAddr::V6(v6(b))
        }
    };
    let mut off = at;
    for _ in 0..count {
        let (Some(&rtype), Some(&aux), Some(nsrc)) =
            (msg.get(off), msg.get(off + 1), be16(msg, off + 2))
        else {
            return;
        };
        let srcs = off + 4 + alen;
        let end = srcs + nsrc as usize * alen + aux as usize * 4;
        if end > msg.len() {
            return;
        }
        let group = addr(&msg[off + 4..srcs]);
        let sources = msg[srcs..srcs + nsrc as usize * alen]
            .chunks_exact(alen)
            .map(addr);
        record(rtype, group, sources, f);
        off = end;
    }
}

/// Calls `f` with each membership event of the IGMP or MLD message in
/// `l3`; nothing for anything else (or a bad checksum).
pub fn events(ethertype: u16, l3: &[u8], f: &mut impl FnMut(Event)) {
    let Some(ip) = ip_header(ethertype, l3) else {
        return;
    };
    if !ip.dst.is_multicast() {
        return;
    }
    let Some((t, msg)) = control(&ip) else {
        return;
    };
    let group4 = || IpAddr::V4(v4(&msg[4..8]));
    let group6 = || IpAddr::V6(v6(&msg[8..24]));
    let only_tracked = |g: IpAddr| tracked(g).then_some(g);
    let single = match t {
        IGMP_QUERY | MLD_QUERY if !ip.src.is_unspecified() => Some(Event::Query),
        IGMPV1_REPORT | IGMPV2_REPORT => only_tracked(group4()).map(Event::Join),
        IGMPV2_LEAVE => only_tracked(group4()).map(Event::Leave),
        MLDV1_REPORT => only_tracked(group6()).map(Event::Join),
        MLDV1_DONE => only_tracked(group6()).map(Event::Leave),
        IGMPV3_REPORT | MLDV2_REPORT => {
            let alen = if t == IGMPV3_REPORT { 4 } else { 16 };
            records(msg, 8, be16(msg, 6).unwrap_or(0), alen, f);
            None
        }
        _ => None,
    };
    if let Some(e) = single {
        f(e)
    }
}

/// `events` of an Ethernet frame (tagged or not).
pub fn frame_events(frame: &[u8], f: &mut impl FnMut(Event)) {
    let Ok(h) = ethernet::parse(frame) else {
        return;
    };
    let off = HEADER_LEN + if h.tag.in_frame() { TAG_LEN } else { 0 };
    events(h.ethertype, frame.get(off..).unwrap_or(&[]), f)
}

/// A member or router port as published: the port's slot, its
/// `flush_gen` when it reported, and when it expires (ns, the clock of
/// `crate::clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub slot: Slot,
    pub gen: u64,
    pub expires: u64,
}

impl Stamp {
    fn live(&self, gen: u64, now: u64) -> bool {
        self.gen == gen && self.expires > now
    }
}

fn find(list: &[Stamp], slot: Slot) -> Option<&Stamp> {
    list.binary_search_by_key(&slot, |s| s.slot)
        .ok()
        .map(|i| &list[i])
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    gen: u64,
    expires: u64,
    /// None: any source (EXCLUDE mode); else the sources wanted.
    sources: Option<Vec<IpAddr>>,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Changed,
    Unchanged,
    /// A join refused: the table holds `MAX_GROUPS` groups.
    Refused,
}

/// One switch's multicast table, owned by the snooper thread.
#[derive(Debug, Clone)]
pub struct Mdb {
    interval_ns: u64,
    groups: BTreeMap<(u16, IpAddr), BTreeMap<Slot, Member>>,
    /// (VLAN, slot) → (gen, expires): ports a query arrived on.
    routers: BTreeMap<(u16, Slot), (u64, u64)>,
}

impl Mdb {
    /// A table whose memberships live `seconds` without a report.
    pub fn new(seconds: u32) -> Self {
        Mdb {
            interval_ns: seconds as u64 * 1_000_000_000,
            groups: BTreeMap::new(),
            routers: BTreeMap::new(),
        }
    }

    /// Memberships (and router ports) live `seconds` from now on: those
    /// reported later get it, and none left lives longer than it from
    /// `now`. Whether anything changed.
    pub fn set_interval(&mut self, seconds: u32, now: u64) -> bool {
        self.interval_ns = seconds as u64 * 1_000_000_000;
        let cap = now.saturating_add(self.interval_ns);
        let mut changed = false;
        let expiries = self
            .groups
            .values_mut()
            .flat_map(|ms| ms.values_mut().map(|m| &mut m.expires))
            .chain(self.routers.values_mut().map(|(_, e)| e));
        for e in expiries.filter(|e| **e > cap) {
            *e = cap;
            changed = true;
        }
        changed
    }

    /// (VLAN, group) entries.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.routers.is_empty()
    }

    fn remove(&mut self, key: (u16, IpAddr), slot: Slot) -> Outcome {
        let Some(ms) = self.groups.get_mut(&key) else {
            return Outcome::Unchanged;
        };
        if ms.remove(&slot).is_none() {
            return Outcome::Unchanged;
        }
        if ms.is_empty() {
            self.groups.remove(&key);
        }
        Outcome::Changed
    }

    /// Applies an event that arrived on port `slot` (its `flush_gen` `gen`)
    /// on `vlan`, at `now` (ns).
    pub fn apply(&mut self, vlan: u16, slot: Slot, gen: u64, ev: Event, now: u64) -> Outcome {
        let expires = now.saturating_add(self.interval_ns);
        let fresh = |sources| Member {
            gen,
            expires,
            sources,
        };
        let key = |g| (vlan, g);
        match ev {
            Event::Query => {
                self.routers.insert((vlan, slot), (gen, expires));
                Outcome::Changed
            }
            Event::Leave(g) => self.remove(key(g), slot),
            Event::Block { group, source } => {
                let Some(m) = self
                    .groups
                    .get_mut(&key(group))
                    .and_then(|ms| ms.get_mut(&slot))
                    .filter(|m| m.gen == gen)
                else {
                    return Outcome::Unchanged;
                };
                match &mut m.sources {
                    Some(list) => {
                        list.retain(|s| *s != source);
                        if list.is_empty() {
                            return self.remove(key(group), slot);
                        }
                        Outcome::Changed
                    }
                    None => Outcome::Unchanged,
                }
            }
            Event::Join(g) | Event::Include { group: g, .. } => {
                if !self.groups.contains_key(&key(g)) && self.groups.len() >= MAX_GROUPS {
                    return Outcome::Refused;
                }
                let ms = self.groups.entry(key(g)).or_default();
                let m = ms.entry(slot).or_insert_with(|| fresh(Some(Vec::new())));
                if m.gen != gen {
                    *m = fresh(Some(Vec::new()));
                }
                m.expires = expires;
                match ev {
                    Event::Include { source, reset, .. } => {
                        if reset {
                            m.sources = Some(Vec::new());
                        }
                        if let Some(list) = &mut m.sources {
                            if list.len() >= MAX_SOURCES {
                                m.sources = None;
                            } else if !list.contains(&source) {
                                list.push(source);
                            }
                        }
                    }
                    _ => m.sources = None,
                }
                Outcome::Changed
            }
        }
    }

    /// Removes what expired by `now`; whether anything did.
    pub fn age(&mut self, now: u64) -> bool {
        let before = (self.groups.len(), self.routers.len());
        let mut members_gone = false;
        self.groups.retain(|_, ms| {
            let n = ms.len();
            ms.retain(|_, m| m.expires > now);
            members_gone |= ms.len() != n;
            !ms.is_empty()
        });
        self.routers.retain(|_, (_, exp)| *exp > now);
        members_gone || before != (self.groups.len(), self.routers.len())
    }

    /// The immutable view the data path and the API read.
    pub fn view(&self) -> MdbView {
        let stamp = |slot: Slot, gen: u64, expires: u64| Stamp { slot, gen, expires };
        let groups = self
            .groups
            .iter()
            .map(|(k, ms)| {
                let list: Box<[Stamp]> = ms
                    .iter()
                    .map(|(s, m)| stamp(*s, m.gen, m.expires))
                    .collect();
                (*k, list)
            })
            .collect();
        let mut routers: HashMap<u16, Vec<Stamp>> = HashMap::new();
        for ((vlan, slot), (gen, exp)) in &self.routers {
            // BTreeMap order: slots ascending within a VLAN.
            routers
                .entry(*vlan)
                .or_default()
                .push(stamp(*slot, *gen, *exp));
        }
        MdbView {
            groups,
            routers: routers
                .into_iter()
                .map(|(v, l)| (v, l.into_boxed_slice()))
                .collect(),
        }
    }
}

/// A switch's multicast table as published: immutable, read by the poll
/// threads (lookups) and the API (listing).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MdbView {
    /// (VLAN, group) → members, sorted by slot.
    groups: HashMap<(u16, IpAddr), Box<[Stamp]>>,
    /// VLAN → router ports learned from queries, sorted by slot.
    routers: HashMap<u16, Box<[Stamp]>>,
}

impl MdbView {
    pub fn members(&self, vlan: u16, group: IpAddr) -> &[Stamp] {
        self.groups.get(&(vlan, group)).map_or(&[], |l| l)
    }

    pub fn routers(&self, vlan: u16) -> &[Stamp] {
        self.routers.get(&vlan).map_or(&[], |l| l)
    }

    /// (VLAN, group) entries.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.routers.is_empty()
    }

    /// Every (VLAN, group) with its members, in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = (u16, IpAddr, &[Stamp])> {
        self.groups.iter().map(|((v, g), l)| (*v, *g, &l[..]))
    }

    /// Every VLAN's learned router ports, in no particular order.
    pub fn router_ports(&self) -> impl Iterator<Item = (u16, &[Stamp])> {
        self.routers.iter().map(|(v, l)| (*v, &l[..]))
    }
}

/// Which ports of the VLAN a multicast frame goes to (before the usual
/// checks: not back out, not to a port that is down or off the VLAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection<'a> {
    /// Every port, as without snooping.
    All,
    /// The uplinks, the router ports learned on the VLAN, and `members`.
    Only {
        members: &'a [Stamp],
        routers: &'a [Stamp],
        uplinks: &'a [Slot],
    },
}

impl Selection<'_> {
    /// Whether the port in `slot` (now with `flush_gen` `gen`) gets the frame.
    pub fn admits(&self, slot: Slot, gen: u64, now: u64) -> bool {
        match self {
            Selection::All => true,
            Selection::Only {
                members,
                routers,
                uplinks,
            } => {
                uplinks.binary_search(&slot).is_ok()
                    || find(routers, slot).is_some_and(|s| s.live(gen, now))
                    || find(members, slot).is_some_and(|s| s.live(gen, now))
            }
        }
    }
}

/// Where a frame of class `class` on `vlan` goes, by the table `view`:
/// `uplinks` (sorted) are always router ports; `gen_of` gives a slot's
/// current `flush_gen` (None: no port there). An unknown group (no live
/// member) floods if `flood_unknown`, else goes to the router ports only.
pub fn select<'a>(
    view: &'a MdbView,
    class: Class,
    vlan: u16,
    uplinks: &'a [Slot],
    flood_unknown: bool,
    gen_of: impl Fn(Slot) -> Option<u64>,
    now: u64,
) -> Selection<'a> {
    let only = |members| Selection::Only {
        members,
        routers: view.routers(vlan),
        uplinks,
    };
    match class {
        Class::Flood | Class::Query => Selection::All,
        Class::Report => only(&[]),
        Class::Data(g) => {
            let members = view.members(vlan, g);
            let known = members
                .iter()
                .any(|m| gen_of(m.slot).is_some_and(|gen| m.live(gen, now)));
            if !known && flood_unknown {
                Selection::All
            } else {
                only(members)
            }
        }
    }
}

/// One snooped event on its way to the snooper: the switch
/// (`SwitchView::id`) and snooping epoch it is for, and the port and VLAN
/// it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snooped {
    pub switch: u32,
    pub epoch: u64,
    pub vlan: u16,
    pub slot: Slot,
    /// The port's `flush_gen`.
    pub gen: u64,
    pub event: Event,
}

/// What the snooper thread is sent: events by the poll threads
/// (try_send), configuration by the registry.
#[derive(Debug)]
pub enum ToSnooper {
    Snooped(Snooped),
    /// Track switch `switch` with this table (Some: starts it, or changes
    /// its membership interval when the epoch is the same), or forget it.
    Configure {
        switch: u32,
        table: Option<Tracked>,
    },
}

/// A switch the snooper tracks.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// New each time snooping is turned on: events of an older one are
    /// ignored.
    pub epoch: u64,
    pub shared: Arc<McastShared>,
    pub membership_seconds: u32,
}

/// One poll thread's snooping counters of one switch (single writer).
#[derive(Debug, Default)]
#[repr(align(64))]
struct ThreadSlot {
    filtered: AtomicU64,
    overflow: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A switch's snooping counters, kept for the switch's life. Poll threads
/// write their own slots; the snooper thread alone writes the rest.
#[derive(Debug)]
pub struct McastCounters {
    threads: Box<[ThreadSlot]>,
    /// Membership reports (per group record), leaves and queries snooped.
    pub reports: AtomicU64,
    pub leaves: AtomicU64,
    pub queries: AtomicU64,
    /// Joins refused because the table was full.
    pub refused: AtomicU64,
}

impl McastCounters {
    pub fn new(threads: usize) -> Self {
        McastCounters {
            threads: (0..threads.max(1)).map(|_| ThreadSlot::default()).collect(),
            reports: AtomicU64::new(0),
            leaves: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn slot(&self, thread: usize) -> &ThreadSlot {
        &self.threads[thread % self.threads.len()]
    }

    /// Poll thread `thread` did not send `n` copies of a frame to ports
    /// of its VLAN that did not join its group.
    pub fn add_filtered(&self, thread: usize, n: u64) {
        bump(&self.slot(thread).filtered, n);
    }

    /// Poll thread `thread` found the snooper's queue full: an event lost.
    pub fn add_overflow(&self, thread: usize) {
        bump(&self.slot(thread).overflow, 1);
    }

    /// The snooper counts an event: a report (per group record), a
    /// leave (leave, done, TO_IN{}, BLOCK) or a query.
    pub fn count(&self, ev: &Event) {
        let c = match ev {
            Event::Query => &self.queries,
            Event::Join(_) | Event::Include { .. } => &self.reports,
            Event::Block { .. } | Event::Leave(_) => &self.leaves,
        };
        bump(c, 1);
    }

    /// The snooper refused a join: the table was full.
    pub fn count_refused(&self) {
        bump(&self.refused, 1);
    }

    pub fn filtered(&self) -> u64 {
        self.threads.iter().map(|t| t.filtered.load(Relaxed)).sum()
    }

    pub fn overflow(&self) -> u64 {
        self.threads.iter().map(|t| t.overflow.load(Relaxed)).sum()
    }
}

/// One snooping switch's published table (stored by the snooper only)
/// and its counters.
#[derive(Debug)]
pub struct McastShared {
    pub table: ArcSwap<MdbView>,
    pub counters: Arc<McastCounters>,
}

impl McastShared {
    pub fn new(counters: Arc<McastCounters>) -> Self {
        McastShared {
            table: ArcSwap::from_pointee(MdbView::default()),
            counters,
        }
    }
}

/// A snooping switch as the data path sees it (`SwitchView::mcast`).
#[derive(Debug, Clone)]
pub struct McastView {
    pub shared: Arc<McastShared>,
    pub epoch: u64,
    pub flood_unknown: bool,
    /// The switch's uplink ports, sorted: always router ports.
    pub uplinks: Vec<Slot>,
    /// To the snooper thread (poll threads try_send).
    pub events: SyncSender<ToSnooper>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn csum(data: &[u8], acc: u64) -> [u8; 2] {
        let mut a = sum(data, acc);
        while a >> 16 != 0 {
            a = (a & 0xffff) + (a >> 16);
        }
        (!(a as u16)).to_be_bytes()
    }

    /// An IPv4 packet (with the router-alert option, as IGMP carries it).
    pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        let total = 24 + payload.len();
        let mut p = vec![0x46, 0xc0];
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 1, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0x94, 0x04, 0, 0]); // router alert
        let c = csum(&p, 0);
        p[10..12].copy_from_slice(&c);
        p.extend_from_slice(payload);
        p
    }

    /// An IGMP message with its checksum filled in.
    pub fn igmp(mut m: Vec<u8>) -> Vec<u8> {
        m[2] = 0;
        m[3] = 0;
        let c = csum(&m, 0);
        m[2..4].copy_from_slice(&c);
        m
    }

    fn v2(t: u8, group: [u8; 4]) -> Vec<u8> {
        let mut m = vec![t, 100, 0, 0];
        m.extend_from_slice(&group);
        igmp(m)
    }

    /// (record type, group, sources).
    type Rec4<'a> = (u8, [u8; 4], &'a [[u8; 4]]);
    type Rec6<'a> = (u8, Ipv6Addr, &'a [Ipv6Addr]);

    /// An IGMPv3 report of these records.
    fn v3(recs: &[Rec4]) -> Vec<u8> {
        let mut m = vec![IGMPV3_REPORT, 0, 0, 0, 0, 0];
        m.extend_from_slice(&(recs.len() as u16).to_be_bytes());
        for (t, g, srcs) in recs {
            m.extend_from_slice(&[*t, 0]);
            m.extend_from_slice(&(srcs.len() as u16).to_be_bytes());
            m.extend_from_slice(g);
            for s in *srcs {
                m.extend_from_slice(s);
            }
        }
        igmp(m)
    }

    /// An IPv6 packet with a hop-by-hop header (router alert) before ICMPv6
    /// `icmp`, whose checksum is filled in.
    pub fn ipv6_icmp(src: Ipv6Addr, dst: Ipv6Addr, mut icmp: Vec<u8>) -> Vec<u8> {
        icmp[2] = 0;
        icmp[3] = 0;
        let mut acc = sum(&src.octets(), 0);
        acc = sum(&dst.octets(), acc);
        acc += icmp.len() as u64 + PROTO_ICMPV6 as u64;
        let c = csum(&icmp, acc);
        icmp[2..4].copy_from_slice(&c);
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((icmp.len() + 8) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 1]); // next: hop-by-hop; hop limit 1
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[PROTO_ICMPV6, 0, 5, 2, 0, 0, 1, 0]); // router alert (MLD), PadN
        p.extend_from_slice(&icmp);
        p
    }

    fn mld1(t: u8, group: Ipv6Addr) -> Vec<u8> {
        let mut m = vec![t, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&group.octets());
        m
    }

    fn mld2(recs: &[Rec6]) -> Vec<u8> {
        let mut m = vec![MLDV2_REPORT, 0, 0, 0, 0, 0];
        m.extend_from_slice(&(recs.len() as u16).to_be_bytes());
        for (t, g, srcs) in recs {
            m.extend_from_slice(&[*t, 0]);
            m.extend_from_slice(&(srcs.len() as u16).to_be_bytes());
            m.extend_from_slice(&g.octets());
            for s in *srcs {
                m.extend_from_slice(&s.octets());
            }
        }
        m
    }

    const H: [u8; 4] = [10, 0, 0, 5];
    const G: [u8; 4] = [239, 1, 2, 3];
    const G2: [u8; 4] = [239, 9, 9, 9];

    fn g(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(a.into())
    }

    fn ll() -> Ipv6Addr {
        "fe80::1".parse().unwrap()
    }

    fn g6() -> Ipv6Addr {
        "ff15::db8:1".parse().unwrap()
    }

    fn evs4(p: &[u8]) -> Vec<Event> {
        let mut v = Vec::new();
        events(ETHERTYPE_IPV4, p, &mut |e| v.push(e));
        v
    }

    fn evs6(p: &[u8]) -> Vec<Event> {
        let mut v = Vec::new();
        events(ETHERTYPE_IPV6, p, &mut |e| v.push(e));
        v
    }

    #[test]
    fn igmp_v1_v2_messages() {
        let report = ipv4(H, G, PROTO_IGMP, &v2(IGMPV2_REPORT, G));
        assert_eq!(classify(ETHERTYPE_IPV4, &report), Class::Report);
        assert_eq!(evs4(&report), vec![Event::Join(g(G))]);
        let v1 = ipv4(H, G, PROTO_IGMP, &v2(IGMPV1_REPORT, G));
        assert_eq!(evs4(&v1), vec![Event::Join(g(G))]);
        let leave = ipv4(H, [224, 0, 0, 2], PROTO_IGMP, &v2(IGMPV2_LEAVE, G));
        assert_eq!(classify(ETHERTYPE_IPV4, &leave), Class::Report);
        assert_eq!(evs4(&leave), vec![Event::Leave(g(G))]);
        let query = ipv4(H, [224, 0, 0, 1], PROTO_IGMP, &v2(IGMP_QUERY, [0; 4]));
        assert_eq!(classify(ETHERTYPE_IPV4, &query), Class::Query);
        assert_eq!(evs4(&query), vec![Event::Query]);
        // A proxy's query from 0.0.0.0 floods but makes no router port.
        let proxy = ipv4([0; 4], [224, 0, 0, 1], PROTO_IGMP, &v2(IGMP_QUERY, [0; 4]));
        assert_eq!(classify(ETHERTYPE_IPV4, &proxy), Class::Query);
        assert_eq!(evs4(&proxy), vec![]);
        // A report for a link-local group is no membership (it floods anyway).
        let mdns = ipv4(
            H,
            [224, 0, 0, 251],
            PROTO_IGMP,
            &v2(IGMPV2_REPORT, [224, 0, 0, 251]),
        );
        assert_eq!(classify(ETHERTYPE_IPV4, &mdns), Class::Report);
        assert_eq!(evs4(&mdns), vec![]);
    }

    #[test]
    fn a_bad_igmp_checksum_or_length_is_data_not_a_report() {
        let mut m = v2(IGMPV2_REPORT, G);
        m[7] ^= 1;
        let p = ipv4(H, G, PROTO_IGMP, &m);
        assert_eq!(classify(ETHERTYPE_IPV4, &p), Class::Data(g(G)));
        assert_eq!(evs4(&p), vec![]);
        let short = ipv4(
            H,
            G,
            PROTO_IGMP,
            &igmp(vec![IGMPV2_REPORT, 0, 0, 0, 239, 1]),
        );
        assert_eq!(classify(ETHERTYPE_IPV4, &short), Class::Data(g(G)));
        // IP says longer than the frame: not a whole message.
        let mut cut = ipv4(H, G, PROTO_IGMP, &v2(IGMPV2_REPORT, G));
        cut.truncate(cut.len() - 2);
        assert_eq!(evs4(&cut), vec![]);
        // A fragment is never a control message.
        let mut frag = ipv4(H, G, PROTO_IGMP, &v2(IGMPV2_REPORT, G));
        frag[6] = 0x20;
        assert_eq!(evs4(&frag), vec![]);
    }

    #[test]
    fn igmpv3_records_map_to_joins_and_leaves() {
        let s1 = [10, 9, 9, 1];
        let s2 = [10, 9, 9, 2];
        let rep = v3(&[
            (CHANGE_TO_EXCLUDE, G, &[]),
            (CHANGE_TO_INCLUDE, G2, &[]),
            (ALLOW_NEW_SOURCES, G, &[s1, s2]),
            (BLOCK_OLD_SOURCES, G, &[s1]),
            (MODE_IS_INCLUDE, G2, &[s2]),
            (MODE_IS_EXCLUDE, G2, &[s1]),
            (9, G, &[]),
            (CHANGE_TO_EXCLUDE, [224, 0, 0, 251], &[]),
        ]);
        let p = ipv4(H, [224, 0, 0, 22], PROTO_IGMP, &rep);
        assert_eq!(classify(ETHERTYPE_IPV4, &p), Class::Report);
        let inc = |grp, s: [u8; 4], reset| Event::Include {
            group: g(grp),
            source: g(s),
            reset,
        };
        assert_eq!(
            evs4(&p),
            vec![
                Event::Join(g(G)),
                Event::Leave(g(G2)),
                inc(G, s1, false),
                inc(G, s2, false),
                Event::Block {
                    group: g(G),
                    source: g(s1)
                },
                inc(G2, s2, true),
                Event::Join(g(G2)),
            ]
        );
        // A record count beyond the message stops at its end.
        let mut lying = v3(&[(CHANGE_TO_EXCLUDE, G, &[])]);
        lying[7] = 200;
        let lying = igmp(lying);
        assert_eq!(
            evs4(&ipv4(H, [224, 0, 0, 22], PROTO_IGMP, &lying)),
            vec![Event::Join(g(G))]
        );
    }

    #[test]
    fn igmpv3_query_is_a_query() {
        let mut q = vec![IGMP_QUERY, 100, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0];
        q = igmp(q);
        let p = ipv4(H, [224, 0, 0, 1], PROTO_IGMP, &q);
        assert_eq!(classify(ETHERTYPE_IPV4, &p), Class::Query);
    }

    #[test]
    fn ipv4_data_classes() {
        let udp = [0u8; 16];
        assert_eq!(
            classify(ETHERTYPE_IPV4, &ipv4(H, G, 17, &udp)),
            Class::Data(g(G))
        );
        assert_eq!(
            classify(ETHERTYPE_IPV4, &ipv4(H, [224, 0, 0, 251], 17, &udp)),
            Class::Flood,
            "link-local groups always flood"
        );
        assert_eq!(
            classify(ETHERTYPE_IPV4, &ipv4(H, [10, 0, 0, 255], 17, &udp)),
            Class::Flood
        );
        assert_eq!(classify(0x0806, &[0u8; 28]), Class::Flood, "ARP");
        assert_eq!(classify(ETHERTYPE_IPV4, &[0x45, 0, 0]), Class::Flood);
        // A data packet's head only (a multi-buffer frame): the group is enough.
        let mut big = ipv4(H, G, 17, &[0u8; 3000]);
        big.truncate(100);
        assert_eq!(classify(ETHERTYPE_IPV4, &big), Class::Data(g(G)));
    }

    #[test]
    fn mld_messages_after_the_hop_by_hop_header() {
        let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
        let report = ipv6_icmp(ll(), g6(), mld1(MLDV1_REPORT, g6()));
        assert_eq!(classify(ETHERTYPE_IPV6, &report), Class::Report);
        assert_eq!(evs6(&report), vec![Event::Join(IpAddr::V6(g6()))]);
        let done = ipv6_icmp(ll(), all_routers, mld1(MLDV1_DONE, g6()));
        assert_eq!(evs6(&done), vec![Event::Leave(IpAddr::V6(g6()))]);
        let mut q = mld1(MLD_QUERY, Ipv6Addr::UNSPECIFIED);
        q.extend_from_slice(&[0, 0, 0, 0]); // MLDv2 query: 28 bytes
        let query = ipv6_icmp(ll(), "ff02::1".parse().unwrap(), q);
        assert_eq!(classify(ETHERTYPE_IPV6, &query), Class::Query);
        assert_eq!(evs6(&query), vec![Event::Query]);
        let s: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let v2 = ipv6_icmp(
            ll(),
            "ff02::16".parse().unwrap(),
            mld2(&[
                (CHANGE_TO_EXCLUDE, g6(), &[]),
                (CHANGE_TO_INCLUDE, g6(), &[]),
                (BLOCK_OLD_SOURCES, g6(), &[s]),
                // Solicited-node: link scope, not tracked.
                (CHANGE_TO_EXCLUDE, "ff02::1:ff00:5".parse().unwrap(), &[]),
            ]),
        );
        assert_eq!(classify(ETHERTYPE_IPV6, &v2), Class::Report);
        assert_eq!(
            evs6(&v2),
            vec![
                Event::Join(IpAddr::V6(g6())),
                Event::Leave(IpAddr::V6(g6())),
                Event::Block {
                    group: IpAddr::V6(g6()),
                    source: IpAddr::V6(s)
                },
            ]
        );
        // A wrong checksum: data to the group, no event.
        let mut bad = report.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x40;
        assert_eq!(
            classify(ETHERTYPE_IPV6, &bad),
            Class::Data(IpAddr::V6(g6()))
        );
        assert_eq!(evs6(&bad), vec![]);
        // Neighbour discovery to a solicited-node group floods.
        let ns = ipv6_icmp(
            ll(),
            "ff02::1:ff00:5".parse().unwrap(),
            vec![135, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(classify(ETHERTYPE_IPV6, &ns), Class::Flood);
    }

    #[test]
    fn frame_events_read_through_a_tag() {
        let mut f = vec![
            0x01, 0, 0x5e, 1, 2, 3, 2, 0, 0, 0, 0, 1, 0x81, 0, 0, 100, 0x08, 0,
        ];
        f.extend_from_slice(&ipv4(H, G, PROTO_IGMP, &v2(IGMPV2_REPORT, G)));
        let mut v = Vec::new();
        frame_events(&f, &mut |e| v.push(e));
        assert_eq!(v, vec![Event::Join(g(G))]);
        frame_events(&f[..10], &mut |_| panic!("runt"));
    }

    #[test]
    fn table_joins_leaves_ages_and_keeps_vlans_apart() {
        let mut t = Mdb::new(10);
        assert_eq!(t.apply(100, 1, 7, Event::Join(g(G)), 0), Outcome::Changed);
        assert_eq!(t.apply(100, 2, 7, Event::Join(g(G)), 0), Outcome::Changed);
        assert_eq!(t.apply(200, 3, 7, Event::Join(g(G)), 0), Outcome::Changed);
        let v = t.view();
        let slots = |l: &[Stamp]| l.iter().map(|s| s.slot).collect::<Vec<_>>();
        assert_eq!(slots(v.members(100, g(G))), vec![1, 2]);
        assert_eq!(slots(v.members(200, g(G))), vec![3]);
        assert_eq!(v.members(100, g(G2)), &[]);
        assert_eq!(v.len(), 2);
        // Fast leave.
        assert_eq!(
            t.apply(100, 2, 7, Event::Leave(g(G)), SEC),
            Outcome::Changed
        );
        assert_eq!(
            t.apply(100, 2, 7, Event::Leave(g(G)), SEC),
            Outcome::Unchanged
        );
        assert_eq!(slots(t.view().members(100, g(G))), vec![1]);
        // A refresh moves the expiry; aging removes the rest.
        t.apply(100, 1, 7, Event::Join(g(G)), 5 * SEC);
        assert!(t.age(10 * SEC));
        assert_eq!(slots(t.view().members(100, g(G))), vec![1]);
        assert!(t.view().members(200, g(G)).is_empty(), "aged");
        assert!(!t.age(11 * SEC));
        assert!(t.age(15 * SEC));
        assert!(t.is_empty());
    }

    #[test]
    fn routers_are_learned_from_queries_and_age_out() {
        let mut t = Mdb::new(5);
        t.apply(100, 4, 1, Event::Query, 0);
        assert_eq!(t.view().routers(100)[0].slot, 4);
        // A longer interval does not extend what was reported; a shorter one cuts it.
        assert!(!t.set_interval(50, SEC));
        assert_eq!(t.view().routers(100)[0].expires, 5 * SEC);
        assert!(t.set_interval(3, SEC));
        assert_eq!(t.view().routers(100)[0].expires, 4 * SEC);
        t.set_interval(5, SEC);
        assert!(t.view().routers(200).is_empty());
        assert!(t.age(5 * SEC));
        assert!(t.view().routers(100).is_empty());
    }

    #[test]
    fn source_lists_end_a_membership_on_the_last_block() {
        let s1 = g([10, 9, 9, 1]);
        let s2 = g([10, 9, 9, 2]);
        let inc = |source, reset| Event::Include {
            group: g(G),
            source,
            reset,
        };
        let block = |source| Event::Block {
            group: g(G),
            source,
        };
        let mut t = Mdb::new(100);
        t.apply(1, 1, 0, inc(s1, true), 0);
        t.apply(1, 1, 0, inc(s2, false), 0);
        assert_eq!(t.apply(1, 1, 0, block(s1), 0), Outcome::Changed);
        assert_eq!(t.len(), 1);
        assert_eq!(t.apply(1, 1, 0, block(s2), 0), Outcome::Changed);
        assert_eq!(t.len(), 0, "the last source's BLOCK is a leave");
        // Any-source: a BLOCK changes nothing.
        t.apply(1, 1, 0, Event::Join(g(G)), 0);
        assert_eq!(t.apply(1, 1, 0, block(s1), 0), Outcome::Unchanged);
        // TO_IN{S} after any-source: back to a list, ended by its BLOCK.
        t.apply(1, 1, 0, inc(s2, true), 0);
        assert_eq!(t.apply(1, 1, 0, block(s2), 0), Outcome::Changed);
        assert_eq!(t.len(), 0);
        // More sources than remembered: any-source.
        for i in 0..=MAX_SOURCES as u8 {
            t.apply(1, 1, 0, inc(g([10, 0, 1, i]), false), 0);
        }
        assert_eq!(
            t.apply(1, 1, 0, block(g([10, 0, 1, 0])), 0),
            Outcome::Unchanged
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = Mdb::new(100);
        for i in 0..MAX_GROUPS as u32 {
            let a = Ipv4Addr::from(0xef00_0000 + i);
            assert_eq!(
                t.apply(1, 1, 0, Event::Join(IpAddr::V4(a)), 0),
                Outcome::Changed
            );
        }
        assert_eq!(t.apply(1, 1, 0, Event::Join(g(G2)), 0), Outcome::Refused);
        // A known group still takes members.
        let first = IpAddr::V4(Ipv4Addr::from(0xef00_0000));
        assert_eq!(t.apply(1, 2, 0, Event::Join(first), 0), Outcome::Changed);
    }

    #[test]
    fn a_stale_generation_is_no_member() {
        let mut t = Mdb::new(100);
        t.apply(1, 1, 3, Event::Join(g(G)), 0);
        let v = t.view();
        let up = [9];
        let gen_now = |gen| move |s: Slot| (s == 1).then_some(gen);
        // Port 1 still has gen 3: a member.
        let sel = select(&v, Class::Data(g(G)), 1, &up, true, gen_now(3), SEC);
        assert!(sel.admits(1, 3, SEC) && sel.admits(9, 0, SEC) && !sel.admits(2, 0, SEC));
        // Port 1 changed (gen 4): the group is unknown again and floods.
        let sel = select(&v, Class::Data(g(G)), 1, &up, true, gen_now(4), SEC);
        assert_eq!(sel, Selection::All);
        // Without flooding unknown groups: only the uplink.
        let sel = select(&v, Class::Data(g(G)), 1, &up, false, gen_now(4), SEC);
        assert!(!sel.admits(1, 4, SEC) && sel.admits(9, 0, SEC));
        // A report from the port under its new gen makes it a member again.
        t.apply(1, 1, 4, Event::Join(g(G)), SEC);
        let v = t.view();
        let sel = select(&v, Class::Data(g(G)), 1, &up, false, gen_now(4), SEC);
        assert!(sel.admits(1, 4, SEC));
        // Expired by the data path's clock even before the snooper ages it.
        let sel = select(&v, Class::Data(g(G)), 1, &up, false, gen_now(4), 200 * SEC);
        assert!(!sel.admits(1, 4, 200 * SEC));
    }

    #[test]
    fn selection_by_class() {
        let mut t = Mdb::new(100);
        t.apply(1, 1, 0, Event::Join(g(G)), 0);
        t.apply(1, 5, 0, Event::Query, 0);
        let v = t.view();
        let gen = |_| Some(0);
        assert_eq!(
            select(&v, Class::Flood, 1, &[], false, gen, 0),
            Selection::All
        );
        assert_eq!(
            select(&v, Class::Query, 1, &[], false, gen, 0),
            Selection::All
        );
        let rep = select(&v, Class::Report, 1, &[7], true, gen, 0);
        assert!(rep.admits(5, 0, 0) && rep.admits(7, 0, 0) && !rep.admits(1, 0, 0));
        let data = select(&v, Class::Data(g(G)), 1, &[], true, gen, 0);
        assert!(data.admits(1, 0, 0) && data.admits(5, 0, 0) && !data.admits(2, 0, 0));
        // Router ports are per VLAN.
        let other = select(&v, Class::Data(g(G)), 2, &[], false, gen, 0);
        assert!(!other.admits(5, 0, 0) && !other.admits(1, 0, 0));
    }

    proptest::proptest! {
        /// Whatever the body of an IGMP/MLD message of each type (with a
        /// valid checksum, so the record walk runs), and whatever raw
        /// bytes: no panic, and events only for tracked groups.
        #[test]
        fn parsers_never_panic(
            v6 in proptest::prelude::any::<bool>(),
            t in proptest::sample::select(vec![0x11u8, 0x12, 0x16, 0x17, 0x22, 130, 131, 132, 143, 7]),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut msg = vec![t, 0, 0, 0];
            msg.extend_from_slice(&body);
            let (et, p) = if v6 {
                (ETHERTYPE_IPV6, ipv6_icmp(ll(), "ff02::16".parse().unwrap(), msg))
            } else {
                (ETHERTYPE_IPV4, ipv4(H, [224, 0, 0, 22], PROTO_IGMP, &igmp(msg)))
            };
            let _ = classify(et, &p);
            events(et, &p, &mut |e| match e {
                Event::Query => {}
                Event::Join(g) | Event::Leave(g) | Event::Include { group: g, .. }
                | Event::Block { group: g, .. } => assert!(tracked(g)),
            });
            let _ = classify(et, &body);
            events(et, &body, &mut |_| {});
        }
    }

    #[test]
    fn always_flooding_groups() {
        for a in [
            "224.0.0.1",
            "224.0.0.251",
            "ff02::1",
            "ff02::1:ff00:1",
            "ff01::1",
            "ff12::5",
        ] {
            assert!(always_floods(a.parse().unwrap()), "{a}");
        }
        for a in [
            "224.0.1.1",
            "239.1.2.3",
            "ff05::2",
            "ff15::db8:1",
            "ff0e::1",
        ] {
            assert!(tracked(a.parse().unwrap()), "{a}");
        }
        assert!(!tracked("10.0.0.1".parse().unwrap()));
    }
}
