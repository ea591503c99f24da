//! The web dashboard: static files embedded in the binary, so `usan serve`
//! and `usan demo` serve it at `/` with no network and no front-end step.
//!
//! Our own code is plain HTML, CSS and ES modules in `web/` (no build step);
//! the one third-party piece, the uPlot chart library, is pinned in
//! `web/package-lock.json` and embedded by `build.rs`. The page draws every
//! text through `textContent` (never `innerHTML`), and the strict Content
//! Security Policy below refuses inline and foreign scripts, so an asset
//! name or an alarm note can never run as code.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// Our front-end files.
#[derive(RustEmbed)]
#[folder = "web/"]
#[exclude = "node_modules/*"]
#[exclude = "package*.json"]
struct Web;

/// Third-party front-end files, installed from npm by `build.rs`.
#[derive(RustEmbed)]
#[folder = "$OUT_DIR/web-vendor/"]
struct Vendor;

/// Scripts and styles only from this server, no inline script, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// `GET /`: the single page (its router reads the URL's `#` part).
pub async fn index() -> Response {
    file(Web::get("index.html"), false)
}

/// `GET /ui/{*path}`: the page's scripts, styles and the vendored chart library.
pub async fn asset(Path(path): Path<String>) -> Response {
    match path.strip_prefix("vendor/") {
        Some(vendored) => file(Vendor::get(vendored), true),
        None => file(Web::get(&path), false),
    }
}

fn file(found: Option<rust_embed::EmbeddedFile>, immutable: bool) -> Response {
    let Some(found) = found else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mime = found.metadata.mimetype().to_string();
    let etag = format!("\"{}\"", hex(&found.metadata.sha256_hash()[..12]));
    let mut response = (StatusCode::OK, found.data.into_owned()).into_response();
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, &mime);
    set(header::ETAG, &etag);
    // Our files change with the binary: revalidate. The pinned library never changes.
    set(header::CACHE_CONTROL, if immutable { "public, max-age=86400" } else { "no-cache" });
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_code_and_the_chart_library_are_embedded() {
        for name in ["index.html", "app.js", "charts.js", "app.css", "i18n.js"] {
            assert!(Web::get(name).is_some(), "{name} is not embedded");
        }
        let library = Vendor::get("uPlot.iife.min.js").expect("uPlot is embedded");
        assert!(std::str::from_utf8(&library.data).unwrap().contains("uPlot"));
        assert!(Vendor::get("uPlot.min.css").is_some());
        assert!(Web::get("package.json").is_none(), "npm files are not served");
    }

    #[test]
    fn the_page_loads_no_inline_script() {
        let page = Web::get("index.html").unwrap();
        let page = std::str::from_utf8(&page.data).unwrap();
        for line in page.lines().filter(|l| l.contains("<script")) {
            assert!(line.contains("src=\"/ui/"), "inline or foreign script: {line}");
        }
        assert!(!page.contains("style=\""), "inline style would break the CSP");
    }
}
