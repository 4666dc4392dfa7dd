fn main() -> std::process::ExitCode {
    wazion_bridge::cli::main()
}
