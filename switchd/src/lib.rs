//! switchd: podswitch's node-local switch daemon.
//!
//! Layers, arrows pointing one way: `control` (API server) and `datapath`
//! (AF_XDP poll thread) → `state` (owns switches and ports, persists them,
//! publishes snapshots) → `pipeline` (pure forwarding) → `snapshot`, `wire`.

pub mod clock;
pub mod control;
pub mod datapath;
pub mod metrics;
pub mod pipeline;
pub mod snapshot;
pub mod state;
pub mod wire;
