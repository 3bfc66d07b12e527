//! The credential check in front of every route of the agent's and the scheduler's HTTP
//! APIs, and the audit of what it refuses.
//!
//! It runs after routing (`Router::route_layer`), so the audit counts refusals by route
//! template (`/v2/apps/{*id}`), never by raw path: a scanner cannot grow the metrics. A few
//! routes stay open (liveness, the version); everything else needs a credential whose role
//! allows the method. The identity is put in the request's extensions for handlers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::log_budget::LogBudget;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dcnet_auth::{Authenticator, Refusal};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::warn;

/// The labels of a refused request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    api: &'static str,
    endpoint: String,
    reason: &'static str,
}

/// Refused requests, counted and logged (at most 20 lines per 10 s).
pub struct Audit {
    refused: Family<RefusedLabels, Counter>,
    log: Mutex<LogBudget>,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            refused: Family::default(),
            log: Mutex::new(LogBudget::new(Duration::from_secs(10), 20)),
        }
    }
}

impl Audit {
    /// Registers `dcnet_http_refused_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_http_refused",
            "HTTP requests refused for want of a valid credential (401) or role (403), by API, route and reason",
            self.refused.clone(),
        );
    }

    /// Counts and (within the rate) logs one refusal.
    fn refused(
        &self,
        api: &'static str,
        endpoint: &str,
        method: &str,
        peer: Option<SocketAddr>,
        refusal: &Refusal,
    ) {
        self.refused
            .get_or_create(&RefusedLabels {
                api,
                endpoint: endpoint.to_owned(),
                reason: refusal.reason,
            })
            .inc();
        let mut budget = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let admit = budget.admit(Instant::now());
        if admit.suppressed > 0 {
            warn!(api, suppressed = admit.suppressed, window = ?budget.window(), "more requests were refused than logged");
        }
        if admit.log {
            let peer = peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
            warn!(api, %peer, %method, endpoint, status = refusal.status, reason = refusal.reason,
                  message = %refusal.message, "request refused");
        }
    }
}

/// What the check needs: which API it guards, the authenticator (`None`: insecure mode, no
/// check), the routes that stay open, and the audit.
#[derive(Clone)]
pub struct Guard {
    pub api: &'static str,
    pub authn: Option<Arc<Authenticator>>,
    pub open: &'static [&'static str],
    pub audit: Arc<Audit>,
}

/// The middleware: see the module's doc.
pub async fn require_credential(
    State(guard): State<Guard>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(authn) = guard.authn.clone() else {
        return next.run(request).await;
    };
    let endpoint = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |m| m.as_str().to_owned(),
    );
    if guard.open.contains(&endpoint.as_str()) {
        return next.run(request).await;
    }
    let method = request.method().as_str().to_owned();
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let now = crate::unix_ms() / 1000;
    let identity = if authn.is_cheap(header.as_deref()) {
        authn.authenticate(header.as_deref(), now)
    } else {
        // An Argon2 hash: off the async workers.
        tokio::task::spawn_blocking(move || authn.authenticate(header.as_deref(), now))
            .await
            .unwrap_or_else(|e| {
                Err(Refusal {
                    status: 500,
                    reason: "internal",
                    message: format!("checking the credential failed: {e}"),
                })
            })
    };
    match identity.and_then(|id| dcnet_auth::authorize(&id, &method).map(|()| id)) {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(refusal) => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            guard
                .audit
                .refused(guard.api, &endpoint, &method, peer, &refusal);
            refusal_response(&refusal)
        }
    }
}

/// A refusal as an HTTP answer: Marathon's `{"message": ...}`, and for a 401 the schemes a
/// client may use.
pub fn refusal_response(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut response = (
        status,
        axum::Json(serde_json::json!({"message": refusal.message, "reason": refusal.reason})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"dcnet\", Basic realm=\"dcnet\""),
        );
    }
    response
}
