//! End-to-end tests: real guest components, a real listener on 127.0.0.1, a
//! real HTTP client, and the real `wasmgate` binary for the CLI.
//!
//! One test binary (modules below) so the wasmtime-heavy crate is linked once.

#[cfg(feature = "aws")]
mod aws;
mod bindings;
mod cli;
mod common;
mod ecosystem;
mod faults;
mod fuzz;
mod hardening;
#[cfg(feature = "lambda")]
mod lambda;
#[cfg(feature = "aws")]
mod moto;
mod operations;
mod outbound;
mod pointer;
mod serve;
mod tenants;
