//! Disk space kept back for admin actions.
//!
//! Invariant: function audit records are not written while the data
//! directory's filesystem has less free space than the reserve; they are
//! counted and dropped instead, with one `lost` record per batch saying how
//! many. Admin actions keep writing into the reserve.
//!
//! Why: every admin action — `revoke` and `undeploy` included — must write
//! its audit record or it does not happen. A function making records as
//! fast as it can (allowed operations are not capped per request) could
//! otherwise fill the disk, and then no operator could take its grants
//! away.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The reserve when `keyhole serve --disk-reserve` names none.
pub const DEFAULT_DISK_RESERVE: u64 = 256 * 1024 * 1024;
/// How long a reading of the free space is trusted.
const RECHECK: Duration = Duration::from_secs(1);

/// The reserve on the filesystem holding one data directory.
#[derive(Debug)]
pub struct DiskReserve {
    dir: PathBuf,
    reserve: u64,
    /// When free space was last read, and whether it was above the reserve.
    last: Mutex<Option<(Instant, bool)>>,
}

impl DiskReserve {
    /// Keeps `reserve` bytes free on the filesystem holding `dir`.
    pub fn new(dir: impl Into<PathBuf>, reserve: u64) -> Self {
        Self {
            dir: dir.into(),
            reserve,
            last: Mutex::new(None),
        }
    }

    /// Whether function records may be written now: the filesystem has
    /// more than the reserve free (or its free space cannot be read).
    /// Reads it at most once a second.
    pub fn allows_function_records(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, allowed)) = *last
            && at.elapsed() < RECHECK
        {
            return allowed;
        }
        let allowed = free_bytes(&self.dir).is_none_or(|free| free > self.reserve);
        *last = Some((Instant::now(), allowed));
        allowed
    }

    /// The reserve, in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding
/// `dir`, if that can be read.
#[cfg(target_os = "linux")]
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and
    // `stat` is a properly aligned out-pointer the call fills on success;
    // it is read only then.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Elsewhere free space is not read, and records are always written.
#[cfg(not(target_os = "linux"))]
pub fn free_bytes(_dir: &std::path::Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_stops_function_records_and_none_does_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
        assert!(DiskReserve::new(dir.path(), 0).allows_function_records());
        assert!(!DiskReserve::new(dir.path(), u64::MAX).allows_function_records());
    }
}
