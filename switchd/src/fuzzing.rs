//! Fuzz harnesses: each takes arbitrary bytes and panics only when an
//! invariant breaks. `fuzz/` runs them under libFuzzer (`cargo fuzz`,
//! `bench/fuzz.sh`); the unit tests below replay the kept corpus, so CI
//! runs every input the fuzzer ever found interesting.
//!
//! Also the port tables and frames the pipeline's property tests build.

use crate::pipeline::fdb::{Fdb, Slot};
use crate::pipeline::snapshot::{PortView, Snapshot, SwitchView};
use crate::pipeline::vlan::{PortVlan, VlanSet};
use crate::pipeline::{forward, DropReason, Limits};
use crate::wire::ethernet::{self, TPID_8021AD, TPID_8021Q};
use podswitch_shared::model::MacAddr;

/// VLANs the generated ports and frames use.
pub const VIDS: [u16; 4] = [1, 10, 20, 30];

/// (is_trunk, access VID index, trunk allowed mask, native VID index, up)
pub type PortSpec = (bool, u8, u8, Option<u8>, bool);
/// (dst index (7 = broadcast), src index, tag kind, TCI, payload)
pub type FrameSpec = (u8, u8, u8, u16, Vec<u8>);

/// One switch whose ports are `ports`, slots 0.. in order.
pub fn build(ports: &[PortSpec]) -> Snapshot {
    let views: Vec<Option<PortView>> = ports
        .iter()
        .enumerate()
        .map(|(i, &(trunk, acc, mask, native, up))| {
            let vlan = if trunk {
                let mut allowed = VlanSet::default();
                for (b, v) in VIDS.iter().enumerate() {
                    if mask & (1 << b) != 0 {
                        allowed.insert(*v);
                    }
                }
                PortVlan::Trunk {
                    allowed,
                    native: native.map(|n| VIDS[n as usize % VIDS.len()]),
                }
            } else {
                PortVlan::Access(VIDS[acc as usize % VIDS.len()])
            };
            Some(PortView {
                up,
                ..PortView::plain(i as Slot, vlan)
            })
        })
        .collect();
    Snapshot {
        generation: 1,
        switches: vec![SwitchView {
            name: "default".into(),
            ports: (0..ports.len() as Slot).collect(),
            ..SwitchView::default()
        }],
        ports: views,
        changed: None,
    }
}

/// A unicast MAC per index, broadcast for 7.
pub fn mac(i: u8) -> [u8; 6] {
    if i == 7 {
        [0xff; 6]
    } else {
        [0x02, 0, 0, 0, 0, i + 1]
    }
}

