#![no_main]
//! Lying images: no panic, and no input may take the allocations live at once past
//! `CEILING` (a counting allocator checks each input; libFuzzer's own -malloc_limit_mb
//! bounds any single allocation too).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(now, Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Inputs are at most 64 KiB; a truthful 2048x2048 16-bit slice decodes in under 100 MB.
const CEILING: usize = 256 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    lesion_search::fuzz_harness::lying_images(data);
    let peak = PEAK.load(Relaxed) - base;
    assert!(peak < CEILING, "{peak} bytes allocated at once");
});
