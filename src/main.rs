//! The `handoff` binary: everything lives in the library; see [`handoff::cli`].

/// A batch makes many small allocations, across runs that interleave on one
/// thread; see docs/performance.md for what this allocator saves.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(handoff::cli::main(std::env::args_os().collect()));
}
