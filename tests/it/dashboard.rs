//! The web dashboard: served by the binary, logged in with a token cookie
//! that other sites cannot use, fed by the API's views and live stream, and
//! driven end to end in headless Chromium.

use crate::harness::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::Duration;

/// The press line of `examples/spc.toml`, with `asset` as its id, the tests'
/// people (kim: operator, screen: viewer) and, when `anonymous_read` is
/// false, a login needed to read.
fn press_config(dir: &std::path::Path, asset: &str, site: &str, anonymous_read: bool) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(repo().join("examples/spc.toml"))
        .unwrap()
        .replace("path = \"spc.db\"", "path = \"{dir}/spc.db\"")
        .replace("id = \"press-1\"", &format!("id = {}", toml::Value::String(asset.into())))
        .replace("site = \"changwon\"", &format!("site = {}", toml::Value::String(site.into())));
    text.push_str(&format!("\n[auth]\nanonymous_read = {anonymous_read}\ntokens = [\n"));
    for (name, role, token) in PEOPLE {
        let sha = usan::api::auth::sha256_hex(token);
        text.push_str(&format!("  {{ name = \"{name}\", role = \"{role}\", sha256 = \"{sha}\" }},\n"));
    }
    text.push_str("]\n");
    write_config(dir, "press.toml", &text)
}

const PEOPLE: [(&str, &str, &str); 3] =
    [("kim", "operator", "kim-token-0001"), ("screen", "viewer", "screen-token-03"), ("tester", "admin", ADMIN_TOKEN)];

/// Push `frames` frames of force and stroke, one a second ending now; from
/// frame 130 the force runs 1σ high (a Nelson run, so an alarm).
fn push_press(base: &str, asset: &str, frames: i64) -> i64 {
    let http = client();
    let mut g = usan_core::stats::SeededNormal::new(5);
    let start = chrono::Utc::now().timestamp_millis() - frames * 1000;
    for chunk in (0..frames).collect::<Vec<_>>().chunks(40) {
        let samples: Vec<Value> = chunk
            .iter()
            .flat_map(|&i| {
                let force = 200.0 + 2.0 * g.normal() + if i >= 130 { 2.0 } else { 0.0 };
                let stroke = 50.0 + 0.1 * g.normal();
                [("force", force), ("stroke", stroke)].map(
                    |(signal, value)| json!({"asset": asset, "signal": signal, "ts": start + i * 1000, "value": value}),
                )
            })
            .collect();
        let response = http
            .post(format!("{base}/api/v1/samples"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "samples": samples }))
            .send()
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().unwrap());
    }
    start
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

#[test]
fn the_page_is_served_from_the_binary_with_a_strict_policy_even_before_login() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::serve(&press_config(dir.path(), "press-1", "changwon", false), &[]);
    let http = client();
    let page = http.get(format!("{}/", server.base)).send().unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().unwrap();
    assert!(html.contains("/ui/app.js") && html.contains("/ui/vendor/uPlot.iife.min.js"), "{html}");
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/charts.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/vendor/uPlot.iife.min.js", "text/javascript"),
        ("/ui/vendor/uPlot.min.css", "text/css"),
    ] {
        let response = http.get(format!("{}{path}", server.base)).send().unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
    }
    assert_eq!(http.get(format!("{}/ui/nope.js", server.base)).send().unwrap().status(), 404);
    let outside = http.get(format!("{}/ui/%2e%2e/Cargo.toml", server.base)).send().unwrap();
    assert_ne!(outside.status(), 200);
    assert!(!outside.text().unwrap().contains("[package]"));
    // The data behind it still needs the login.
    assert_eq!(http.get(format!("{}/api/v1/overview", server.base)).send().unwrap().status(), 401);
}

