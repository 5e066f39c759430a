//! [`BlockCache`]: a global allocator that keeps freed large blocks and hands them out again.
//!
//! Why: a training step on the CPU allocates and frees the same few large tensors every step —
//! attention scores, im2col buffers, activations and their gradients, often hundreds of MiB.
//! glibc serves every block above 32 MiB (and, at first, above 128 KiB) with a fresh `mmap` and
//! returns it with `munmap` on free, so each such tensor is paid for again in page faults and
//! in the kernel zeroing its pages. Measured with `kiln-bench` (2 cores, kiln-cpu over flex),
//! glibc's policy against this cache: attention forward + backward (B=8, H=8, L=1024, D=64)
//! 1,197 ms against 679 ms a step, the VQ codebook search (N=65,536, K=512) 113 ms against
//! 55 ms; the DCGAN and VAE steps, whose tensors are mostly below 32 MiB where glibc reuses its
//! heap, within the run-to-run noise. PyTorch avoids most of this by not materialising such
//! tensors; a caching allocator is the cheap general fix, the idea of PyTorch's CUDA allocator.
//!
//! Policy: blocks of at least `min_block` bytes are, when freed, kept in a small table (256
//! slots) instead of going back to the system, up to `capacity` bytes in all (the least
//! recently cached go first). A request takes the smallest cached block that fits within an
//! eighth of slack and whose address has the alignment asked for (of equal sizes, the most
//! recently freed); otherwise the system allocator serves it. Small blocks go straight to the
//! system allocator. [`CACHE_ENV`] sets the capacity at start-up (`0` turns the cache off).
//! The binaries install it:
//!
//! ```
//! #[global_allocator]
//! static ALLOC: kiln_cpu::BlockCache = kiln_cpu::BlockCache::new();
//! # fn main() {}
//! ```
//!
//! The price is resident memory: up to `capacity` bytes of freed blocks stay mapped. Training
//! reuses them on the next step, so the peak grows by less than that: measured peak RSS 1.43
//! against 1.27 GB for the attention step, 0.54 against 0.43 GB for the DCGAN step.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The environment variable that sets the cache's capacity in MiB (`0` turns it off), read by
/// [`BlockCache::configure_from_env`].
pub const CACHE_ENV: &str = "KILN_BLOCK_CACHE_MB";

/// Table size. A DCGAN step frees a few dozen distinct large blocks, the emoji U-Net's (W7) many
/// more: with 64 slots its blocks were evicted before their next use and the kernel zeroing
/// fresh pages (`clear_page_erms`) was 15 % of the W7 step in perf; with 256 it is 3 %, and W7
/// ran 1.08–1.16× faster in three interleaved pairs (W1 0.95–1.02×, W3 1.07–1.29×, peak RSS
/// unchanged). The scan of the table under its lock is short next to a block of a MiB or more.
const SLOTS: usize = 256;

#[derive(Clone, Copy)]
struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    /// When it was cached, for least-recently-cached eviction.
    tick: u64,
}

const EMPTY: Block = Block { ptr: ptr::null_mut(), size: 0, align: 0, tick: 0 };

struct Table {
    blocks: [Block; SLOTS],
    cached: usize,
    tick: u64,
}

impl Table {
    /// Frees the least recently cached block; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.ptr.is_null())
            .min_by_key(|(_, b)| b.tick)
            .map(|(i, _)| i);
        let Some(oldest) = oldest else { return false };
        let old = std::mem::replace(&mut self.blocks[oldest], EMPTY);
        self.cached -= old.size;
        // SAFETY: the block came from `System` with exactly this size and alignment.
        unsafe { System.dealloc(old.ptr, Layout::from_size_align_unchecked(old.size, old.align)) };
        true
    }
}

// SAFETY: the table owns the blocks it lists (no one else holds their pointers while they are
// cached) and is only reached through the mutex.
unsafe impl Send for Table {}

/// A global allocator that reuses freed large blocks (see the module docs).
pub struct BlockCache {
    table: Mutex<Table>,
    min_block: usize,
    capacity: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("min_block", &self.min_block)
            .field("capacity", &self.capacity.load(Ordering::Relaxed))
            .field("stats", &self.stats())
            .finish()
    }
}

/// What a [`BlockCache`] has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Large requests served from the cache.
    pub hits: u64,
    /// Large requests that went to the system allocator.
    pub misses: u64,
    /// Bytes held in freed blocks now.
    pub cached_bytes: usize,
}

impl Default for BlockCache {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockCache {
    /// Caches blocks of 1 MiB and more, up to 2 GiB in all.
    pub const fn new() -> Self {
        Self::with_limits(1 << 20, 2 << 30)
    }

