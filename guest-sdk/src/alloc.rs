//! The allocator rules get on wasm32 (feature `bump-alloc`, on by default).
//!
//! The runtime starts every event from the instance's state after instantiation (a
//! fresh instance, or a warm one reset in place), so memory never needs to be given
//! back: a bump allocator over the module's initial memory is the fastest possible
//! allocator, and, unlike Rust's default one, it does not call `memory.grow` on the
//! first allocation. Growing memory makes the host discard a warm instance instead of
//! resetting it (see docs/performance.md), so a rule whose allocations fit in its initial
//! memory (1 MiB with this workspace's `.cargo/config.toml`) never grows it.
//!
//! Freeing the most recent allocation, and growing it in place, are supported, which
//! covers the common `Vec`/`String` growth pattern. Everything else is released when
//! the instance is dropped after the event. A rule that allocates and frees a lot in a
//! loop should disable the feature to get Rust's default allocator back.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::Cell;

const PAGE: usize = 65536;

unsafe extern "C" {
    // Set by the linker: the first byte after static data and the stack.
    static __heap_base: u8;
}

struct Bump {
    // Next free address; 0 before the first allocation.
    next: Cell<usize>,
}

// SAFETY: wasm32-unknown-unknown rules are single-threaded.
unsafe impl Sync for Bump {}

#[global_allocator]
static ALLOCATOR: Bump = Bump { next: Cell::new(0) };

impl Bump {
    fn top(&self) -> usize {
        match self.next.get() {
            // SAFETY: taking the address of a linker symbol.
            0 => core::ptr::addr_of!(__heap_base) as usize,
            n => n,
        }
    }

    /// Makes sure `[.., end)` is in memory; false if memory cannot grow.
    fn ensure(end: usize) -> bool {
        let have = wasm32::memory_size(0) * PAGE;
        if end <= have {
            return true;
        }
        let pages = (end - have).div_ceil(PAGE);
        wasm32::memory_grow(0, pages) != usize::MAX
    }
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let start = (self.top() + layout.align() - 1) & !(layout.align() - 1);
        let Some(end) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if !Self::ensure(end) {
            return core::ptr::null_mut();
        }
        self.next.set(end);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        if start + layout.size() == self.next.get() {
            // The last allocation: grow or shrink it where it is.
            let Some(end) = start.checked_add(new_size) else {
                return core::ptr::null_mut();
            };
            if !Self::ensure(end) {
                return core::ptr::null_mut();
            }
            self.next.set(end);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: same contract as GlobalAlloc::realloc's default.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size());
            }
            new
        }
    }
}
