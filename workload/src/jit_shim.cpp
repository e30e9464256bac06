// A small C interface to TorchScript modules for sgdwalk's workload crate (src/jit.rs).
//
// tch exposes a module's named parameters but not its named buffers (BatchNorm running
// statistics, num_batches_tracked), which are part of the recorded state, and it hides the raw
// module pointer. This file loads a module from bytes and gives out exactly what the recorder
// and analyzer need: named parameters and buffers (aliases of the module's own tensors),
// train/eval mode, forward with one tensor in and one tensor out, and save.
//
// Tensors cross the boundary as `torch::Tensor*` allocated with `new`, the representation
// tch's `C_tensor` uses, so Rust wraps them with `tch::Tensor::from_ptr` and frees them with
// tch's own destructor. Every function catches C++ exceptions and reports them as a message
// (free it with sgdwalk_jit_free_string); none may throw across the boundary.

#include <torch/script.h>

#include <cstring>
#include <sstream>
#include <string>

#include "shim_errors.h"

namespace {

using sgdwalk_shim::copy_message;
using sgdwalk_shim::guarded;

torch::Device device_of(int device) {
  return device < 0 ? torch::Device(torch::kCPU)
                    : torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device));
}

} // namespace

extern "C" {

typedef void (*sgdwalk_tensor_cb)(void *ctx, const char *name, void *tensor);

void sgdwalk_jit_free_string(char *s) { std::free(s); }

// Loads a module saved with torch.jit.save from `len` bytes onto `device` (-1 = CPU, N = cuda:N).
void *sgdwalk_jit_load(const char *data, size_t len, int device, char **err) {
  torch::jit::Module *out = nullptr;
  guarded(err, [&] {
    std::istringstream in(std::string(data, len));
    out = new torch::jit::Module(torch::jit::load(in, device_of(device)));
  });
  return out;
}

void sgdwalk_jit_free(void *m) { delete static_cast<torch::jit::Module *>(m); }

// Calls `cb` with every named parameter (buffers = 0) or buffer (buffers = 1), recursively, in
// the module's own order, with dotted names as PyTorch's state_dict uses.
int sgdwalk_jit_named_tensors(void *m, int buffers, void *ctx, sgdwalk_tensor_cb cb, char **err) {
  return guarded(err, [&] {
    auto *module = static_cast<torch::jit::Module *>(m);
    if (buffers != 0) {
      for (const auto &b : module->named_buffers(/*recurse=*/true)) {
        cb(ctx, b.name.c_str(), new torch::Tensor(b.value));
      }
    } else {
      for (const auto &p : module->named_parameters(/*recurse=*/true)) {
        cb(ctx, p.name.c_str(), new torch::Tensor(p.value));
      }
    }
  });
}

int sgdwalk_jit_set_train(void *m, int on, char **err) {
  return guarded(err, [&] { static_cast<torch::jit::Module *>(m)->train(on != 0); });
}

// forward(input) -> a new tensor in *out; an error if the output is not a single tensor.
int sgdwalk_jit_forward(void *m, const void *input, void **out, char **err) {
  return guarded(err, [&] {
    auto *module = static_cast<torch::jit::Module *>(m);
    const auto &x = *static_cast<const torch::Tensor *>(input);
    std::vector<torch::jit::IValue> args{x};
    auto result = module->forward(args);
    if (!result.isTensor()) {
      throw std::runtime_error("forward returned " + result.tagKind() +
                               ", not a single tensor of logits");
    }
    *out = new torch::Tensor(result.toTensor());
  });
}

int sgdwalk_jit_save(void *m, const char *path, char **err) {
  return guarded(err, [&] { static_cast<torch::jit::Module *>(m)->save(path); });
}

} // extern "C"
