//! The page shell, the page switch and the chat layout around every page.

use crate::ui::{
    chat::Chat,
    lobby::Lobby,
    nav::{Page, provide_nav},
    nick::NickGate,
    room::RoomPage,
    seed,
    sidebar::Sidebar,
};
use leptos::{either::EitherOf3, prelude::*};
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};

/// The HTML document the server renders around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let seed = seed::provide_seed().to_script_json();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <meta name="description" content="Confab: real-time chat rooms" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
                <script type="application/json" id=seed::SCRIPT_ID inner_html=seed></script>
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let page_seed = seed::provide_seed();
    #[cfg(feature = "ssr")]
    set_content_security_policy();
    let nav = provide_nav();
    let chat = Chat::new();
    // A signed-in page is its account from the start (its socket says `hello {}`).
    if let Some(user) = page_seed.user.clone() {
        chat.model.update_untracked(|m| m.sign_in(user));
    }
    provide_context(chat);
    // Browser only: effects never run on the server.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        crate::client::start(chat);
    });

    // Switching rooms keeps the room page (it follows the URL); only a change of kind of
    // page builds a new one.
    let kind = Memo::new(move |_| match nav.page() {
        Page::Lobby => PageKind::Lobby,
        Page::Room(_) => PageKind::Room,
        Page::NotFound => PageKind::NotFound,
    });

    view! {
        <Stylesheet id="leptos" href="/pkg/confab.css" />
        <Title text="Confab" />
        <div class="layout">
            <Sidebar />
            <main class="main" id="main">
                // `EitherOf3`, not `into_any`: an erased view carries every way of
                // hydrating its page (the async one too), which doubled the room page's
                // code in the bundle.
                {move || match kind.get() {
                    PageKind::Lobby => EitherOf3::A(view! { <Lobby /> }),
                    PageKind::Room => EitherOf3::B(view! { <RoomPage /> }),
                    PageKind::NotFound => EitherOf3::C(view! { <NotFound /> }),
                }}
            </main>
        </div>
        <NickGate />
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PageKind {
    Lobby,
    Room,
    NotFound,
}

/// The page's Content-Security-Policy: scripts only from here or carrying this response's
/// nonce (Leptos puts it on its hydration script), WASM compilation allowed, nothing framed.
#[cfg(feature = "ssr")]
fn set_content_security_policy() {
    use axum::http::{HeaderValue, header::CONTENT_SECURITY_POLICY};
    let (Some(resp), Some(nonce)) =
        (use_context::<leptos_axum::ResponseOptions>(), leptos::nonce::use_nonce())
    else {
        return;
    };
    // The socket may connect to this page's own origin only, not to any ws:/wss: host.
    let sockets = use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<crate::server::pages::SocketOrigins>().cloned())
        .map(|o| o.0)
        .unwrap_or_default();
    // `cargo leptos watch` reloads the page over its own socket.
    let reload = use_context::<LeptosOptions>()
        .filter(|o| o.env == leptos::config::Env::DEV)
        .map(|o| format!(" ws://*:{}", o.reload_port))
        .unwrap_or_default();
    let sockets = format!("{sockets}{reload}");
    let policy = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self' {sockets}; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'; form-action 'self'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        resp.insert_header(CONTENT_SECURITY_POLICY, value);
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
        resp.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <section class="empty">
            <h1>"Not found"</h1>
            <p><a href="/">"Back to the lobby"</a></p>
        </section>
    }
}
