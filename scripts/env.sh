# Sourced by the scripts: one libtorch and one cargo target dir outside the clone, shared by every
# clone on this machine (CI clones included), so a warm cache rebuilds only sgdwalk's own crates.
# Nothing depends on the cache being warm: a fresh machine builds everything.
SGDWALK_CACHE="${SGDWALK_CACHE:-$HOME/.cache/sgdwalk}"
export SGDWALK_CACHE
if [ -z "${LIBTORCH_USE_PYTORCH:-}" ]; then
  export LIBTORCH="${LIBTORCH:-$SGDWALK_CACHE/libtorch-2.11.0}"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SGDWALK_CACHE/target}"
export SGDWALK_QUERY_PYTHON="${SGDWALK_QUERY_PYTHON:-$SGDWALK_CACHE/venv-q/bin/python}"
# PyTorch 2.11.0 (+ numpy, safetensors, zstandard, xxhash): TorchScript/safetensors export, fixtures,
# and the PyTorch cross-check of torchscript recordings.
export SGDWALK_TORCH_PYTHON="${SGDWALK_TORCH_PYTHON:-$SGDWALK_CACHE/venv-torch/bin/python}"
