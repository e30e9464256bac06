// Asynchronous device-to-host copies for the recorder's snapshot path (src/copy.rs): a side
// stream from the device's stream pool, events that mark a point of a stream, and a copy that
// waits for such a mark on the side stream, so the training stream never waits for a copy.
//
// tch has no stream or event API. This file uses libtorch's backend-generic one (c10::Stream,
// c10::Event, c10::StreamGuard, reached through the device's registered guard implementation),
// not the CUDA-specific at::cuda::CUDAEvent: the same source compiles against every libtorch
// (CPU or CUDA builds, no CUDA headers needed), the CUDA work is dispatched at run time through
// libc10_cuda, and the binaries carry no direct libcudart dependency that a GPU box would have
// to resolve. On the CPU (device -1) marks are no-ops and copies are synchronous: the stand-in
// that runs the same code path in tests.
//
// Tensors cross the boundary as `torch::Tensor*`, tch's `C_tensor`. Every function catches C++
// exceptions and reports them as a message (free it with sgdwalk_copy_free_string).

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "shim_errors.h"

namespace {

using sgdwalk_shim::copy_message;
using sgdwalk_shim::guarded;

struct Copier {
  c10::Device device;
  // The side stream (CUDA only).
  std::optional<c10::Stream> side;
};

struct Marker {
  // Created at the first mark on a device that has events (none on the CPU).
  std::optional<c10::Event> event;
};

void record_on(Marker *m, const c10::Stream &stream) {
  if (!m->event) {
    m->event.emplace(stream.device_type());
  }
  m->event->record(stream);
}

} // namespace

extern "C" {

void sgdwalk_copy_free_string(char *s) { std::free(s); }

// A copier for `device` (-1 = CPU, N = cuda:N); on CUDA it takes a side stream from the pool.
void *sgdwalk_copy_new(int device, char **err) {
  Copier *out = nullptr;
  guarded(err, [&] {
    if (device < 0) {
      out = new Copier{c10::Device(c10::kCPU), std::nullopt};
      return;
    }
    c10::Device d(c10::kCUDA, static_cast<c10::DeviceIndex>(device));
    // Throws when this libtorch has no CUDA backend.
    c10::impl::VirtualGuardImpl impl(c10::kCUDA);
    c10::Stream side = impl.getStreamFromGlobalPool(d, false);
    out = new Copier{d, side};
  });
  return out;
}

void sgdwalk_copy_free(void *c) { delete static_cast<Copier *>(c); }

// A flat f32 buffer of `n` elements on the copier's device (zeros).
void *sgdwalk_copy_device_buffer(void *c, int64_t n, char **err) {
  at::Tensor *out = nullptr;
  guarded(err, [&] {
    auto *cp = static_cast<Copier *>(c);
    out = new at::Tensor(at::zeros({n}, at::TensorOptions().dtype(at::kFloat).device(cp->device)));
  });
  return out;
}

// A flat f32 host buffer of `n` elements: page-locked (pinned) when the copier is on CUDA, so
// a device-to-host copy into it runs asynchronously at the bus's speed.
void *sgdwalk_copy_host_buffer(void *c, int64_t n, char **err) {
  at::Tensor *out = nullptr;
  guarded(err, [&] {
    auto *cp = static_cast<Copier *>(c);
    auto opts = at::TensorOptions().dtype(at::kFloat).device(at::kCPU).pinned_memory(cp->side.has_value());
    out = new at::Tensor(at::empty({n}, opts));
  });
  return out;
}

void *sgdwalk_marker_new() { return new Marker(); }

void sgdwalk_marker_free(void *m) { delete static_cast<Marker *>(m); }

// Marks the current point of the calling thread's current stream on the copier's device (the
// training stream): work queued there so far comes before the mark.
int sgdwalk_copy_mark(void *c, void *m, char **err) {
  return guarded(err, [&] {
    auto *cp = static_cast<Copier *>(c);
    if (!cp->side) {
      return;
    }
    c10::impl::VirtualGuardImpl impl(cp->device.type());
    record_on(static_cast<Marker *>(m), impl.getStream(cp->device));
  });
}

// Copies `src` (device) into `dst` (host) on the side stream once the side stream has reached
// `after`, and marks the end of the copy in `done`. Returns at once on CUDA; on the CPU the copy
// is done when it returns.
int sgdwalk_copy_to_host(void *c, void *after, void *src, void *dst, void *done, char **err) {
  return guarded(err, [&] {
    auto *cp = static_cast<Copier *>(c);
    auto *s = static_cast<at::Tensor *>(src);
    auto *d = static_cast<at::Tensor *>(dst);
    if (!cp->side) {
      d->copy_(*s);
      return;
    }
    c10::StreamGuard guard(*cp->side);
    auto *a = static_cast<Marker *>(after);
    if (a->event) {
      a->event->block(*cp->side);
    }
    d->copy_(*s, /*non_blocking=*/true);
    // The source was allocated on the training stream: its memory must not be handed out
    // again before the side stream is done reading it.
    s->record_stream(*cp->side);
    record_on(static_cast<Marker *>(done), *cp->side);
  });
}

// 1 when the work before the mark has completed (or it was never marked), 0 when not yet, -1 on
// error.
int sgdwalk_marker_query(void *m, char **err) {
  int out = -1;
  guarded(err, [&] {
    auto *mk = static_cast<Marker *>(m);
    out = (!mk->event || mk->event->query()) ? 1 : 0;
  });
  return out;
}

} // extern "C"
