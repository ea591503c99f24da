//! What the dashboard reads besides the plain resources: the login
//! session, a compact plant overview, an asset's history on one time axis,
//! a signal's control chart, and the live stream (server-sent events).

use super::{ApiError, ApiResult, ApiState, PathParam, SESSION_COOKIE, asset_index, blocking, time_range};
use crate::api::auth::{Identity, Role};
use crate::pipeline::SCORE_PREFIX;
use crate::sink::Event as SinkEvent;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::VecDeque;
use std::time::Duration;
use usan_core::spc::capability::{Spec, capability};
use usan_core::spc::chart::{ChartData, ChartKind, ChartSettings, chart};
use usan_core::spc::rules::RuleSet;

/// How long the login cookie lasts.
const SESSION_SECONDS: u32 = 12 * 3600;

/// `GET /api/v1/session`: who the request is, and whether reading needs a login.
pub async fn whoami(State(state): State<ApiState>, who: Option<Extension<Identity>>) -> Json<serde_json::Value> {
    let user = who.map(|Extension(who)| json!({ "name": who.name, "role": who.role.as_str() }));
    Json(json!({ "user": user, "anonymous_read": state.tokens.anonymous_read() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    token: String,
}

/// A token fit for a cookie value: what `usan token` makes, and the like.
fn cookie_safe(token: &str) -> bool {
    !token.is_empty() && token.len() <= 512 && token.bytes().all(|b| b.is_ascii_graphic() && !b"\";,\\".contains(&b))
}

/// `POST /api/v1/session`: log in with an API token; the answer sets the
/// `HttpOnly`, `SameSite=Strict` cookie the dashboard then sends.
pub async fn login(State(state): State<ApiState>, body: Result<Json<LoginBody>, JsonRejection>) -> ApiResult<Response> {
    let Json(body) = body?;
    let token = body.token.trim();
    if !cookie_safe(token) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "the API token is not valid"));
    }
    let who = state.tokens.check(Some(token), Role::Viewer)?.ok_or(crate::api::auth::Denied::BadToken)?;
    tracing::info!(user = %who.name, role = who.role.as_str(), "dashboard login");
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}");
    let mut response = Json(json!({ "name": who.name, "role": who.role.as_str() })).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `DELETE /api/v1/session`: log out (forget the cookie).
pub async fn logout() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// One asset in the plant overview.
#[derive(Serialize)]
struct OverviewAsset<'a> {
    id: &'a str,
    site: &'a str,
    line: &'a str,
    health: &'static str,
    open_alarms: usize,
    /// The first RUL model's estimate, where one watches the asset.
    rul: Option<f64>,
    rul_alarming: bool,
}

/// `GET /api/v1/overview`: every asset's health, open alarms and RUL, small
/// enough to poll for a plant of thousands of assets.
pub async fn overview(State(state): State<ApiState>) -> Response {
    let open = state.alarms.open_by_asset();
    let assets: Vec<OverviewAsset<'_>> = state
        .plant
        .assets
        .iter()
        .enumerate()
        .map(|(i, asset)| {
            let live = state.live.get(i).unwrap_or_default();
            let rul = live.rul.first();
            OverviewAsset {
                id: &asset.path.asset,
                site: &asset.path.site,
                line: &asset.path.line,
                health: live.health(),
                open_alarms: open.get(&asset.path.asset).copied().unwrap_or(0),
                rul: rul.and_then(|r| r.rul),
                rul_alarming: rul.is_some_and(|r| r.alarming),
            }
        })
        .collect();
    let open_total: usize = open.values().sum();
    Json(json!({ "assets": assets, "open_alarms": open_total })).into_response()
}

/// `GET /api/v1/alarms/summary`: how many alarms are open, from memory (no store read).
pub async fn alarm_summary(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "open": state.alarms.open_count() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    from: Option<String>,
    to: Option<String>,
    max_points: Option<usize>,
    /// Comma-separated signals and `@score/<detector>` columns; default: all.
    columns: Option<String>,
}