/// A frame: untagged, 802.1Q with one of our VIDs (or 0), an S-tag, or an
/// 802.1Q tag with any TCI.
pub fn make_frame(&(d, s, kind, tci, ref payload): &FrameSpec) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&mac(d % 8));
    f.extend_from_slice(&mac(s % 7));
    match kind % 4 {
        0 => {}
        1 => {
            let vid = [0, 1, 10, 20, 30, 99][tci as usize % 6];
            f.extend_from_slice(&TPID_8021Q.to_be_bytes());
            f.extend_from_slice(&((tci & 0xf000) | vid).to_be_bytes());
        }
        2 => {
            f.extend_from_slice(&TPID_8021AD.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        _ => {
            f.extend_from_slice(&TPID_8021Q.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f
}

/// Why a forwarding decision broke the switching rules, if it did.
pub fn check_forwarding(
    snap: &Snapshot,
    fdb: &mut Fdb,
    limits: &mut Limits,
    ingress: Slot,
    frame: &[u8],
    now: u64,
) -> Result<(), String> {
    let sw = &snap.switches[0];
    let p = snap.port(ingress).ok_or("no such ingress port")?;
    let mut out = Vec::new();
    let parsed = ethernet::parse(frame);
    match (
        forward(snap, sw, fdb, limits, p, frame, now, &mut out),
        parsed,
    ) {
        (Err(DropReason::Malformed), Err(_)) => Ok(()),
        (Err(DropReason::Malformed), Ok(h)) if h.src.is_multicast() || h.src == MacAddr([0; 6]) => {
            Ok(())
        }
        (_, Err(_)) => Err("an unparsable frame was not dropped as malformed".into()),
        (Err(DropReason::LinkDown), _) if !p.up => Ok(()),
        (Err(DropReason::Vlan), Ok(h)) if p.vlan.classify(h.tag).is_none() => Ok(()),
        // A known unicast the private VLAN's rules keep from its target.
        (Err(DropReason::Pvlan), Ok(h))
            if !h.dst.is_multicast()
                && p.vlan
                    .classify(h.tag)
                    .is_some_and(|v| sw.fids.is_private(v)) =>
        {
            Ok(())
        }
        (Err(r), _) => Err(format!("unexpected drop {r:?}")),
        (Ok(d), Ok(h)) => {
            if !p.up {
                return Err("forwarded from a down port".into());
            }
            if Some(d.vlan) != p.vlan.classify(h.tag) {
                return Err(format!("classified into VLAN {}", d.vlan));
            }
            let mut seen = std::collections::HashSet::new();
            for e in &out {
                if !seen.insert(e.slot) {
                    return Err("duplicate egress".into());
                }
                if e.slot == p.slot {
                    return Err("back out the ingress port".into());
                }
                let q = snap.port(e.slot).ok_or("egress to no port")?;
                if !q.up {
                    return Err("to a down port".into());
                }
                if !q.vlan.carries(d.vlan) {
                    return Err(format!("VLAN {} leaked to slot {}", d.vlan, e.slot));
                }
                if e.edit != q.vlan.egress(d.vlan) {
                    return Err("wrong egress tag edit".into());
                }
            }
            if !d.flooded && (out.len() > 1 || h.dst.is_multicast()) {
                return Err("unicast to several ports, or multicast not flooded".into());
            }
            Ok(())
        }
    }
}

/// Reads bytes off the input; zeros once it runs out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Fuzz target `pipeline`: a random port table (2-6 ports, access and
/// trunk, some down), then frames on random ingress ports, generated or
/// raw bytes. Panics if a frame crosses VLANs, leaves by its ingress port,
/// reaches a down port, gets the wrong tag, or a bad frame is not dropped.
pub fn pipeline(data: &[u8]) {
    let mut r = Reader(data);
    let n = 2 + (r.u8() % 5) as usize;
    let ports: Vec<PortSpec> = (0..n)
        .map(|_| {
            let b = r.u8();
            (
                b & 1 == 1,
                r.u8(),
                r.u8(),
                (b & 2 == 2).then(|| r.u8()),
                b & 0x1c != 0,
            )
        })
        .collect();
    let snap = build(&ports);
    let mut fdb = Fdb::new(300, 64);
    let mut limits = Limits::default();
    limits.sync(&snap, 0);
    let mut now = 0u64;
    while !r.is_empty() {
        let ingress = (r.u8() as usize % n) as Slot;
        let frame = if r.u8() & 1 == 0 {
            let len = r.u8() as usize;
            r.bytes(len).to_vec()
        } else {
            let spec: FrameSpec = (r.u8(), r.u8(), r.u8(), r.u16(), {
                let len = (r.u8() % 64) as usize;
                r.bytes(len).to_vec()
            });
            make_frame(&spec)
        };
        now += u64::from(r.u8()) * 1_000_000;
        if let Err(why) = check_forwarding(&snap, &mut fdb, &mut limits, ingress, &frame, now) {
            panic!("switching rule broken: {why}; ports {ports:?}, ingress {ingress}, frame {frame:02x?}");
        }
    }
}

/// Fuzz target `api`: a control-API body for each of the POST/PATCH
/// shapes and the `--switches-file` (read as a capture's query string
/// too), chosen by the first byte. Decoding
/// and validating must answer (a value or an error), never panic, and a
/// decoded port config must survive a JSON round trip unchanged.
pub fn api(data: &[u8]) {
    use podswitch_shared::model::{PortConfig, PortUpdate, SwitchConfig, VPort};
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            if let Ok(c) = serde_json::from_slice::<PortConfig>(body) {
                let again =
                    serde_json::to_vec(&c).map(|v| serde_json::from_slice::<PortConfig>(&v));
                assert!(
                    matches!(again, Ok(Ok(ref d)) if *d == c),
                    "PortConfig does not round-trip: {c:?}"
                );
                let _ = crate::registry::validate::check_trunk(c.trunk.as_deref());
                let v = VPort::from_config("fuzz".into(), "default".into(), c);
                let _ = crate::registry::validate::check_policy(&v);
            }
        }
        1 => {
            if let Ok(u) = serde_json::from_slice::<PortUpdate>(body) {
                let _ = serde_json::to_vec(&u);
            }
        }
        2 => {
            let _ = serde_json::from_slice::<SwitchConfig>(body);
        }
        _ => {
            let _ = serde_json::from_slice::<crate::registry::Declared>(body);
            if let Ok(q) = std::str::from_utf8(body) {
                let _ = crate::wire::pcap::CaptureRequest::from_query(Some(q));
            }
        }
    }
}

/// Fuzz target `state`: a state file. Reading it must answer (the stored
/// switches and ports, or an error naming the file), never panic; what it
/// accepts must survive being written and read again.
pub fn state(data: &[u8]) {
    if let Ok(s) = crate::registry::parse_state(data) {
        let again = crate::registry::parse_state(&crate::registry::write_state(&s))
            .unwrap_or_else(|e| panic!("a state it read does not read back: {e}"));
        assert_eq!(
            format!("{again:?}"),
            format!("{s:?}"),
            "state does not round-trip"
        );
    }
}

/// Fuzz target `mcast`: an IPv4 (first byte even) or IPv6 packet for the
/// snooper's parsers. They must never panic; events come only from a
/// query or a report, and name only groups the snooper tracks.
pub fn mcast(data: &[u8]) {
    use crate::pipeline::mcast::{classify, events, tracked, Class, Event};
    use crate::wire::ip::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
    let Some((&pick, l3)) = data.split_first() else {
        return;
    };
    let et = if pick & 1 == 0 {
        ETHERTYPE_IPV4
    } else {
        ETHERTYPE_IPV6
    };
    let class = classify(et, l3);
    events(et, l3, &mut |e| {
        assert!(
            matches!(class, Class::Query | Class::Report),
            "{e:?} from a {class:?}"
        );
        match e {
            Event::Query => {}
            Event::Join(g)
            | Event::Leave(g)
            | Event::Include { group: g, .. }
            | Event::Block { group: g, .. } => assert!(tracked(g), "{e:?}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every input kept in `fuzz/corpus/<target>` (what the fuzzer found
    /// interesting, and the crashes it found, once fixed) runs here.
    fn replay(target: &str, run: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "{} holds no inputs", dir.display());
    }

    #[test]
    fn corpus_pipeline() {
        replay("pipeline", super::pipeline);
    }

    #[test]
    fn corpus_api() {
        replay("api", super::api);
    }

    #[test]
    fn corpus_state() {
        replay("state", super::state);
    }

    #[test]
    fn corpus_mcast() {
        replay("mcast", super::mcast);
    }
}
