//! Puts `git describe` into the version when the source is a git checkout.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    // sqlx::migrate! embeds these at compile time; without this line a new migration would
    // not rebuild the crate (the lines above replace cargo's default of "any file changed").
    println!("cargo:rerun-if-changed=migrations");
    let describe = Command::new("git")
        .args(["describe", "--tags", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(d) = describe {
        let version = env!("CARGO_PKG_VERSION");
        println!("cargo:rustc-env=MAILCTL_GIT_DESCRIBE={version} ({d})");
    }
}
