//! Terminal output shared by the `fhec` CLI and the benchmark harness: a bootstrap progress
//! bar and byte counts for people.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A byte count for people.
pub fn size(bytes: usize) -> String {
    let b = bytes as f64;
    if b >= 1048576.0 {
        format!("{:.1} MiB", b / 1048576.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Runs `f` with a bootstrap counter shown as a progress bar on a terminal.
pub fn with_progress<T>(total: usize, msg: &str, f: impl FnOnce(&AtomicUsize) -> T) -> T {
    let counter = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let bar = indicatif::ProgressBar::new(total as u64).with_message(msg.to_string());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} bootstraps, {elapsed} (eta {eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_position(counter.load(Ordering::Relaxed) as u64);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            bar.finish_and_clear();
        });
        let out = f(&counter);
        done.store(true, Ordering::Relaxed);
        out
    })
}
