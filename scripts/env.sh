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
# Cargo judges freshness by file times, and the target dir is shared: after another clone built
# there, this clone's crates can look fresh, and its tests would run the other clone's binaries
# (its code, its paths). A clone that takes the target dir over from another marks its own
# files as changed, so cargo rebuilds sgdwalk's crates; dependencies stay cached. (Two clones
# building at the same moment can still mix: give one its own CARGO_TARGET_DIR.)
_sgdwalk_clone="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
mkdir -p "$CARGO_TARGET_DIR"
if [ "$(cat "$CARGO_TARGET_DIR/.sgdwalk-clone" 2>/dev/null)" != "$_sgdwalk_clone" ]; then
  (cd "$_sgdwalk_clone" && git ls-files -z 2>/dev/null | xargs -0 -r touch -c --)
  echo "$_sgdwalk_clone" > "$CARGO_TARGET_DIR/.sgdwalk-clone"
fi
unset _sgdwalk_clone
