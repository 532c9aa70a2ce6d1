fn main() {
    std::process::exit(downpour_cli::main())
}
