//! A core module's instance kept across events and reset in place after each one.
//!
//! A fresh store and instance per event cost most of a small rule's time (pool slot,
//! instance set-up, the slot's reset on drop). Instead, each rule keeps a few warm
//! instances, each in its own store: an invocation takes one, runs the event in it and,
//! if the event succeeded, restores it to the state it had right after instantiation
//! before putting it back. Anything else (a trap, a limit, a deadline, an ABI error, a
//! memory or table that changed size, a failed restore) drops the instance: the next
//! event gets a new one. What is restored, and why that is all a core module can keep
//! (`reuse_plan.rs` rules out the rest at load):
//!
//! - linear memory: its size must be the size after instantiation (memory cannot
//!   shrink, so a grown memory means a new instance); its contents are restored from
//!   the snapshot taken after instantiation, chunk by chunk:
//!   - for a module compiled with write marks (`reuse_marks.rs`, nearly all), the
//!     4 KiB chunks its map says were written since the last reset, each with the
//!     few bytes after it that a store starting in it can reach ([`restore_marked`]);
//!     the host marks what it writes itself (the event, a Redis reply);
//!   - otherwise, and for components, every page the page table says is not the
//!     instantiation image: present or swapped out and neither the shared zero page
//!     nor a page of the image file ([`dirty_pages`], Linux `PAGEMAP_SCAN`). A page
//!     that is none of those reads as the image (a file page of wasmtime's
//!     copy-on-write image, or zero), which is what the snapshot holds there too.
//! - mutable globals: set back to their values after instantiation.
//! - tables (only for modules whose code can write one): same size, and every element
//!   set back.
//! - the store's data (limits, deadline, reads) is made anew per event.
//!
//! Without `PAGEMAP_SCAN` (Linux before 6.7) nothing is reused.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::{Global, Memory, Ref, Store, Table, TypedFunc, Val};

use super::reuse_marks::{CHUNK, DIRTY_MAP, SPILL};
use super::reuse_plan::Plan;
use super::{Ctx, Failure, RuleError};

/// A warm instance, reset after every event it ran.
pub(super) struct Warm {
    pub(super) store: Store<Ctx>,
    pub(super) memory: Memory,
    pub(super) alloc: TypedFunc<i32, i32>,
    pub(super) on_event: TypedFunc<(i32, i32), i64>,
    /// The map of the chunks written since the last reset, when the module marks its
    /// writes (`reuse_marks.rs`); else the kernel says which pages changed.
    pub(super) map: Option<Memory>,
    globals: Vec<(Global, Val)>,
    tables: Vec<(Table, Vec<Ref>)>,
    /// Memory size after instantiation, in bytes.
    size: usize,
    image: Image,
    _slot: Reservation,
}

/// What a just-made instance offers the host.
pub(super) struct Entry {
    pub(super) instance: wasmtime::Instance,
    pub(super) memory: Memory,
    pub(super) alloc: TypedFunc<i32, i32>,
    pub(super) on_event: TypedFunc<(i32, i32), i64>,
}

/// One of the engine's warm-instance places, given back when dropped.
pub(super) struct Reservation(Arc<AtomicUsize>);

