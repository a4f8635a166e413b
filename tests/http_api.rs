//! HTTP surface: health, the JSON API, the server-rendered room page, security headers.

mod common;

use common::spawn_with;
use confab::ui::seed::PageSeed;
use serde_json::Value;

async fn seeded() -> common::TestApp {
    let app = spawn_with(|c| c.msg_burst = 100).await;
    let (mut ann, _) = app.user("ann").await;
    ann.join("lobby", None, 0).await;
    for i in 1..=5 {
        ann.say_acked("lobby", &format!("message {i}"), &format!("c{i}")).await;
    }
    ann.say_acked("lobby", "<img src=x onerror=alert(1)> & see https://example.org/a", "xss").await;
    app
}

#[tokio::test]
async fn healthz_reports_counters() {
    let app = seeded().await;
    let body: Value = reqwest::get(app.url("/healthz")).await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["rooms"], 1);
    assert_eq!(body["messages_in"], 6);
    assert!(body["connections"].as_u64().unwrap() <= 1);
}

#[tokio::test]
async fn rooms_api_lists_rooms_with_heads() {
    let app = seeded().await;
    let rooms: Value = reqwest::get(app.url("/api/rooms")).await.unwrap().json().await.unwrap();
    assert_eq!(rooms["rooms"][0]["name"], "lobby");
    assert_eq!(rooms["rooms"][0]["head"], 6);
    assert_eq!(rooms["has_more"], false);
}

#[tokio::test]
async fn messages_api_pages_backwards() {
    let app = seeded().await;
    let page: Value =
        reqwest::get(app.url("/api/rooms/lobby/messages?limit=2")).await.unwrap().json().await.unwrap();
    let seqs: Vec<u64> =
        page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![5, 6]);
    assert_eq!(page["has_more"], true);
    let page: Value = reqwest::get(app.url("/api/rooms/lobby/messages?before=3&limit=50"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["messages"][0]["text"], "message 1");

    let bad = reqwest::get(app.url("/api/rooms/Not%20Valid/messages")).await.unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "invalid_room");
}

#[tokio::test]
async fn the_room_page_is_server_rendered_with_escaped_history() {
    let _render = common::PAGE_RENDER.lock().await;
    let app = seeded().await;
    let resp = reqwest::get(app.url("/r/lobby")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.headers().contains_key("referrer-policy"));
    let html = resp.text().await.unwrap();
    for i in 1..=5 {
        assert!(html.contains(&format!("message {i}")), "message {i} missing from the page");
    }
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "user markup is escaped");
    assert!(!html.contains("<img src=x"), "user markup never reaches the page raw");
    assert!(
        html.contains(r#"href="https://example.org/a""#) && html.contains("noopener noreferrer nofollow")
    );
    // The same history travels in the page for the browser to hydrate from.
    let seed = page_seed(&html);
    let texts: Vec<&str> = seed.messages_for("lobby").unwrap().iter().map(|m| m.text.as_str()).collect();
    assert!(texts.contains(&"message 5"));
    assert!(
        texts.iter().any(|t| t.starts_with("<img src=x onerror=alert(1)>")),
        "raw text, escaped only as JSON"
    );
}

/// Room pages rendered at once on a multi-threaded runtime, as a browser opening several
/// tabs does: each is whole, with its own room's title. The server once panicked a worker
/// here (CI, 2026-12-01): the page's `<Title>`, read after the body's first chunk, read a
/// signal of its page component, outside the request's reactive arena. The server's title
/// is now a plain string, taken during the render.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_pages_rendered_at_once_each_have_their_own_title() {
    let _render = common::PAGE_RENDER.lock().await;
    let app = spawn_with(|c| c.msg_burst = 100).await;
    let (mut ann, _) = app.user("ann").await;
    let rooms = ["lobby", "kitchen", "garden", "attic"];
    for room in rooms {
        ann.join(room, None, 0).await;
        ann.say_acked(room, &format!("hello {room}"), &format!("c-{room}")).await;
    }
    let client = reqwest::Client::new();
    let pages = (0..96).map(|i| {
        let room = rooms[i % rooms.len()];
        let request = client.get(app.url(&format!("/r/{room}"))).send();
        async move {
            let resp = request.await.expect("the page is answered");
            (room, resp.status(), resp.text().await.expect("the whole page"))
        }
    });
    for (room, status, html) in futures::future::join_all(pages).await {
        assert_eq!(status, 200, "/r/{room}");
        assert!(html.contains(&format!("<title>#{room} · Confab</title>")), "/r/{room} has its own title");
        assert!(html.contains(&format!("hello {room}")), "/r/{room} has its own history");
    }
}

/// The `PageSeed` a rendered page carries in its JSON script element.
fn page_seed(html: &str) -> PageSeed {
    let start =
        html.find(r#"id="confab-seed">"#).expect("the page has a seed") + r#"id="confab-seed">"#.len();
    let json = &html[start..start + html[start..].find("</script>").unwrap()];
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn the_lobby_is_server_rendered_with_the_room_directory() {
    let _render = common::PAGE_RENDER.lock().await;
    let app = seeded().await;
    let html = reqwest::get(app.url("/")).await.unwrap().text().await.unwrap();
    assert!(html.contains(r#"href="/r/lobby""#), "the directory links the room");
    let seed = page_seed(&html);
    let directory = seed.directory.expect("the lobby is seeded with the directory");
    assert!(directory.iter().any(|r| r.name == "lobby" && r.head >= 5));
}

#[tokio::test]
async fn unknown_pages_are_404() {
    let _render = common::PAGE_RENDER.lock().await;
    let app = seeded().await;
    let resp = reqwest::get(app.url("/nope/at/all")).await.unwrap();
    assert_eq!(resp.status(), 404);
}
