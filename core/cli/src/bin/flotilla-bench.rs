fn main() -> std::process::ExitCode {
    flotilla_cli::bench::main()
}