impl Reservation {
    /// A place out of `max` counted in `live`, if one is free.
    pub(super) fn take(live: &Arc<AtomicUsize>, max: usize) -> Option<Reservation> {
        live.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
        Some(Reservation(live.clone()))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an instance could not be restored (it is dropped instead).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Discard {
    MemoryGrew,
    TableGrew,
    Restore(String),
}

impl Warm {
    /// Snapshots a just-instantiated instance in `store`, taking the globals and tables
    /// `plan` names. On failure the store comes back (for classifying the failure).
    pub(super) fn new(
        mut store: Store<Ctx>,
        entry: Entry,
        plan: &Plan,
        slot: Reservation,
    ) -> Result<Warm, (Failure, Store<Ctx>)> {
        let Entry {
            instance,
            memory,
            alloc,
            on_event,
        } = entry;
        let missing =
            |what: &str| Failure::from(RuleError::Abi(format!("reset export `{what}` missing")));
        let mut globals = Vec::with_capacity(plan.globals.len());
        for name in &plan.globals {
            let Some(g) = instance.get_global(&mut store, name) else {
                return Err((missing(name), store));
            };
            let v = g.get(&mut store);
            globals.push((g, v));
        }
        let mut tables = Vec::with_capacity(plan.tables.len());
        for name in &plan.tables {
            let Some(t) = instance.get_table(&mut store, name) else {
                return Err((missing(name), store));
            };
            let mut elements = Vec::new();
            for i in 0..t.size(&store) {
                match t.get(&mut store, i) {
                    Some(e) => elements.push(e),
                    None => return Err((missing(name), store)),
                }
            }
            tables.push((t, elements));
        }
        let map = match plan.marks {
            true => match instance.get_memory(&mut store, DIRTY_MAP) {
                Some(m) => Some(m),
                None => return Err((missing(DIRTY_MAP), store)),
            },
            false => None,
        };
        let image = match Image::settle(memory.data_mut(&mut store), plan.data.as_deref(), false) {
            Ok(image) => image,
            Err(e) => {
                let e = RuleError::Abi(format!("snapshot of a warm instance: {e}"));
                return Err((e.into(), store));
            }
        };
        // What the start function marked is in the image.
        if let Some(map) = map {
            let chunks = memory.data_size(&store) / CHUNK;
            let marks = map.data_mut(&mut store);
            let n = chunks.min(marks.len());
            marks[..n].fill(0);
        }
        Ok(Warm {
            size: memory.data_size(&store),
            store,
            memory,
            alloc,
            on_event,
            map,
            globals,
            tables,
            image,
            _slot: slot,
        })
    }

    /// Restores the state after instantiation, or says why it cannot.
    pub(super) fn reset(&mut self) -> Result<(), Discard> {
        if self.memory.data_size(&self.store) != self.size {
            return Err(Discard::MemoryGrew);
        }
        for (g, v) in &self.globals {
            g.set(&mut self.store, *v)
                .map_err(|e| Discard::Restore(format!("global: {e}")))?;
        }
        for (t, elements) in &self.tables {
            if t.size(&self.store) != elements.len() as u64 {
                return Err(Discard::TableGrew);
            }
            for (i, e) in elements.iter().enumerate() {
                t.set(&mut self.store, i as u64, e.clone())
                    .map_err(|e| Discard::Restore(format!("table: {e}")))?;
            }
        }
        match self.map {
            Some(map) => {
                let (at, len) = (map.data_ptr(&self.store), map.data_size(&self.store));
                let data = self.memory.data_mut(&mut self.store);
                // SAFETY: the map is another memory of this instance, a mapping of its
                // own that `data` does not overlap, and nothing else reaches the store
                // while both slices live.
                let marks = unsafe { std::slice::from_raw_parts_mut(at, len) };
                restore_marked(data, marks, &mut self.image)
            }
            None => {
                let data = self.memory.data_mut(&mut self.store);
                restore_dirty(data, &mut self.image)
            }
        }
    }
}

/// The memory right after instantiation: the host pages that are not all zero.
pub(super) struct Image {
    page: usize,
    /// Per host page, an index into `data` (in pages), `ZERO`, or `MAPPED`.
    pages: Vec<u32>,
    data: Vec<u8>,
}

/// The page is all zero after instantiation.
const ZERO: u32 = u32::MAX;
/// The page after instantiation is what the memory's mapping reads (the image file's
/// page, or zero), not saved yet: the first restore gives the page back to the mapping
/// and saves what it then reads (a lazy image, for memories of megabytes of which an
/// event writes a few pages).
const MAPPED: u32 = u32::MAX - 1;

impl Image {
    /// Snapshots `memory` right after instantiation and leaves as few of its pages
    /// mapped as it can, since every mapped page costs the per-event scan a look-up
    /// (the kernel checks whether it is a file page): the pages that differ from what
    /// an untouched mapping reads as (`dirty_pages`; written by a start function, or
    /// left by the pool slot's last user) are saved, the whole memory is given back
    /// (`MADV_DONTNEED`: the image file's pages and zeros again), and the saved pages
    /// that differ from that are written back. Only pages data segments initialise
    /// (`data`, byte ranges; `None`: all) and the saved ones are read; with `lazy`, the
    /// pages data segments initialise are not read either but left `MAPPED`.
    pub(super) fn settle(
        memory: &mut [u8],
        data: Option<&[std::ops::Range<u64>]>,
        lazy: bool,
    ) -> std::io::Result<Image> {
        let p = host_page_size();
        let n = memory.len() / p;
        let (base, len) = (memory.as_ptr() as usize, n * p);
        let mut saved: Vec<(usize, Vec<u8>)> = Vec::new();
        dirty_pages(base, len, |start, end| {
            for page in start / p..end.div_ceil(p) {
                saved.push((page, memory[page * p..(page + 1) * p].to_vec()));
            }
        })?;
        // SAFETY: `memory` is this instance's linear memory, a private mapping the
        // pool made (image file or anonymous): DONTNEED returns its pages to the
        // mapping's contents, which is what the instance reads from now on; the
        // pages that must differ are written back below.
        if unsafe { libc::madvise(base as *mut libc::c_void, len, libc::MADV_DONTNEED) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut read = vec![data.is_none(); n];
        for r in data.unwrap_or(&[]) {
            let (a, b) = (r.start as usize / p, (r.end as usize).div_ceil(p).min(n));
            read.iter_mut().take(b).skip(a).for_each(|x| *x = true);
        }
        let mut image = Image {
            page: p,
            pages: vec![ZERO; n],
            data: Vec::new(),
        };
        let mut saved = saved.into_iter().peekable();
        for (page, &covered) in read.iter().enumerate() {
            let want = match saved.peek() {
                Some((i, _)) if *i == page => saved.next().map(|(_, c)| c),
                _ => None,
            };
            let range = page * p..(page + 1) * p;
            let content: &[u8] = match (&want, covered) {
                (Some(w), _) => {
                    // Back to what it held, if DONTNEED changed it.
                    if !covered && w.iter().all(|b| *b == 0) {
                        continue;
                    }
                    if memory[range.clone()] != w[..] {
                        memory[range.clone()].copy_from_slice(w);
                    }
                    w
                }
                (None, true) if lazy => {
                    image.pages[page] = MAPPED;
                    continue;
                }
                (None, true) => &memory[range.clone()],
                (None, false) => continue,
            };
            if content.iter().any(|b| *b != 0) {
                image.pages[page] = (image.data.len() / p) as u32;
                image.data.extend_from_slice(content);
            }
        }
        Ok(image)
    }

    #[cfg(test)]
    fn of(memory: &[u8]) -> Image {
        let page = host_page_size();
        let mut pages = Vec::with_capacity(memory.len() / page);
        let mut data = Vec::new();
        for chunk in memory.chunks(page) {
            if chunk.iter().all(|b| *b == 0) {
                pages.push(ZERO);
            } else {
                pages.push((data.len() / page) as u32);
                data.extend_from_slice(chunk);
                data.resize(data.len().next_multiple_of(page), 0);
            }
        }
        Image { page, pages, data }
    }

    /// Restores chunk `c` of `memory` (a host page: `reuse_marks` chunks are only used
    /// when they are) and the `SPILL` bytes after it.
    fn restore_chunk(&mut self, memory: &mut [u8], c: usize) -> Result<(), Discard> {
        let at = c * CHUNK;
        self.restore(memory, at, at + CHUNK)
            .map_err(|e| Discard::Restore(format!("MADV_DONTNEED: {e}")))?;
        let next = at + CHUNK;
        let end = (next + SPILL).min(memory.len());
        if next < end {
            let dst = &mut memory[next..end];
            match self.pages.get(c + 1).copied().unwrap_or(ZERO) {
                ZERO => dst.fill(0),
                // Core modules' images are eager (no `MAPPED` page); restore the whole
                // page if one is, which gives it back to the mapping.
                MAPPED => self
                    .restore(memory, next, next + CHUNK)
                    .map_err(|e| Discard::Restore(format!("MADV_DONTNEED: {e}")))?,
                i => {
                    let src = i as usize * self.page;
                    dst.copy_from_slice(&self.data[src..src + dst.len()]);
                }
            }
        }
        Ok(())
    }

    /// Restores bytes `start..end` of `memory` (whole host pages). Fails only when a
    /// `MAPPED` page cannot be given back (the instance must then be dropped).
    pub(super) fn restore(
        &mut self,
        memory: &mut [u8],
        start: usize,
        end: usize,
    ) -> std::io::Result<()> {
        let p = self.page;
        let end = end.min(memory.len());
        let mut at = start - start % p;
        while at < end {
            let n = (end - at).min(p);
            let dst = &mut memory[at..at + n];
            match self.pages.get(at / p).copied().unwrap_or(ZERO) {
                ZERO => dst.fill(0),
                MAPPED => {
                    // SAFETY: as in `settle`: the page goes back to the mapping's
                    // contents, which are what it held after instantiation.
                    let r =
                        unsafe { libc::madvise(dst.as_mut_ptr().cast(), n, libc::MADV_DONTNEED) };
                    if r != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    self.pages[at / p] = if dst.iter().all(|b| *b == 0) {
                        ZERO
                    } else {
                        let i = (self.data.len() / p) as u32;
                        self.data.extend_from_slice(dst);
                        self.data.resize(self.data.len().next_multiple_of(p), 0);
                        i
                    };
                }
                i => {
                    let src = i as usize * p;
                    dst.copy_from_slice(&self.data[src..src + n]);
                }
            }
            at += p;
        }
        Ok(())
    }
}

/// Marks the chunks of `start..end` written in `marks` (a map of `reuse_marks.rs`): for
/// the host's own writes into a marking module's memory.
pub(super) fn mark(marks: &mut [u8], start: usize, end: usize) {
    if start < end {
        let (a, b) = (start / CHUNK, (end - 1) / CHUNK + 1);
        if let Some(m) = marks.get_mut(a..b) {
            m.fill(1);
        }
    }
}

/// Restores every chunk of `memory` that `marks` marks to `image`, with the `SPILL`
/// bytes after it, and clears the marks. Only the map's bytes for chunks inside
/// `memory` are read: a write beyond it trapped, and the instance of a trapped event is
/// not reset.
pub(super) fn restore_marked(
    memory: &mut [u8],
    marks: &mut [u8],
    image: &mut Image,
) -> Result<(), Discard> {
    #[cfg(test)]
    test_hooks::before_reset(memory.as_ptr() as usize, memory.len());
    #[cfg(test)]
    if test_hooks::SKIP_MARKED.with(|s| s.get()) {
        return Ok(());
    }
    let chunks = (memory.len() / CHUNK).min(marks.len());
    // Eight marks at a time: most are clear.
    for (w, word) in marks[..chunks].chunks_mut(8).enumerate() {
        if word.iter().all(|m| *m == 0) {
            continue;
        }
        for (i, m) in word.iter_mut().enumerate() {
            if *m != 0 {
                *m = 0;
                image.restore_chunk(memory, w * 8 + i)?;
            }
        }
    }
    Ok(())
}

/// Restores every page of `memory` that `dirty_pages` reports to `image`.
pub(super) fn restore_dirty(memory: &mut [u8], image: &mut Image) -> Result<(), Discard> {
    let (base, len) = (memory.as_ptr() as usize, memory.len());
    #[cfg(test)]
    test_hooks::before_reset(base, len);
    let mut failed = None;
    dirty_pages(base, len, |start, end| {
        if let Err(e) = image.restore(memory, start, end) {
            failed = Some(e);
        }
    })
    .map_err(|e| Discard::Restore(format!("PAGEMAP_SCAN: {e}")))?;
    match failed {
        Some(e) => Err(Discard::Restore(format!("MADV_DONTNEED: {e}"))),
        None => Ok(()),
    }
}

pub(super) fn host_page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 { n as usize } else { 4096 }
    })
}

