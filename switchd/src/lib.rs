//! switchd: podswitch's node-local switch daemon.
//!
//! Layers, arrows pointing one way: `control` (API server) → `registry`
//! (desired state: validates, persists, assigns IDs, publishes snapshots;
//! no netdev calls) → `reconcile` (netdevs, attach, detach, retries) →
//! `datapath` (setup thread and AF_XDP poll threads) → `pipeline` (pure
//! forwarding over the published `pipeline::snapshot`) → `wire`.

// Tests may unwrap: a panic there is a failed test, not a crash on input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod clock;
pub mod control;
pub mod datapath;
#[doc(hidden)]
pub mod fuzzing;
pub mod handover;
pub mod metrics;
pub mod overlay;
pub mod pipeline;
pub mod reconcile;
pub mod registry;
pub mod snooper;
pub mod vmlink;
pub mod wire;
