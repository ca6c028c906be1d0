//! Names the commit the binary is built from (`paystar-sync --version`,
//! `/health`, `/metrics`, `status`): `git describe` of the checkout, or
//! `PAYSTAR_SYNC_COMMIT` where the source has no Git history (a package build).

// A build script reads its own environment: there is no config to go through.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PAYSTAR_SYNC_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=.git/index");
    let commit = std::env::var("PAYSTAR_SYNC_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args([
                "describe",
                "--always",
                "--dirty",
                "--abbrev=10",
                "--exclude=*",
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|c| !c.is_empty())
    });
    println!(
        "cargo:rustc-env=PAYSTAR_SYNC_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_owned())
    );
}
