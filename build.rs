//! Fetches the dashboard's third-party front-end code (uPlot), pinned in
//! `web/package-lock.json`, with `npm ci` into `OUT_DIR`, so the binary
//! embeds it and the dashboard works air-gapped. `USAN_WEB_VENDOR=DIR`
//! names a folder that already holds `uPlot.iife.min.js` and
//! `uPlot.min.css` (an offline build); nothing else in the build needs npm.
//! Without npm the build still succeeds, with a warning, and the dashboard
//! shows its tables without charts; under CI (`CI` set) that is an error.

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
    println!("cargo:rerun-if-env-changed=CI");
    let source = match std::env::var_os("USAN_WEB_VENDOR") {
        Some(dir) => PathBuf::from(dir),
        None => match npm_ci(&out) {
            Ok(dist) => dist,
            Err(why) if std::env::var_os("CI").is_none() => {
                println!("cargo:warning=the dashboard is built without its charts: {why}");
                std::fs::write(vendor.join(FILES[0]), "/* uPlot not embedded: built without npm */\n")
                    .expect("cannot write the chart placeholder");
                std::fs::write(vendor.join(FILES[1]), "").expect("cannot write the chart placeholder");
                return;
            }
            Err(why) => panic!("{why}"),
        },
    };
    for file in FILES {
        let from = source.join(file);
        if let Err(e) = std::fs::copy(&from, vendor.join(file)) {
            panic!("cannot copy {}: {e}", from.display());
        }
    }
}

/// `npm ci` of `web/`'s lock file in `OUT_DIR/web`; uPlot's `dist`, or why not.
fn npm_ci(out: &Path) -> Result<PathBuf, String> {
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
        Ok(s) if s.success() => Ok(web.join("node_modules/uplot/dist")),
        Ok(s) => Err(format!(
            "`npm ci` for the chart library failed ({s}); fix npm's access to its registry, \
             or build with USAN_WEB_VENDOR=DIR holding {FILES:?}"
        )),
        Err(e) => Err(format!(
            "`{npm}` cannot run ({e}): install Node.js, or build with USAN_WEB_VENDOR=DIR holding {FILES:?}"
        )),
    }
}
