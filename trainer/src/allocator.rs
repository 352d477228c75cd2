//! Tuning of the mimalloc global allocator the `kiln` binary installs.
//!
//! A training step frees and re-allocates the same large activation and
//! gradient buffers (tens of MB each) every step. By default mimalloc (v3) purges
//! freed memory back to the OS after a delay, so each step page-faults those
//! buffers back in and the kernel zeroes every page again: measured on the
//! 8M bench shape, 80k page faults and ~20% of the CPU time in
//! `clear_page_erms`. Never purging keeps the pages mapped; the resident size
//! stays at the step's high-water mark, which is the peak anyway.

use std::os::raw::c_long;

// Option indices of mimalloc v3's `mi_option_t` (`c_src/mimalloc/v3/include/
// mimalloc.h`); libmimalloc-sys 0.1.49 has no named constants for them.
const MI_OPTION_ARENA_EAGER_COMMIT: i32 = 4;
const MI_OPTION_PURGE_DELAY: i32 = 15;

/// Keep freed memory mapped (no purge) and commit arenas eagerly.
/// Call first thing in `main`; harmless when another allocator is installed.
pub fn tune_for_training() {
    // SAFETY: plain option setters of the linked mimalloc; they take any value.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1 as c_long);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 1 as c_long);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the hard-coded indices: a renumbered enum would make these read
    /// other options, whose defaults differ.
    #[test]
    fn option_indices_match_mimalloc_defaults() {
        // SAFETY: read-only option getters.
        let (purge, eager) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT),
            )
        };
        assert_eq!(purge, 1000, "purge_delay default is 1000 ms (v3 options.c)");
        assert_eq!(eager, 2, "arena_eager_commit default is 2");
    }
}
