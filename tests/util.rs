//! Shared helpers of the integration tests.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Fashion-MNIST as fetched by `scripts/fetch-datasets.sh`; a test that needs it fails (never
/// skips) when it is missing.
pub fn fashion_mnist_dir() -> PathBuf {
    let dir = std::env::var_os("SGDWALK_DATA_DIR")
        .map_or_else(|| workspace_root().join("data"), PathBuf::from)
        .join("fashion-mnist");
    assert!(
        dir.join("train-images-idx3-ubyte.gz").exists()
            || dir.join("train-images-idx3-ubyte").exists(),
        "Fashion-MNIST is missing from {}: run scripts/setup (or scripts/fetch-datasets.sh)",
        dir.display()
    );
    dir
}

/// A Python of a venv that `scripts/setup` makes: the variable `var` (set by scripts/env.sh),
/// else `~/.cache/sgdwalk/<venv>/bin/python`. Missing means the set-up was not run: the test
/// fails naming what to run, it does not skip.
pub fn setup_python(var: &str, venv: &str, what: &str) -> PathBuf {
    let p = std::env::var_os(var).map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/sgdwalk")
                .join(venv)
                .join("bin/python")
        },
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup (it installs {what})",
        p.display()
    );
    p
}
