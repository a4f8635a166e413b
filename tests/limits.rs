//! Abuse limits and web security: per-IP connections, sustained rate abuse, Origin checks,
//! security headers, and the metrics that count them.

mod common;

use common::{spawn_app, spawn_with};
use serde_json::json;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

#[tokio::test]
async fn connections_per_ip_are_capped_with_429() {
    let app = spawn_with(|c| c.max_conns_per_ip = 2).await;
    let a = app.client().await;
    let _b = app.client().await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await.unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    drop(a);
    // The slot comes back once a connection ends.
    let mut ok = None;
    for _ in 0..50 {
        if let Ok(c) = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await {
            ok = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok.is_some());
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("confab_refused_per_ip_total "))
        .and_then(|v| v.parse().ok())
        .expect("the refusal counter");
    assert!(refused >= 1, "{metrics}");
}

#[tokio::test]
async fn a_client_that_ignores_rate_limits_is_closed_with_1008() {
    let app = spawn_with(|c| {
        c.msg_rate = 1;
        c.msg_burst = 1;
        c.abuse_strikes = 5;
    })
    .await;
    let (mut c, _) = app.user("spammer").await;
    c.join("r", None, 0).await;
    c.say_acked("r", "ok", "m0").await;
    // Never waiting: each refusal is promised a slot one second after the previous one.
    // Slots up to 4 s ahead (4 bursts at 1/s) are in-flight traffic, not strikes; past
    // that every refusal is a strike, and the 6th (abuse_strikes + 1) closes.
    for i in 1..=30 {
        c.say("r", "spam", &format!("m{i}")).await;
    }
    let mut limited = Vec::new();
    let code = loop {
        match tokio::time::timeout(common::WAIT, futures::StreamExt::next(&mut c.ws)).await.unwrap() {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                match serde_json::from_str::<confab::protocol::ServerMsg>(&t).unwrap() {
                    confab::protocol::ServerMsg::Error { code, retry_after_ms: Some(ms), .. } => {
                        assert_eq!(code.as_str(), "rate_limited");
                        limited.push(ms);
                    }
                    other => panic!("{other:?}"),
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(cf)))) => break u16::from(cf.code),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 1008);
    assert!((9..=10).contains(&limited.len()), "{} rate_limited errors before the close", limited.len());
    // Each refusal named a later slot than the one before.
    assert!(limited.windows(2).all(|w| w[1] > w[0]), "{limited:?}");
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("confab_abusive_closed_total 1"));
    assert!(metrics.contains("confab_errors_total{code=\"rate_limited\"}"));
}

async fn upgrade_with_origin(addr: std::net::SocketAddr, origin: &str) -> Result<(), String> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
    tokio_tungstenite::connect_async(req).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_websocket_refuses_foreign_origins_with_403() {
    let app = spawn_with(|c| c.allowed_origins = vec!["https://chat.example.org".into()]).await;
    upgrade_with_origin(app.addr, &format!("http://{}", app.addr)).await.expect("same origin");
    upgrade_with_origin(app.addr, "https://chat.example.org").await.expect("listed origin");
    let err = upgrade_with_origin(app.addr, "https://evil.example").await.unwrap_err();
    assert!(err.contains("403"), "{err}");
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("confab_refused_origin_total 1"));
}

#[tokio::test]
async fn pages_carry_a_nonce_csp_and_security_headers() {
    let _render = common::PAGE_RENDER.lock().await;
    let app = spawn_app().await;
    for path in ["/", "/r/lobby"] {
        let resp = reqwest::get(app.url(path)).await.unwrap();
        let h = resp.headers().clone();
        let csp = h["content-security-policy"].to_str().unwrap().to_owned();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert_eq!(h["x-frame-options"], "DENY");
        let html = resp.text().await.unwrap();
        let nonce =
            csp.split("'nonce-").nth(1).and_then(|s| s.split('\'').next()).expect("a nonce in the CSP");
        assert!(nonce.len() >= 16);
        assert!(html.contains(&format!("nonce=\"{nonce}\"")), "the hydration script carries the nonce");
        assert!(csp.contains("'wasm-unsafe-eval'") && csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline"));
    }
}

#[tokio::test]
async fn metrics_count_traffic_in_prometheus_format() {
    let app = spawn_app().await;
    let (mut a, _) = app.user("a").await;
    let (mut b, _) = app.user("b").await;
    a.join("r", None, 0).await;
    b.join("r", None, 0).await;
    a.say_acked("r", "x", "c1").await;
    b.recv_message().await;
    a.send(json!({"type": "nope"})).await;
    a.expect_error("unknown_type").await;
    let resp = reqwest::get(app.url("/metrics")).await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for line in [
        "confab_connections 2",
        "confab_messages_in_total 1",
        "confab_messages_stored_total 1",
        "confab_messages_out_total 2",
        "confab_rooms 1",
        "confab_errors_total{code=\"unknown_type\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}
