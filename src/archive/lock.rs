//! The one writer of an index folder.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Held while writing an index folder; a second writer is refused. An OS file lock on
/// `LOCK` (flock), so it dies with its holder, whatever the way: no stale lock after a
/// crash, no lock stolen by a process that merely sees another pid namespace. The file itself
/// stays; only the lock on it matters.
pub struct WriteLock {
    _file: fs::File,
    dir: PathBuf,
}

impl WriteLock {
    pub fn acquire(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("LOCK");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = match holder.trim() {
                    "" => "a writer".to_string(),
                    pid => format!("process {pid}"),
                };
                return Err(Error::Locked { path, holder });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // For people reading the folder; the lock, not this number, is what counts.
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        let _ = file.sync_all();
        Ok(WriteLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The index folder this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
