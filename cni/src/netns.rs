//! Network namespaces: see `podswitch_shared::netns` (switchd enters pod
//! namespaces too, to attach a VM's tap where it lives).

pub use podswitch_shared::netns::NetNs;
