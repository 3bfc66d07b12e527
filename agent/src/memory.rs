//! How the agent's process holds memory.
//!
//! Its heap is mostly many small, long-lived objects (DNS names, gossip values, task facts) in
//! mimalloc's arenas, built in bursts (a first load, a publication, a parse of the Mesos state)
//! that free about as much again. Two defaults cost tens of MB at 100,000 tasks (scale bench):
//! - **Transparent huge pages.** mimalloc advises its arenas for them, and a 2 MiB page that
//!   long-lived objects use in part stays resident whole: 199 of a serving node's 307 MB were
//!   huge pages; without them each node kept 26 MB less.
//! - **Delayed purging.** Freed pages went back to the system only a second after they were
//!   freed, and only when a later allocation got round to it: an idle publisher kept the
//!   garbage of its last parse (50 MB).
//!
//! [`tune`] turns both off for the agent at start. Tasks get the system's THP policy back as
//! they start (`launcher::confine`); a `MIMALLOC_PURGE_DELAY` set by an operator is left alone.

use std::ffi::c_long;

/// `mi_option_purge_delay` in the option enum of the mimalloc that `libmimalloc-sys` 0.1.49
/// builds (v3). The bindings name no constant for it; the version is pinned in `Cargo.toml`,
/// and [`tune`] checks that the option reads its default before it sets it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// The default purge delay of that mimalloc, in milliseconds (`src/options.c`; its header
/// still says 10).
const DEFAULT_PURGE_DELAY: c_long = 1000;

/// What [`tune`] did, for the log once logging is set up.
#[derive(Debug)]
pub struct Tuned {
    /// Whether transparent huge pages are now off for this process, or why not.
    pub huge_pages_off: Result<(), nix::Error>,
    pub purge: Purge,
}

/// What became of the allocator's purge delay.
#[derive(Debug, PartialEq, Eq)]
pub enum Purge {
    /// Freed pages now go back to the system at once.
    Immediate,
    /// `MIMALLOC_PURGE_DELAY` is set: the operator's choice stands.
    AsConfigured,
    /// The option did not read its default: another mimalloc than the one this was written
    /// for, so nothing was set.
    Unknown(c_long),
}

/// Applies the process-wide memory settings above. Call once, first thing in `main`.
pub fn tune() -> Tuned {
    let huge_pages_off = nix::sys::prctl::set_thp_disable(true);
    let purge = if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        Purge::AsConfigured
    } else {
        // SAFETY: reading and setting a mimalloc option touches only that option's value.
        match unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) } {
            DEFAULT_PURGE_DELAY => {
                // SAFETY: as above.
                unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
                Purge::Immediate
            }
            other => Purge::Unknown(other),
        }
    };
    Tuned {
        huge_pages_off,
        purge,
    }
}

/// Restores the system's transparent huge page policy for a process about to exec (the flag
/// [`tune`] sets is inherited across fork and exec). Async-signal-safe: one system call.
pub fn give_back_huge_pages() -> std::io::Result<()> {
    // SAFETY: a prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_where_it_is_expected() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(
            delay, DEFAULT_PURGE_DELAY,
            "option {PURGE_DELAY} is not mimalloc's purge delay: check the option enum of the \
             mimalloc that libmimalloc-sys builds"
        );
    }
}
