//! The `uota` command.

fn main() {
    std::process::exit(uota::cli::run(std::env::args_os()));
}
