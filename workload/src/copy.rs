//! Asynchronous device-to-host copies through the small C++ shim in `copy_shim.cpp` (tch has
//! no stream or event API): a [`Copier`] owns a side stream of the device; a [`Marker`] marks a
//! point of a stream; [`Copier::copy_to_host`] queues a copy on the side stream that starts once
//! the training stream has passed a marker, so the training stream never waits for it, and
//! marks its end in the destination's marker; [`HostBuffer::wait`] then gives the values.
//!
//! On the CPU the same calls run with CPU tensors standing in for device tensors: marks are
//! no-ops (events complete at once) and the copy is done when `copy_to_host` returns.

// The second FFI boundary of the crate (besides jit.rs): every pointer below comes from the
// shim, is checked for null, and is owned by exactly one Rust value.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};

use tch::{Device, Tensor};

use crate::error::WorkloadError;

unsafe extern "C" {
    fn sgdwalk_copy_free_string(s: *mut c_char);
    fn sgdwalk_copy_new(device: c_int, err: *mut *mut c_char) -> *mut c_void;
    fn sgdwalk_copy_free(c: *mut c_void);
    fn sgdwalk_copy_device_buffer(c: *mut c_void, n: i64, err: *mut *mut c_char) -> *mut c_void;
    fn sgdwalk_copy_host_buffer(c: *mut c_void, n: i64, err: *mut *mut c_char) -> *mut c_void;
    fn sgdwalk_marker_new() -> *mut c_void;
    fn sgdwalk_marker_free(m: *mut c_void);
    fn sgdwalk_copy_mark(c: *mut c_void, m: *mut c_void, err: *mut *mut c_char) -> c_int;
    fn sgdwalk_copy_to_host(
        c: *mut c_void,
        after: *mut c_void,
        src: *const c_void,
        dst: *const c_void,
        done: *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    fn sgdwalk_marker_query(m: *mut c_void, err: *mut *mut c_char) -> c_int;
}

fn failure(what: &str, err: *mut c_char) -> WorkloadError {
    let reason = if err.is_null() {
        "unknown error in the copy shim".into()
    } else {
        // SAFETY: the shim returns a NUL-terminated string from malloc, freed exactly once here.
        let msg = unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        unsafe { sgdwalk_copy_free_string(err) };
        msg
    };
    WorkloadError::DeviceCopy {
        what: what.to_string(),
        reason,
    }
}

fn check(status: c_int, err: *mut c_char, what: &str) -> Result<(), WorkloadError> {
    if status == 0 {
        Ok(())
    } else {
        Err(failure(what, err))
    }
}

/// A point of a stream; waiting for it waits for the work queued before it.
#[derive(Debug)]
pub struct Marker {
    ptr: *mut c_void,
}

/// First and longest sleep between polls of [`Marker::wait`].
const MIN_POLL_SLEEP: std::time::Duration = std::time::Duration::from_micros(20);
const MAX_POLL_SLEEP: std::time::Duration = std::time::Duration::from_micros(200);

// SAFETY: a marker wraps a c10::Event, which may move between threads; the recorder hands it
// from one thread to the next through channels, never using it from two threads at once.
unsafe impl Send for Marker {}

impl Marker {
    /// An unmarked marker (waiting for it returns at once).
    pub fn new() -> Self {
        // SAFETY: plain allocation; never null (operator new throws, which aborts).
        Marker {
            ptr: unsafe { sgdwalk_marker_new() },
        }
    }

    /// Blocks the calling thread until the work before the mark has completed.
    ///
    /// Polls with short sleeps rather than synchronizing on the event: under CUDA's default
    /// scheduling an event synchronize spins a core for the whole copy, a core the encode
    /// threads and the training thread's kernel launches need. A sleep of at most
    /// [`MAX_POLL_SLEEP`] adds that much latency to a copy of a millisecond or more.
    pub fn wait(&self) -> Result<(), WorkloadError> {
        let mut sleep = MIN_POLL_SLEEP;
        while !self.is_done()? {
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(MAX_POLL_SLEEP);
        }
        Ok(())
    }

    /// Whether the work before the mark has completed (without blocking).
    pub fn is_done(&self) -> Result<bool, WorkloadError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: ptr is a live marker.
        match unsafe { sgdwalk_marker_query(self.ptr, &mut err) } {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(failure("querying a device event", err)),
        }
    }
}

impl Default for Marker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        // SAFETY: ptr came from sgdwalk_marker_new and is freed once.
        unsafe { sgdwalk_marker_free(self.ptr) }
    }
}

/// A flat f32 host buffer that a copy fills: pinned on CUDA. Its values are read only through
/// [`HostBuffer::wait`], after the copy into it has completed.
#[derive(Debug)]
pub struct HostBuffer {
    tensor: Tensor,
    len: usize,
    /// The end of the last copy into the buffer.
    filled: Marker,
}

impl HostBuffer {
    /// Elements of the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the buffer.
    pub fn bytes(&self) -> usize {
        self.len * 4
    }

