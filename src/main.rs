//! The `vcell` binary: anyhow at the edge, everything else in the library and `cli`.

/// mimalloc instead of glibc's malloc: the evaluation allocates and frees many multi-megabyte buffers per batch,
/// which glibc maps and unmaps each time (page faults and zeroing were ~10 % of an eval's CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vcell::cli::main()
}
