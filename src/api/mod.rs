//! The HTTP API, versioned under `/api/v1`, plus `GET /metrics`.
//!
//! Every error is JSON, `{"error": "...", "details": [...]}`, with a 4xx for
//! anything the caller can fix. Input is validated whole before anything
//! changes, so a bad request never leaves half of itself behind.
//!
//! The dashboard ([`dashboard`]) is served at `/` and `/ui/`; what it
//! reads beyond the plain resources is in `views`.
//!
//! Every write needs a bearer token with the operator role or above; reads
//! need a viewer token unless `[auth] anonymous_read` (the default). Health
//! and metrics stay open for monitoring. The token's name is who acts.

pub mod auth;
pub mod dashboard;
pub mod listen;
mod views;

use crate::common::HumanDuration;
use crate::pipeline::{AlarmBook, Engine, LiveState};
use crate::plant::Plant;
use crate::source::{Router as SampleRouter, http as push};
use crate::store::{AlarmAction, AlarmQuery, Store, StoreError};
use crate::telemetry::{Exposition, Metrics};
use auth::{AuthConfig, Denied, Identity, Role, Tokens};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use usan_core::alarm::AlarmState;
use usan_core::model::Timestamp;

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address; the `--listen` flag overrides it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Samples stamped later than now plus this are refused.
    #[serde(default = "default_max_future")]
    pub max_future: HumanDuration,
    /// Most samples in one push.
    #[serde(default = "default_max_batch_samples")]
    pub max_batch_samples: usize,
    /// Connections served at once; more wait until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request's headers must arrive within this (idle keep-alive connections close after it).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// A request (its body included) must be answered within this, else 408.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// Most points (or rows) one history query returns; longer ranges are
    /// folded into this many equal-time buckets as they are read.
    #[serde(default = "default_max_query_points")]
    pub max_query_points: usize,
    /// Most findings or alarms one list returns.
    #[serde(default = "default_max_list_items")]
    pub max_list_items: usize,
    /// Longest note or comment on an alarm or maintenance window, in bytes.
    #[serde(default = "default_max_note_bytes")]
    pub max_note_bytes: usize,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_max_future() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_max_batch_samples() -> usize {
    100_000
}
fn default_max_connections() -> usize {
    1024
}
fn default_header_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_max_query_points() -> usize {
    100_000
}
fn default_max_list_items() -> usize {
    10_000
}
fn default_max_note_bytes() -> usize {
    4096
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            max_future: default_max_future(),
            max_batch_samples: default_max_batch_samples(),
            max_connections: default_max_connections(),
            header_timeout: default_header_timeout(),
            request_timeout: default_request_timeout(),
            max_query_points: default_max_query_points(),
            max_list_items: default_max_list_items(),
            max_note_bytes: default_max_note_bytes(),
        }
    }
}

