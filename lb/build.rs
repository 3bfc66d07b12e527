//! Builds the kernel programs (`ebpf/programs`) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker (see scripts/setup.sh), leaving the object in OUT_DIR for
//! `include_bytes_aligned!`. Set AYA_BUILD_SKIP=1 to skip it where no eBPF toolchain exists.
fn main() -> anyhow::Result<()> {
    // aya-build re-emits every line the nested cargo prints as a cargo warning; keep only its
    // diagnostics. SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    // The nested build fetches core's own dependencies (-Z build-std) on a clean machine: a
    // registry hiccup there should not fail the whole build, so a failed build is tried once
    // more. The first error stays visible as a warning.
    build().or_else(|first| {
        println!("cargo:warning=building the eBPF programs failed, trying once more: {first:#}");
        build()
    })
}

fn build() -> anyhow::Result<()> {
    let programs = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/programs");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dcnet-ebpf",
            root_dir: programs,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "building the eBPF programs failed: {e:#}\n\
             hint: run scripts/setup.sh (it installs rust-src for nightly and bpf-linker); \
             check free disk space for target/"
        )
    })
}
