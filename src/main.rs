//! The `vcell` binary: anyhow at the edge, everything else in the library and `cli`.
fn main() -> std::process::ExitCode {
    vcell::cli::main()
}