impl ServerConfig {
    /// The connection and request bounds of [`listen::serve`].
    #[must_use]
    pub fn limits(&self) -> listen::Limits {
        listen::Limits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout.0,
            request_timeout: self.request_timeout.0,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    plant: Arc<Plant>,
    store: Arc<dyn Store>,
    router: SampleRouter,
    live: Arc<LiveState>,
    live_frames: Arc<crate::pipeline::LiveFrames>,
    live_events: tokio::sync::broadcast::Sender<Arc<[crate::sink::Event]>>,
    alarms: Arc<AlarmBook>,
    metrics: Arc<Metrics>,
    server: ServerConfig,
    tokens: Arc<Tokens>,
    sinks: tokio::sync::mpsc::Sender<Vec<crate::sink::Event>>,
    push_enabled: bool,
    gauges: Arc<dyn Fn() -> Vec<(&'static str, &'static str, f64)> + Send + Sync>,
    started: std::time::Instant,
    /// Set when the server stops: live streams end, so the graceful
    /// shutdown does not wait for a dashboard left open.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl ApiState {
    /// The API's view of a running engine, served as `server` says, to the
    /// tokens of `auth`.
    #[must_use]
    pub fn new(engine: &Engine, server: &ServerConfig, auth: &AuthConfig) -> Self {
        let router = engine.router.clone();
        let store_queue_probe = engine.store_queue_depth_probe();
        let plant = engine.plant.clone();
        let alarms = engine.alarms.clone();
        let worker_router = router.clone();
        let gauges = Arc::new(move || {
            vec![
                ("usan_worker_queue_depth", "Batches waiting for the asset workers", worker_router.queued() as f64),
                ("usan_store_queue_depth", "Batches waiting for the store writer", store_queue_probe() as f64),
                ("usan_assets", "Configured assets", plant.assets.len() as f64),
                ("usan_open_alarms", "Alarms raised or acknowledged, not cleared", alarms.open_count() as f64),
            ]
        });
        ApiState {
            plant: engine.plant.clone(),
            store: engine.store.clone(),
            router,
            live: engine.live.clone(),
            live_frames: engine.live_frames.clone(),
            live_events: engine.live_events.clone(),
            alarms: engine.alarms.clone(),
            metrics: engine.metrics.clone(),
            server: server.clone(),
            tokens: Arc::new(Tokens::new(auth)),
            sinks: engine.sink_sender(),
            push_enabled: engine.accepts_pushed_samples,
            gauges,
            started: std::time::Instant::now(),
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// End every live stream (`/api/v1/stream`) now and refuse new ones:
    /// call before a graceful shutdown, which waits for open connections.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<String>,
}

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECONDS: u64 = 1;

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), details: Vec::new() }
    }

    /// The engine cannot take the request now (storage full or failing,
    /// shutting down): 503 with Retry-After.
    fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "details": self.details });
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let retry = [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())];
            return (self.status, retry, Json(body)).into_response();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchAlarm(_) | StoreError::NoSuchWindow(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            StoreError::Transition(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            other => {
                tracing::error!("store error in API: {other}");
                ApiError::unavailable("the store cannot answer now; see the server log")
            }
        }
    }
}

/// A path parameter whose rejection (a malformed id) is the API's JSON error.
pub(crate) struct PathParam<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("worker failed: {e}")))?
        .map_err(ApiError::from)
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        let status = match denied {
            Denied::Role { .. } | Denied::CrossSite => StatusCode::FORBIDDEN,
            Denied::NoToken(_) | Denied::BadToken => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, denied.to_string())
    }
}