    /// Waits for the last copy into the buffer, then gives its values.
    pub fn wait(&mut self) -> Result<&[f32], WorkloadError> {
        self.filled.wait()?;
        let ptr = self.tensor.data_ptr().cast::<f32>();
        if self.len == 0 {
            return Ok(&[]);
        }
        if ptr.is_null() {
            return Err(WorkloadError::DeviceCopy {
                what: "reading a host buffer".into(),
                reason: "the buffer has no storage".into(),
            });
        }
        // SAFETY: the tensor is a contiguous CPU f32 tensor of `len` elements that this value
        // owns (made by `Copier::host_buffer`, never resized); the copy into it has completed
        // (waited above) and no other copy can start while `&mut self` is borrowed.
        Ok(unsafe { std::slice::from_raw_parts(ptr, self.len) })
    }
}

/// A side stream of one device and the copies queued on it.
#[derive(Debug)]
pub struct Copier {
    ptr: *mut c_void,
    device: Device,
}

// SAFETY: the copier holds a device and a c10::Stream, plain values the shim only reads;
// libtorch's stream, event and copy calls are thread-safe. The recorder marks from the training
// thread and copies from its copy thread.
unsafe impl Send for Copier {}
unsafe impl Sync for Copier {}

impl Drop for Copier {
    fn drop(&mut self) {
        // SAFETY: ptr came from sgdwalk_copy_new and is freed once.
        unsafe { sgdwalk_copy_free(self.ptr) }
    }
}

fn device_code(device: Device) -> Result<c_int, WorkloadError> {
    match device {
        Device::Cpu => Ok(-1),
        Device::Cuda(i) => c_int::try_from(i).map_err(|_| WorkloadError::DeviceCopy {
            what: format!("opening cuda:{i}"),
            reason: "device index out of range".into(),
        }),
        other => Err(WorkloadError::DeviceCopy {
            what: format!("opening {other:?}"),
            reason: "only CPU and CUDA devices are supported".into(),
        }),
    }
}

impl Copier {
    /// A copier for `device`: on CUDA it takes a side stream from libtorch's stream pool; on the
    /// CPU it stands in with synchronous copies.
    pub fn new(device: Device) -> Result<Self, WorkloadError> {
        let code = device_code(device)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: plain call; a null result comes with an error message.
        let ptr = unsafe { sgdwalk_copy_new(code, &mut err) };
        if ptr.is_null() {
            return Err(failure(
                &format!("opening a copy stream on {device:?}"),
                err,
            ));
        }
        Ok(Copier { ptr, device })
    }

    /// The device copied from.
    pub fn device(&self) -> Device {
        self.device
    }

    /// A flat f32 buffer of `n` elements on the device (zeros).
    pub fn device_buffer(&self, n: usize) -> Result<Tensor, WorkloadError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: ptr is a live copier; a non-null result is a fresh `at::Tensor*` whose
        // ownership passes to the tch tensor.
        let t = unsafe { sgdwalk_copy_device_buffer(self.ptr, n as i64, &mut err) };
        if t.is_null() {
            return Err(failure("allocating a device snapshot buffer", err));
        }
        Ok(unsafe { Tensor::from_ptr(t.cast()) })
    }

    /// A host buffer of `n` elements (pinned on CUDA).
    pub fn host_buffer(&self, n: usize) -> Result<HostBuffer, WorkloadError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as in `device_buffer`.
        let t = unsafe { sgdwalk_copy_host_buffer(self.ptr, n as i64, &mut err) };
        if t.is_null() {
            return Err(failure("allocating a pinned host buffer", err));
        }
        Ok(HostBuffer {
            tensor: unsafe { Tensor::from_ptr(t.cast()) },
            len: n,
            filled: Marker::new(),
        })
    }

    /// Marks the current point of the calling thread's current stream on the device (the
    /// training stream, when called from the training thread).
    pub fn mark(&self, marker: &mut Marker) -> Result<(), WorkloadError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: both pointers are live; `&mut` keeps the marker from other uses meanwhile.
        let status = unsafe { sgdwalk_copy_mark(self.ptr, marker.ptr, &mut err) };
        check(status, err, "marking the training stream")
    }

    /// Queues the copy of `src` (a flat f32 tensor on the device, `dst.len()` elements) into
    /// `dst` on the side stream, to start once the stream marked in `after` has passed that
    /// mark. Returns without waiting on CUDA; [`HostBuffer::wait`] waits for the copy.
    pub fn copy_to_host(
        &self,
        after: &Marker,
        src: &Tensor,
        dst: &mut HostBuffer,
    ) -> Result<(), WorkloadError> {
        let kind = src.f_kind()?;
        if src.numel() != dst.len || kind != tch::Kind::Float || !src.is_contiguous() {
            return Err(WorkloadError::DeviceCopy {
                what: "copying a snapshot to the host".into(),
                reason: format!(
                    "source is {kind:?} of {} elements (contiguous: {}), the host buffer f32 of {}",
                    src.numel(),
                    src.is_contiguous(),
                    dst.len
                ),
            });
        }
        let mut err = std::ptr::null_mut();
        // SAFETY: all pointers are live for the call; `src` stays alive until the copy is done
        // because its owner waits for `dst.filled` before reusing or dropping it (and the shim
        // records the side stream on its memory for the allocator).
        let status = unsafe {
            sgdwalk_copy_to_host(
                self.ptr,
                after.ptr,
                src.as_ptr().cast(),
                dst.tensor.as_ptr().cast(),
                dst.filled.ptr,
                &mut err,
            )
        };
        check(status, err, "copying a snapshot to the host")
    }
}
