fn main() -> std::process::ExitCode {
    vcell::cli::main()
}
