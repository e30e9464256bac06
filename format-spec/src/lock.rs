//! Advisory `flock` locks on a recording (SPEC.md §9): readers hold a shared lock for their
//! life; a writer holds one too, after taking it exclusively to truncate (`Writer::reopen`), so
//! a second writer's exclusive attempt fails while readers still open the file. On a conflict
//! the error names the processes that hold the file, as far as `/proc/locks` tells.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::FormatError;

/// A process that holds an advisory lock on a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    /// Process id (in the pid namespace of the process that asked).
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`), when readable.
    pub command: Option<String>,
    /// Whether the lock is exclusive (a writer truncating); shared locks are readers and
    /// writers appending.
    pub exclusive: bool,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(c) = &self.command {
            write!(f, " ({c})")?;
        }
        if self.pid == std::process::id() {
            f.write_str(" [this process]")?;
        }
        if self.exclusive {
            f.write_str(" exclusively")?;
        }
        Ok(())
    }
}

/// Takes a shared lock without waiting.
pub(crate) fn try_shared(file: &File, path: &Path) -> Result<(), FormatError> {
    conflict(file.try_lock_shared(), file, path)
}

/// How long a writer continuing a file keeps trying for its exclusive lock before it fails as
/// locked (SPEC.md §9). A reader polling a live recording holds it for milliseconds at a time,
/// so a resume started between two polls would otherwise fail by chance; a second writer, or a
/// reader that keeps the file open, holds it for good and still fails, only later.
pub const REOPEN_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes an exclusive lock, retrying while it is held for up to `wait` (pauses of 1 ms,
/// doubling to 16 ms), then failing as locked, naming the holders.
pub(crate) fn exclusive_within(
    file: &File,
    path: &Path,
    wait: Duration,
) -> Result<(), FormatError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if start.elapsed() < wait => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(16));
            }
            res => return conflict(res, file, path),
        }
    }
}

/// Converts the exclusive lock this file description holds into a shared one. One `flock`
/// call: no other process can hold a lock on the file while this one holds it exclusively, so
/// no other writer can slip in between (if the kernel ever lets one, this fails as locked).
pub(crate) fn downgrade(file: &File, path: &Path) -> Result<(), FormatError> {
    try_shared(file, path)
}

fn conflict(res: Result<(), TryLockError>, file: &File, path: &Path) -> Result<(), FormatError> {
    match res {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(FormatError::Locked {
            path: path.into(),
            holders: holders(file).into(),
        }),
        Err(TryLockError::Error(e)) => Err(FormatError::io(path, e)),
    }
}

/// The processes holding a `flock` on `file`'s inode, from `/proc/locks` (Linux; empty
/// elsewhere or when it cannot be read). Best effort: only used to word an error.
fn holders(file: &File) -> Vec<LockHolder> {
    let Ok(meta) = file.metadata() else {
        return Vec::new();
    };
    let Ok(table) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    parse_proc_locks(&table, dev_ino(&meta))
        .into_iter()
        .map(|(pid, exclusive)| LockHolder {
            pid,
            command: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|c| c.trim_end().to_owned()),
            exclusive,
        })
        .collect()
}

/// (major, minor, inode) of the file, as `/proc/locks` prints them.
#[cfg(unix)]
fn dev_ino(meta: &std::fs::Metadata) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = meta.dev();
    // glibc's encoding of dev_t (gnu_dev_major / gnu_dev_minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor, meta.ino())
}

#[cfg(not(unix))]
fn dev_ino(_meta: &std::fs::Metadata) -> (u64, u64, u64) {
    (u64::MAX, u64::MAX, u64::MAX)
}

/// `(pid, exclusive)` of the granted FLOCK locks on the inode `(major, minor, ino)`. Lines look
/// like `1: FLOCK  ADVISORY  WRITE 4242 08:02:1311 0 EOF` (device numbers in hex, the inode in
/// decimal); waiters (`1: -> FLOCK ...`) are skipped. An inode match on another device is
/// accepted when no line matches the device too: on overlay file systems `stat` reports the
/// overlay's device while the lock sits on the underlying file's.
pub(crate) fn parse_proc_locks(
    table: &str,
    (major, minor, ino): (u64, u64, u64),
) -> Vec<(u32, bool)> {
    let mut exact = Vec::new();
    let mut same_ino = Vec::new();
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            continue;
        }
        let Ok(pid) = f[4].parse::<u32>() else {
            continue;
        };
        let mut id = f[5].split(':');
        let (Some(ma), Some(mi), Some(i)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        if i.parse::<u64>() != Ok(ino) {
            continue;
        }
        let holder = (pid, f[3] == "WRITE");
        let dev_matches =
            u64::from_str_radix(ma, 16) == Ok(major) && u64::from_str_radix(mi, 16) == Ok(minor);
        if dev_matches {
            exact.push(holder);
        } else {
            same_ino.push(holder);
        }
    }
    let mut out = if exact.is_empty() { same_ino } else { exact };
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_name_the_holders_of_the_inode() {
        let table = "1: FLOCK  ADVISORY  READ  4242 08:02:1311 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 77 08:02:1311 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 12 08:02:1311 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 99 08:02:999 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 5 0a:1f:1311 0 EOF\n";
        assert_eq!(parse_proc_locks(table, (8, 2, 1311)), [(4242, false)]);
        // Only another device holds the inode: best effort, accepted.
        assert_eq!(
            parse_proc_locks(table, (0, 40, 1311)),
            [(5, true), (4242, false)]
        );
        assert!(parse_proc_locks(table, (8, 2, 1)).is_empty());
        assert!(parse_proc_locks("garbage\n\n1: FLOCK", (8, 2, 1311)).is_empty());
    }
}