/// The idle warm instances of one rule, in one shard per thread that runs it (up to
/// [`SHARDS`]): every event takes an instance and puts it back, and with one list and
/// one set of counters for all workers, their lock and counters moved between the
/// cores on every event (the counter's increment was a third of `invoke_warm`'s own
/// time in `perf` with two workers on one rule). A thread only ever uses its own
/// shard; a shard's instance does not move to another thread's.
pub(super) struct Pool<W = Warm> {
    shards: Box<[Shard<W>; SHARDS]>,
}

/// Shards per pool. Threads beyond this many share shards (correct, only slower).
const SHARDS: usize = 8;

/// One thread's idle instances and counts, on cache lines of their own.
#[repr(align(128))]
struct Shard<W> {
    /// Boxed: taken and put back on every event, a warm instance moves as a pointer
    /// (the invocation holds it in a box), not as its 280 bytes.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<W>>>,
    /// Events that ran in a warm instance and reset it.
    reused: AtomicUsize,
    /// Warm instances dropped after an event (trap, limit, growth, failed restore).
    discarded: AtomicUsize,
}

impl<W> Default for Pool<W> {
    fn default() -> Self {
        Pool {
            shards: Box::new(std::array::from_fn(|_| Shard {
                idle: Mutex::new(Vec::new()),
                reused: AtomicUsize::new(0),
                discarded: AtomicUsize::new(0),
            })),
        }
    }
}

