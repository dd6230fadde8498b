//! The CNI verbs. ADD builds the endpoint step by step and rolls every
//! step back if a later one fails; DEL undoes what ADD did and succeeds
//! when any of it is already gone; CHECK compares what exists with
//! prevResult; GC removes this network's attachments that are no longer
//! valid; STATUS asks switchd whether it is ready.

use crate::config::{EndpointKind, Env, NetConf};
use crate::endpoint::{self, host_ifname};
use crate::ipam;
use crate::netns::NetNs;
use crate::reply::{code, CniError, CniOutput, CniResult};
use crate::tap;
use podswitch_cni::sriov::RtnlSocket;
use podswitch_cni::vfio;
use podswitch_shared::client::{Client, ClientError};
use podswitch_shared::model::{MacAddr, Nic, NicKind, PortConfig, VPort};
use podswitch_shared::netdev;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const DEFAULT_MTU: u32 = 1500;

/// How long the plugin waits for a switchd that is restarting or handing
/// its datapath over (unreachable, or answering 503) before it returns
/// CNI error 11, "try again later".
const SWITCHD_RETRY: Duration = Duration::from_secs(3);

fn client(conf: &NetConf) -> Client {
    Client::new(conf.socket())
        .with_timeout(Duration::from_secs(15))
        .with_retry(SWITCHD_RETRY)
}

/// The CNI code of a switchd failure: unreachable, or still busy (503:
/// restarting, handing over) after the retries → try again later; a
/// refusal of our config → invalid config; anything else → plugin error.
fn code_for(e: &ClientError) -> u32 {
    match e {
        ClientError::Connect { .. } | ClientError::Api { status: 503, .. } => code::TRY_AGAIN_LATER,
        ClientError::Api { status, .. } if (400..500).contains(status) && *status != 404 => {
            code::INVALID_CONFIG
        }
        _ => code::PLUGIN,
    }
}

/// Maps a switchd failure to a CNI error (see `code_for`).
fn switchd_err(conf: &NetConf, what: &str, e: ClientError) -> CniError {
    let c = code_for(&e);
    let what = if e.is_unreachable() {
        unreachable_msg(conf)
    } else {
        what.to_string()
    };
    CniError::new(c, what).with_details(e.to_string())
}

fn unreachable_msg(conf: &NetConf) -> String {
    format!(
        "switchd is not reachable at {}; is switchd (the podswitch DaemonSet) running?",
        conf.socket().display()
    )
}

/// How switchd's data path runs, from /readyz.
struct Ready {
    /// CPUs its poll threads are pinned to (pods' receive processing is
    /// steered off them).
    poll_cpus: Vec<usize>,
    /// Poll threads: pod veths get this many queues.
    threads: u32,
    /// The MTU a pod's frames may have to cross the switch's overlay, if
    /// it has one (VXLAN takes 50 bytes of the underlay's).
    overlay_mtu: Option<u32>,
}

/// The pod's MTU: the configured one (or 1500), lowered to what crosses
/// the switch's overlay when it has one, so that no frame is too big for
/// it (an oversized frame would be dropped, counted `oversize`).
fn pod_mtu(configured: Option<u32>, overlay: Option<u32>) -> u32 {
    let mtu = configured.unwrap_or(DEFAULT_MTU);
    match overlay {
        Some(o) if o < mtu => o,
        _ => mtu,
    }
}

/// Checks switchd is ready and reads how its data path runs.
fn ensure_ready(conf: &NetConf, c: &Client) -> CniResult<Ready> {
    match c.raw("GET", "/readyz", None) {
        Ok(r) if r.status == 200 => {
            let v = serde_json::from_slice::<Value>(&r.body).unwrap_or_default();
            let mut poll_cpus: Vec<usize> = v
                .get("pollCpus")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|c| c as usize)
                        .collect()
                })
                .unwrap_or_default();
            if poll_cpus.is_empty() {
                // An older switchd: one poll thread, maybe pinned.
                poll_cpus.extend(v.get("pollCpu").and_then(Value::as_u64).map(|c| c as usize));
            }
            let threads = v
                .get("pollThreads")
                .and_then(Value::as_u64)
                .map(|n| n.clamp(1, 64) as u32)
                .unwrap_or(1);
            let overlay_mtu = v
                .get("overlayMtu")
                .and_then(|m| m.get(conf.switch()))
                .and_then(Value::as_u64)
                .map(|m| m as u32);
            Ok(Ready {
                poll_cpus,
                threads,
                overlay_mtu,
            })
        }
        Ok(r) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "switchd at {} is not ready yet (HTTP {})",
                conf.socket().display(),
                r.status
            ),
        )),
        Err(e) => Err(switchd_err(conf, "switchd is not reachable", e)),
    }
}

