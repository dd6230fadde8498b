//! switchctl: the command line for switchd's control socket. Lists
//! switches, ports (with counters) and forwarding tables; adds, changes and
//! deletes ports live. Human tables by default, `-o json` for scripts.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use podswitch_shared::client::Client;
use podswitch_shared::model::{
    AclAction, AclRule, DatapathInfo, EswitchMode, FdbEntry, LinkState, MacAddr, MulticastTable,
    Nic, NicKind, OverlayStatus, PortConfig, PortMirroring, PortUpdate, Priority, PriorityMode,
    Pvlan, SwitchConfig, SwitchUpdate, TrunkRange, VPort, VSwitch, VlanId, VlanMode,
};
use podswitch_shared::DEFAULT_SOCKET;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "switchctl",
    version,
    about = "Inspect and control podswitch's switchd"
)]
struct Cli {
    /// switchd's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// List switches.
    Switches,
    /// Create, change or delete a switch; its multicast table.
    #[command(subcommand)]
    Switch(SwitchCmd),
    /// List ports with their counters.
    Ports,
    /// Show, add, change or delete one port.
    #[command(subcommand)]
    Port(PortCmd),
    /// Show a switch's forwarding table.
    Fdb {
        #[arg(default_value = "default")]
        switch: String,
    },
    /// Check that switchd is alive and ready.
    Status,
    /// How the data path runs: poll threads (CPU, ports, frames, hand-offs,
    /// CPU time), frame budget, MTU limit.
    Datapath,
    /// An overlay port (nic.kind vxlan): its VLAN → VNI map, each peer's
    /// counters and reachability, and what it dropped and why.
    Overlay {
        /// The overlay port's ID.
        port: String,
    },
    /// Helpers that run next to a VMM.
    #[command(subcommand)]
    Vm(VmCmd),
}

#[derive(Subcommand)]
enum VmCmd {
    /// Carries a tap port's link state to the guest: watches the tap's
    /// administrative state (switchd takes it down when the port's
    /// linkState is down) and sets the guest NIC's link through QEMU's QMP
    /// socket (`set_link`), at start and on every change, until the tap is
    /// gone. QEMU does not read a tap's state by itself.
    LinkFollow {
        /// The VM pod's network namespace (path), where the tap is.
        #[arg(long)]
        netns: Option<String>,
        /// The tap (CNI_IFNAME).
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// QEMU's QMP socket (`-qmp unix:PATH,server=on,wait=off`).
        #[arg(long)]
        qmp: std::path::PathBuf,
        /// QEMU's netdev ID of the tap (`-netdev tap,id=ID`).
        #[arg(long, default_value = "n0")]
        netdev: String,
        /// How often the tap is looked at, in milliseconds.
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
    },
}

/// A switch's settings on `switch create` and `switch set`.
#[derive(clap::Args)]
struct SwitchFlags {
    /// MAC aging time in seconds.
    #[arg(long)]
    aging: Option<u32>,
    /// Most learned MACs.
    #[arg(long)]
    max_fdb: Option<u32>,
    /// IGMP/MLD snooping (off empties the multicast table).
    #[arg(long, value_enum)]
    multicast_snooping: Option<OnOff>,
    /// Snooping: whether a group nobody joined floods (default on).
    #[arg(long, value_enum)]
    multicast_flood_unknown: Option<OnOff>,
    /// Snooping: seconds a membership lives without a report (default 260).
    #[arg(long)]
    multicast_membership_seconds: Option<u32>,
}

impl SwitchFlags {
    fn update(self) -> SwitchUpdate {
        SwitchUpdate {
            aging_seconds: self.aging,
            max_fdb_entries: self.max_fdb,
            multicast_snooping: self.multicast_snooping.map(Into::into),
            multicast_flood_unknown: self.multicast_flood_unknown.map(Into::into),
            multicast_membership_seconds: self.multicast_membership_seconds,
        }
    }
}