    /// Caches blocks of `min_block` bytes and more, holding at most `capacity` bytes of freed
    /// blocks.
    pub const fn with_limits(min_block: usize, capacity: usize) -> Self {
        Self {
            table: Mutex::new(Table { blocks: [EMPTY; SLOTS], cached: 0, tick: 0 }),
            min_block,
            capacity: AtomicUsize::new(capacity),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Changes how many bytes of freed blocks may be kept; 0 turns caching off. Blocks already
    /// cached beyond the new limit are freed.
    pub fn set_capacity(&self, bytes: usize) {
        self.capacity.store(bytes, Ordering::Relaxed);
        if let Ok(mut table) = self.table.lock() {
            while table.cached > bytes {
                if !table.evict_oldest() {
                    break;
                }
            }
        }
    }

    /// Sets the capacity from the environment variable [`CACHE_ENV`] (MiB) if it is set and a
    /// number, and fixes glibc's mmap threshold (below); returns the capacity in force. Call it
    /// at the start of `main`.
    ///
    /// glibc serves blocks above its mmap threshold with fresh mappings, which the kernel zeroes
    /// page by page on first touch. The threshold starts at 128 KiB and rises only when a mapped
    /// block is freed — and this cache keeps the large blocks, so glibc never sees them freed and
    /// every block between 128 KiB and the cache's 1 MiB stayed a fresh mapping. On the emoji
    /// U-Net (W7) the kernel's page zeroing (`clear_page_erms`) was 6.4 % of the step in perf;
    /// with the threshold fixed at 32 MiB (glibc's own ceiling for it), 0.4 %.
    pub fn configure_from_env(&self) -> usize {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // glibc's `mallopt(M_MMAP_THRESHOLD, …)`; it returns 0 on failure, which leaves
            // glibc's default policy in place — nothing to report.
            unsafe extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_MMAP_THRESHOLD: i32 = -3;
            // SAFETY: `mallopt` sets one of glibc's allocator parameters; it takes glibc's own
            // lock and touches no memory of ours.
            unsafe { mallopt(M_MMAP_THRESHOLD, 32 << 20) };
        }
        if let Some(mib) = std::env::var(CACHE_ENV).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
            self.set_capacity(mib.saturating_mul(1 << 20));
        }
        self.capacity.load(Ordering::Relaxed)
    }

    /// Hits, misses and the bytes cached now.
    pub fn stats(&self) -> CacheStats {
        let cached_bytes = self.table.lock().map(|t| t.cached).unwrap_or(0);
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            cached_bytes,
        }
    }

    /// Frees every cached block (for instance between two benchmarks).
    pub fn release(&self) {
        if let Ok(mut table) = self.table.lock() {
            for slot in table.blocks.iter_mut() {
                if !slot.ptr.is_null() {
                    // SAFETY: the block came from `System` with exactly this size and alignment.
                    unsafe { System.dealloc(slot.ptr, Layout::from_size_align_unchecked(slot.size, slot.align)) };
                    *slot = EMPTY;
                }
            }
            table.cached = 0;
        }
    }

    /// Takes the smallest cached block that fits `layout` with at most an eighth of slack.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let size = layout.size();
        let mut table = self.table.lock().ok()?;
        let limit = size.saturating_add(size / 8);
        let best = table
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                // The pointer's own alignment counts, not the layout it was freed with: the same
                // buffer is freed as a `Vec<f32>` (align 4) and asked for as a 64-byte-aligned one.
                !b.ptr.is_null() && b.size >= size && b.size <= limit && (b.ptr as usize).is_multiple_of(layout.align())
            })
            // The best fit, and of equals the most recently freed: its pages are likely still in cache.
            .min_by_key(|(_, b)| (b.size, u64::MAX - b.tick))
            .map(|(i, _)| i)?;
        let block = std::mem::replace(&mut table.blocks[best], EMPTY);
        table.cached -= block.size;
        Some(block.ptr)
    }

    /// Keeps a freed block; returns false when it does not fit (the caller frees it).
    fn keep(&self, ptr: *mut u8, layout: Layout) -> bool {
        let size = layout.size();
        let capacity = self.capacity.load(Ordering::Relaxed);
        if size > capacity {
            return false;
        }
        let Ok(mut table) = self.table.lock() else { return false };
        // Make room: free the least recently cached blocks until the new one fits.
        loop {
            let full = table.blocks.iter().all(|b| !b.ptr.is_null());
            if !full && table.cached + size <= capacity {
                break;
            }
            if !table.evict_oldest() {
                return false;
            }
        }
        table.tick += 1;
        let tick = table.tick;
        if let Some(slot) = table.blocks.iter_mut().find(|b| b.ptr.is_null()) {
            *slot = Block { ptr, size, align: layout.align(), tick };
            table.cached += size;
            return true;
        }
        false
    }
}

