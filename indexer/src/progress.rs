//! A progress line on stderr: redrawn in place on a terminal, every 10% otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Progress {
    label: &'static str,
    interactive: bool,
    last_percent: AtomicUsize,
}

impl Progress {
    pub fn new(label: &'static str) -> Self {
        Progress {
            label,
            interactive: std::io::stderr().is_terminal(),
            last_percent: AtomicUsize::new(usize::MAX),
        }
    }

    pub fn update(&self, done: usize, total: usize) {
        let percent = done * 100 / total.max(1);
        let step = if self.interactive { 1 } else { 10 };
        let bucket = percent / step;
        if self.last_percent.swap(bucket, Ordering::Relaxed) == bucket && done != total {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.interactive {
            let _ = write!(err, "\r{}: {done}/{total} ({percent}%)", self.label);
            if done == total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{}: {done}/{total} ({percent}%)", self.label);
        }
    }
}
