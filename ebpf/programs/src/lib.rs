//! Host-side placeholder: the programs live in `main.rs` and build only for `bpfel-unknown-none`.
//! dcnet-lb depends on this crate at build time so that cargo rebuilds it when they change.
#![no_std]