/// The dashboard's login cookie: the token itself, `HttpOnly` and
/// `SameSite=Strict`, so page scripts cannot read it and other sites cannot send it.
pub const SESSION_COOKIE: &str = "usan_token";
/// The header the dashboard sends with every write: a cookie-authenticated
/// write without it is refused (a second guard against cross-site requests).
pub const REQUEST_HEADER: &str = "x-usan-request";

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn session_cookie(request: &Request) -> Option<&str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Let a request through when its token allows it (writes: operator; reads:
/// viewer or anonymous; health, metrics, login and the dashboard's files:
/// anyone), recording who sent it. The token comes from the
/// `Authorization: Bearer` header or, for the dashboard, its login cookie.
async fn gate(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let open = path == "/api/v1/health" || path == "/metrics" || path == "/" || path.starts_with("/ui/");
    if open {
        return next.run(request).await;
    }
    if path == "/api/v1/session" {
        // Logging in and out needs no token; asking who one is never fails.
        let token = bearer(&request).or_else(|| session_cookie(&request)).map(str::to_string);
        if let Ok(Some(identity)) = state.tokens.check(token.as_deref(), Role::Viewer) {
            request.extensions_mut().insert(identity);
        }
        return next.run(request).await;
    }
    let write = !matches!(*request.method(), Method::GET | Method::HEAD);
    let needs = if write { Role::Operator } else { Role::Viewer };
    let token = match (bearer(&request), session_cookie(&request)) {
        (Some(token), _) => Ok(Some(token)),
        (None, Some(_)) if write && !request.headers().contains_key(REQUEST_HEADER) => Err(Denied::CrossSite),
        (None, cookie) => Ok(cookie),
    };
    match token.and_then(|token| state.tokens.check(token, needs)) {
        Ok(identity) => {
            if let Some(identity) = identity {
                request.extensions_mut().insert(identity);
            }
            next.run(request).await
        }
        Err(denied) => {
            let unauthorized = matches!(denied, Denied::NoToken(_) | Denied::BadToken);
            let mut response = ApiError::from(denied).into_response();
            if unauthorized {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// The full router.
pub fn router(state: ApiState) -> Router {
    let max_body = state.server.max_body_bytes;
    let gatekeeper = from_fn_with_state(state.clone(), gate);
    Router::new()
        .route("/", get(dashboard::index))
        .route("/ui/{*path}", get(dashboard::asset))
        .route("/api/v1/health", get(health))
        .route("/api/v1/session", get(views::whoami).post(views::login).delete(views::logout))
        .route("/api/v1/overview", get(views::overview))
        .route("/api/v1/stream", get(views::stream))
        .route("/api/v1/assets", get(assets))
        .route("/api/v1/assets/{id}", get(asset))
        .route("/api/v1/assets/{id}/rul", get(asset_rul))
        .route("/api/v1/assets/{id}/series", get(views::series))
        .route("/api/v1/assets/{id}/spc/{signal}", get(views::control_chart))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/alarms/summary", get(views::alarm_summary))
        .route("/api/v1/alarms/{id}", get(alarm))
        .route("/api/v1/alarms/{id}/{action}", post(alarm_action))
        .route("/api/v1/maintenance", get(maintenance).post(declare_maintenance))
        .route("/api/v1/maintenance/{id}/end", post(end_maintenance))
        .route("/api/v1/samples", get(samples).post(push_samples))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see /api/v1/health") })
        .layer(gatekeeper)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn health(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "assets": state.plant.assets.len(),
        "uptime_s": state.started.elapsed().as_secs(),
    }))
}

#[derive(Serialize)]
struct AssetView {
    id: String,
    site: String,
    line: String,
    health: &'static str,
    frames: u64,
    last_ts: Option<Timestamp>,
    signals: Vec<usan_core::model::SignalSpec>,
    detectors: Vec<crate::pipeline::DetectorLive>,
    rul: Vec<crate::pipeline::rul::RulLive>,
}

fn asset_view(state: &ApiState, index: usize) -> AssetView {
    let asset = &state.plant.assets[index];
    let live = state.live.get(index).unwrap_or_default();
    AssetView {
        id: asset.path.asset.clone(),
        site: asset.path.site.clone(),
        line: asset.path.line.clone(),
        health: live.health(),
        frames: live.frames,
        last_ts: live.last_ts,
        signals: asset.signals.clone(),
        detectors: live.detectors,
        rul: live.rul,
    }
}

async fn assets(State(state): State<ApiState>) -> Json<Vec<AssetView>> {
    Json((0..state.plant.assets.len()).map(|i| asset_view(&state, i)).collect())
}

async fn asset(State(state): State<ApiState>, PathParam(id): PathParam<String>) -> ApiResult<Json<AssetView>> {
    let index = asset_index(&state, &id)?;
    Ok(Json(asset_view(&state, index)))
}

/// The remaining-useful-life estimates of one asset (one per `[[rul]]`
/// model watching it; none when no model does).
#[derive(Serialize)]
struct RulView {
    asset: String,
    estimates: Vec<crate::pipeline::rul::RulLive>,
}

async fn asset_rul(State(state): State<ApiState>, PathParam(id): PathParam<String>) -> ApiResult<Json<RulView>> {
    let index = asset_index(&state, &id)?;
    Ok(Json(RulView { asset: id, estimates: state.live.get(index).unwrap_or_default().rul }))
}

/// The index of asset `id`, or 404.
fn asset_index(state: &ApiState, id: &str) -> ApiResult<usize> {
    state
        .plant
        .asset_index
        .get(id)
        .copied()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown asset `{id}`")))
}

fn check_asset(state: &ApiState, asset: Option<&str>) -> ApiResult<()> {
    asset.map_or(Ok(()), |a| asset_index(state, a).map(|_| ()))
}

/// A time in a query string: RFC 3339 or epoch milliseconds.
fn parse_query_time(name: &str, value: Option<&str>) -> ApiResult<Option<Timestamp>> {
    let Some(value) = value else { return Ok(None) };
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(Some(Timestamp(ms)));
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| Some(Timestamp(t.timestamp_millis())))
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("`{name}` must be RFC 3339 or epoch milliseconds")))
}

