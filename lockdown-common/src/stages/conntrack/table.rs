//! Where flows live (the conntrack stage's map side). A flow sits in its family's live or closing table, chosen by its
//! state ([`crate::contract::flow::FlowState::table`]). These helpers look a key up in both tables and move
//! an entry when a transition crosses from one to the other, so the verdict layer never handles two
//! tables itself — and a closing flow can never take a live flow's slot.

use crate::{
    contract::flow::{FlowKey, FlowTable, FlowValue},
    tables::Tables,
};

/// What [`update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// No live entry in either table.
    Missing,
    /// A live entry, but the transition refused the packet; nothing was written.
    Refused,
    /// The entry took its next value (in place, or moved to the other table).
    Done,
}

/// Finds the live entry of `key` (live table first, then closing) at the tables' current time and
/// gives it the value `next` computes from the current one, or refuses the packet if `next`
/// returns `None`.
#[inline(always)]
pub fn update<T, F>(t: &mut T, key: &FlowKey, next: F) -> Update
where
    T: Tables + ?Sized,
    F: Fn(&FlowValue) -> Option<FlowValue>,
{
    match update_in(t, FlowTable::Live, key, &next) {
        Update::Missing => update_in(t, FlowTable::Closing, key, &next),
        done => done,
    }
}

/// [`update`] in one table.
#[inline(always)]
fn update_in<T, F>(t: &mut T, table: FlowTable, key: &FlowKey, next: &F) -> Update
where
    T: Tables + ?Sized,
    F: Fn(&FlowValue) -> Option<FlowValue>,
{
    let timeouts = t.config().timeouts;
    let now = t.now();
    let moved = match t.flow_mut(table, key) {
        Some(v) if v.is_live(now, &timeouts) => match next(v) {
            None => return Update::Refused,
            Some(n) if n.table() == table => {
                // A packet in the same clock tick changes nothing: skip the write, so a busy flow
                // does not dirty its entry's cache line on every CPU of a multi-queue NIC.
                let (a, b) = (v.words(), n.words());
                // Word by word: an array comparison would be a `memcmp` call in BPF.
                if a[0] != b[0] || a[1] != b[1] || a[2] != b[2] {
                    *v = n;
                }
                return Update::Done;
            }
            Some(n) => n,
        },
        _ => return Update::Missing,
    };
    // The transition crosses tables: write the new home first, then free the old slot. If the
    // write fails, the flow stays where it was, in its old state.
    if t.flow_insert(moved.table(), key, &moved) {
        t.flow_remove(table, key);
    }
    Update::Done
}

/// Whether `key` has a live entry in either table (read only).
#[inline(always)]
pub fn is_tracked<T: Tables + ?Sized>(t: &mut T, key: &FlowKey) -> bool {
    let timeouts = t.config().timeouts;
    let now = t.now();
    matches!(t.flow_mut(FlowTable::Live, key), Some(v) if v.is_live(now, &timeouts))
        || matches!(t.flow_mut(FlowTable::Closing, key), Some(v) if v.is_live(now, &timeouts))
}

/// Creates the entry of a flow that has none, in the table its state belongs in. Returns whether
/// the table took it.
#[inline(always)]
pub fn create<T: Tables + ?Sized>(t: &mut T, key: &FlowKey, value: &FlowValue) -> bool {
    t.flow_insert(value.table(), key, value)
}