/// switchd's port API for the vfio verbs.
struct SwitchdApi<'a> {
    conf: &'a NetConf,
    c: Client,
}

impl vfio::Switchd for SwitchdApi<'_> {
    fn create_port(&self, port: &PortConfig) -> CniResult<VPort> {
        self.c
            .call("POST", "/v1/ports", Some(port))
            .map_err(|e| switchd_err(self.conf, "switchd refused the port", e))
    }
    fn delete_port(&self, id: &str) -> CniResult<()> {
        match self
            .c
            .call::<Value>("DELETE", &format!("/v1/ports/{id}"), None::<&()>)
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(switchd_err(
                self.conf,
                &format!("switchd did not remove port {id}"),
                e,
            )),
        }
    }
    fn port(&self, id: &str) -> CniResult<VPort> {
        self.c
            .get(&format!("/v1/ports/{id}"))
            .map_err(|e| switchd_err(self.conf, &format!("switchd has no port {id}"), e))
    }
}

/// The delegated IPAM plugin for the vfio verbs.
struct ExecIpam<'a> {
    conf: &'a NetConf,
    env: &'a Env,
}

impl vfio::Ipam for ExecIpam<'_> {
    fn add(&self) -> CniResult<Option<Value>> {
        ipam::exec(self.conf, self.env, "ADD", ipam::version_for(self.conf))
    }
    fn del(&self) -> CniResult<()> {
        ipam::exec(self.conf, self.env, "DEL", ipam::version_for(self.conf)).map(drop)
    }
    fn check(&self) -> CniResult<()> {
        ipam::exec(self.conf, self.env, "CHECK", ipam::version_for(self.conf)).map(drop)
    }
}

/// Runs a vfio verb with the real I/O: the PF's rtnetlink in this
/// (the node's) network namespace, switchd, the IPAM plugin.
fn with_vfio_io<T>(
    conf: &NetConf,
    env: &Env,
    f: impl FnOnce(&mut vfio::Io) -> CniResult<T>,
) -> CniResult<T> {
    let mut rtnl = RtnlSocket::open().map_err(|e| {
        CniError::new(
            code::PLUGIN,
            "opening a NETLINK_ROUTE socket (to configure the VF through its PF)",
        )
        .with_details(e.to_string())
    })?;
    let switchd = SwitchdApi {
        conf,
        c: client(conf),
    };
    let ipam = ExecIpam { conf, env };
    f(&mut vfio::Io {
        rtnl: &mut rtnl,
        switchd: &switchd,
        ipam: &ipam,
    })
}

/// What ADD has created so far, undone in reverse on failure.
struct Rollback<'a> {
    conf: &'a NetConf,
    env: &'a Env,
    veth: Option<String>,
    /// A tap made in the container's netns (its name there).
    tap: Option<String>,
    ipam: bool,
    port: Option<String>,
}

impl Rollback<'_> {
    fn undo(&mut self) {
        if let Some(id) = self.port.take() {
            let _ =
                client(self.conf).call::<Value>("DELETE", &format!("/v1/ports/{id}"), None::<&()>);
        }
        if std::mem::take(&mut self.ipam) {
            if let Err(e) = ipam::exec(self.conf, self.env, "DEL", ipam::version_for(self.conf)) {
                eprintln!("podswitch: rollback: releasing the address failed: {e}");
            }
        }
        if let Some(v) = self.veth.take() {
            let _ = endpoint::delete(&v);
        }
        if let Some(t) = self.tap.take() {
            if let Ok(ns) = NetNs::open(Path::new(&self.env.netns)) {
                let _ = tap::delete(&ns, &t);
            }
        }
    }
}

