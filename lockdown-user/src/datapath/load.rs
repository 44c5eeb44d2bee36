//! Loading this binary's eBPF object: maps pinned where the caller says, the flow tables sized,
//! kernel-side debug logging off unless asked for.

use std::path::PathBuf;

use aya::EbpfLoader;
use lockdown_common::contract::maps::{FLOW_MAPS, flow_capacity};

/// The loader for this binary's object: maps pinned at `paths`, flow table sized, kernel-side
/// debug logging off unless asked for.
pub(crate) fn loader<'a>(
    paths: &'a [(&'a str, PathBuf)],
    max_flows: u32,
    debug_log: bool,
) -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    for (name, table, _) in FLOW_MAPS {
        loader.map_max_entries(name, flow_capacity(table, max_flows));
    }
    for (name, path) in paths {
        loader.map_pin_path(name, path.as_path());
    }
    static OFF: u8 = 0;
    static DEBUG: u8 = aya_log::Level::Debug as u8;
    loader.override_global(aya_log::LEVEL, if debug_log { &DEBUG } else { &OFF }, false);
    loader
}
