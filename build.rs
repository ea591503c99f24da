//! Fetches the dashboard's third-party front-end code (uPlot), pinned in
//! `web/package-lock.json`, with `npm ci` into `OUT_DIR`, so the binary
//! embeds it and the dashboard works air-gapped. `USAN_WEB_VENDOR=DIR`
//! names a folder that already holds `uPlot.iife.min.js` and
//! `uPlot.min.css` (an offline build); nothing else in the build needs npm.

use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: [&str; 2] = ["uPlot.iife.min.js", "uPlot.min.css"];

fn main() {
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    println!("cargo:rerun-if-env-changed=USAN_WEB_VENDOR");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let vendor = out.join("web-vendor");
    std::fs::create_dir_all(&vendor).expect("cannot create OUT_DIR/web-vendor");
    let source = match std::env::var_os("USAN_WEB_VENDOR") {
        Some(dir) => PathBuf::from(dir),
        None => npm_ci(&out),
    };
    for file in FILES {
        let from = source.join(file);
        if let Err(e) = std::fs::copy(&from, vendor.join(file)) {
            panic!("cannot copy {}: {e}", from.display());
        }
    }
}

/// `npm ci` of `web/`'s lock file in `OUT_DIR/web`; returns uPlot's `dist`.
fn npm_ci(out: &Path) -> PathBuf {
    let web = out.join("web");
    std::fs::create_dir_all(&web).expect("cannot create OUT_DIR/web");
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(Path::new("web").join(file), web.join(file)).expect("cannot copy web/package files");
    }
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let status = Command::new(npm)
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&web)
        .status();
    match status {
        Ok(s) if s.success() => web.join("node_modules/uplot/dist"),
        Ok(s) => panic!(
            "`npm ci` for the dashboard's chart library failed ({s}); \
             or build with USAN_WEB_VENDOR=DIR holding {FILES:?}"
        ),
        Err(e) => panic!(
            "the dashboard embeds its chart library from npm, but `{npm}` cannot run ({e}): \
             install Node.js, or build with USAN_WEB_VENDOR=DIR holding {FILES:?}"
        ),
    }
}