// SAFETY: every block handed out is either fresh from `System` or a block that `System` gave
// for a layout at least as large and as aligned, which was freed by its previous owner and then
// owned by the table alone. Blocks are returned to `System` with the layout they were cached
// under, whose size `System` (malloc/free) does not depend on.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= self.min_block {
            if let Some(ptr) = self.take(layout) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return ptr;
            }
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= self.min_block {
            if let Some(ptr) = self.take(layout) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // SAFETY: the block holds at least `layout.size()` bytes.
                unsafe { ptr::write_bytes(ptr, 0, layout.size()) };
                return ptr;
            }
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= self.min_block && self.keep(ptr, layout) {
            return;
        }
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= self.min_block {
            // SAFETY: `new_size` with the old alignment is a valid layout (the caller's contract).
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            if let Some(new) = self.take(new_layout) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // SAFETY: both blocks are valid for the bytes copied and do not overlap.
                unsafe {
                    ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                return new;
            }
        }
        // Every block came from `System`, so `System` can grow it in place (mremap for large ones).
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn a_freed_large_block_is_handed_out_again_and_small_ones_are_not_cached() {
        let cache = BlockCache::with_limits(1 << 16, 1 << 24);
        unsafe {
            let a = cache.alloc(layout(100_000, 8));
            a.write_bytes(7, 100_000);
            cache.dealloc(a, layout(100_000, 8));
            assert_eq!(cache.stats().cached_bytes, 100_000);
            // Within an eighth of slack: the same block.
            let b = cache.alloc(layout(95_000, 8));
            assert_eq!(a, b);
            assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 1, cached_bytes: 0 });
            cache.dealloc(b, layout(95_000, 8));
            // Too small a request for that block (more than an eighth of slack): a fresh one.
            let c = cache.alloc(layout(70_000, 8));
            assert_ne!(c, b);
            cache.dealloc(c, layout(70_000, 8));
            // Zeroed requests get zeros even from a reused block.
            let z = cache.alloc_zeroed(layout(95_000, 8));
            assert_eq!(z, b);
            assert!(std::slice::from_raw_parts(z, 95_000).iter().all(|&v| v == 0));
            cache.dealloc(z, layout(95_000, 8));
            let small = cache.alloc(layout(1000, 8));
            cache.dealloc(small, layout(1000, 8));
            assert_eq!(cache.stats().cached_bytes, 95_000 + 70_000);
            cache.release();
            assert_eq!(cache.stats().cached_bytes, 0);
        }
    }

    #[test]
    fn alignment_is_respected_and_capacity_evicts_the_oldest() {
        let cache = BlockCache::with_limits(1 << 16, 300_000);
        unsafe {
            let a = cache.alloc(layout(100_000, 8));
            cache.dealloc(a, layout(100_000, 8));
            // A stricter alignment than the cached block promises: not served from it.
            let b = cache.alloc(layout(100_000, 4096));
            assert_eq!(b as usize % 4096, 0);
            cache.dealloc(b, layout(100_000, 4096));
            let c = cache.alloc(layout(100_000, 4096));
            assert_eq!(c, b);
            cache.dealloc(c, layout(100_000, 4096));
            // Two blocks cached (200 kB); a 150 kB one pushes out the older (a).
            let d = cache.alloc(layout(150_000, 8));
            cache.dealloc(d, layout(150_000, 8));
            assert_eq!(cache.stats().cached_bytes, 250_000);
            let again = cache.alloc(layout(100_000, 8));
            assert_eq!(again, c, "the aligned block is the one left");
            cache.dealloc(again, layout(100_000, 8));
            // Larger than the whole capacity: never cached.
            let huge = cache.alloc(layout(400_000, 8));
            cache.dealloc(huge, layout(400_000, 8));
            assert!(cache.stats().cached_bytes <= 300_000);
            // A smaller capacity frees the excess; 0 turns caching off.
            cache.set_capacity(100_000);
            assert!(cache.stats().cached_bytes <= 100_000);
            cache.set_capacity(0);
            assert_eq!(cache.stats().cached_bytes, 0);
            let e = cache.alloc(layout(100_000, 8));
            cache.dealloc(e, layout(100_000, 8));
            assert_eq!(cache.stats().cached_bytes, 0);
            cache.release();
        }
    }

    #[test]
    fn realloc_keeps_the_contents() {
        let cache = BlockCache::with_limits(1 << 16, 1 << 24);
        unsafe {
            let spare = cache.alloc(layout(200_000, 8));
            cache.dealloc(spare, layout(200_000, 8));
            let a = cache.alloc(layout(1000, 8));
            for i in 0..1000 {
                *a.add(i) = i as u8;
            }
            // Grows into the cached block.
            let b = cache.realloc(a, layout(1000, 8), 190_000);
            assert_eq!(b, spare);
            assert!((0..1000).all(|i| *b.add(i) == i as u8));
            // Grows past anything cached: the system allocator moves or extends it.
            let c = cache.realloc(b, layout(190_000, 8), 5_000_000);
            assert!((0..1000).all(|i| *c.add(i) == i as u8));
            cache.dealloc(c, layout(5_000_000, 8));
            cache.release();
        }
    }

    #[test]
    fn many_threads_allocating_at_once_get_distinct_blocks() {
        static CACHE: BlockCache = BlockCache::with_limits(1 << 16, 1 << 26);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                s.spawn(move || unsafe {
                    for round in 0..200usize {
                        let size = 70_000 + (round % 5) * 10_000;
                        let p = CACHE.alloc(layout(size, 16));
                        p.write_bytes(t, size);
                        std::thread::yield_now();
                        assert!(std::slice::from_raw_parts(p, size).iter().all(|&v| v == t), "block shared");
                        CACHE.dealloc(p, layout(size, 16));
                    }
                });
            }
        });
        assert!(CACHE.stats().hits > 0);
        CACHE.release();
    }
}
