//! The blob files of a data directory (SQLite's side): written atomically, beside the
//! database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Blob, StoreError, io};

/// Where a blob's file is.
pub(super) fn blob_path(data: &Path, kind: Blob, id: &str) -> PathBuf {
    data.join("blobs").join(kind.dir()).join(id)
}

/// Removes the temporary files left by writes cut short more than an hour ago (a younger one
/// may be another process's write in progress).
pub(super) fn remove_stale_temporaries(tmp: &Path) -> Result<(), StoreError> {
    for e in std::fs::read_dir(tmp).map_err(io(tmp))?.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age > Duration::from_secs(3600));
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Writes `bytes` to `tmp`, flushes it, renames it to `dest` and flushes the directory; on
/// failure the temporary file is removed.
pub(super) fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let result = (|| {
        let mut f = std::fs::File::create_new(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(tmp, dest)?;
        #[cfg(unix)]
        if let Some(dir) = dest.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        StoreError::Io { path: dest.to_path_buf(), source }
    })
}
