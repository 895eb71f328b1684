//! Reading and writing the user's files safely: one policy for every output path.
//!
//! * An existing file is replaced only when the user says so (`--force`), and never when it
//!   is one of the command's own inputs (checked by identity, not by name, so `./a` and `a`
//!   or a hard link are caught). [`check_output`] runs before any long computation.
//! * Every write is atomic: the bytes go to a hidden temporary file in the same directory,
//!   are flushed to disk, then take the final name in one rename (or, when the file must not
//!   exist, one hard link that fails if it does, so a concurrent writer cannot be clobbered).
//!   An interrupted or failed write leaves the old file intact; a failed one leaves no
//!   temporary file behind. Errors name the user's path, never the temporary one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Whether an output may replace an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// An existing file is an error (the default of every command).
    Never,
    /// An existing file is replaced (`--force`), unless it is one of the command's inputs.
    Force,
}

impl Replace {
    /// `Force` when `force`, else `Never`.
    pub fn from_flag(force: bool) -> Replace {
        if force { Replace::Force } else { Replace::Never }
    }
}

/// The same file on disk (device and inode), when both exist.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Checks that `out` may be written under `replace`, before any long computation: it is not
/// one of `inputs`, it is not a directory, and it does not exist unless `Replace::Force`.
/// `flag` names the option that chose `out` (`-o`, `--predictions`) for the message.
pub fn check_output(out: &Path, inputs: &[&Path], replace: Replace, flag: &str) -> Result<()> {
    if let Some(input) = inputs.iter().find(|i| same_file(out, i)) {
        bail!(
            "{flag} {} is the same file as the input {}; refusing to overwrite an input (choose another {flag})",
            out.display(),
            input.display()
        );
    }
    if out.is_dir() {
        bail!("{flag} {} is a directory; give a file path", out.display());
    }
    if replace == Replace::Never && out.exists() {
        bail!("{} exists; refusing to overwrite it (choose another {flag}, or --force)", out.display());
    }
    Ok(())
}

/// A temporary file beside `path` that is removed on drop unless persisted.
struct Temp {
    path: PathBuf,
    persisted: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to a hidden temporary file beside `path` and flushes it to disk.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<Temp> {
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = parent_dir(path).join(format!(".{}.fhec-tmp-{}", name.to_string_lossy(), std::process::id()));
    let temp = Temp { path: tmp, persisted: false };
    let written = File::create(&temp.path).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        // The message names the user's file; the temporary one is removed by `temp`'s drop.
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(temp)
}

/// Flushes a directory's entries (the renames) to disk, where the platform allows it.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` atomically under `replace` (see the module documentation).
/// With `Replace::Never` an existing file is an error even if it appeared since
/// [`check_output`] ran.
pub fn write(path: &Path, bytes: &[u8], replace: Replace) -> Result<()> {
    let mut temp = write_temp(path, bytes)?;
    match replace {
        Replace::Force => {
            std::fs::rename(&temp.path, path).with_context(|| format!("cannot write {}", path.display()))?
        }
        Replace::Never => match std::fs::hard_link(&temp.path, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("{} exists; refusing to overwrite it", path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
        },
    }
    if replace == Replace::Force {
        temp.persisted = true;
    }
    sync_dir(parent_dir(path));
    Ok(())
}

/// A lock on a directory held while a command writes a set of files that belong together
/// (a key pair): a second writer gets an error instead of interleaving its files with ours.
/// The lock is the operating system's (released when the process ends, even by a signal),
/// so an interrupted run leaves no stale lock.
pub struct DirLock {
    _dir: File,
}

/// Locks `dir` for writing, or says who holds it.
pub fn lock_dir(dir: &Path, what: &str) -> Result<DirLock> {
    let d = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    match d.try_lock() {
        Ok(()) => Ok(DirLock { _dir: d }),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("another fhec process is writing {what} in {}; wait for it to finish", dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", dir.display())),
    }
}

/// Writes several files that belong together (a client key and its evaluation key): every
/// file's bytes go to disk first (temporary files, flushed), then each takes its name. An
/// interruption before the renames leaves the old files intact; an interruption between two
/// renames leaves a mixed set that the files' own identity check reports (the runtime
/// refuses a client key and an evaluation key of different pairs). Hold a [`DirLock`].
pub fn write_all(files: &[(&Path, &[u8])], replace: Replace) -> Result<()> {
    if replace == Replace::Never
        && let Some((p, _)) = files.iter().find(|(p, _)| p.exists())
    {
        bail!("{} exists; refusing to overwrite it (use --force)", p.display());
    }
    let mut temps = vec![];
    for (p, b) in files {
        temps.push(write_temp(p, b)?);
    }
    for ((p, _), t) in files.iter().zip(&mut temps) {
        std::fs::rename(&t.path, p).with_context(|| format!("cannot write {}", p.display()))?;
        t.persisted = true;
    }
    if let Some((p, _)) = files.first() {
        sync_dir(parent_dir(p));
    }
    Ok(())
}

/// Reads a whole file, naming it (and what it was meant to be) in the error.
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fhec-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn never_replaces_without_force_and_leaves_no_temporary_file() {
        let d = dir("never");
        let p = d.join("out.bin");
        write(&p, b"first", Replace::Never).unwrap();
        let e = write(&p, b"second", Replace::Never).unwrap_err().to_string();
        assert!(e.contains("exists"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert_eq!(entries(&d), ["out.bin"]);
        write(&p, b"third", Replace::Force).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"third");
        assert_eq!(entries(&d), ["out.bin"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_input_is_never_an_output_even_with_force() {
        let d = dir("input");
        let p = d.join("in.bin");
        std::fs::write(&p, b"x").unwrap();
        let other_name = d.join(".").join("in.bin");
        let e = check_output(&other_name, &[&p], Replace::Force, "-o").unwrap_err().to_string();
        assert!(e.contains("same file as the input"), "{e}");
        assert!(check_output(&d.join("new.bin"), &[&p], Replace::Never, "-o").is_ok());
        assert!(check_output(&p, &[], Replace::Never, "-o").unwrap_err().to_string().contains("--force"));
        assert!(check_output(&d, &[], Replace::Force, "-o").unwrap_err().to_string().contains("directory"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_names_the_users_path() {
        let p = Path::new("/nonexistent-dir-fhec/out.bin");
        let e = format!("{:#}", write(p, b"x", Replace::Force).unwrap_err());
        assert!(e.contains("/nonexistent-dir-fhec/out.bin") && !e.contains("fhec-tmp"), "{e}");
    }
}