/// `GET /api/v1/assets/{id}/series`: signals and detector scores on one time axis.
pub async fn series(
    State(state): State<ApiState>,
    PathParam(id): PathParam<String>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(q) = query?;
    let index = asset_index(&state, &id)?;
    let asset = &state.plant.assets[index];
    let scores: Vec<String> =
        asset.detectors.iter().map(|&d| format!("{SCORE_PREFIX}{}", state.plant.detectors[d].name)).collect();
    let columns: Vec<String> = match q.columns.as_deref() {
        Some(list) => {
            let wanted: Vec<String> = list.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
            let unknown: Vec<String> = wanted
                .iter()
                .filter(|c| !asset.signal_index.contains_key(c.as_str()) && !scores.contains(c))
                .map(|c| format!("`{c}` is neither a signal of `{id}` nor one of its scores"))
                .collect();
            if !unknown.is_empty() {
                let mut error = ApiError::new(StatusCode::NOT_FOUND, "unknown columns");
                error.details = unknown;
                return Err(error);
            }
            wanted
        }
        None => asset.signal_names().into_iter().chain(scores).collect(),
    };
    let (from, to) = time_range(q.from.as_deref(), q.to.as_deref())?;
    let max_points = q.max_points.unwrap_or(1000).clamp(2, state.server.max_query_points.max(2));
    let store = state.store.clone();
    let (asset_id, names) = (id.clone(), columns.clone());
    let table = blocking(move || store.table(&asset_id, &names, from, to, max_points)).await?;
    Ok(Json(json!({
        "asset": id,
        "columns": columns,
        "ts": table.ts,
        "values": table.columns,
        "downsampled": table.downsampled,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpcQuery {
    from: Option<String>,
    to: Option<String>,
    /// The newest this many values (default 500, at most 20,000).
    points: Option<usize>,
    /// `nelson` (default) or `we`.
    rules: Option<String>,
    /// Values (from the oldest shown) the limits are set from; default: all.
    baseline: Option<usize>,
    /// `imr` (default), `ewma` or `cusum`.
    chart: Option<String>,
}

/// `GET /api/v1/assets/{id}/spc/{signal}`: a control chart of a signal's
/// stored values (limits from a baseline, rule violations) and, when the
/// signal has specification limits, its capability.
pub async fn control_chart(
    State(state): State<ApiState>,
    PathParam((id, signal)): PathParam<(String, String)>,
    query: Result<Query<SpcQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(q) = query?;
    let index = asset_index(&state, &id)?;
    let asset = &state.plant.assets[index];
    let spec = asset
        .signal_index
        .get(&signal)
        .map(|&i| asset.signals[i].clone())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("asset `{id}` has no signal `{signal}`")))?;
    let rules = match q.rules.as_deref().unwrap_or("nelson") {
        "nelson" => RuleSet::Nelson,
        "we" => RuleSet::We,
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "`rules` is nelson or we")),
    };
    let kind = match q.chart.as_deref().unwrap_or("imr") {
        "imr" => ChartKind::Imr,
        "ewma" => ChartKind::Ewma { lambda: 0.2, width: 3.0 },
        "cusum" => ChartKind::Cusum { k: 0.5, h: 5.0 },
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "`chart` is imr, ewma or cusum")),
    };
    let (from, to) = time_range(q.from.as_deref(), q.to.as_deref())?;
    let points = q.points.unwrap_or(500).clamp(8, state.server.max_query_points.max(8));
    let store = state.store.clone();
    let (asset_id, name) = (id.clone(), signal.clone());
    let table = blocking(move || store.newest_rows(&asset_id, &[name], from, to, points)).await?;
    let keep = table.ts.len().saturating_sub(points);
    let ts: Vec<i64> = table.ts[keep..].to_vec();
    let values: Vec<f64> = table.columns[0][keep..].to_vec();
    let settings = ChartSettings { kind, rules, baseline: q.baseline.filter(|b| *b > 0), exclude_out_of_control: true };
    let chart = chart(&settings, &ChartData::Individuals(values.clone()))
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("no chart of `{signal}`: {e}")))?;
    let capability = match (spec.lower_spec, spec.upper_spec, chart.sigma) {
        (None, None, _) | (_, _, None) => None,
        (lower, upper, Some(sigma)) => {
            let spec = Spec { lower, upper, target: None };
            Some(capability(&values, sigma, &spec, 0.95).map_err(|e| e.to_string()))
        }
    };
    let rule_texts: Vec<serde_json::Value> =
        rules.rules().iter().map(|r| json!({ "rule": r.name(), "description": r.description() })).collect();
    Ok(Json(json!({
        "asset": id,
        "signal": spec,
        "ts": ts,
        "chart": chart,
        "rules": rule_texts,
        "capability": match capability {
            Some(Ok(c)) => json!(c),
            Some(Err(why)) => json!({ "error": why }),
            None => serde_json::Value::Null,
        },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Also stream this asset's frames and live state.
    asset: Option<String>,
}

/// How often the stream sends what it gathered.
const STREAM_TICK: Duration = Duration::from_millis(250);
/// At most this many frames per tick (the newest): a chart has no use for more.
const STREAM_MAX_ROWS: usize = 500;

struct StreamState {
    state: ApiState,
    asset: Option<usize>,
    events: tokio::sync::broadcast::Receiver<std::sync::Arc<[SinkEvent]>>,
    frames: Option<(
        crate::pipeline::Watching,
        tokio::sync::broadcast::Receiver<std::sync::Arc<crate::pipeline::LiveRows>>,
    )>,
    rows: VecDeque<crate::pipeline::LiveRow>,
    ready: VecDeque<Event>,
    tick: tokio::time::Interval,
    ticks: u64,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl StreamState {
    /// The next event; `None` once the server is stopping.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if *self.closing.borrow() {
                return None;
            }
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let frames = async {
                match &mut self.frames {
                    Some((_, receiver)) => receiver.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.closing.changed() => return None,
                events = self.events.recv() => {
                    let Ok(events) = events else { continue };
                    for event in events.iter().filter(|e| !matches!(e, SinkEvent::Finding(_))) {
                        let asset = self.asset.map(|i| self.state.plant.assets[i].path.asset.as_str());
                        if asset.is_some_and(|a| a != event.source().0) {
                            continue;
                        }
                        if let Ok(data) = serde_json::to_string(event) {
                            self.ready.push_back(Event::default().event("alarm").data(data));
                        }
                    }
                }
                rows = frames => {
                    let Ok(rows) = rows else { continue };
                    if Some(rows.asset) == self.asset {
                        self.rows.extend(rows.rows.iter().cloned());
                        while self.rows.len() > STREAM_MAX_ROWS {
                            self.rows.pop_front();
                        }
                    }
                }
                _ = self.tick.tick() => {
                    self.ticks += 1;
                    if !self.rows.is_empty() {
                        let rows: Vec<_> = self.rows.drain(..).collect();
                        if let Ok(data) = serde_json::to_string(&rows) {
                            self.ready.push_back(Event::default().event("frames").data(data));
                        }
                    }
                    if let Some(index) = self.asset.filter(|_| self.ticks % 4 == 1) {
                        let view = super::asset_view(&self.state, index);
                        if let Ok(data) = serde_json::to_string(&view) {
                            self.ready.push_back(Event::default().event("live").data(data));
                        }
                    }
                }
            }
        }
    }
}

/// `GET /api/v1/stream[?asset=ID]`: server-sent events. `alarm`: every alarm
/// event (of the asset, when given); with an asset also `frames` (its new
/// frames: values and detector scores, every 250 ms) and `live` (its state:
/// scores, thresholds, explanations, RUL, every second).
pub async fn stream(
    State(state): State<ApiState>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>> {
    let Query(q) = query?;
    let asset = q.asset.as_deref().map(|id| asset_index(&state, id)).transpose()?;
    let frames = asset.map(|index| state.live_frames.watch(index));
    let state_closing = state.closing.subscribe();
    let mut tick = tokio::time::interval(STREAM_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream_state = StreamState {
        events: state.live_events.subscribe(),
        state,
        asset,
        frames,
        rows: VecDeque::new(),
        ready: VecDeque::new(),
        tick,
        ticks: 0,
        closing: state_closing,
    };
    let stream = futures_util::stream::unfold(stream_state, |mut s| async move {
        let event = s.next().await?;
        Some((Ok(event), s))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
