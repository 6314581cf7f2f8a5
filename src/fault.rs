//! Named crash points for the crash tests. When `LESION_SEARCH_CRASH_AT` names a point, the
//! process kills itself with SIGKILL the moment a writer reaches it: no destructor runs,
//! nothing is flushed, exactly as if the machine lost power or an operator sent `kill -9`.
//! Unset (always, outside those tests), a point costs one comparison.

use std::sync::OnceLock;

/// The variable naming the point to crash at.
pub const CRASH_AT_VARIABLE: &str = "LESION_SEARCH_CRASH_AT";

/// Every named point, in the order a write reaches them.
pub const CRASH_POINTS: [&str; 7] = [
    "slice-staged",
    "staged-batch",
    "records-flushed",
    "vectors-written",
    "manifest-written",
    "published-before-current",
    "pruning",
];

fn target() -> Option<&'static str> {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    TARGET
        .get_or_init(|| std::env::var(CRASH_AT_VARIABLE).ok())
        .as_deref()
}

/// Dies here when the crash tests ask for this point.
pub(crate) fn point(name: &str) {
    if target() == Some(name) {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        // `kill` missing: die without cleanup all the same.
        std::process::abort();
    }
}
