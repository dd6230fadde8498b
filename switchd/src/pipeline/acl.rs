//! Port ACLs: an ordered list of rules, first match decides (`allow`,
//! `deny`), `meter` rules only count and matching goes on; the default
//! action applies when nothing decides. "Local" is the pod's side: the
//! source of outbound frames, the destination of inbound ones.

use crate::wire::ethernet::L2Header;
use crate::wire::ip::L3;
use podswitch_shared::model::{AclAction, AclDirection, AclRule};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Which way a frame crosses the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Switch → pod.
    Inbound,
    /// Pod → switch.
    Outbound,
}

/// A port's ACL with per-rule hit counters (written by the poll thread).
#[derive(Debug, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
    default_deny: bool,
    hits: Vec<AtomicU64>,
    /// Whether any rule looks past L2 (then the caller must parse L3).
    needs_l3: bool,
}

impl Acl {
    pub fn new(rules: Vec<AclRule>, default: AclAction) -> Acl {
        let needs_l3 = rules.iter().any(|r| {
            r.local_ip.is_some()
                || r.remote_ip.is_some()
                || r.protocol.is_some()
                || r.local_ports.is_some()
                || r.remote_ports.is_some()
        });
        Acl {
            hits: rules.iter().map(|_| AtomicU64::new(0)).collect(),
            rules,
            default_deny: default == AclAction::Deny,
            needs_l3,
        }
    }

    /// No rules and default allow: nothing to evaluate.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty() && !self.default_deny
    }

    pub fn needs_l3(&self) -> bool {
        self.needs_l3
    }

    pub fn hits(&self) -> Vec<u64> {
        self.hits.iter().map(|h| h.load(Relaxed)).collect()
    }

    /// Whether the frame may pass.
    pub fn allows(&self, dir: Dir, l2: &L2Header, l3: Option<&L3>) -> bool {
        for (rule, hits) in self.rules.iter().zip(&self.hits) {
            if !matches(rule, dir, l2, l3) {
                continue;
            }
            // Single writer (the poll thread): plain store.
            hits.store(hits.load(Relaxed) + 1, Relaxed);
            match rule.action {
                AclAction::Allow => return true,
                AclAction::Deny => return false,
                AclAction::Meter => {}
            }
        }
        !self.default_deny
    }
}

fn matches(r: &AclRule, dir: Dir, l2: &L2Header, l3: Option<&L3>) -> bool {
    let dir_ok = matches!(
        (r.direction, dir),
        (AclDirection::Both, _)
            | (AclDirection::Inbound, Dir::Inbound)
            | (AclDirection::Outbound, Dir::Outbound)
    );
    if !dir_ok {
        return false;
    }
    let (lmac, rmac) = match dir {
        Dir::Outbound => (l2.src, l2.dst),
        Dir::Inbound => (l2.dst, l2.src),
    };
    if r.local_mac.is_some_and(|m| m != lmac) || r.remote_mac.is_some_and(|m| m != rmac) {
        return false;
    }
    let wants_l3 = r.local_ip.is_some() || r.remote_ip.is_some() || r.protocol.is_some();
    let wants_l4 = r.local_ports.is_some() || r.remote_ports.is_some();
    if !wants_l3 && !wants_l4 {
        return true;
    }
    let Some(l3) = l3 else { return false };
    let (lip, rip) = match dir {
        Dir::Outbound => (l3.src, l3.dst),
        Dir::Inbound => (l3.dst, l3.src),
    };
    if r.local_ip.is_some_and(|n| !n.contains(lip)) || r.remote_ip.is_some_and(|n| !n.contains(rip))
    {
        return false;
    }
    if r.protocol.is_some_and(|p| p.0 != l3.proto) {
        return false;
    }
    if wants_l4 {
        let Some((sp, dp)) = l3.ports else {
            return false;
        };
        let (lp, rp) = match dir {
            Dir::Outbound => (sp, dp),
            Dir::Inbound => (dp, sp),
        };
        if r.local_ports.is_some_and(|x| !x.contains(lp))
            || r.remote_ports.is_some_and(|x| !x.contains(rp))
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::{parse, tests::untagged};
    use crate::wire::ip::{self, tests::ipv4, tests::udp};

    fn rule(json: &str) -> AclRule {
        serde_json::from_str(json).unwrap()
    }

    fn tcp_frame(dport: u16) -> (L2Header, L3) {
        let pkt = ipv4(
            ip::PROTO_TCP,
            [10, 0, 0, 1],
            [10, 1, 0, 9],
            &udp(40000, dport, b""),
        );
        let f = untagged([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], &pkt);
        let l2 = parse(&f).unwrap();
        (l2, ip::parse(l2.ethertype, &f[14..]).unwrap())
    }

    #[test]
    fn first_match_wins_and_default_applies() {
        let acl = Acl::new(
            vec![
                rule(r#"{"direction":"outbound","action":"meter","protocol":"tcp"}"#),
                rule(
                    r#"{"direction":"outbound","action":"allow","remoteIp":"10.1.0.0/16","protocol":"tcp","remotePorts":"443"}"#,
                ),
                rule(r#"{"direction":"outbound","action":"deny","remoteIp":"10.1.0.0/16"}"#),
            ],
            AclAction::Allow,
        );
        let (l2, l3) = tcp_frame(443);
        assert!(acl.allows(Dir::Outbound, &l2, Some(&l3)));
        let (l2, l3) = tcp_frame(80);
        assert!(!acl.allows(Dir::Outbound, &l2, Some(&l3)));
        assert_eq!(
            acl.hits(),
            vec![2, 1, 1],
            "meter counts both, allow one, deny one"
        );
        // Inbound direction: the outbound rules do not apply; default allow.
        assert!(acl.allows(Dir::Inbound, &l2, Some(&l3)));
        // Non-IP frame: IP rules do not match.
        assert!(acl.allows(Dir::Outbound, &l2, None));
    }

    #[test]
    fn default_deny_and_local_remote_sides() {
        let acl = Acl::new(
            vec![rule(
                r#"{"direction":"inbound","action":"allow","localPorts":"80","remoteIp":"10.0.0.0/24"}"#,
            )],
            AclAction::Deny,
        );
        // Inbound to the pod: local = destination (10.1.0.9:80), remote = source.
        let (l2, l3) = tcp_frame(80);
        assert!(acl.allows(Dir::Inbound, &l2, Some(&l3)));
        let (l2, l3) = tcp_frame(81);
        assert!(!acl.allows(Dir::Inbound, &l2, Some(&l3)));
        assert!(!acl.allows(Dir::Outbound, &l2, Some(&l3)));
    }

    #[test]
    fn mac_rules() {
        let acl = Acl::new(
            vec![rule(
                r#"{"direction":"both","action":"deny","remoteMac":"02:00:00:00:00:02"}"#,
            )],
            AclAction::Allow,
        );
        let (l2, _) = tcp_frame(1);
        assert!(!acl.allows(Dir::Outbound, &l2, None));
        assert!(
            acl.allows(Dir::Inbound, &l2, None),
            "inbound: remote is the source 02:..:01"
        );
    }
}