/// `from` and `to` of a query (open ends: the whole history), in order.
fn time_range(from: Option<&str>, to: Option<&str>) -> ApiResult<(Timestamp, Timestamp)> {
    let from = parse_query_time("from", from)?.unwrap_or(Timestamp(i64::MIN));
    let to = parse_query_time("to", to)?.unwrap_or(Timestamp(i64::MAX));
    if from > to {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "`from` is after `to`"));
    }
    Ok((from, to))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingsQuery {
    asset: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn findings(
    State(state): State<ApiState>,
    query: Result<Query<FindingsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<usan_core::model::Finding>>> {
    let Query(q) = query?;
    check_asset(&state, q.asset.as_deref())?;
    let since = parse_query_time("since", q.since.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, state.server.max_list_items);
    let store = state.store.clone();
    Ok(Json(blocking(move || store.findings(q.asset.as_deref(), since, limit)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmsQuery {
    asset: Option<String>,
    /// `open` (default), `raised`, `acknowledged`, `assigned`, `cleared` or `all`.
    state: Option<String>,
    limit: Option<usize>,
}

async fn alarms(
    State(state): State<ApiState>,
    query: Result<Query<AlarmsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<usan_core::alarm::Alarm>>> {
    let Query(q) = query?;
    check_asset(&state, q.asset.as_deref())?;
    let states = match q.state.as_deref().unwrap_or("open") {
        "open" => AlarmState::OPEN.to_vec(),
        "all" => Vec::new(),
        other => vec![AlarmState::parse(other).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "`state` is one of open, raised, acknowledged, assigned, cleared, all",
            )
        })?],
    };
    let query =
        AlarmQuery { asset: q.asset, states, limit: q.limit.unwrap_or(100).clamp(1, state.server.max_list_items) };
    let store = state.store.clone();
    Ok(Json(blocking(move || store.alarms(&query)).await?))
}

async fn alarm(
    State(state): State<ApiState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Json<usan_core::alarm::Alarm>> {
    let store = state.store.clone();
    blocking(move || store.alarm(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no alarm {id}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmActionBody {
    /// Why, or what was done (the comment itself for `comment`).
    #[serde(default)]
    note: String,
    /// `assign`: who is to fix it.
    #[serde(default)]
    to: Option<String>,
    /// `clear`: why it happened.
    #[serde(default)]
    cause: Option<String>,
}

/// The alarm actions of the API, by path.
#[derive(Debug, Clone, Copy)]
enum Act {
    Acknowledge,
    Assign,
    Comment,
    Clear,
}

/// The body's fields as the action needs them: every problem at once.
fn check_action(act: Act, body: &AlarmActionBody, max_note_bytes: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
    if body.note.len() > max_note_bytes {
        problems.push(format!("`note` is at most {max_note_bytes} bytes (`[server] max_note_bytes`)"));
    }
    if body.to.as_ref().is_some_and(|t| t.len() > 256) || body.cause.as_ref().is_some_and(|c| c.len() > 1024) {
        problems.push("`to` is at most 256 and `cause` 1024 bytes".to_string());
    }
    match act {
        Act::Assign if blank(&body.to) => problems.push("`to` must name who is to fix it".to_string()),
        Act::Comment if body.note.trim().is_empty() => problems.push("`note` must say something".to_string()),
        Act::Clear if blank(&body.cause) => {
            problems.push("`cause` must say why it happened (\"unknown\" if nobody knows)".to_string());
        }
        _ => {}
    }
    if body.to.is_some() && !matches!(act, Act::Assign) {
        problems.push("`to` belongs to assign only".to_string());
    }
    if body.cause.is_some() && !matches!(act, Act::Clear) {
        problems.push("`cause` belongs to clear only".to_string());
    }
    problems
}

async fn transition(
    state: ApiState,
    id: i64,
    who: Identity,
    body: Result<Json<AlarmActionBody>, JsonRejection>,
    act: Act,
) -> ApiResult<Json<usan_core::alarm::Alarm>> {
    let Json(body) = body?;
    let problems = check_action(act, &body, state.server.max_note_bytes);
    if !problems.is_empty() {
        let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the alarm action is incomplete");
        error.details = problems;
        return Err(error);
    }
    let alarms = state.alarms.clone();
    let alarm = blocking(move || {
        let action = match act {
            Act::Acknowledge => AlarmAction::Acknowledge,
            Act::Assign => AlarmAction::Assign { to: body.to.as_deref().unwrap_or_default().trim() },
            Act::Comment => AlarmAction::Comment,
            Act::Clear => AlarmAction::Clear { cause: body.cause.as_deref().map(str::trim) },
        };
        alarms.transition(id, action, &who.name, &body.note)
    })
    .await?;
    // Other systems hear of every step but comments (webhooks, MQTT).
    let event = match act {
        Act::Acknowledge => Some(crate::sink::Event::AlarmAcknowledged(alarm.clone())),
        Act::Assign => Some(crate::sink::Event::AlarmAssigned(alarm.clone())),
        Act::Clear => Some(crate::sink::Event::AlarmCleared(alarm.clone())),
        Act::Comment => None,
    };
    if let Some(event) = event
        && state.sinks.send(vec![event]).await.is_err()
    {
        tracing::warn!("the sinks have stopped; alarm {id}'s change is stored but not sent on");
    }
    Ok(Json(alarm))
}

/// `POST /api/v1/alarms/{id}/{acknowledge|assign|comment|clear}`.
async fn alarm_action(
    State(state): State<ApiState>,
    PathParam((id, action)): PathParam<(i64, String)>,
    Extension(who): Extension<Identity>,
    body: Result<Json<AlarmActionBody>, JsonRejection>,
) -> ApiResult<Json<usan_core::alarm::Alarm>> {
    let act = match action.as_str() {
        "acknowledge" => Act::Acknowledge,
        "assign" => Act::Assign,
        "comment" => Act::Comment,
        "clear" => Act::Clear,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no alarm action `{action}`: acknowledge, assign, comment or clear"),
            ));
        }
    };
    transition(state, id, who, body, act).await
}

fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_millis())
}

async fn maintenance(State(state): State<ApiState>) -> Json<Vec<usan_core::alarm::MaintenanceWindow>> {
    Json(state.alarms.maintenance(now()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    /// The asset; the whole plant when absent.
    asset: Option<String>,
    /// Start, Unix ms (now when absent).
    from: Option<i64>,
    /// End, Unix ms; or give `duration`.
    to: Option<i64>,
    /// Length, e.g. `2h` or `45m`; or give `to`.
    duration: Option<String>,
    /// What is being done.
    note: String,
}

async fn declare_maintenance(
    State(state): State<ApiState>,
    Extension(who): Extension<Identity>,
    body: Result<Json<MaintenanceBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<usan_core::alarm::MaintenanceWindow>)> {
    let Json(body) = body?;
    let mut problems = Vec::new();
    if let Some(asset) = &body.asset
        && !state.plant.asset_index.contains_key(asset)
    {
        problems.push(format!("asset `{asset}` is not configured"));
    }
    let max_note = state.server.max_note_bytes;
    if body.note.trim().is_empty() || body.note.len() > max_note {
        problems
            .push(format!("`note` must say what is being done (at most {max_note} bytes, `[server] max_note_bytes`)"));
    }
    let starts = body.from.unwrap_or_else(|| now().0);
    let ends = match (body.to, body.duration.as_deref()) {
        (Some(to), None) => Some(to),
        (None, Some(text)) => match humantime::parse_duration(text) {
            Ok(d) => Some(starts.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
            Err(e) => {
                problems.push(format!("`duration` `{text}`: {e}"));
                None
            }
        },
        _ => {
            problems.push("give `to` (Unix ms) or `duration` (like \"2h\"), one of them".to_string());
            None
        }
    };
    if ends.is_some_and(|ends| ends <= starts) {
        problems.push("the window must end after it starts".to_string());
    }
    if !problems.is_empty() {
        let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the maintenance window is incomplete");
        error.details = problems;
        return Err(error);
    }
    let window = usan_core::alarm::MaintenanceWindow {
        id: 0,
        asset: body.asset,
        starts: Timestamp(starts),
        ends: Timestamp(ends.unwrap_or(starts)),
        by: who.name,
        note: body.note.trim().to_string(),
    };
    let alarms = state.alarms.clone();
    let window = blocking(move || alarms.declare_maintenance(window)).await?;
    Ok((StatusCode::CREATED, Json(window)))
}

async fn end_maintenance(
    State(state): State<ApiState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Json<usan_core::alarm::MaintenanceWindow>> {
    let alarms = state.alarms.clone();
    Ok(Json(blocking(move || alarms.end_maintenance(id, now())).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplesQuery {
    asset: String,
    signal: String,
    from: Option<String>,
    to: Option<String>,
    max_points: Option<usize>,
}

async fn samples(
    State(state): State<ApiState>,
    query: Result<Query<SamplesQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(q) = query?;
    let index = asset_index(&state, &q.asset)?;
    if !state.plant.assets[index].signal_index.contains_key(&q.signal) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("asset `{}` has no signal `{}`", q.asset, q.signal)));
    }
    let (from, to) = time_range(q.from.as_deref(), q.to.as_deref())?;
    let max_points = q.max_points.unwrap_or(1000).clamp(1, state.server.max_query_points);
    let store = state.store.clone();
    let (asset, signal) = (q.asset.clone(), q.signal.clone());
    let points = blocking(move || store.series(&asset, &signal, from, to, max_points)).await?;
    let downsampled = points.iter().any(|p| p.count > 1);
    Ok(Json(json!({ "asset": q.asset, "signal": q.signal, "downsampled": downsampled, "points": points })))
}

async fn push_samples(
    State(state): State<ApiState>,
    body: Result<Json<push::PushRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if !state.push_enabled {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "push is off: add a [[sources]] entry with type = \"http\""));
    }
    let Json(request) = body.inspect_err(|_| {
        state.metrics.http_rejected.inc();
    })?;
    let now = chrono::Utc::now().timestamp_millis();
    let latest = Timestamp(now + state.server.max_future.0.as_millis() as i64);
    let batches = push::validate(request, &state.plant, latest, state.server.max_batch_samples).map_err(|details| {
        state.metrics.http_rejected.inc();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "the batch was refused; nothing was accepted".into(),
            details,
        }
    })?;
    let accepted: usize = batches.iter().map(crate::source::Batch::sample_count).sum();
    let mut receipt = state.router.submit(batches).await.map_err(|e| ApiError::unavailable(e.to_string()))?;
    receipt.durable().await.map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": accepted }))))
}

/// The engine's metrics in the format the scraper's `Accept` asks for.
async fn metrics(State(state): State<ApiState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let gauges = (state.gauges)();
    let format = Exposition::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    ([(header::CONTENT_TYPE, format.content_type())], state.metrics.render(&gauges, format))
}
