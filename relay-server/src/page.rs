//! The browser page, served at `/`: its HTML, script, Service Worker and WebAssembly are
//! compiled into the relay (nothing comes from anywhere else at run time), each with a
//! Content-Security-Policy that lets the page load and connect to this origin only.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// Only this origin: scripts, styles, the WebSocket endpoints (`'self'` covers `ws:`/`wss:`
/// of the same host), the Service Worker and the download frame; WebAssembly needs
/// `'wasm-unsafe-eval'` to compile. No inline script, no plugin, no other site framing it.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'self'";

struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        mime: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        path: "/sw.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/sw.js"),
    },
    Asset {
        path: "/style.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../web/style.css"),
    },
    Asset {
        path: "/pkg/convey_web.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/pkg/convey_web.js"),
    },
    Asset {
        path: "/pkg/convey_web_bg.wasm",
        mime: "application/wasm",
        body: include_bytes!("../web/pkg/convey_web_bg.wasm"),
    },
];

fn respond(asset: &'static Asset) -> Response {
    let mut resp = asset.body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A new relay version serves its new page at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The page's routes.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { respond(asset) }))
    })
}
