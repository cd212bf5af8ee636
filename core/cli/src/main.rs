fn main() -> std::process::ExitCode {
    flotilla_cli::cli::main()
}
