//! Confab: real-time chat. One crate, built twice: the browser UI (feature `hydrate`, WASM)
//! and the server (feature `ssr`) that renders the pages and hosts the WebSocket hub.

#![recursion_limit = "256"]

pub mod app;
pub mod protocol;
pub mod ui;

#[cfg(feature = "hydrate")]
pub mod client;
#[cfg(feature = "ssr")]
pub mod server;

/// Browser entry: takes over the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    // Panics are reported to the console in debug builds; the release bundle leaves the
    // hook out (its formatting code weighs on the 300 KB budget).
    #[cfg(debug_assertions)]
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
