//! switchd: podswitch's node-local switch daemon.
//!
//! Layers, arrows pointing one way: `control` (API server) → `state` (owns
//! switches and ports, persists them, publishes snapshots) → `datapath`
//! (setup thread and AF_XDP poll threads) → `pipeline` (pure forwarding
//! over the published `pipeline::snapshot`) → `wire`.

pub mod clock;
pub mod control;
pub mod datapath;
pub mod metrics;
pub mod pipeline;
pub mod state;
pub mod wire;
