fn main() -> std::process::ExitCode {
    flotilla_core::cli::main()
}
