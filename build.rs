//! Says which of the real parts the tests drive are on this machine, so that
//! a test without its part is reported as ignored, with the reason, in the
//! summary at the end of `cargo test`, instead of passing without testing:
//!
//! - `handoff_no_postgres`: no Postgres server binaries (the Postgres tests
//!   start their own cluster) and no `HANDOFF_TEST_PG_URL` and
//!   `HANDOFF_TEST_PG_DIR` naming one.
//! - `handoff_no_chromium`: no `/usr/bin/chromium` and `/usr/bin/chromedriver`.
//! - `handoff_no_nvim`: no `/usr/bin/nvim` (the language server's test in a
//!   real editor).
//!
//! CI installs them all, and the tests there refuse to be ignored.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(handoff_no_postgres)");
    println!("cargo::rustc-check-cfg=cfg(handoff_no_chromium)");
    println!("cargo::rustc-check-cfg=cfg(handoff_no_nvim)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=HANDOFF_TEST_PG_URL");
    println!("cargo::rerun-if-env-changed=HANDOFF_TEST_PG_DIR");
    // Installing a Debian package changes this file: look again then.
    if Path::new("/var/lib/dpkg/status").exists() {
        println!("cargo::rerun-if-changed=/var/lib/dpkg/status");
    }
    let named = std::env::var_os("HANDOFF_TEST_PG_URL").is_some()
        && std::env::var_os("HANDOFF_TEST_PG_DIR").is_some();
    let postgres = named
        || std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
            versions
                .flatten()
                .any(|v| v.path().join("bin/initdb").exists())
        });
    if !postgres {
        println!("cargo::rustc-cfg=handoff_no_postgres");
    }
    let chromium =
        Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    if !chromium {
        println!("cargo::rustc-cfg=handoff_no_chromium");
    }
    if !Path::new("/usr/bin/nvim").exists() {
        println!("cargo::rustc-cfg=handoff_no_nvim");
    }
}