/// This thread's shard index: threads are numbered as they first run a warm instance.
pub(super) fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// Warm instances a rule keeps idle per shard, at most (one per concurrent invocation
/// is enough).
const IDLE_PER_RULE: usize = 16;
/// After this many discards, a rule that discards more than one instance in
/// `DISCARD_RATIO` events stops being reused (a rule that grows memory on every event
/// would pay a snapshot per event for nothing). Counted per shard.
const DISCARD_GRACE: usize = 8;
const DISCARD_RATIO: usize = 16;

/// A warm instance for the next event: an idle one, or room for a new one.
pub(super) enum Slot<W> {
    Idle(Box<W>),
    New(Reservation),
}

impl<W> Pool<W> {
    /// A warm instance for this thread's next event of the rule: an idle one, or a
    /// place for a new one out of the engine's `max` (counted in `live`); `None` when
    /// there is neither or reusing does not pay for this rule.
    pub(super) fn slot(&self, live: &Arc<AtomicUsize>, max: usize) -> Option<Slot<W>> {
        if !self.worth_it() {
            return None;
        }
        if let Some(w) = self.take() {
            return Some(Slot::Idle(w));
        }
        Reservation::take(live, max).map(Slot::New)
    }

    fn shard(&self) -> &Shard<W> {
        &self.shards[shard_index()]
    }

