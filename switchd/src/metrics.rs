//! Prometheus metrics in the text exposition format, served on
//! `--metrics-addr` with `/healthz` and `/readyz` for probes.
//!
//! Cardinality stays low: counters carry only a `port` label; one
//! `podswitch_port_info` series per port carries switch, pod, namespace,
//! VLAN and NIC kind to join on. Counters start at zero when switchd
//! starts; `process_start_time_seconds` changes then, and Prometheus'
//! `rate()`/`increase()` treat the drop as a counter reset.

use crate::control::listen::{self, ConnBudget};
use crate::registry::Registry;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the API latency histogram, seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct ApiInner {
    requests: BTreeMap<(String, u16), u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Control-API request counts and latencies, and both listeners'
/// connection budgets.
pub struct ApiMetrics {
    inner: Mutex<ApiInner>,
    pub control: Arc<ConnBudget>,
    pub metrics: Arc<ConnBudget>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            inner: Mutex::default(),
            control: Arc::new(ConnBudget::new("control", listen::CONTROL_CONNECTIONS)),
            metrics: Arc::new(ConnBudget::new("metrics", listen::METRICS_CONNECTIONS)),
        }
    }
}

impl ApiMetrics {
    pub fn observe(&self, method: &str, code: u16, took: Duration) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *i.requests.entry((method.to_string(), code)).or_default() += 1;
        let s = took.as_secs_f64();
        for (b, le) in i.buckets.iter_mut().zip(BUCKETS) {
            if s <= le {
                *b += 1;
            }
        }
        i.count += 1;
        i.sum += s;
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric. The registry is locked only to copy what is
/// rendered; the poll threads are asked for their FDB figures after.
pub fn render(state: &Mutex<Registry>, api: &ApiMetrics, start_time: f64) -> String {
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
    let mut o = String::with_capacity(8192);
    head(
        &mut o,
        "podswitch_build_info",
        "gauge",
        "podswitch build information; always 1.",
    );
    let _ = writeln!(
        o,
        "podswitch_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    head(
        &mut o,
        "process_start_time_seconds",
        "gauge",
        "Start time of switchd since the Unix epoch, in seconds.",
    );
    let _ = writeln!(o, "process_start_time_seconds {start_time:.3}");

    head(
        &mut o,
        "podswitch_port_info",
        "gauge",
        "One series per port with its switch, owner pod, VLAN and NIC; always 1.",
    );
    for p in &ports {
        let owner = p.owner.clone().unwrap_or_default();
        let vlan = match p.mode() {
            podswitch_shared::model::VlanMode::Access(v) => v.to_string(),
            podswitch_shared::model::VlanMode::Trunk { native, .. } => {
                format!(
                    "trunk{}",
                    native.map(|n| format!(":{n}")).unwrap_or_default()
                )
            }
        };
        // Ports without a pod (an uplink) carry no pod/namespace labels, so
        // a scrape with honor_labels does not fill in switchd's own.
        let pod = match (owner.pod_name.as_deref(), owner.pod_namespace.as_deref()) {
            (None, None) => String::new(),
            (n, ns) => format!(
                ",pod=\"{}\",namespace=\"{}\"",
                esc(n.unwrap_or("")),
                esc(ns.unwrap_or(""))
            ),
        };
        // A VF's PCI address and eswitch mode, on vfio ports only.
        let vf = match (&p.nic.pci_address, p.nic.eswitch_mode) {
            (None, None) => String::new(),
            (pci, mode) => format!(
                ",pci_address=\"{}\",eswitch_mode=\"{}\"",
                esc(pci.as_deref().unwrap_or("")),
                mode.map(|m| m.to_string()).unwrap_or_default()
            ),
        };
        // A legacy-eswitch VF has no netdev: its PCI address names it.
        let nic = match (p.nic.ifname.as_str(), &p.nic.pci_address) {
            ("", Some(pci)) => pci.as_str(),
            (ifname, _) => ifname,
        };
        let _ = writeln!(
            o,
            "podswitch_port_info{{port=\"{}\",switch=\"{}\"{pod},vlan=\"{}\",nic_kind=\"{}\",nic=\"{}\"{vf}}} 1",
            esc(&p.id),
            esc(&p.switch),
            vlan,
            p.nic.kind,
            esc(nic)
        );
    }
    type Pick = fn(&podswitch_shared::model::PortStats) -> u64;
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
    // Ports switchd never attaches (a legacy-eswitch VF: the NIC forwards
    // its frames) have no counters and no attached series: switchd sees
    // none of their traffic, and 0 would read as an idle or broken port.
    let served = || ports.iter().filter(|p| p.nic.attaches());
    for (name, help, pick) in counters {
        head(&mut o, name, "counter", help);
        for p in served() {
            let v = p.stats.as_ref().map(pick).unwrap_or(0);
            let _ = writeln!(o, "{name}{{port=\"{}\"}} {v}", esc(&p.id));
        }
    }
    let reasons: Vec<&str> = crate::pipeline::DropReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    head(
        &mut o,
        "podswitch_port_drops_total",
        "counter",
        &format!(
            "Frames dropped at the port, by reason ({}).",
            reasons.join(", ")
        ),
    );
    for p in served() {
        let drops = p
            .stats
            .as_ref()
            .map(|s| s.drops.clone())
            .unwrap_or_default();
        for r in crate::pipeline::DropReason::ALL {
            let v = drops.get(r.as_str()).copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "podswitch_port_drops_total{{port=\"{}\",reason=\"{}\"}} {v}",
                esc(&p.id),
                r.as_str()
            );
        }
    }
    head(
        &mut o,
        "podswitch_port_link_up",
        "gauge",
        "1 if the port is administratively up, 0 if it is set down.",
    );
    for p in &ports {
        let up = p.link_state == podswitch_shared::model::LinkState::Up;
        let _ = writeln!(
            o,
            "podswitch_port_link_up{{port=\"{}\"}} {}",
            esc(&p.id),
            u8::from(up)
        );
    }
    head(
        &mut o,
        "podswitch_port_attached",
        "gauge",
        "1 if the data path serves the port's NIC (no series for a VF in legacy eswitch mode, which the NIC itself forwards).",
    );
    for p in served() {
        let a = p.status.as_ref().is_some_and(|s| s.attached);
        let _ = writeln!(
            o,
            "podswitch_port_attached{{port=\"{}\"}} {}",
            esc(&p.id),
            u8::from(a)
        );
    }
    head(
        &mut o,
        "podswitch_switch_fdb_entries",
        "gauge",
        "Entries in the switch's forwarding table.",
    );
    for (name, _, f) in &fdb {
        let _ = writeln!(
            o,
            "podswitch_switch_fdb_entries{{switch=\"{}\"}} {}",
            esc(name),
            f.len
        );
    }
    head(
        &mut o,
        "podswitch_switch_fdb_max_entries",
        "gauge",
        "Most learned MACs the switch holds (maxFdbEntries).",
    );
    for (name, max, _) in &fdb {
        let _ = writeln!(
            o,
            "podswitch_switch_fdb_max_entries{{switch=\"{}\"}} {max}",
            esc(name),
        );
    }
    type PickT = fn(&podswitch_shared::model::PollThreadInfo) -> String;
    let per_thread: [(&str, &str, &str, PickT); 7] = [
        (
            "podswitch_poll_thread_receive_packets_total",
            "counter",
            "Frames a poll thread took from its sockets' RX rings.",
            |t| t.rx_packets.to_string(),
        ),
        (
            "podswitch_poll_thread_transmit_packets_total",
            "counter",
            "Frames a poll thread put on its sockets' TX rings.",
            |t| t.tx_packets.to_string(),
        ),
        (
            "podswitch_poll_thread_handoff_out_total",
            "counter",
            "Frames a poll thread handed to another (egress port without a queue on it, or rate-limited on another thread).",
            |t| t.handoff_out.to_string(),
        ),
        (
            "podswitch_poll_thread_handoff_in_total",
            "counter",
            "Frames a poll thread took from other poll threads.",
            |t| t.handoff_in.to_string(),
        ),
        (
            "podswitch_poll_thread_ports",
            "gauge",
            "Port queues a poll thread serves.",
            |t| t.ports.to_string(),
        ),
        (
            "podswitch_poll_thread_free_frames",
            "gauge",
            "UMEM frames on a poll thread's free list.",
            |t| t.free_frames.to_string(),
        ),
        (
            "podswitch_poll_thread_cpu_seconds_total",
            "counter",
            "CPU time a poll thread has used.",
            |t| format!("{:.3}", t.cpu_seconds),
        ),
    ];
    for (name, kind, help, pick) in per_thread {
        head(&mut o, name, kind, help);
        for t in &info.threads {
            let _ = writeln!(o, "{name}{{thread=\"{}\"}} {}", t.index, pick(t));
        }
    }

