//! A counting global allocator: the campaign measures every case's peak of live heap bytes
//! (an input that makes the parser allocate far more than it holds is a finding), and a
//! single request over [`hard_limit`] is refused before it reaches the system, after the
//! input that asked for it is saved (the process then aborts, as Rust does on any failed
//! allocation: a file that claims a huge length must be refused before allocating).
//!
//! Install it in a binary or a test crate with
//! `#[global_allocator] static A: fhec_fuzz::alloc::Counting = fhec_fuzz::alloc::Counting;`;
//! without it the counters stay at zero and memory findings are off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The counting allocator (delegates to the system allocator).
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);
static HARD_LIMIT: AtomicUsize = AtomicUsize::new(1 << 30);

/// The input of the case being run and where to save it if it asks for too much memory.
static CURRENT: Mutex<Option<(PathBuf, Vec<u8>)>> = Mutex::new(None);

fn grow(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Saves the current case's input (if any) and says why the process is about to abort.
#[cold]
fn refuse(size: usize) {
    if let Ok(mut cur) = CURRENT.try_lock()
        && let Some((path, bytes)) = cur.take()
    {
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")));
        let _ = std::fs::write(&path, &bytes);
        eprintln!(
            "fhec-fuzz: an allocation of {size} bytes (over the {}-byte limit) was refused; the input is saved as {}",
            HARD_LIMIT.load(Ordering::Relaxed),
            path.display()
        );
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_LIMIT.load(Ordering::Relaxed) {
            refuse(layout.size());
            return std::ptr::null_mut();
        }
        INSTALLED.store(true, Ordering::Relaxed);
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_LIMIT.load(Ordering::Relaxed) {
            refuse(layout.size());
            return std::ptr::null_mut();
        }
        INSTALLED.store(true, Ordering::Relaxed);
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > HARD_LIMIT.load(Ordering::Relaxed) {
            refuse(new_size);
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Whether the counting allocator is the global allocator (it has served a request).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Live heap bytes now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a new peak measurement from the live bytes now; returns them.
pub fn reset_peak() -> usize {
    let now = LIVE.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The peak of live heap bytes since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// The largest single request served (default 1 GiB).
pub fn hard_limit() -> usize {
    HARD_LIMIT.load(Ordering::Relaxed)
}

/// Sets the largest single request served.
pub fn set_hard_limit(bytes: usize) {
    HARD_LIMIT.store(bytes, Ordering::Relaxed);
}

/// Registers the input of the case about to run (saved to `path` if it makes a request
/// over the limit), or clears it.
pub fn set_current(case: Option<(PathBuf, &[u8])>) {
    let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    match case {
        Some((path, bytes)) => match cur.as_mut() {
            Some((p, b)) => {
                *p = path;
                b.clear();
                b.extend_from_slice(bytes);
            }
            None => *cur = Some((path, bytes.to_vec())),
        },
        None => *cur = None,
    }
}
