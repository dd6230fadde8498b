//! Shared between the `podswitch` CNI binary, `switchd` and `switchctl`:
//! the wire model of the control API and a small client for its socket.

// Tests may unwrap: a panic there is a failed test, not a crash on input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
pub mod model;
pub mod netdev;
pub mod netlink;
pub mod netns;

/// Default path of switchd's control socket.
pub const DEFAULT_SOCKET: &str = "/run/podswitch/switchd.sock";
/// Default state directory of switchd.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/podswitch";
