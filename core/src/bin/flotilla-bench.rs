fn main() -> std::process::ExitCode {
    flotilla_core::bench::main()
}