#[derive(Subcommand)]
enum SwitchCmd {
    Create {
        name: String,
        #[command(flatten)]
        settings: SwitchFlags,
    },
    /// Change a switch live.
    Set {
        name: String,
        #[command(flatten)]
        settings: SwitchFlags,
    },
    /// Show a switch's multicast table: groups, their member ports, router ports.
    Mdb {
        #[arg(default_value = "default")]
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

impl From<OnOff> for bool {
    fn from(v: OnOff) -> bool {
        matches!(v, OnOff::On)
    }
}

#[derive(Subcommand)]
enum PortCmd {
    Show {
        id: String,
    },
    /// Attach a NIC as a new port.
    Add {
        /// Netdev in switchd's network namespace (or in --netns); a vfio
        /// NIC's representor (none for a VF in legacy eswitch mode).
        #[arg(long)]
        ifname: Option<String>,
        #[arg(long, value_enum, default_value_t = Kind::Veth)]
        kind: Kind,
        /// A tap's network namespace (a path, e.g. /var/run/netns/vm1).
        #[arg(long)]
        netns: Option<String>,
        /// A vfio NIC's VF, by PCI address (e.g. 0000:18:02.5).
        #[arg(long)]
        pci_address: Option<String>,
        /// A vfio NIC's PF eswitch mode (legacy: recorded, never attached).
        #[arg(long, value_enum)]
        eswitch_mode: Option<Eswitch>,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        switch: Option<String>,
        /// Access VLAN, or the native VLAN of a trunk.
        #[arg(long)]
        vlan: Option<u16>,
        /// Allowed VLANs of a trunk, e.g. 200-299,400.
        #[arg(long)]
        trunk: Option<String>,
        /// A private VLAN port: isolated:PRIMARY:SECONDARY,
        /// community:PRIMARY:SECONDARY or promiscuous:PRIMARY:SEC[,SEC...].
        #[arg(long)]
        pvlan: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        spoof_check: bool,
        #[arg(long, value_enum)]
        link: Option<Link>,
        /// Port mirroring: none, source or destination.
        #[arg(long)]
        mirroring: Option<PortMirroring>,
    },
    /// Change a port live.
    Set {
        id: String,
        /// Access VLAN (or a trunk's native VLAN); "none" clears it.
        #[arg(long)]
        vlan: Option<String>,
        /// Allowed VLANs, e.g. 200-299,400; "none" makes an access port.
        #[arg(long)]
        trunk: Option<String>,
        /// Private VLAN: isolated:PRIMARY:SECONDARY, community:PRIMARY:SECONDARY,
        /// promiscuous:PRIMARY:SEC[,SEC...], or none. One VLAN mode at a
        /// time: a pvlan clears vlan and trunk, and --vlan/--trunk clear it.
        #[arg(long)]
        pvlan: Option<String>,
        #[arg(long, value_enum)]
        link: Option<Link>,
        /// Port MAC; "none" clears it.
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        spoof_check: Option<bool>,
        /// The IP/ARP/ND spoof guard.
        #[arg(long)]
        ip_spoof_check: Option<bool>,
        /// The addresses the port may send from, comma-separated ("none": no address).
        #[arg(long)]
        allowed_ips: Option<String>,
        /// 802.1p of what the port sends, when tagged: trust, reset, set:N
        /// (N 0..7), or none (back to the default, trust).
        #[arg(long)]
        priority: Option<String>,
        /// What the pod may receive, bits/s ("none" removes every QoS limit).
        #[arg(long)]
        ingress_rate: Option<String>,
        /// Burst of the ingress limit, bits.
        #[arg(long)]
        ingress_burst: Option<u64>,
        /// What the pod may send, bits/s.
        #[arg(long)]
        egress_rate: Option<u64>,
        #[arg(long)]
        egress_burst: Option<u64>,
        /// Minimum-bandwidth weight (1..100) at congested ports.
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long)]
        dhcp_guard: Option<bool>,
        #[arg(long)]
        router_guard: Option<bool>,
        /// Flooded frames per second from the port; "none" removes the limit.
        #[arg(long)]
        storm_limit: Option<String>,
        /// A JSON file with the ACL rules (a list; "-" reads stdin).
        #[arg(long)]
        acl_file: Option<PathBuf>,
        #[arg(long, value_enum)]
        acl_default: Option<AclDefault>,
        /// Port mirroring: none, source (its frames both ways are copied)
        /// or destination (receives the copies of the switch's sources).
        #[arg(long)]
        mirroring: Option<PortMirroring>,
    },
    Delete {
        id: String,
    },
    /// Capture the port's frames live, as pcap: what the switch receives
    /// from the port (in), sends to it (out) or both. `-w -` writes to
    /// stdout: `switchctl port capture p1 -w - | tcpdump -r -`.
    Capture {
        id: String,
        #[arg(long, value_enum, default_value_t = CaptureDir::Both)]
        direction: CaptureDir,
        /// Stop after this many frames.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Where the pcap goes: a file, or "-" for stdout (the default
        /// when stdout is not a terminal).
        #[arg(short = 'w', long)]
        write: Option<PathBuf>,
        /// Bytes kept of each frame.
        #[arg(short = 's', long)]
        snaplen: Option<u32>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CaptureDir {
    In,
    Out,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Veth,
    Tap,
    Vfio,
    Uplink,
}

#[derive(Clone, Copy, ValueEnum)]
enum Eswitch {
    Legacy,
    Switchdev,
}

#[derive(Clone, Copy, ValueEnum)]
enum AclDefault {
    Allow,
    Deny,
}

#[derive(Clone, Copy, ValueEnum)]
enum Link {
    Up,
    Down,
}

impl From<Link> for LinkState {
    fn from(l: Link) -> Self {
        match l {
            Link::Up => LinkState::Up,
            Link::Down => LinkState::Down,
        }
    }
}

fn parse_vlan(s: &str) -> anyhow::Result<VlanId> {
    let n: u16 = s
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a VLAN ID"))?;
    Ok(VlanId::new(n)?)
}

fn parse_trunk(s: &str) -> anyhow::Result<Vec<TrunkRange>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_vlan(a)?, parse_vlan(b)?);
                if a > b {
                    bail!("trunk range {part:?} runs backwards");
                }
                out.push(TrunkRange::Range(a, b));
            }
            None => out.push(TrunkRange::Single(parse_vlan(part)?)),
        }
    }
    if out.is_empty() {
        bail!("--trunk needs at least one VLAN, e.g. 200-299,400");
    }
    Ok(out)
}

