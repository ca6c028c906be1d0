fn main() -> std::process::ExitCode {
    paystar_sync::cli::main()
}
