// The workload crate's build script: the shared libtorch rpath set-up (build-rpath.rs) plus
// the TorchScript shim (src/jit_shim.cpp) and the copy shim (src/copy_shim.cpp), compiled against the same libtorch headers that
// torch-sys uses (the folder above DEP_TCH_LIBTORCH_LIB).
#[path = "../build-rpath.rs"]
mod rpath;

fn main() {
    rpath::main();
    println!("cargo:rerun-if-changed=src/jit_shim.cpp");
    println!("cargo:rerun-if-changed=src/copy_shim.cpp");
    println!("cargo:rerun-if-changed=src/shim_errors.h");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB unset)");
    };
    let root = std::path::PathBuf::from(lib)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let include = root.join("include");
    // torch-sys's default for every libtorch from PyTorch 2.x wheels.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("src/jit_shim.cpp")
        .file("src/copy_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("sgdwalk_jit");
}