    head(
        &mut o,
        "podswitch_switch_fdb_moves_total",
        "counter",
        "MACs learned on another port than before (a station moved, or a loop).",
    );
    for (name, _, f) in &fdb {
        let _ = writeln!(
            o,
            "podswitch_switch_fdb_moves_total{{switch=\"{}\"}} {}",
            esc(name),
            f.moves
        );
    }
    head(
        &mut o,
        "podswitch_switch_fdb_learn_refused_total",
        "counter",
        "Source MACs not learned because the forwarding table was full (their frames flood).",
    );
    for (name, _, f) in &fdb {
        let _ = writeln!(
            o,
            "podswitch_switch_fdb_learn_refused_total{{switch=\"{}\"}} {}",
            esc(name),
            f.limit_hits
        );
    }
    render_mcast(&mut o, &mcast);
    type PickL = fn(&ConnBudget) -> u64;
    let per_listener: [(&str, &str, &str, PickL); 6] = [
        (
            "podswitch_listener_open_connections",
            "gauge",
            "Connections a listener (control socket, metrics) has open.",
            |b| b.open() as u64,
        ),
        (
            "podswitch_listener_max_connections",
            "gauge",
            "Most connections a listener keeps open; more wait in its backlog.",
            |b| b.max as u64,
        ),
        (
            "podswitch_listener_full_total",
            "counter",
            "Times a listener was at its connection cap when a client connected.",
            |b| b.full.load(Relaxed),
        ),
        (
            "podswitch_listener_timeouts_total",
            "counter",
            "Connections closed because a request head or body came too slowly, or the connection grew too old.",
            |b| b.timeouts.load(Relaxed),
        ),
        (
            "podswitch_listener_refused_peers_total",
            "counter",
            "Connections refused because the peer is neither root nor in --socket-group (control socket).",
            |b| b.refused_peers.load(Relaxed),
        ),
        (
            "podswitch_listener_accept_errors_total",
            "counter",
            "Failed accepts (e.g. out of file descriptors).",
            |b| b.accept_errors.load(Relaxed),
        ),
    ];
    for (name, kind, help, pick) in per_listener {
        head(&mut o, name, kind, help);
        for b in [&api.control, &api.metrics] {
            let _ = writeln!(o, "{name}{{listener=\"{}\"}} {}", b.name, pick(b));
        }
    }
    let a = api.inner.lock().unwrap_or_else(|e| e.into_inner());
    head(
        &mut o,
        "podswitch_api_requests_total",
        "counter",
        "Control API requests, by method and HTTP status.",
    );
    for ((m, c), n) in &a.requests {
        let _ = writeln!(
            o,
            "podswitch_api_requests_total{{method=\"{}\",code=\"{c}\"}} {n}",
            esc(m)
        );
    }
    head(
        &mut o,
        "podswitch_api_request_duration_seconds",
        "histogram",
        "Control API request latency, in seconds.",
    );
    for (le, n) in BUCKETS.iter().zip(a.buckets) {
        let _ = writeln!(
            o,
            "podswitch_api_request_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        o,
        "podswitch_api_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        a.count
    );
    let _ = writeln!(o, "podswitch_api_request_duration_seconds_sum {:.6}", a.sum);
    let _ = writeln!(
        o,
        "podswitch_api_request_duration_seconds_count {}",
        a.count
    );
    o
}

/// Multicast snooping, per switch (every switch has the series; a switch
/// that does not snoop has no groups and its counters stand still).
fn render_mcast(
    o: &mut String,
    stats: &[(
        String,
        bool,
        usize,
        Arc<crate::pipeline::mcast::McastCounters>,
    )],
) {
    head(
        o,
        "podswitch_switch_mcast_snooping",
        "gauge",
        "1 if the switch snoops IGMP/MLD (multicastSnooping), else 0.",
    );
    for (name, on, _, _) in stats {
        let _ = writeln!(
            o,
            "podswitch_switch_mcast_snooping{{switch=\"{}\"}} {}",
            esc(name),
            u8::from(*on)
        );
    }
    head(
        o,
        "podswitch_switch_mcast_groups",
        "gauge",
        "(VLAN, group) entries in the switch's multicast table.",
    );
    for (name, _, groups, _) in stats {
        let _ = writeln!(
            o,
            "podswitch_switch_mcast_groups{{switch=\"{}\"}} {groups}",
            esc(name)
        );
    }
    head(
        o,
        "podswitch_switch_mcast_snooped_total",
        "counter",
        "IGMP/MLD messages snooped, by type: report (per group record), leave (leave, done, TO_IN{}, BLOCK), query.",
    );
    for (name, _, _, c) in stats {
        for (kind, v) in [
            ("report", &c.reports),
            ("leave", &c.leaves),
            ("query", &c.queries),
        ] {
            let _ = writeln!(
                o,
                "podswitch_switch_mcast_snooped_total{{switch=\"{}\",type=\"{kind}\"}} {}",
                esc(name),
                v.load(Relaxed)
            );
        }
    }
    type PickM = fn(&crate::pipeline::mcast::McastCounters) -> u64;
    let counters: [(&str, &str, PickM); 3] = [
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
    for (metric, help, pick) in counters {
        head(o, metric, "counter", help);
        for (name, _, _, c) in stats {
            let _ = writeln!(o, "{metric}{{switch=\"{}\"}} {}", esc(name), pick(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(esc(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(esc("x\ny"), "x\\ny");
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = ApiMetrics::default();
        m.observe("GET", 200, Duration::from_micros(300));
        m.observe("POST", 201, Duration::from_millis(20));
        let i = m.inner.lock().unwrap();
        assert_eq!(i.buckets[0], 1);
        assert_eq!(i.buckets[BUCKETS.len() - 1], 2);
        assert_eq!(i.count, 2);
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