#[test]
fn the_login_cookie_reads_and_writes_only_from_the_dashboard_itself() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::serve(&press_config(dir.path(), "press-1", "changwon", false), &[]);
    let start = push_press(&server.base, "press-1", 160);
    server.wait_until("the run raises an alarm", Duration::from_secs(30), |s| {
        let response = client().get(format!("{}/api/v1/alarms", s.base)).bearer_auth(ADMIN_TOKEN).send().unwrap();
        !response.json::<Vec<Value>>().unwrap().is_empty()
    });
    let http = client();
    let login = |token: &str| {
        http.post(format!("{}/api/v1/session", server.base)).json(&json!({ "token": token })).send().unwrap()
    };
    let refused = login("not-a-token");
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());

    let cookie_of = |response: &reqwest::blocking::Response| {
        let set = response.headers()["set-cookie"].to_str().unwrap().to_string();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attribute), "{set}");
        }
        set.split(';').next().unwrap().to_string()
    };
    let kim = login(token_of("kim"));
    assert_eq!(kim.status(), 200);
    let kim_cookie = cookie_of(&kim);
    assert_eq!(kim.json::<Value>().unwrap(), json!({"name": "kim", "role": "operator"}));
    let screen_cookie = cookie_of(&login(token_of("screen")));

    let get = |cookie: Option<&str>, path: &str| {
        let mut request = http.get(format!("{}{path}", server.base));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().unwrap()
    };
    let nobody = get(None, "/api/v1/session").json::<Value>().unwrap();
    assert_eq!(nobody, json!({"user": null, "anonymous_read": false}));
    let me = get(Some(&kim_cookie), "/api/v1/session").json::<Value>().unwrap();
    assert_eq!(me["user"]["name"], "kim");
    assert_eq!(me["anonymous_read"], false);
    let overview = get(Some(&screen_cookie), "/api/v1/overview").json::<Value>().unwrap();
    assert_eq!(overview["assets"][0]["id"], "press-1");
    assert!(overview["open_alarms"].as_u64().unwrap() >= 1, "{overview}");
    assert_eq!(overview["assets"][0]["open_alarms"], overview["open_alarms"]);
    let summary = get(Some(&screen_cookie), "/api/v1/alarms/summary").json::<Value>().unwrap();
    assert_eq!(summary["open"], overview["open_alarms"]);

    let alarms = get(Some(&kim_cookie), "/api/v1/alarms").json::<Vec<Value>>().unwrap();
    let id = alarms[0]["id"].as_i64().unwrap();
    let ack = |cookie: &str, with_header: bool| {
        let mut request = http
            .post(format!("{}/api/v1/alarms/{id}/acknowledge", server.base))
            .header("cookie", cookie)
            .json(&json!({"note": "from the page"}));
        if with_header {
            request = request.header("x-usan-request", "1");
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.json::<Value>().unwrap())
    };
    // Another site's form could send the cookie only without the header: refused.
    let (status, body) = ack(&kim_cookie, false);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("X-Usan-Request"), "{body}");
    let (status, body) = ack(&screen_cookie, true);
    assert_eq!(status, 403, "a viewer cannot acknowledge from the page either: {body}");
    let (status, body) = ack(&kim_cookie, true);
    assert_eq!((status, body["acknowledged"]["by"].as_str()), (200, Some("kim")), "{body}");

    // The views behind the asset page and the control-chart page, once the frames are stored.
    server.wait_until("the frames are stored", Duration::from_secs(30), |s| {
        let stored = get(Some(&kim_cookie), "/api/v1/assets/press-1/series?columns=force").json::<Value>().unwrap();
        stored["ts"].as_array().unwrap().len() >= 159 && s.base.starts_with("http")
    });
    let series = get(Some(&kim_cookie), "/api/v1/assets/press-1/series?max_points=50").json::<Value>().unwrap();
    assert_eq!(series["columns"], json!(["force", "stroke", "@score/control-chart"]));
    assert_eq!(series["downsampled"], true);
    let ts = series["ts"].as_array().unwrap();
    assert!(ts.len() <= 50 && ts[0].as_i64().unwrap() >= start, "{series}");
    let scores = series["values"][2].as_array().unwrap();
    assert!(scores.first().unwrap().is_null(), "no score while learning: {series}");
    assert!(scores.last().unwrap().is_number(), "scored once learned: {series}");
    let run = get(
        Some(&kim_cookie),
        &format!("/api/v1/assets/press-1/series?columns=@score/control-chart&from={}", start + 130_000),
    )
    .json::<Value>()
    .unwrap();
    assert_eq!(run["downsampled"], false);
    let broken = run["values"][0].as_array().unwrap().iter().filter(|v| v.as_f64().is_some_and(|v| v >= 1.0)).count();
    assert!(broken > 0, "the run scores at the threshold, like the alarm it raised: {run}");
    let narrow =
        get(Some(&kim_cookie), &format!("/api/v1/assets/press-1/series?columns=force&from={}", start + 150_000))
            .json::<Value>()
            .unwrap();
    assert_eq!(narrow["ts"].as_array().unwrap().len(), 10, "{narrow}");
    assert_eq!(get(Some(&kim_cookie), "/api/v1/assets/press-1/series?columns=nope").status(), 404);

    let chart =
        get(Some(&kim_cookie), "/api/v1/assets/press-1/spc/force?points=160&baseline=100").json::<Value>().unwrap();
    assert_eq!(chart["chart"]["series"][0]["name"], "i");
    assert_eq!(chart["ts"].as_array().unwrap().len(), 160);
    let violations = chart["chart"]["series"][0]["violations"].as_array().unwrap();
    assert!(
        violations.iter().any(|v| v["index"].as_u64().unwrap() >= 130),
        "the run after point 130 breaks a rule: {violations:?}"
    );
    let cpk = chart["capability"]["cpk"]["value"].as_f64().unwrap_or_else(|| panic!("{}", chart["capability"]));
    assert!((1.0..5.0).contains(&cpk), "σ≈2 within 200±20: Cpk {cpk}");
    let stroke = get(Some(&kim_cookie), "/api/v1/assets/press-1/spc/stroke").json::<Value>().unwrap();
    assert!(stroke["capability"].is_null(), "no specification, no capability");

    // Logging out forgets the cookie.
    let out = http.delete(format!("{}/api/v1/session", server.base)).header("cookie", &kim_cookie).send().unwrap();
    assert_eq!(out.status(), 204);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}

