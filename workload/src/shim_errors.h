// Error passing shared by the C++ shims (jit_shim.cpp, copy_shim.cpp): every exported function
// runs its body through `guarded`, which turns a C++ exception into a malloc'd message for the
// Rust side (freed by the shim's *_free_string function) and a nonzero status.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace sgdwalk_shim {

inline char *copy_message(const std::string &s) {
  char *out = static_cast<char *>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

template <typename F> int guarded(char **err, F &&f) {
  try {
    f();
    return 0;
  } catch (const c10::Error &e) {
    *err = copy_message(e.what_without_backtrace());
  } catch (const std::exception &e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return 1;
}

} // namespace sgdwalk_shim
