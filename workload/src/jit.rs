//! TorchScript modules (saved from PyTorch with `torch.jit.script(m).save(...)` or
//! `torch.jit.trace`) through the small C++ shim in `jit_shim.cpp`: load from bytes, named
//! parameters and buffers under PyTorch's own dotted names, train/eval mode, forward, save.
//!
//! tch's `CModule` lists parameters only; the recorded state also needs the buffers
//! (BatchNorm running statistics and `num_batches_tracked`), hence the shim.

// The one FFI boundary of the crate: every pointer below comes from the shim, is checked for
// null, and is owned by exactly one Rust value.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;

use tch::{Device, Tensor};

use crate::error::WorkloadError;

type TensorCallback = extern "C" fn(ctx: *mut c_void, name: *const c_char, tensor: *mut c_void);

unsafe extern "C" {
    fn sgdwalk_jit_free_string(s: *mut c_char);
    fn sgdwalk_jit_load(
        data: *const c_char,
        len: usize,
        device: c_int,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn sgdwalk_jit_free(m: *mut c_void);
    fn sgdwalk_jit_named_tensors(
        m: *mut c_void,
        buffers: c_int,
        ctx: *mut c_void,
        cb: TensorCallback,
        err: *mut *mut c_char,
    ) -> c_int;
    fn sgdwalk_jit_set_train(m: *mut c_void, on: c_int, err: *mut *mut c_char) -> c_int;
    fn sgdwalk_jit_forward(
        m: *mut c_void,
        input: *const c_void,
        out: *mut *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    fn sgdwalk_jit_save(m: *mut c_void, path: *const c_char, err: *mut *mut c_char) -> c_int;
}

/// Takes the shim's error message (if any) and frees it.
fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error in the TorchScript shim".into();
    }
    // SAFETY: the shim returns a NUL-terminated string from malloc, freed exactly once here.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { sgdwalk_jit_free_string(err) };
    msg
}

fn check(status: c_int, err: *mut c_char, what: &str) -> Result<(), WorkloadError> {
    if status == 0 {
        Ok(())
    } else {
        Err(WorkloadError::TorchScript {
            what: what.to_string(),
            reason: take_error(err),
        })
    }
}

extern "C" fn push_named(ctx: *mut c_void, name: *const c_char, tensor: *mut c_void) {
    // SAFETY: ctx is the `Vec` passed by `named` below, alive for the call; name is a
    // NUL-terminated string owned by the shim for the duration of the callback; tensor is a
    // fresh `torch::Tensor*` whose ownership passes to the `tch::Tensor`.
    let out = unsafe { &mut *ctx.cast::<Vec<(String, Tensor)>>() };
    let name = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    let tensor = unsafe { Tensor::from_ptr(tensor.cast()) };
    out.push((name, tensor));
}

/// A loaded TorchScript module.
#[derive(Debug)]
pub struct ScriptModule {
    ptr: *mut c_void,
    device: Device,
}

// SAFETY: a torch::jit::Module may be moved between threads; the recorder and analyzer use a
// model from one thread at a time (`&mut` for mode changes, as tch's CModule does).
unsafe impl Send for ScriptModule {}

impl Drop for ScriptModule {
    fn drop(&mut self) {
        // SAFETY: ptr came from sgdwalk_jit_load and is freed once.
        unsafe { sgdwalk_jit_free(self.ptr) }
    }
}

fn device_code(device: Device) -> c_int {
    match device {
        Device::Cpu => -1,
        Device::Cuda(i) => i as c_int,
        // tch's other devices are not used by sgdwalk; libtorch reports them if asked.
        Device::Mps | Device::Vulkan => -1,
    }
}

impl ScriptModule {
    /// Loads a module from the bytes of a file saved by `torch.jit.save`, onto `device`.
    pub fn load(bytes: &[u8], device: Device) -> Result<Self, WorkloadError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: bytes outlives the call; the shim copies them.
        let ptr = unsafe {
            sgdwalk_jit_load(
                bytes.as_ptr().cast(),
                bytes.len(),
                device_code(device),
                &mut err,
            )
        };
        if ptr.is_null() {
            return Err(WorkloadError::TorchScript {
                what: "loading the module".into(),
                reason: take_error(err),
            });
        }
        Ok(ScriptModule { ptr, device })
    }

    /// Device the module's tensors live on.
    pub fn device(&self) -> Device {
        self.device
    }

    fn named(&self, buffers: bool) -> Result<Vec<(String, Tensor)>, WorkloadError> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        let mut err = std::ptr::null_mut();
        // SAFETY: `out` outlives the call and is only touched through `push_named`.
        let status = unsafe {
            sgdwalk_jit_named_tensors(
                self.ptr,
                c_int::from(buffers),
                (&mut out as *mut Vec<(String, Tensor)>).cast(),
                push_named,
                &mut err,
            )
        };
        check(status, err, "listing the module's tensors")?;
        Ok(out)
    }

    /// Named parameters (recursively, dotted names), aliasing the module's own tensors.
    pub fn named_parameters(&self) -> Result<Vec<(String, Tensor)>, WorkloadError> {
        self.named(false)
    }

    /// Named buffers (recursively, dotted names), aliasing the module's own tensors.
    pub fn named_buffers(&self) -> Result<Vec<(String, Tensor)>, WorkloadError> {
        self.named(true)
    }

    /// Switches the module (recursively) to train or eval mode.
    pub fn set_train(&self, train: bool) -> Result<(), WorkloadError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: ptr is a live module.
        let status = unsafe { sgdwalk_jit_set_train(self.ptr, c_int::from(train), &mut err) };
        check(status, err, "setting train/eval mode")
    }

    /// `forward(x)`; an error when the module raises or returns anything but one tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, WorkloadError> {
        let mut out = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        // SAFETY: x is a live tensor for the call; on success `out` is a fresh tensor pointer.
        let status =
            unsafe { sgdwalk_jit_forward(self.ptr, x.as_ptr().cast(), &mut out, &mut err) };
        check(status, err, "forward")?;
        // SAFETY: see above; ownership passes to the tch tensor.
        Ok(unsafe { Tensor::from_ptr(out.cast()) })
    }

    /// Saves the module (with its current tensor values) as `torch.jit.save` does.
    pub fn save(&self, path: &Path) -> Result<(), WorkloadError> {
        let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|_| {
            WorkloadError::TorchScript {
                what: format!("saving to {}", path.display()),
                reason: "the path contains a NUL byte".into(),
            }
        })?;
        let mut err = std::ptr::null_mut();
        // SAFETY: c outlives the call.
        let status = unsafe { sgdwalk_jit_save(self.ptr, c.as_ptr(), &mut err) };
        check(status, err, &format!("saving to {}", path.display()))
    }
}