#[test]
fn the_live_stream_sends_an_assets_frames_scores_and_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::serve(&press_config(dir.path(), "press-1", "changwon", true), &[]);
    let response = client()
        .get(format!("{}/api/v1/stream?asset=press-1", server.base))
        .timeout(Duration::from_secs(60))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    // The headers came back: the handler has subscribed to the asset's
    // frames and to the events, so nothing pushed from now on is missed.
    let pusher = std::thread::spawn({
        let base = server.base.clone();
        move || push_press(&base, "press-1", 160)
    });
    let mut lines = BufReader::new(response).lines();
    let (mut frames, mut scored, mut live, mut alarm) = (0usize, 0usize, false, false);
    let mut event = String::new();
    while !(frames >= 150 && scored > 0 && live && alarm) {
        let line = lines.next().expect("the stream ended").unwrap();
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let data: Value = serde_json::from_str(data).unwrap();
            match event.as_str() {
                "frames" => {
                    for row in data.as_array().unwrap() {
                        assert_eq!(row["values"].as_array().unwrap().len(), 2, "{row}");
                        frames += 1;
                        scored += usize::from(row["scores"][0].is_number());
                    }
                }
                "live" => live = data["id"] == "press-1" && data["detectors"][0]["name"] == "control-chart",
                "alarm" => alarm = data["event"] == "alarm_raised" && data["asset"] == "press-1",
                other => panic!("unexpected event {other}: {data}"),
            }
        }
    }
    pusher.join().unwrap();
    assert_eq!(client().get(format!("{}/api/v1/stream?asset=nope", server.base)).send().unwrap().status(), 404);
}

