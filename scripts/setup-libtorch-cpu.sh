#!/usr/bin/env bash
# Unpacks a CPU libtorch 2.11.0 (the version tch 0.24.0 expects) from PyPI's torch wheel into a
# cache outside the clone, and links it as .libtorch. Idempotent; hash-checked; no CUDA wheels.
# Needs: python3 with pip (PyPI reachable). Usage: scripts/setup-libtorch-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.11.0
CACHE="${SGDWALK_CACHE:-$HOME/.cache/sgdwalk}"
DEST="${LIBTORCH_DEST:-$CACHE/libtorch-$TORCH_VERSION}"
say() { echo "setup-libtorch: $*" >&2; }
fail() { echo "setup-libtorch: error: $*" >&2; exit 1; }

link_into_clone() {
  # .cargo/config.toml points LIBTORCH at .libtorch, so plain `cargo build` works in the clone.
  if [ "$(readlink .libtorch 2>/dev/null || true)" != "$DEST" ]; then
    rm -rf .libtorch && ln -s "$DEST" .libtorch
  fi
}

if [ -f "$DEST/build-version" ] && [ "$(cat "$DEST/build-version")" = "$TORCH_VERSION" ] \
   && [ -f "$DEST/lib/libtorch_cpu.so" ]; then
  say "libtorch $TORCH_VERSION already in $DEST"
  link_into_clone
  exit 0
fi
command -v python3 >/dev/null || fail "python3 is missing (apt-get install python3 python3-pip)"
python3 -m pip --version >/dev/null 2>&1 || fail "pip is missing (apt-get install python3-pip)"
mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/tmp.XXXXXX")"; trap 'rm -rf "$TMP"' EXIT
# torch/lib and torch/include are the same in every CPython build of the wheel: the cp311 one is
# pinned so any local python3 works. The nvidia wheels are py3-none and are fetched without
# --platform. Hashes as published on PyPI.
cat > "$TMP/torch.txt" <<REQ
torch==$TORCH_VERSION --hash=sha256:7aa2f9bbc6d4595ba72138026b2074be1233186150e9292865e04b7a63b8c67a
REQ
cat > "$TMP/cuda.txt" <<REQ
nvidia-cuda-runtime==13.0.96 --hash=sha256:7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
nvidia-cuda-cupti==13.0.85 --hash=sha256:4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8
REQ
say "downloading torch==$TORCH_VERSION wheel (~506 MB) and two CUDA runtime wheels from PyPI"
python3 -m pip download -q --no-deps --no-cache-dir --only-binary=:all: --require-hashes \
  --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp \
  -d "$TMP" -r "$TMP/torch.txt" || fail "pip download of torch==$TORCH_VERSION failed"
python3 -m pip download -q --no-deps --no-cache-dir --only-binary=:all: --require-hashes \
  -d "$TMP" -r "$TMP/cuda.txt" || fail "pip download of the CUDA runtime wheels failed"
say "unpacking include/ and the CPU libraries into $DEST"
rm -rf "$DEST.partial"; mkdir -p "$DEST.partial/lib"
python3 - "$TMP" "$DEST.partial" <<'PY'
import sys, zipfile, glob, os, shutil
tmp, dest = sys.argv[1], sys.argv[2]
# No *cuda* libraries: build.rs force-links libtorch_cuda only where it exists (GPU box), and
# it would need ~2.7 GB of further CUDA libraries.
keep_lib = {"libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1"}
with zipfile.ZipFile(glob.glob(os.path.join(tmp, "torch-*.whl"))[0]) as z:
    for info in z.infolist():
        n = info.filename
        if n.startswith("torch/include/") and not n.endswith("/"):
            out = os.path.join(dest, n[len("torch/"):])
        elif n.startswith("torch/lib/") and os.path.basename(n) in keep_lib:
            out = os.path.join(dest, "lib", os.path.basename(n))
        else:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
# The cu130 libtorch_cpu.so NEEDs libcudart.so.13 and libcupti.so.13, even on CPU.
for pat, libname in (("nvidia_cuda_runtime-*.whl", "libcudart.so.13"),
                     ("nvidia_cuda_cupti-*.whl", "libcupti.so.13")):
    with zipfile.ZipFile(glob.glob(os.path.join(tmp, pat))[0]) as z:
        with z.open("nvidia/cu13/lib/" + libname) as src, \
             open(os.path.join(dest, "lib", libname), "wb") as dst:
            shutil.copyfileobj(src, dst)
for f in os.listdir(os.path.join(dest, "lib")):
    os.chmod(os.path.join(dest, "lib", f), 0o755)
PY
echo "$TORCH_VERSION" > "$DEST.partial/build-version"
rm -rf "$DEST"; mv "$DEST.partial" "$DEST"
link_into_clone
say "done: $(du -sh "$DEST" | cut -f1) in $DEST"
