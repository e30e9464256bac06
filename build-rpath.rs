// Shared build script of every package that links libtorch (workload, recorder, analyzer,
// tests, examples). It makes binaries, tests and examples find libtorch without LD_LIBRARY_PATH
// (torch-sys passes its rpath only to its own C++ compile), and where the CUDA build of libtorch
// is present it force-links libtorch_cuda, which `--as-needed` would otherwise drop, so that
// `tch::Cuda::is_available()` sees the GPU.
pub fn main() {
    println!("cargo:rerun-if-changed=../build-rpath.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        let lib = std::path::PathBuf::from(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
        }
    }
}