    pub(super) fn take(&self) -> Option<Box<W>> {
        self.shard().idle.lock().ok()?.pop()
    }

    pub(super) fn put(&self, warm: Box<W>) {
        let shard = self.shard();
        shard.reused.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut idle) = shard.idle.lock()
            && idle.len() < IDLE_PER_RULE
        {
            idle.push(warm);
        }
    }

    pub(super) fn discard(&self, warm: Box<W>) {
        self.note_discard();
        drop(warm);
    }

    /// Counts a warm instance that was dropped, or could not be made, after an event.
    pub(super) fn note_discard(&self) {
        self.shard().discarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether reusing still pays for this rule on this thread.
    pub(super) fn worth_it(&self) -> bool {
        let shard = self.shard();
        let d = shard.discarded.load(Ordering::Relaxed);
        d < DISCARD_GRACE || d * DISCARD_RATIO <= shard.reused.load(Ordering::Relaxed)
    }

    /// Events run in a warm instance that was then reset, and warm instances dropped
    /// after an event, over all shards.
    pub(super) fn counts(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(r, d), s| {
            (
                r + s.reused.load(Ordering::Relaxed),
                d + s.discarded.load(Ordering::Relaxed),
            )
        })
    }
}

// ---- PAGEMAP_SCAN (linux/fs.h, Linux 6.7) ----

const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = (3 << 30)
    | ((std::mem::size_of::<PmScanArg>() as libc::c_ulong) << 16)
    | ((b'f' as libc::c_ulong) << 8)
    | 16;

/// Regions read per ioctl; the scan resumes where it stopped until the end.
const REGIONS: usize = 64;

fn pagemap() -> Option<&'static File> {
    static FILE: OnceLock<Option<File>> = OnceLock::new();
    FILE.get_or_init(|| File::open("/proc/self/pagemap").ok())
        .as_ref()
}

/// Whether this kernel has `PAGEMAP_SCAN` (and `/proc/self/pagemap` opens).
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let Some(file) = pagemap() else {
            return false;
        };
        // An empty range: only asks whether the ioctl exists.
        let mut arg = scan_arg(0, 0, std::ptr::null_mut());
        arg.vec_len = 0;
        // SAFETY: a valid pm_scan_arg for an empty range; nothing is written back but
        // `walk_end`.
        unsafe { libc::ioctl(file.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) >= 0 }
    })
}

/// A scan of `start..end` for pages that are present or swapped, and neither file
/// pages nor the zero page, into `REGIONS` regions at `vec`.
fn scan_arg(start: u64, end: u64, vec: *mut PageRegion) -> PmScanArg {
    PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: 0,
        start,
        end,
        walk_end: 0,
        vec: vec as u64,
        vec_len: REGIONS as u64,
        max_pages: 0,
        category_inverted: PAGE_IS_FILE | PAGE_IS_PFNZERO,
        category_mask: PAGE_IS_FILE | PAGE_IS_PFNZERO,
        category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        return_mask: 0,
    }
}

