//! The one fuzz property shared by the libFuzzer target and the stable replay binary: no input
//! makes the reader, `verify`, `inspect` or `Writer::reopen` panic (errors are fine).

use std::io::Write;

use sgdwalk_format::{Reader, Writer, WriterOptions, inspect, verify};

/// Exercises every read path on `bytes`. Returns whether the file opened.
pub fn check(bytes: &[u8]) -> bool {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return false;
    };
    if file.write_all(bytes).is_err() {
        return false;
    }
    let path = file.path().to_path_buf();
    let opened = match Reader::open(&path) {
        Ok(mut r) => {
            let steps: Vec<u64> = r.steps().iter().copied().take(64).collect();
            for s in steps.iter().rev() {
                let _ = r.state(*s);
                let _ = r.step_info(*s);
            }
            let _ = r.epochs();
            if let Some(s) = r.last_resume_step() {
                let _ = r.resume_state(s);
            }
            let _ = r.refresh();
            true
        }
        Err(_) => false,
    };
    let _ = verify(&path);
    let _ = inspect(&path);
    if opened {
        let opts = WriterOptions {
            fsync: sgdwalk_format::FsyncPolicy::Never,
            threads: 1,
            overlap_writes: false,
        };
        let _ = Writer::reopen(&path, opts, None);
    }
    opened
}
