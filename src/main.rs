//! The `handoff` binary: everything lives in the library; see [`handoff::cli`].

fn main() {
    std::process::exit(handoff::cli::run(std::env::args_os()));
}
