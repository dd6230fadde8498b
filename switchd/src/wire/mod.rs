//! Typed views of the frame formats switchd reads and edits. No I/O.
pub mod ethernet;
pub mod ip;
pub mod pcap;