fn open_netns(env: &Env) -> CniResult<NetNs> {
    NetNs::open(Path::new(&env.netns)).map_err(|e| {
        CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS {:?} cannot be opened", env.netns),
        )
        .with_details(e.to_string())
    })
}

/// With PODSWITCH_CNI_TIMING set, prints how long each ADD step took.
struct Timing(Option<std::time::Instant>);

impl Timing {
    fn new() -> Self {
        Timing(std::env::var_os("PODSWITCH_CNI_TIMING").map(|_| std::time::Instant::now()))
    }
    fn mark(&self, what: &str) {
        if let Some(t) = self.0 {
            eprintln!(
                "podswitch: {:>7.2} ms {what}",
                t.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}

pub fn add(conf: &NetConf, env: &Env) -> CniResult<Value> {
    let tm = Timing::new();
    env.require(true)?;
    let args = env.parse_args()?;
    let c = client(conf);
    let ready = ensure_ready(conf, &c)?;
    tm.mark("switchd ready");
    if conf.endpoint == EndpointKind::Vfio {
        // The VM's VF: nothing is made in the container's netns.
        let port_id = host_ifname(&env.container_id, &env.ifname);
        return with_vfio_io(conf, env, |io| vfio::add(conf, env, &args, &port_id, io));
    }
    // Pods' receive processing goes to every CPU but switchd's poll CPUs.
    let rps: Option<Vec<usize>> = Some(&ready.poll_cpus)
        .filter(|p| !p.is_empty())
        .map(|p| {
            netdev::online_cpus()
                .into_iter()
                .filter(|c| !p.contains(c))
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty());
    let ns = open_netns(env)?;
    let mac = conf.wanted_mac(&args)?.map(|m| m.0);
    let mtu = pod_mtu(conf.mtu, ready.overlay_mtu);
    let host_if = host_ifname(&env.container_id, &env.ifname);
    let mut rb = Rollback {
        conf,
        env,
        veth: None,
        tap: None,
        ipam: false,
        port: None,
    };
    // IPAM runs on its own thread while the veth is built and the port
    // registered: an ADD costs the longer of the two, not their sum.
    let r = std::thread::scope(|s| -> CniResult<Value> {
        let ipam_job = s.spawn(|| ipam::exec(conf, env, "ADD", ipam::version_for(conf)));
        let mut local = || -> CniResult<endpoint::Endpoint> {
            let (ep, nic) = match conf.endpoint {
                EndpointKind::Veth => {
                    let ep = endpoint::create(
                        &ns,
                        &host_if,
                        &env.ifname,
                        mtu,
                        mac,
                        ready.threads,
                        rps.as_deref(),
                        conf.gro.unwrap_or(true),
                    )?;
                    rb.veth = Some(host_if.clone());
                    (ep, Nic::new(NicKind::Veth, host_if.clone()))
                }
                EndpointKind::Tap => {
                    let owner = conf.tap_owner.map(|o| (o.uid, o.gid));
                    let ep =
                        tap::create(&ns, &host_if, &env.ifname, mtu, mac, owner, ready.threads)?;
                    rb.tap = Some(env.ifname.clone());
                    let nic = Nic {
                        netns: Some(env.netns.clone()),
                        ..Nic::new(NicKind::Tap, env.ifname.clone())
                    };
                    (ep, nic)
                }
                EndpointKind::Vfio => {
                    return Err(CniError::new(
                        code::PLUGIN,
                        "internal error: a vfio endpoint reached the netdev path",
                    ))
                }
            };
            tm.mark("endpoint created");
            let port = conf.port(env, &args, &host_if, nic, Some(MacAddr(ep.pod_mac)));
            let created: VPort = c
                .call("POST", "/v1/ports", Some(&port))
                .map_err(|e| switchd_err(conf, "switchd refused the port", e))?;
            rb.port = Some(created.id);
            tm.mark("port registered");
            Ok(ep)
        };
        let ep = local();
        let ipam_out = ipam_job
            .join()
            .unwrap_or_else(|_| Err(CniError::new(code::PLUGIN, "the IPAM thread failed")));
        let ipam_out = match ipam_out? {
            Some(v) => {
                rb.ipam = true;
                CniOutput::parse(&v)?
            }
            None => CniOutput::default(),
        };
        tm.mark("IPAM done");
        let ep = ep?;
        // The port was registered while IPAM ran: its spoof guard learns
        // the addresses now (before the pod runs, so nothing is dropped).
        if conf.ip_spoof_check == Some(true) {
            if let Some(id) = &rb.port {
                let u = serde_json::json!({ "allowedIPs": ipam_out.addresses() });
                c.call::<VPort>("PATCH", &format!("/v1/ports/{id}"), Some(&u))
                    .map_err(|e| switchd_err(conf, "switchd refused the port's allowed IPs", e))?;
                tm.mark("allowed IPs set");
            }
        }
        // A VM's guest owns its addresses: the tap gets none.
        if conf.endpoint == EndpointKind::Veth {
            endpoint::configure_ips(&ns, ep.pod_ifindex, &ipam_out.ips, &ipam_out.routes)?;
            tm.mark("addresses and routes set");
        }
        Ok(endpoint::result(&ep, &env.netns, mtu, &ipam_out).to_version(&conf.cni_version))
    });
    match r {
        Ok(v) => Ok(v),
        Err(e) => {
            rb.undo();
            Err(e)
        }
    }
}

pub fn del(conf: &NetConf, env: &Env) -> CniResult<()> {
    env.require(false)?;
    let host_if = host_ifname(&env.container_id, &env.ifname);
    if conf.endpoint == EndpointKind::Vfio {
        return with_vfio_io(conf, env, |io| vfio::del(conf, env, &host_if, io));
    }
    // The three removals are independent: do them at once (each waits for
    // the kernel's RCU grace periods; together they cost the longest one).
    let (veth, ipam) = std::thread::scope(|s| {
        let veth = s.spawn(|| match conf.endpoint {
            EndpointKind::Tap => match NetNs::open(Path::new(&env.netns)) {
                Ok(ns) => tap::delete(&ns, &env.ifname),
                // No netns (gone, or not given to DEL): no tap.
                Err(_) => Ok(()),
            },
            _ => endpoint::delete(&host_if),
        });
        let ipam = s.spawn(|| ipam::exec(conf, env, "DEL", ipam::version_for(conf)));
        match client(conf).call::<Value>("DELETE", &format!("/v1/ports/{host_if}"), None::<&()>) {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {}
            // switchd down: free the veth and the address anyway; switchd drops
            // the port, whose NIC is then gone, when it next starts.
            Err(e) => eprintln!("podswitch: DEL: switchd did not remove port {host_if}: {e}"),
        }
        let failed = || {
            Err(CniError::new(
                code::PLUGIN,
                "a DEL step failed unexpectedly",
            ))
        };
        (
            veth.join().unwrap_or_else(|_| failed()),
            ipam.join().unwrap_or_else(|_| failed().map(|()| None)),
        )
    });
    veth?;
    ipam?;
    Ok(())
}

pub fn check(conf: &NetConf, env: &Env) -> CniResult<()> {
    env.require(true)?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult in the configuration",
        )
    })?;
    let prev = CniOutput::parse(prev)?;
    let host_if = host_ifname(&env.container_id, &env.ifname);
    if conf.endpoint == EndpointKind::Vfio {
        return with_vfio_io(conf, env, |io| vfio::check(conf, env, &host_if, &prev, io));
    }
    let fail = |m: String| Err(CniError::new(code::PLUGIN, m));
    let (pod_idx, pod) = match prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == env.ifname && !i.sandbox.is_empty())
    {
        Some(x) => x,
        None => {
            return fail(format!(
                "prevResult has no interface {} in a sandbox",
                env.ifname
            ))
        }
    };
    let tap = conf.endpoint == EndpointKind::Tap;
    if !tap && !prev.interfaces.iter().any(|i| i.name == host_if) {
        return fail(format!(
            "prevResult does not list the host interface {host_if}"
        ));
    }
    let ns = open_netns(env)?;
    let want_ips: Vec<(std::net::IpAddr, u8)> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == pod_idx))
        .filter_map(|ip| endpoint::parse_cidr(&ip.address))
        .collect();
    let ifname = env.ifname.clone();
    let live = ns
        .run(move || crate::inspect::interface(&ifname))
        .and_then(|r| r)
        .map_err(|e| {
            CniError::new(code::PLUGIN, "inspecting the container's network namespace")
                .with_details(e.to_string())
        })?;
    let live = match live {
        Some(l) => l,
        None => {
            return fail(format!(
                "interface {} is missing from the container's network namespace",
                env.ifname
            ))
        }
    };
    if !pod.mac.is_empty() && !pod.mac.eq_ignore_ascii_case(&live.mac) {
        return fail(format!(
            "interface {} has MAC {}, prevResult says {}",
            env.ifname, live.mac, pod.mac
        ));
    }
    for (ip, p) in want_ips.iter().filter(|_| !tap) {
        if !live.addrs.contains(&(*ip, *p)) {
            return fail(format!(
                "interface {} lacks address {ip}/{p} (has {})",
                env.ifname,
                live.addrs
                    .iter()
                    .map(|(a, p)| format!("{a}/{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for r in prev.routes.iter().filter(|_| !tap) {
        let Some((dst, p)) = endpoint::parse_cidr(&r.dst) else {
            continue;
        };
        let gw = r.gw.as_deref().and_then(|g| g.parse().ok());
        if !live
            .routes
            .iter()
            .any(|(d, lp, lg)| *d == dst && *lp == p && (gw.is_none() || *lg == gw))
        {
            return fail(format!("route to {} is missing in the container", r.dst));
        }
    }
    if !tap && podswitch_shared::netdev::ifindex(&host_if).is_err() {
        return fail(format!("host interface {host_if} is missing"));
    }
    let port: VPort = client(conf)
        .get(&format!("/v1/ports/{host_if}"))
        .map_err(|e| switchd_err(conf, &format!("switchd has no port {host_if}"), e))?;
    if !port.status.as_ref().is_some_and(|s| s.attached) {
        return fail(format!(
            "port {host_if} is not attached to switchd's data path"
        ));
    }
    if port.vlan != conf.vlan || port.trunk != conf.trunk || port.pvlan != conf.pvlan {
        return fail(format!(
            "port {host_if} has a different VLAN setting than the configuration"
        ));
    }
    if port.qos != conf.effective_qos() {
        return fail(format!(
            "port {host_if} has a different QoS setting than the configuration"
        ));
    }
    if port.owner.as_ref().and_then(|o| o.container_id.as_deref())
        != Some(env.container_id.as_str())
    {
        return fail(format!("port {host_if} belongs to another container"));
    }
    ipam::exec(conf, env, "CHECK", ipam::version_for(conf))?;
    Ok(())
}

pub fn gc(conf: &NetConf, env: &Env) -> CniResult<()> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let c = client(conf);
    let ports: Vec<VPort> = c
        .get("/v1/ports")
        .map_err(|e| switchd_err(conf, "cannot list switchd's ports", e))?;
    let mut first_err = None;
    for p in ports {
        let Some(o) = &p.owner else { continue };
        // A vfio port's VF state lives where this network's configuration
        // says (vfStateDir, sysfsRoot): only a vfio network collects them.
        let ours = match p.nic.kind {
            NicKind::Veth | NicKind::Tap => true,
            NicKind::Vfio => conf.endpoint == EndpointKind::Vfio,
            _ => false,
        };
        if o.network.as_deref() != Some(conf.name.as_str()) || !ours {
            continue;
        }
        let (Some(cid), Some(ifname)) = (&o.container_id, &o.ifname) else {
            continue;
        };
        if valid
            .iter()
            .any(|a| &a.container_id == cid && &a.ifname == ifname)
        {
            continue;
        }
        eprintln!(
            "podswitch: GC: removing stale attachment {cid}/{ifname} (port {})",
            p.id
        );
        let stale = Env {
            command: "DEL".into(),
            container_id: cid.clone(),
            ifname: ifname.clone(),
            netns: String::new(),
            args: String::new(),
            path: env.path.clone(),
        };
        if p.nic.kind == NicKind::Vfio {
            // As DEL does: the port, the VF put back, the device-info
            // file, the address.
            if let Err(e) = with_vfio_io(conf, &stale, |io| vfio::del(conf, &stale, &p.id, io)) {
                first_err.get_or_insert(e);
            }
            continue;
        }
        if let Err(e) = c.call::<Value>("DELETE", &format!("/v1/ports/{}", p.id), None::<&()>) {
            if e.status() != Some(404) {
                first_err.get_or_insert(switchd_err(conf, "removing a stale port", e));
            }
        }
        let removed = match (&p.nic.kind, &p.nic.netns) {
            (NicKind::Tap, Some(ns)) => match NetNs::open(Path::new(ns)) {
                Ok(ns) => tap::delete(&ns, &p.nic.ifname),
                Err(_) => Ok(()), // the sandbox is gone, and its tap with it
            },
            // A tap in switchd's own namespace was not made by this plugin:
            // its name is the VM's interface name, never a host link to delete.
            (NicKind::Tap, None) => Ok(()),
            _ => endpoint::delete(&p.nic.ifname),
        };
        if let Err(e) = removed {
            first_err.get_or_insert(e);
        }
        if let Err(e) = ipam::exec(conf, &stale, "DEL", ipam::version_for(conf)) {
            first_err.get_or_insert(e);
        }
    }
    if conf.ipam.is_some() && ipam::supports(conf, env, "1.1.0") {
        ipam::exec(conf, env, "GC", "1.1.0")?;
    }
    first_err.map_or(Ok(()), Err)
}

pub fn status(conf: &NetConf, env: &Env) -> CniResult<()> {
    // STATUS answers at once: the runtime asks again.
    let c = client(conf)
        .with_timeout(Duration::from_secs(3))
        .with_retry(Duration::ZERO);
    match c.raw("GET", "/readyz", None) {
        Ok(r) if r.status == 200 => {}
        Ok(r) => {
            return Err(CniError::new(
                code::NOT_AVAILABLE,
                format!(
                    "switchd at {} is not ready (HTTP {})",
                    conf.socket().display(),
                    r.status
                ),
            ))
        }
        Err(e) => {
            return Err(CniError::new(code::NOT_AVAILABLE, unreachable_msg(conf))
                .with_details(e.to_string()))
        }
    }
    // Ready, but is the switch cut off from the fabric? An uplink that is
    // detached or set down means pods here reach only this node: code 51.
    let ports: Vec<VPort> = c.get("/v1/ports").map_err(|e| {
        CniError::new(code::NOT_AVAILABLE, "switchd did not list its ports")
            .with_details(e.to_string())
    })?;
    let switch = conf.switch();
    let cut: Vec<String> = ports
        .iter()
        .filter(|p| p.switch == switch && p.nic.kind == NicKind::Uplink)
        .filter(|p| {
            p.link_state == podswitch_shared::model::LinkState::Down
                || !p.status.as_ref().is_some_and(|s| s.attached)
        })
        .map(|p| format!("{} ({})", p.id, p.nic.ifname))
        .collect();
    if !cut.is_empty() {
        return Err(CniError::new(
            code::LIMITED_CONNECTIVITY,
            format!(
                "switch {switch:?} is up but its uplink {} is down or not attached: pods reach only this node",
                cut.join(", ")
            ),
        ));
    }
    if conf.ipam.is_some() && ipam::supports(conf, env, "1.1.0") {
        ipam::exec(conf, env, "STATUS", "1.1.0")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use podswitch_shared::model::ApiError;

    fn api(status: u16) -> ClientError {
        ClientError::Api {
            status,
            error: ApiError {
                code: "x".into(),
                message: "x".into(),
            },
        }
    }

    #[test]
    fn an_overlay_lowers_the_pod_mtu_never_raises_it() {
        assert_eq!(pod_mtu(None, None), DEFAULT_MTU);
        assert_eq!(pod_mtu(None, Some(1450)), 1450);
        assert_eq!(pod_mtu(Some(9000), Some(8950)), 8950);
        assert_eq!(pod_mtu(Some(1400), Some(1450)), 1400);
    }

    #[test]
    fn a_switchd_still_busy_after_the_retries_is_try_again_later() {
        assert_eq!(code_for(&api(503)), code::TRY_AGAIN_LATER);
        assert_eq!(code_for(&api(422)), code::INVALID_CONFIG);
        assert_eq!(code_for(&api(404)), code::PLUGIN);
        assert_eq!(code_for(&api(500)), code::PLUGIN);
    }
}