/// Calls `f(start, end)` with the byte ranges, as offsets from `base`, of the `len`
/// bytes of this process's memory at `base` (whole host pages) whose pages may differ
/// from what an untouched mapping reads as: present or swapped out, and neither the
/// zero page nor a file page. Scans to the end, however many regions.
pub(super) fn dirty_pages(
    base: usize,
    len: usize,
    mut f: impl FnMut(usize, usize),
) -> std::io::Result<()> {
    let Some(file) = pagemap() else {
        return Err(std::io::Error::other("/proc/self/pagemap does not open"));
    };
    let base = base as u64;
    let end = base + len as u64;
    let mut regions = [PageRegion::default(); REGIONS];
    let mut arg = scan_arg(base, end, regions.as_mut_ptr());
    while arg.start < end {
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at `REGIONS` writable
        // page_region entries; the kernel only reads page tables of the range, which
        // is memory this process maps (`memory`).
        let n = unsafe { libc::ioctl(file.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for r in &regions[..n as usize] {
            f((r.start - base) as usize, (r.end - base) as usize);
        }
        if arg.walk_end <= arg.start {
            return Err(std::io::Error::other("the scan made no progress"));
        }
        arg.start = arg.walk_end;
    }
    Ok(())
}

/// With swap on, a test can have every page of a warm instance's memory paged out
/// between its event and its reset, to show the reset finds swapped-out dirty pages.
#[cfg(test)]
pub(super) mod test_hooks {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    pub(in super::super) static PAGEOUT_BEFORE_RESET: AtomicBool = AtomicBool::new(false);
    thread_local! {
        /// Leaves marked chunks as the event left them, on this thread: shows that the
        /// tests of the marks can fail.
        pub(in super::super) static SKIP_MARKED: std::cell::Cell<bool> =
            const { std::cell::Cell::new(false) };
    }
    /// Pages found swapped out right after such a page-out, summed.
    pub(in super::super) static SWAPPED_SEEN: AtomicUsize = AtomicUsize::new(0);

    pub(super) fn before_reset(base: usize, len: usize) {
        if !PAGEOUT_BEFORE_RESET.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: advice on memory this process maps; MADV_PAGEOUT keeps the contents.
        unsafe { libc::madvise(base as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
        SWAPPED_SEEN.fetch_add(super::swapped_pages(base, len), Ordering::Relaxed);
    }
}

/// Pages of `base..base + len` that are swapped out (for tests).
#[cfg(test)]
pub(super) fn swapped_pages(base: usize, len: usize) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let page = host_page_size();
    let mut f = File::open("/proc/self/pagemap").expect("pagemap");
    let mut entries = vec![0u8; len / page * 8];
    f.seek(SeekFrom::Start((base / page * 8) as u64)).unwrap();
    f.read_exact(&mut entries).unwrap();
    entries
        .chunks(8)
        .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) & (1 << 62) != 0)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_written_pages_past_the_region_buffer() {
        assert!(available(), "PAGEMAP_SCAN is needed (Linux 6.7 or later)");
        let page = host_page_size();
        // A fresh anonymous mapping: no page present.
        let len = page * 400;
        // SAFETY: a plain anonymous private mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        // SAFETY: the mapping is `len` bytes, readable and writable, and ours.
        let mem = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) };
        // Read every page (zero page), write every third: 134 separate regions, more
        // than `REGIONS` per ioctl.
        let sum: u64 = mem.iter().step_by(page).map(|b| *b as u64).sum();
        assert_eq!(sum, 0);
        for i in (0..400).step_by(3) {
            mem[i * page + 7] = 1;
        }
        let mut found = Vec::new();
        dirty_pages(ptr as usize, len, |s, e| {
            found.extend((s / page)..(e / page))
        })
        .unwrap();
        let expected: Vec<usize> = (0..400).step_by(3).collect();
        assert_eq!(found, expected);
        // SAFETY: unmapping what was mapped above; `mem` is not used after.
        unsafe { libc::munmap(ptr, len) };
    }

    #[test]
    fn image_restores_zero_and_data_pages() {
        let page = host_page_size();
        let mut mem = vec![0u8; page * 3];
        mem[page + 5] = 9;
        let mut image = Image::of(&mem);
        mem.fill(0xff);
        image.restore(&mut mem, 0, page * 3).unwrap();
        assert!(mem[..page].iter().all(|b| *b == 0));
        assert_eq!(mem[page + 5], 9);
        assert_eq!(mem.iter().filter(|b| **b != 0).count(), 1);
    }
}
