//! Prometheus metrics, served on `--metrics-addr` with `/healthz` and
//! `/readyz` for probes, through the `prometheus` crate: the control API's
//! request counter and latency histogram are its instruments; everything
//! read from the registry and the poll threads at scrape time (per-port
//! counters, FDB and poll-thread figures) is collected into its metric
//! families as an exporter does, and its text encoder writes the
//! exposition.
//!
//! Cardinality stays low: counters carry only a `port` label; one
//! `podswitch_port_info` series per port carries switch, pod, namespace,
//! VLAN and NIC kind to join on. Counters start at zero when switchd
//! starts; `process_start_time_seconds` changes then, and Prometheus'
//! `rate()`/`increase()` treat the drop as a counter reset.

use crate::control::listen::{self, ConnBudget};
use crate::registry::Registry;
use podswitch_shared::model::{PortStats, VPort};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, Opts, TextEncoder};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the API latency histogram, seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Control-API request counts and latencies (the crate's instruments, in
/// their own registry), and both listeners' connection budgets.
pub struct ApiMetrics {
    registry: prometheus::Registry,
    requests: IntCounterVec,
    latency: Histogram,
    pub control: Arc<ConnBudget>,
    pub metrics: Arc<ConnBudget>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "podswitch_api_requests_total",
                "Control API requests, by method and HTTP status.",
            ),
            &["method", "code"],
        );
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "podswitch_api_request_duration_seconds",
                "Control API request latency, in seconds.",
            )
            .buckets(BUCKETS.to_vec()),
        );
        // Constant, valid names and buckets: creating them cannot fail.
        let requests = requests.expect("a constant, valid counter definition");
        let latency = latency.expect("a constant, valid histogram definition");
        let registry = prometheus::Registry::new();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                log::error!("API metrics not registered: {e}");
            }
        }
        ApiMetrics {
            registry,
            requests,
            latency,
            control: Arc::new(ConnBudget::new("control", listen::CONTROL_CONNECTIONS)),
            metrics: Arc::new(ConnBudget::new("metrics", listen::METRICS_CONNECTIONS)),
        }
    }
}

impl ApiMetrics {
    pub fn observe(&self, method: &str, code: u16, took: Duration) {
        self.requests
            .with_label_values(&[method, &code.to_string()])
            .inc();
        self.latency.observe(took.as_secs_f64());
    }
}

/// One metric family being filled: samples of its type with their labels.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, kind: MetricType, help: &str) -> Family {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_string());
        mf.set_help(help.to_string());
        mf.set_field_type(kind);
        Family(mf)
    }

    fn counter(name: &str, help: &str) -> Family {
        Family::new(name, MetricType::COUNTER, help)
    }

    fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, MetricType::GAUGE, help)
    }

    /// A counter if `counter`, else a gauge.
    fn of(counter: bool, name: &str, help: &str) -> Family {
        if counter {
            Family::counter(name, help)
        } else {
            Family::gauge(name, help)
        }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        if self.0.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.0.mut_metric().push(m);
    }
}

