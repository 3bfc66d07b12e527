//! The web dashboard: one page and its script and style sheet, embedded in the binary and
//! served by the agent's API under `/dashboard/` (no CDN, works offline).
//!
//! The page holds no data: its script reads the same JSON routes the CLI does (`/v1/nodes`,
//! `/v1/tasks`, `/v1/mesos/tasks`, `/v2/apps`, `/v1/vips`, `/v1/overlay`, `/v1/dns/...`) with
//! the viewer's credential, which it keeps in the tab's session storage and sends as an
//! `Authorization` header, never as a cookie: another site cannot make the browser send it
//! (no CSRF), and the `read` role is enough for every view. Plain JavaScript without a
//! framework or a build step: four tables and a form do not need one, the whole page is a
//! few tens of kilobytes, and nothing is fetched from anywhere but this agent. Values are
//! put in the page as text only, and the content security policy allows scripts from this
//! origin only, so a task or label name cannot run as script in an operator's browser.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The routes it serves, open (they carry no data): listed in the API's open routes.
pub const ROUTES: &[&str] = &[
    "/",
    "/dashboard",
    "/dashboard/",
    "/dashboard/app.js",
    "/dashboard/style.css",
    "/dashboard/icon.svg",
];

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const ICON: &str = include_str!("assets/icon.svg");

/// What every answer carries: scripts, styles and requests of this origin only, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Revalidated each time: an upgraded agent serves its own script at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The agent API's reads the dashboard makes (besides the scheduler's own `/v2` and
/// `/cluster/v1`): what a master's scheduler API also answers from its own agent, so the
/// dashboard works there too (see [`node_reads`]).
const NODE_READS: &[&str] = &[
    "/v1/version",
    "/v1/nodes",
    "/v1/tasks",
    "/v1/mesos/tasks",
    "/v1/vips",
    "/v1/overlay",
    "/v1/dns/",
    "/v1/auth/whoami",
];

/// Whether a `method path` request to a scheduler API may be answered by the master's own
/// agent API: the dashboard and the node reads it makes, nothing that changes anything.
pub fn is_node_read(method: &axum::http::Method, path: &str) -> bool {
    let read = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    read && (path == "/"
        || path == "/dashboard"
        || path.starts_with("/dashboard/")
        || NODE_READS
            .iter()
            .any(|r| path == *r || (r.ends_with('/') && path.starts_with(r))))
}

/// A fallback for a scheduler API: node reads ([`is_node_read`]) go to `agent` (the agent
/// API's router, set once it is built, with its own credential check), anything else is a
/// 404 as before.
pub fn node_reads(
    agent: std::sync::Arc<std::sync::OnceLock<Router>>,
) -> impl Fn(axum::extract::Request) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |request: axum::extract::Request| {
        let agent = agent.get().cloned();
        Box::pin(async move {
            use tower::ServiceExt as _;
            match agent {
                Some(router) if is_node_read(request.method(), request.uri().path()) => {
                    router.oneshot(request).await.unwrap_or_else(|e| match e {})
                }
                _ => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        })
    }
}

/// The dashboard's routes, to be merged into an API router (state-free).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route(
            "/dashboard/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/dashboard/icon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // Every asset the page names is served here, and nothing points off this origin.
        for name in ["style.css", "app.js", "icon.svg"] {
            assert!(INDEX.contains(&format!("\"{name}\"")), "{name} not linked");
            assert!(ROUTES.contains(&format!("/dashboard/{name}").as_str()));
        }
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        // The SVG names its namespace, and nothing else off this origin.
        assert_eq!(ICON.matches("http").count(), 1);
        // Values reach the page as text only.
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("insertAdjacentHTML"));
    }
}