fn none_or<T>(s: &str, f: impl Fn(&str) -> anyhow::Result<T>) -> anyhow::Result<Option<T>> {
    if s == "none" {
        Ok(None)
    } else {
        f(s).map(Some)
    }
}

fn vlan_desc(p: &VPort) -> String {
    let ranges = |t: &[TrunkRange]| {
        t.iter()
            .map(|r| match r.bounds() {
                (a, b) if a == b => a.to_string(),
                (a, b) => format!("{a}-{b}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    match p.mode() {
        VlanMode::Access(v) => format!("access {v}"),
        VlanMode::Trunk { allowed, native } => match native {
            Some(n) => format!("trunk {} native {n}", ranges(&allowed)),
            None => format!("trunk {}", ranges(&allowed)),
        },
        VlanMode::Private(pv) => format!("pvlan {pv}"),
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_ports(ports: &[VPort]) {
    let rows = ports
        .iter()
        .map(|p| {
            let st = p.stats.clone().unwrap_or_default();
            let drops: u64 = st.drops.values().sum();
            let drops = if drops == 0 {
                "0".to_string()
            } else {
                let detail: Vec<String> =
                    st.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{drops} ({})", detail.join(","))
            };
            let attached = p.status.as_ref().map(|s| s.attached).unwrap_or(false);
            vec![
                p.id.clone(),
                p.switch.clone(),
                format!("{}/{}", p.nic.kind, p.nic.location()),
                vlan_desc(p),
                format!("{:?}", p.link_state).to_lowercase(),
                match p.status.as_ref().and_then(|s| s.handover) {
                    // Never attached by design: the NIC forwards it.
                    _ if !p.nic.attaches() => "n/a (NIC)".into(),
                    // Two ports share the MAC (a VM's live migration).
                    Some(h) => format!("{} ({h})", if attached { "yes" } else { "no" }),
                    None => if attached { "yes" } else { "no" }.into(),
                },
                p.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                guards(p),
                match p.port_mirroring {
                    PortMirroring::None => "-".into(),
                    m => m.to_string(),
                },
                st.rx_packets.to_string(),
                st.tx_packets.to_string(),
                drops,
            ]
        })
        .collect();
    table(
        &[
            "ID", "SWITCH", "NIC", "VLAN", "LINK", "ATTACHED", "MAC", "GUARDS", "MIRROR",
            "RX-PKTS", "TX-PKTS", "DROPS",
        ],
        rows,
    );
}

/// `port show`'s mirroring and capture lines.
fn print_mirror_capture(p: &VPort, st: &podswitch_shared::model::PortStats) {
    if p.port_mirroring != PortMirroring::None || st.mirror_copies > 0 {
        println!(
            "mirroring: {}, {} copies received, {} dropped",
            p.port_mirroring,
            st.mirror_copies,
            st.drops.get("mirror").copied().unwrap_or(0)
        );
    }
    if st.capture_frames > 0 || st.capture_dropped > 0 {
        println!(
            "captures: {} frames taken, {} dropped (capture ring full)",
            st.capture_frames, st.capture_dropped
        );
    }
    for c in p.status.iter().flat_map(|s| &s.captures) {
        println!(
            "capture running: direction {}, snaplen {}, count {}, {} frames, {} dropped",
            c.direction,
            c.snaplen,
            c.count.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            c.frames,
            c.dropped
        );
    }
}

/// Whether the reader of `fd` (a pipe) has gone away: poll() says POLLERR
/// on a pipe's write end once its read end is closed.
fn reader_gone(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// `switchctl port capture`: streams the port's pcap to a file or
/// stdout until the count is reached, the reader goes away or ^C.
fn capture(
    c: &Client,
    id: &str,
    direction: CaptureDir,
    count: Option<u64>,
    write: Option<PathBuf>,
    snaplen: Option<u32>,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    use std::os::fd::AsRawFd;
    let mut out: Box<dyn Write> = match &write {
        Some(f) if f.as_os_str() != "-" => {
            Box::new(std::fs::File::create(f).with_context(|| format!("creating {}", f.display()))?)
        }
        None if std::io::stdout().is_terminal() => bail!(
            "a capture is pcap, not text: give -w FILE, or -w - and pipe it (e.g. to tcpdump -r -)"
        ),
        _ => Box::new(std::io::stdout().lock()),
    };
    let to_stdout = write.as_ref().is_none_or(|f| f.as_os_str() == "-");
    let stdout_fd = std::io::stdout().as_raw_fd();
    let mut q = vec![format!(
        "direction={}",
        match direction {
            CaptureDir::In => "in",
            CaptureDir::Out => "out",
            CaptureDir::Both => "both",
        }
    )];
    if let Some(n) = count {
        q.push(format!("count={n}"));
    }
    if let Some(s) = snaplen {
        q.push(format!("snaplen={s}"));
    }
    let path = format!("/v1/ports/{id}/capture?{}", q.join("&"));
    let r = c.stream(
        &path,
        std::time::Duration::from_millis(250),
        &mut |b| {
            out.write_all(b)?;
            out.flush()
        },
        &mut || {
            if to_stdout && reader_gone(stdout_fd) {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            Ok(())
        },
    );
    match r {
        Ok(trailers) => {
            let get = |k: &str| {
                trailers
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("?")
                    .to_string()
            };
            eprintln!(
                "switchctl: {} frames captured, {} dropped (the capture ring was full)",
                get("x-capture-frames"),
                get("x-capture-dropped")
            );
            Ok(())
        }
        // The reader (e.g. tcpdump -c) is done: so are we.
        Err(podswitch_shared::client::ClientError::Stopped(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `trust`, `reset` or `set:N`.
fn parse_priority(s: &str) -> anyhow::Result<Priority> {
    let p = match s.split_once(':') {
        None if s == "trust" => Priority {
            mode: PriorityMode::Trust,
            pcp: None,
        },
        None if s == "reset" => Priority {
            mode: PriorityMode::Reset,
            pcp: None,
        },
        Some(("set", n)) => Priority {
            mode: PriorityMode::Set,
            pcp: Some(n.parse().with_context(|| format!("--priority set:{n}"))?),
        },
        _ => bail!("--priority is trust, reset, set:N or none, not {s:?}"),
    };
    p.validate().map_err(|e| anyhow::anyhow!(e))?;
    Ok(p)
}

/// `off`, or `on` with its settings: `on (260 s)`, `on (260 s, no-flood)`.
fn snooping_desc(s: &VSwitch) -> String {
    if !s.multicast_snooping {
        return "off".into();
    }
    let flood = if s.multicast_flood_unknown {
        ""
    } else {
        ", no-flood"
    };
    format!("on ({} s{flood})", s.multicast_membership_seconds)
}

fn print_mdb(t: &MulticastTable) {
    if !t.snooping {
        println!(
            "switch {}: multicast snooping is off (multicast floods)",
            t.switch
        );
        return;
    }
    let mut rows = Vec::new();
    for g in &t.groups {
        for m in &g.ports {
            rows.push(vec![
                g.vlan.to_string(),
                g.group.to_string(),
                m.port.clone(),
                m.expires_seconds.to_string(),
            ]);
        }
    }
    table(&["VLAN", "GROUP", "PORT", "EXPIRES-S"], rows);
    println!();
    table(
        &["ROUTER-PORT", "KIND", "VLAN", "EXPIRES-S"],
        t.routers
            .iter()
            .map(|r| {
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                vec![
                    r.port.clone(),
                    r.kind.clone(),
                    opt(r.vlan.map(|v| v.to_string())),
                    opt(r.expires_seconds.map(|v| v.to_string())),
                ]
            })
            .collect(),
    );
}

/// The port's guards, short: `mac`, `ip(10.0.0.5,fd00::5)`, `dhcp`, `ra`.
fn guards(p: &VPort) -> String {
    let mut g = Vec::new();
    if p.mac_spoof_check {
        g.push("mac".to_string());
    }
    if p.ip_spoof_check {
        let ips: Vec<String> = p.allowed_ips.iter().map(|a| a.to_string()).collect();
        g.push(format!("ip({})", ips.join(",")));
    }
    if p.dhcp_guard {
        g.push("dhcp".into());
    }
    if p.router_guard {
        g.push("ra".into());
    }
    if g.is_empty() {
        "-".into()
    } else {
        g.join(" ")
    }
}

fn emit<T: Serialize>(out: Output, v: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Table => human(v),
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let c = Client::new(&cli.socket);
    let out = cli.output;
    match cli.cmd {
        Cmd::Switches => {
            let s: Vec<VSwitch> = c.get("/v1/switches")?;
            emit(out, &s, |s| {
                table(
                    &[
                        "NAME",
                        "PORTS",
                        "FDB-ENTRIES",
                        "MAX-FDB",
                        "AGING-S",
                        "MCAST-SNOOPING",
                    ],
                    s.iter()
                        .map(|w| {
                            vec![
                                w.name.clone(),
                                w.ports.unwrap_or(0).to_string(),
                                w.fdb_entries.unwrap_or(0).to_string(),
                                w.max_fdb_entries.to_string(),
                                w.aging_seconds.to_string(),
                                snooping_desc(w),
                            ]
                        })
                        .collect(),
                )
            })
        }
        Cmd::Switch(SwitchCmd::Create { name, settings }) => {
            let u = settings.update();
            let cfg = SwitchConfig {
                name,
                aging_seconds: u.aging_seconds,
                max_fdb_entries: u.max_fdb_entries,
                multicast_snooping: u.multicast_snooping,
                multicast_flood_unknown: u.multicast_flood_unknown,
                multicast_membership_seconds: u.multicast_membership_seconds,
            };
            let s: VSwitch = c.call("POST", "/v1/switches", Some(&cfg))?;
            emit(out, &s, |s| println!("created switch {}", s.name))
        }
        Cmd::Switch(SwitchCmd::Set { name, settings }) => {
            let u = settings.update();
            let s: VSwitch = c.call("PATCH", &format!("/v1/switches/{name}"), Some(&u))?;
            emit(out, &s, |s| {
                println!(
                    "switch {}: aging {} s, max-fdb {}, multicast snooping {}",
                    s.name,
                    s.aging_seconds,
                    s.max_fdb_entries,
                    snooping_desc(s)
                )
            })
        }
        Cmd::Switch(SwitchCmd::Mdb { name }) => {
            let t: MulticastTable = c.get(&format!("/v1/switches/{name}/mdb"))?;
            emit(out, &t, print_mdb)
        }
        Cmd::Switch(SwitchCmd::Delete { name }) => {
            let v: serde_json::Value =
                c.call("DELETE", &format!("/v1/switches/{name}"), None::<&()>)?;
            emit(out, &v, |_| println!("deleted switch {name}"))
        }
        Cmd::Ports => {
            let p: Vec<VPort> = c.get("/v1/ports")?;
            emit(out, &p, |p| print_ports(p))
        }
        Cmd::Port(PortCmd::Show { id }) => {
            let p: VPort = c.get(&format!("/v1/ports/{id}"))?;
            emit(out, &p, |p| {
                print_ports(std::slice::from_ref(p));
                if let Some(r) = p.status.as_ref().and_then(|s| s.reason.as_deref()) {
                    println!("\nnot attached: {r}");
                }
                let mut policy = Vec::new();
                if let Some(q) = &p.qos {
                    let r = |v: Option<u64>| {
                        v.map(|b| format!("{} Mbit/s", b as f64 / 1e6))
                            .unwrap_or_else(|| "-".into())
                    };
                    policy.push(format!(
                        "qos: in {} out {}",
                        r(q.ingress_rate),
                        r(q.egress_rate)
                    ));
                    if let Some(w) = q.min_bandwidth_weight {
                        policy.push(format!("weight {w}"));
                    }
                }
                for (on, name) in [
                    (p.mac_spoof_check, "spoof-check"),
                    (p.dhcp_guard, "dhcp-guard"),
                    (p.router_guard, "router-guard"),
                ] {
                    if on {
                        policy.push(name.to_string());
                    }
                }
                if let Some(n) = p.storm_limit {
                    policy.push(format!("storm-limit {n}/s"));
                }
                if !p.acls.is_empty() {
                    policy.push(
                        format!("{} ACL rules, default {:?}", p.acls.len(), p.acl_default)
                            .to_lowercase(),
                    );
                }
                if !policy.is_empty() {
                    println!("\n{}", policy.join(", "));
                }
                if let Some(st) = &p.stats {
                    println!(
                        "\nrx {} packets {} bytes, tx {} packets {} bytes",
                        st.rx_packets, st.rx_bytes, st.tx_packets, st.tx_bytes
                    );
                    for (k, v) in &st.drops {
                        println!("dropped ({k}): {v}");
                    }
                    print_mirror_capture(p, st);
                }
            })
        }
        Cmd::Port(PortCmd::Add {
            ifname,
            kind,
            netns,
            pci_address,
            eswitch_mode,
            id,
            switch,
            vlan,
            trunk,
            pvlan,
            mac,
            spoof_check,
            link,
            mirroring,
        }) => {
            let cfg = PortConfig {
                id,
                switch,
                mac: mac.map(|m| m.parse::<MacAddr>()).transpose()?,
                vlan: vlan.map(VlanId::new).transpose()?,
                trunk: trunk.as_deref().map(parse_trunk).transpose()?,
                pvlan: pvlan.as_deref().map(str::parse::<Pvlan>).transpose()?,
                mac_spoof_check: spoof_check.then_some(true),
                link_state: link.map(Into::into),
                port_mirroring: mirroring,
                ..PortConfig::on(Nic {
                    kind: match kind {
                        Kind::Veth => NicKind::Veth,
                        Kind::Tap => NicKind::Tap,
                        Kind::Vfio => NicKind::Vfio,
                        Kind::Uplink => NicKind::Uplink,
                    },
                    ifname: ifname.unwrap_or_default(),
                    netns,
                    pci_address,
                    eswitch_mode: eswitch_mode.map(|m| match m {
                        Eswitch::Legacy => EswitchMode::Legacy,
                        Eswitch::Switchdev => EswitchMode::Switchdev,
                    }),
                    vxlan: None,
                })
            };
            let p: VPort = c.call("POST", "/v1/ports", Some(&cfg))?;
            emit(out, &p, |p| {
                println!("added port {} ({})", p.id, p.nic.location())
            })
        }
        Cmd::Port(PortCmd::Set {
            id,
            vlan,
            trunk,
            pvlan,
            link,
            mac,
            spoof_check,
            ip_spoof_check,
            allowed_ips,
            priority,
            ingress_rate,
            ingress_burst,
            egress_rate,
            egress_burst,
            weight,
            dhcp_guard,
            router_guard,
            storm_limit,
            acl_file,
            acl_default,
            mirroring,
        }) => {
            let qos_flags = ingress_rate.is_some()
                || ingress_burst.is_some()
                || egress_rate.is_some()
                || egress_burst.is_some()
                || weight.is_some();
            let qos = if ingress_rate.as_deref() == Some("none") {
                Some(None)
            } else if qos_flags {
                // Start from the port's current QoS so one flag changes one thing.
                let cur: VPort = c.get(&format!("/v1/ports/{id}"))?;
                let mut q = cur.qos.unwrap_or_default();
                if let Some(r) = ingress_rate.as_deref() {
                    q.ingress_rate =
                        Some(r.parse().with_context(|| format!("--ingress-rate {r:?}"))?);
                }
                q.ingress_burst = ingress_burst.or(q.ingress_burst);
                q.egress_rate = egress_rate.or(q.egress_rate);
                q.egress_burst = egress_burst.or(q.egress_burst);
                q.min_bandwidth_weight = weight.or(q.min_bandwidth_weight);
                Some(Some(q))
            } else {
                None
            };
            let acls = match acl_file {
                Some(f) => {
                    let text = if f.as_os_str() == "-" {
                        let mut s = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                        s
                    } else {
                        std::fs::read_to_string(&f)
                            .with_context(|| format!("reading {}", f.display()))?
                    };
                    Some(serde_json::from_str::<Vec<AclRule>>(&text).context("ACL file")?)
                }
                None => None,
            };
            let mut vlan = vlan
                .as_deref()
                .map(|v| none_or(v, parse_vlan))
                .transpose()?;
            let mut trunk = trunk
                .as_deref()
                .map(|t| none_or(t, parse_trunk))
                .transpose()?;
            let mut pvlan = pvlan
                .as_deref()
                .map(|p| none_or(p, |p| Ok(p.parse::<Pvlan>()?)))
                .transpose()?;
            // One VLAN mode at a time, as Set-VMNetworkAdapterVlan: a
            // private VLAN replaces the access VLAN or trunk, and they it.
            if matches!(pvlan, Some(Some(_))) {
                vlan = vlan.or(Some(None));
                trunk = trunk.or(Some(None));
            } else if pvlan.is_none()
                && matches!((&vlan, &trunk), (Some(Some(_)), _) | (_, Some(Some(_))))
            {
                pvlan = Some(None);
            }
            let u = PortUpdate {
                vlan,
                trunk,
                pvlan,
                mac: mac
                    .as_deref()
                    .map(|m| none_or(m, |m| Ok(m.parse::<MacAddr>()?)))
                    .transpose()?,
                mac_spoof_check: spoof_check,
                ip_spoof_check,
                allowed_ips: allowed_ips
                    .as_deref()
                    .map(|l| -> anyhow::Result<Vec<std::net::IpAddr>> {
                        if l == "none" {
                            return Ok(Vec::new());
                        }
                        l.split(',')
                            .map(|a| {
                                a.trim().parse().with_context(|| {
                                    format!("--allowed-ips: {a:?} is not an address")
                                })
                            })
                            .collect()
                    })
                    .transpose()?,
                link_state: link.map(Into::into),
                priority: priority
                    .as_deref()
                    .map(|p| none_or(p, parse_priority))
                    .transpose()?,
                qos,
                dhcp_guard,
                router_guard,
                storm_limit: storm_limit
                    .as_deref()
                    .map(|s| {
                        none_or(s, |s| {
                            s.parse::<u32>()
                                .with_context(|| format!("--storm-limit {s:?}"))
                        })
                    })
                    .transpose()?,
                acls,
                acl_default: acl_default.map(|d| match d {
                    AclDefault::Allow => AclAction::Allow,
                    AclDefault::Deny => AclAction::Deny,
                }),
                port_mirroring: mirroring,
            };
            if u == PortUpdate::default() {
                bail!("nothing to change: give --vlan, --trunk, --pvlan, --link, --mac, --spoof-check, --ip-spoof-check, --allowed-ips, a QoS flag, a guard, --storm-limit, an ACL or --mirroring");
            }
            let p: VPort = c.call("PATCH", &format!("/v1/ports/{id}"), Some(&u))?;
            emit(out, &p, |p| print_ports(std::slice::from_ref(p)))
        }
        Cmd::Port(PortCmd::Capture {
            id,
            direction,
            count,
            write,
            snaplen,
        }) => capture(&c, &id, direction, count, write, snaplen),
        Cmd::Port(PortCmd::Delete { id }) => {
            let v: serde_json::Value = c.call("DELETE", &format!("/v1/ports/{id}"), None::<&()>)?;
            emit(out, &v, |_| println!("deleted port {id}"))
        }
        Cmd::Fdb { switch } => {
            let rows: Vec<FdbEntry> = c.get(&format!("/v1/switches/{switch}/fdb"))?;
            emit(out, &rows, |rows| {
                table(
                    &["VLAN", "MAC", "PORT", "TYPE", "AGE-S"],
                    rows.iter()
                        .map(|r| {
                            vec![
                                r.vlan.to_string(),
                                r.mac.to_string(),
                                r.port.clone(),
                                r.kind.clone(),
                                r.age_seconds.to_string(),
                            ]
                        })
                        .collect(),
                )
            })
        }
        Cmd::Vm(VmCmd::LinkFollow {
            netns,
            ifname,
            qmp,
            netdev,
            interval_ms,
        }) => {
            use switchd::vmlink;
            let tap = vmlink::TapWatch::open(netns.as_deref(), &ifname)
                .map_err(|e| anyhow::anyhow!("watching {ifname}: {e}"))?;
            let mut q = vmlink::Qmp::connect(&qmp)
                .map_err(|e| anyhow::anyhow!("QMP at {}: {e}", qmp.display()))?;
            vmlink::follow(
                &tap,
                &mut q,
                &netdev,
                std::time::Duration::from_millis(interval_ms.max(1)),
                |up| {
                    eprintln!(
                        "switchctl: {ifname} is {}; guest link of {netdev} set {}",
                        if up { "up" } else { "down" },
                        if up { "up" } else { "down" }
                    )
                },
            )
            .map_err(|e| anyhow::anyhow!("following {ifname}: {e}"))?;
            eprintln!("switchctl: {ifname} is gone; done");
            Ok(())
        }
        Cmd::Datapath => {
            let d: DatapathInfo = c.get("/v1/datapath")?;
            emit(out, &d, |d| {
                println!(
                    "{} poll thread(s), {} XDP, {} UMEM frames per thread (up to {} ports), MTU up to {}, {} of {} ports attached",
                    d.poll_threads,
                    d.xdp_mode,
                    d.umem_frames,
                    d.max_ports,
                    d.max_mtu,
                    d.attached_ports,
                    d.ports
                );
                if let Some(h) = &d.handover {
                    println!(
                        "took over from pid {} (version {}) in {} ms: {} port(s) adopted, {} frame(s) dropped",
                        h.from_pid, h.from_version, h.took_ms, h.ports_adopted, h.frames_dropped
                    );
                }
                table(
                    &[
                        "THREAD",
                        "CPU",
                        "PORTS",
                        "FREE-FRAMES",
                        "RX",
                        "TX",
                        "HANDOFF-OUT",
                        "HANDOFF-IN",
                        "CPU-S",
                    ],
                    d.threads
                        .iter()
                        .map(|t| {
                            vec![
                                t.index.to_string(),
                                t.cpu.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                                t.ports.to_string(),
                                t.free_frames.to_string(),
                                t.rx_packets.to_string(),
                                t.tx_packets.to_string(),
                                t.handoff_out.to_string(),
                                t.handoff_in.to_string(),
                                format!("{:.2}", t.cpu_seconds),
                            ]
                        })
                        .collect(),
                )
            })
        }
        Cmd::Overlay { port } => {
            let o: OverlayStatus = c.get(&format!("/v1/ports/{port}/overlay"))?;
            emit(out, &o, |o| {
                let map: Vec<String> = o
                    .vnis
                    .iter()
                    .map(|(vlan, vni)| format!("{vlan}→{vni}"))
                    .collect();
                println!(
                    "VLAN→VNI {}{}, MTU {}, {} flood(s), {} MAC(s) learned behind peers",
                    map.join(" "),
                    o.untagged_vlan
                        .map(|v| format!(" (VLAN {v} untagged)"))
                        .unwrap_or_default(),
                    o.mtu,
                    o.floods,
                    o.learned_macs
                );
                let drops: Vec<String> = o
                    .drops
                    .by_reason()
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect();
                if drops.is_empty() {
                    println!("dropped: nothing");
                } else {
                    println!("dropped: {}", drops.join(", "));
                }
                if let Some(v) = o.last_unmapped_vni {
                    println!("last unmapped VNI: {v}");
                }
                if let Some(a) = o.last_stranger {
                    println!("last frame from a non-peer: {a}");
                }
                table(
                    &[
                        "PEER",
                        "REACHABLE",
                        "PATH",
                        "TX",
                        "TX-BYTES",
                        "RX",
                        "RX-BYTES",
                        "LAST-RX",
                        "MACS",
                    ],
                    o.peers
                        .iter()
                        .map(|p| {
                            vec![
                                p.address.to_string(),
                                if p.reachable { "yes" } else { "NO" }.into(),
                                p.path.clone(),
                                p.tx_packets.to_string(),
                                p.tx_bytes.to_string(),
                                p.rx_packets.to_string(),
                                p.rx_bytes.to_string(),
                                p.last_rx_seconds_ago
                                    .map(|s| format!("{s:.1}s ago"))
                                    .unwrap_or_else(|| "never".into()),
                                p.learned_macs.to_string(),
                            ]
                        })
                        .collect(),
                )
            })
        }
        Cmd::Status => {
            let h: serde_json::Value = c.get("/healthz")?;
            let r = c.raw("GET", "/readyz", None)?;
            let ready = r.status == 200;
            let v = serde_json::json!({"healthy": h["status"] == "ok", "ready": ready});
            emit(out, &v, |_| {
                println!(
                    "switchd is alive, {}",
                    if ready { "ready" } else { "not ready yet" }
                )
            })?;
            if !ready {
                std::process::exit(3);
            }
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("switchctl: {e:#}");
        std::process::exit(1);
    }
}