/// Families collected at scrape time from the registry, the poll threads
/// and the listeners.
fn collect(state: &Mutex<Registry>, api: &ApiMetrics, start_time: f64) -> Vec<Family> {
    let (ports, info, switches, dp, mcast) = {
        let s = state.lock().unwrap_or_else(|e| e.into_inner());
        (
            s.ports(),
            s.datapath_info(),
            s.switch_ids(),
            s.datapath(),
            s.mcast_stats(),
        )
    };
    let fdb: Vec<(String, u32, crate::datapath::FdbView)> = switches
        .into_iter()
        .map(|(name, id, max)| (name, max, dp.fdb(id, false).unwrap_or_default()))
        .collect();
    let mut out = Vec::new();
    let mut f = Family::gauge(
        "podswitch_build_info",
        "podswitch build information; always 1.",
    );
    f.add(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    out.push(f);
    let mut f = Family::gauge(
        "process_start_time_seconds",
        "Start time of switchd since the Unix epoch, in seconds.",
    );
    f.add(&[], (start_time * 1000.0).round() / 1000.0);
    out.push(f);
    if let Some(h) = &info.handover {
        let mut f = Family::gauge(
            "podswitch_handover_duration_seconds",
            "How long this switchd took to poll every port handed over by its predecessor.",
        );
        f.add(
            &[("from_version", &h.from_version)],
            h.took_ms as f64 / 1000.0,
        );
        out.push(f);
        let mut f = Family::gauge(
            "podswitch_handover_dropped_frames",
            "Frames in the predecessor's hands (shaper queues) that the handover dropped.",
        );
        f.add(&[], h.frames_dropped as f64);
        out.push(f);
    }
    out.push(port_info(&ports));
    out.extend(overlay_families(&ports));

    // Ports switchd never attaches (a legacy-eswitch VF: the NIC forwards
    // its frames) have no counters and no attached series: switchd sees
    // none of their traffic, and 0 would read as an idle or broken port.
    let served: Vec<&VPort> = ports.iter().filter(|p| p.nic.attaches()).collect();
    type Pick = fn(&PortStats) -> u64;
    let counters: [(&str, &str, Pick); 5] = [
        (
            "podswitch_port_receive_packets_total",
            "Frames received from the port's NIC.",
            |s| s.rx_packets,
        ),
        (
            "podswitch_port_receive_bytes_total",
            "Bytes received from the port's NIC.",
            |s| s.rx_bytes,
        ),
        (
            "podswitch_port_transmit_packets_total",
            "Frames sent to the port's NIC.",
            |s| s.tx_packets,
        ),
        (
            "podswitch_port_transmit_bytes_total",
            "Bytes sent to the port's NIC.",
            |s| s.tx_bytes,
        ),
        (
            "podswitch_port_mac_handovers_total",
            "Times the port's own MAC moved to it from another port of the switch (a live-migrated VM announcing itself).",
            |s| s.mac_handovers,
        ),
    ];
    for (name, help, pick) in counters {
        let mut f = Family::counter(name, help);
        for p in &served {
            let v = p.stats.as_ref().map(pick).unwrap_or(0);
            f.add(&[("port", &p.id)], v as f64);
        }
        out.push(f);
    }
    let reasons: Vec<&str> = crate::pipeline::DropReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    let mut f = Family::counter(
        "podswitch_port_drops_total",
        &format!(
            "Frames dropped at the port, by reason ({}).",
            reasons.join(", ")
        ),
    );
    for p in &served {
        let drops = p.stats.as_ref().map(|s| &s.drops);
        for r in &reasons {
            let v = drops.and_then(|d| d.get(*r)).copied().unwrap_or(0);
            f.add(&[("port", &p.id), ("reason", r)], v as f64);
        }
    }
    out.push(f);
    out.push(shaper_gauges(&served));
    out.extend(mirror_and_capture(&served));
    let mut f = Family::gauge(
        "podswitch_port_link_up",
        "1 if the port is administratively up, 0 if it is set down.",
    );
    for p in &ports {
        let up = p.link_state == podswitch_shared::model::LinkState::Up;
        f.add(&[("port", &p.id)], f64::from(u8::from(up)));
    }
    out.push(f);
    let mut f = Family::gauge(
        "podswitch_port_attached",
        "1 if the data path serves the port's NIC (no series for a VF in legacy eswitch mode, which the NIC itself forwards).",
    );
    for p in &served {
        let a = p.status.as_ref().is_some_and(|s| s.attached);
        f.add(&[("port", &p.id)], f64::from(u8::from(a)));
    }
    out.push(f);

    type PickF = fn(&crate::datapath::FdbView, u32) -> u64;
    let per_switch: [(&str, bool, &str, PickF); 4] = [
        (
            "podswitch_switch_fdb_entries",
            false,
            "Entries in the switch's forwarding table.",
            |f, _| f.len as u64,
        ),
        (
            "podswitch_switch_fdb_max_entries",
            false,
            "Most learned MACs the switch holds (maxFdbEntries).",
            |_, max| max as u64,
        ),
        (
            "podswitch_switch_fdb_moves_total",
            true,
            "MACs learned on another port than before (a station moved, or a loop).",
            |f, _| f.moves,
        ),
        (
            "podswitch_switch_fdb_learn_refused_total",
            true,
            "Source MACs not learned because the forwarding table was full (their frames flood).",
            |f, _| f.limit_hits,
        ),
    ];
    for (name, counter, help, pick) in per_switch {
        let mut f = Family::of(counter, name, help);
        for (sw, max, v) in &fdb {
            f.add(&[("switch", sw)], pick(v, *max) as f64);
        }
        out.push(f);
    }
    out.extend(mcast_families(&mcast));

    type PickT = fn(&podswitch_shared::model::PollThreadInfo) -> f64;
    let per_thread: [(&str, bool, &str, PickT); 7] = [
        (
            "podswitch_poll_thread_receive_packets_total",
            true,
            "Frames a poll thread took from its sockets' RX rings.",
            |t| t.rx_packets as f64,
        ),
        (
            "podswitch_poll_thread_transmit_packets_total",
            true,
            "Frames a poll thread put on its sockets' TX rings.",
            |t| t.tx_packets as f64,
        ),
        (
            "podswitch_poll_thread_handoff_out_total",
            true,
            "Frames a poll thread handed to another (egress port without a queue on it, or rate-limited on another thread).",
            |t| t.handoff_out as f64,
        ),
        (
            "podswitch_poll_thread_handoff_in_total",
            true,
            "Frames a poll thread took from other poll threads.",
            |t| t.handoff_in as f64,
        ),
        (
            "podswitch_poll_thread_ports",
            false,
            "Port queues a poll thread serves.",
            |t| t.ports as f64,
        ),
        (
            "podswitch_poll_thread_free_frames",
            false,
            "UMEM frames on a poll thread's free list.",
            |t| t.free_frames as f64,
        ),
        (
            "podswitch_poll_thread_cpu_seconds_total",
            true,
            "CPU time a poll thread has used.",
            |t| (t.cpu_seconds * 1000.0).round() / 1000.0,
        ),
    ];
    for (name, counter, help, pick) in per_thread {
        let mut f = Family::of(counter, name, help);
        for t in &info.threads {
            f.add(&[("thread", &t.index.to_string())], pick(t));
        }
        out.push(f);
    }

    type PickL = fn(&ConnBudget) -> u64;
    let per_listener: [(&str, bool, &str, PickL); 6] = [
        (
            "podswitch_listener_open_connections",
            false,
            "Connections a listener (control socket, metrics) has open.",
            |b| b.open() as u64,
        ),
        (
            "podswitch_listener_max_connections",
            false,
            "Most connections a listener keeps open; more wait in its backlog.",
            |b| b.max as u64,
        ),
        (
            "podswitch_listener_full_total",
            true,
            "Times a listener was at its connection cap when a client connected.",
            |b| b.full.load(Relaxed),
        ),
        (
            "podswitch_listener_timeouts_total",
            true,
            "Connections closed because a request head or body came too slowly, or the connection grew too old.",
            |b| b.timeouts.load(Relaxed),
        ),
        (
            "podswitch_listener_refused_peers_total",
            true,
            "Connections refused because the peer is neither root nor in --socket-group (control socket).",
            |b| b.refused_peers.load(Relaxed),
        ),
        (
            "podswitch_listener_accept_errors_total",
            true,
            "Failed accepts (e.g. out of file descriptors).",
            |b| b.accept_errors.load(Relaxed),
        ),
    ];
    for (name, counter, help, pick) in per_listener {
        let mut f = Family::of(counter, name, help);
        for b in [&api.control, &api.metrics] {
            f.add(&[("listener", b.name)], pick(b) as f64);
        }
        out.push(f);
    }
    out
}

/// One series per port with the labels to join on.
fn port_info(ports: &[VPort]) -> Family {
    let mut f = Family::gauge(
        "podswitch_port_info",
        "One series per port with its switch, owner pod, VLAN and NIC; always 1.",
    );
    for p in ports {
        let owner = p.owner.clone().unwrap_or_default();
        let vlan = match p.mode() {
            podswitch_shared::model::VlanMode::Access(v) => v.to_string(),
            podswitch_shared::model::VlanMode::Trunk { native, .. } => {
                format!(
                    "trunk{}",
                    native.map(|n| format!(":{n}")).unwrap_or_default()
                )
            }
            podswitch_shared::model::VlanMode::Private(pv) => format!("pvlan-{pv}"),
        };
        // A legacy-eswitch VF has no netdev: its PCI address names it.
        let nic = match (p.nic.ifname.as_str(), &p.nic.pci_address) {
            ("", Some(pci)) => pci.as_str(),
            (ifname, _) => ifname,
        };
        let kind = p.nic.kind.to_string();
        let mut labels: Vec<(&str, &str)> = vec![("port", &p.id), ("switch", &p.switch)];
        // Ports without a pod (an uplink) carry no pod/namespace labels, so
        // a scrape with honor_labels does not fill in switchd's own.
        if owner.pod_name.is_some() || owner.pod_namespace.is_some() {
            labels.push(("pod", owner.pod_name.as_deref().unwrap_or("")));
            labels.push(("namespace", owner.pod_namespace.as_deref().unwrap_or("")));
        }
        labels.extend([("vlan", vlan.as_str()), ("nic_kind", &kind), ("nic", nic)]);
        // A VF's PCI address and eswitch mode, on vfio ports only.
        let mode = p.nic.eswitch_mode.map(|m| m.to_string());
        if p.nic.pci_address.is_some() || mode.is_some() {
            labels.push(("pci_address", p.nic.pci_address.as_deref().unwrap_or("")));
            labels.push(("eswitch_mode", mode.as_deref().unwrap_or("")));
        }
        f.add(&labels, 1.0);
    }
    f
}

/// Frames waiting in each port's shapers (qos.ingressRate: to the port;
/// qos.egressRate: from it).
fn shaper_gauges(ports: &[&VPort]) -> Family {
    let mut f = Family::gauge(
        "podswitch_port_shaper_queued_frames",
        "Frames waiting for tokens in the port's shaper, by direction (ingress: to the port, qos.ingressRate; egress: from it, qos.egressRate); sampled once a second.",
    );
    for p in ports {
        let (ingress, egress) = p
            .stats
            .as_ref()
            .map_or((0, 0), |s| (s.ingress_queued, s.egress_queued));
        for (dir, v) in [("ingress", ingress), ("egress", egress)] {
            f.add(&[("port", &p.id), ("direction", dir)], v as f64);
        }
    }
    f
}

/// Port mirroring and live capture counters, per attached port.
fn mirror_and_capture(ports: &[&VPort]) -> Vec<Family> {
    type Pick = fn(&VPort) -> u64;
    let series: [(&str, bool, &str, Pick); 5] = [
        (
            "podswitch_port_mirror_copies_total",
            true,
            "Mirror copies sent to the port (a portMirroring destination).",
            |p| p.stats.as_ref().map_or(0, |s| s.mirror_copies),
        ),
        (
            "podswitch_port_mirror_dropped_total",
            true,
            "Mirror copies for the port that could not be made or queued (no free frame, TX ring or hand-off ring full); also podswitch_port_drops_total{reason=\"mirror\"}.",
            |p| {
                p.stats
                    .as_ref()
                    .and_then(|s| s.drops.get("mirror").copied())
                    .unwrap_or(0)
            },
        ),
        (
            "podswitch_port_capture_frames_total",
            true,
            "Frames live captures of the port took.",
            |p| p.stats.as_ref().map_or(0, |s| s.capture_frames),
        ),
        (
            "podswitch_port_capture_dropped_total",
            true,
            "Frames live captures of the port lost because their ring was full (the reader was slower than the port).",
            |p| p.stats.as_ref().map_or(0, |s| s.capture_dropped),
        ),
        (
            "podswitch_port_captures_running",
            false,
            "Live captures running on the port.",
            |p| p.status.as_ref().map_or(0, |s| s.captures.len() as u64),
        ),
    ];
    series
        .into_iter()
        .map(|(name, counter, help, pick)| {
            let mut f = Family::of(counter, name, help);
            for p in ports {
                f.add(&[("port", &p.id)], pick(p) as f64);
            }
            f
        })
        .collect()
}

/// Renders every metric in the text exposition format. The registry is
/// locked only to copy what is rendered; the poll threads are asked for
/// their FDB figures after.
pub fn render(state: &Mutex<Registry>, api: &ApiMetrics, start_time: f64) -> String {
    let mut families: Vec<MetricFamily> = collect(state, api, start_time)
        .into_iter()
        .map(|f| f.0)
        .chain(api.registry.gather())
        // The encoder refuses a family without samples (no ports yet).
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::with_capacity(64 * 1024);
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        log::error!("metrics: encoding failed: {e}");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// The overlay behind each vxlan port: per peer, frames and bytes each
/// way and whether the kernel can reach it; drops by reason; floods.
fn overlay_families(ports: &[VPort]) -> Vec<Family> {
    let mut tx_packets = Family::counter(
        "podswitch_overlay_peer_tx_packets_total",
        "Frames an overlay port sent to a peer (a flood counts once per peer).",
    );
    let mut tx_bytes = Family::counter(
        "podswitch_overlay_peer_tx_bytes_total",
        "Bytes of the frames an overlay port sent to a peer, without the encapsulation.",
    );
    let mut rx_packets = Family::counter(
        "podswitch_overlay_peer_rx_packets_total",
        "Frames an overlay port received from a peer and took.",
    );
    let mut rx_bytes = Family::counter(
        "podswitch_overlay_peer_rx_bytes_total",
        "Bytes of the frames an overlay port took from a peer, without the encapsulation.",
    );
    let mut unreachable = Family::gauge(
        "podswitch_overlay_peer_unreachable",
        "1 if the kernel has no route to the peer or its next hop does not answer ARP/ND, else 0.",
    );
    let mut drops = Family::counter(
        "podswitch_overlay_dropped_frames_total",
        "Frames an overlay port dropped, by reason: unmapped-vni, not-a-peer, unmapped-vlan, untagged, no-peers, tx-error, malformed.",
    );
    let mut floods = Family::counter(
        "podswitch_overlay_floods_total",
        "Frames an overlay port replicated to every peer (broadcast, multicast, unknown unicast).",
    );
    for p in ports.iter().filter(|p| p.nic.vxlan.is_some()) {
        let Some(st) = crate::overlay::status(&p.nic.ifname) else {
            continue;
        };
        let base = [("switch", p.switch.as_str()), ("port", p.id.as_str())];
        for peer in &st.peers {
            let a = peer.address.to_string();
            let l = [base[0], base[1], ("peer", a.as_str())];
            tx_packets.add(&l, peer.tx_packets as f64);
            tx_bytes.add(&l, peer.tx_bytes as f64);
            rx_packets.add(&l, peer.rx_packets as f64);
            rx_bytes.add(&l, peer.rx_bytes as f64);
            unreachable.add(&l, u8::from(!peer.reachable) as f64);
        }
        for (reason, n) in st.drops.by_reason() {
            drops.add(&[base[0], base[1], ("reason", reason)], n as f64);
        }
        floods.add(&base, st.floods as f64);
    }
    vec![
        tx_packets,
        tx_bytes,
        rx_packets,
        rx_bytes,
        unreachable,
        drops,
        floods,
    ]
}

/// Multicast snooping, per switch (every switch has the series; one that
/// does not snoop has no groups and its counters stand still).
fn mcast_families(stats: &[crate::registry::McastStats]) -> Vec<Family> {
    use crate::pipeline::mcast::McastCounters;
    let mut snooping = Family::gauge(
        "podswitch_switch_mcast_snooping",
        "1 if the switch snoops IGMP/MLD (multicastSnooping), else 0.",
    );
    let mut groups = Family::gauge(
        "podswitch_switch_mcast_groups",
        "(VLAN, group) entries in the switch's multicast table.",
    );
    let mut snooped = Family::counter(
        "podswitch_switch_mcast_snooped_total",
        "IGMP/MLD messages snooped, by type: report (per group record), leave (leave, done, TO_IN{}, BLOCK), query.",
    );
    for (sw, on, n, c) in stats {
        snooping.add(&[("switch", sw)], u8::from(*on) as f64);
        groups.add(&[("switch", sw)], *n as f64);
        for (kind, v) in [
            ("report", &c.reports),
            ("leave", &c.leaves),
            ("query", &c.queries),
        ] {
            snooped.add(&[("switch", sw), ("type", kind)], v.load(Relaxed) as f64);
        }
    }
    let mut out = vec![snooping, groups, snooped];
    type Pick = fn(&McastCounters) -> u64;
    let counters: [(&str, &str, Pick); 3] = [
        (
            "podswitch_switch_mcast_filtered_total",
            "Copies of IP multicast frames not sent to a port of the VLAN because it did not join the group (snooping at work, not a loss).",
            |c| c.filtered(),
        ),
        (
            "podswitch_switch_mcast_events_lost_total",
            "Snooped membership events lost because the snooper's queue was full.",
            |c| c.overflow(),
        ),
        (
            "podswitch_switch_mcast_joins_refused_total",
            "Joins refused because the multicast table was full (the group floods as unknown).",
            |c| c.refused.load(Relaxed),
        ),
    ];
    for (name, help, pick) in counters {
        let mut f = Family::counter(name, help);
        for (sw, _, _, c) in stats {
            f.add(&[("switch", sw)], pick(c) as f64);
        }
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_requests_counted() {
        let m = ApiMetrics::default();
        m.observe("GET", 200, Duration::from_micros(300));
        m.observe("POST", 201, Duration::from_millis(20));
        m.observe("GET", 200, Duration::from_millis(1));
        let d = std::env::temp_dir().join(format!("psw-metrics-h-{}", std::process::id()));
        let reg = Mutex::new(Registry::new(
            &d,
            Arc::new(crate::datapath::fake::FakeDataplane::default()),
            300,
        ));
        let text = render(&reg, &m, 0.0);
        for line in [
            "podswitch_api_request_duration_seconds_bucket{le=\"0.0005\"} 1",
            "podswitch_api_request_duration_seconds_bucket{le=\"0.025\"} 3",
            "podswitch_api_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "podswitch_api_request_duration_seconds_count 3",
            "podswitch_api_requests_total{code=\"200\",method=\"GET\"} 2",
            "podswitch_api_requests_total{code=\"201\",method=\"POST\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_legacy_vf_port_has_info_but_no_traffic_or_attached_series() {
        use crate::datapath::fake::FakeDataplane;
        use podswitch_shared::model::{EswitchMode, Nic, NicKind, PortConfig};
        let d = std::env::temp_dir().join(format!("psw-metrics-{}", std::process::id()));
        let reg = Mutex::new(Registry::new(&d, Arc::new(FakeDataplane::default()), 300));
        {
            let mut r = reg.lock().unwrap();
            let mut vf = PortConfig::on(Nic {
                pci_address: Some("0000:18:02.3".into()),
                eswitch_mode: Some(EswitchMode::Legacy),
                ..Nic::new(NicKind::Vfio, "")
            });
            vf.id = Some("vm1".into());
            assert!(r.begin_create(vf).is_ok());
            let mut veth = PortConfig::on(Nic::new(NicKind::Veth, "pswa"));
            veth.id = Some("pod1".into());
            assert!(r.begin_create(veth).is_ok());
        }
        let text = render(&reg, &ApiMetrics::default(), 0.0);
        assert!(
            text.contains(
                "podswitch_port_info{port=\"vm1\",switch=\"default\",vlan=\"1\",nic_kind=\"vfio\",\
                 nic=\"0000:18:02.3\",pci_address=\"0000:18:02.3\",eswitch_mode=\"legacy\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("podswitch_port_link_up{port=\"vm1\"} 1"));
        assert!(text.contains("podswitch_port_attached{port=\"pod1\"} 0"));
        for series in ["attached", "receive_packets_total", "drops_total"] {
            let name = format!("podswitch_port_{series}{{port=\"vm1\"");
            assert!(!text.contains(&name), "{name} in {text}");
        }
        let _ = std::fs::remove_dir_all(d);
    }
}