#[test]
fn the_dashboard_works_in_headless_chromium_against_usan_demo() {
    let Some(python) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("demo.db");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = "browser-test-token";
    let server = Server::spawn_with_env(
        // A third of the usual speed: the engines learn for 12 s, so the
        // browser is on the alarm list before the first alarm, however slow it starts.
        &["demo", "--listen", &listen, "--store", store.to_str().unwrap(), "--speed", "12000"],
        port,
        &[("USAN_DEMO_TOKEN", token)],
    );
    let artifacts = artifacts("demo");
    let result = run_browser(&python, &["demo", &server.base, token, artifacts.to_str().unwrap()]);
    // Acknowledged, assigned and closed in the page, so in the API, by the demo's token.
    let id = result["worked"].as_i64().unwrap();
    let alarm = server.get(&format!("/api/v1/alarms/{id}"));
    assert_eq!(alarm["state"], "cleared", "{alarm}");
    assert_eq!(alarm["acknowledged"]["by"], "demo");
    assert_eq!(alarm["assigned"]["to"], "lee");
    assert_eq!(alarm["cause"], "HPC degradation, engine to overhaul");
    let steps: Vec<(&str, &str)> = alarm["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["action"].as_str().unwrap(), n["text"].as_str().unwrap()))
        .collect();
    assert_eq!(steps[1..].iter().map(|s| s.0).collect::<Vec<_>>(), ["acknowledge", "assign", "clear"], "{alarm}");
    assert_eq!(steps[1].1, "on my way (browser test)");
    for shot in ["01-alarm-appears-live", "02-overview", "03-overview-korean", "07-alarm-acknowledged", "08-asset"] {
        assert!(artifacts.join(format!("{shot}.png")).metadata().unwrap().len() > 10_000, "{shot}.png");
    }
}

#[test]
fn names_and_notes_are_shown_as_typed_never_run() {
    let Some(python) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Asset ids are letters, digits and `_-./` (they name files and topics);
    // the names people type freely are the site's and the notes.
    let asset = "press-1";
    let config = press_config(dir.path(), asset, "<b>site</b><img src=x onerror=window.__pwned=1>", false);
    let server = Server::serve(&config, &[]);
    push_press(&server.base, asset, 160);
    let http = client();
    let alarms = |s: &Server| -> Vec<Value> {
        let response = http.get(format!("{}/api/v1/alarms", s.base)).bearer_auth(ADMIN_TOKEN).send().unwrap();
        response.json().unwrap()
    };
    server.wait_until("the run raises an alarm", Duration::from_secs(30), |s| !alarms(s).is_empty());
    let id = alarms(&server)[0]["id"].as_i64().unwrap();
    let evil = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=1>";
    let (status, body) = server.post(&format!("/api/v1/alarms/{id}/comment"), &json!({ "note": evil }));
    assert_eq!(status, 200, "{body}");
    let artifacts = artifacts("escape");
    let id_text = id.to_string();
    let result = run_browser(
        &python,
        &["escape", &server.base, token_of("kim"), artifacts.to_str().unwrap(), asset, &id_text, evil],
    );
    assert_eq!(result, json!({"pwned": false, "img": 0, "scripts": 0, "bold": 0}));
}

fn token_of(name: &str) -> &'static str {
    PEOPLE.iter().find(|(n, ..)| *n == name).unwrap().2
}

#[test]
fn an_open_dashboard_does_not_hold_the_server_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = press_config(dir.path(), "press-1", "changwon", true);
    let server = Server::serve(&config, &["--duration", "3s"]);
    let base = server.base.clone();
    // A dashboard left open: its live stream of the asset and of alarms.
    let reader = std::thread::spawn(move || {
        let response = client()
            .get(format!("{base}/api/v1/stream?asset=press-1"))
            .timeout(Duration::from_secs(60))
            .send()
            .unwrap();
        // Read until the server closes the stream.
        let _ = std::io::copy(&mut BufReader::new(response), &mut std::io::sink());
    });
    let status = server.wait(Duration::from_secs(20));
    assert!(status.success(), "usan serve --duration 3s exits with a stream open");
    reader.join().unwrap();
}
