//! Passes the target triple to the code: the engine compiles guests for
//! exactly the triple wasmgate itself was built for (see
//! `runtime/engine.rs`, `portable`), which wasmtime requires to equal the
//! host's.
fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=WASMGATE_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
