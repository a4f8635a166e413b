//! Which page the app shows, read from the URL, and moving between pages without a reload
//! (the WebSocket and every joined room stay up).
//!
//! Confab has two pages and a "not found", so this small module stands in for a router.
//! leptos_router, with the async view code it pulls in, was a fifth of the WASM bundle.

use leptos::prelude::*;

/// A page of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// `/`
    Lobby,
    /// `/r/{room}` (the name is checked by the room page, which explains a bad one).
    Room(String),
    NotFound,
}

impl Page {
    pub fn from_path(path: &str) -> Page {
        if path == "/" {
            return Page::Lobby;
        }
        match path.strip_prefix("/r/") {
            Some(room) if !room.is_empty() && !room.contains('/') => Page::Room(room.to_owned()),
            _ => Page::NotFound,
        }
    }
}

/// The current page, shared by every component.
#[derive(Clone, Copy)]
pub struct Nav {
    page: RwSignal<Page>,
}

impl Nav {
    /// The current page (tracked).
    pub fn page(&self) -> Page {
        self.page.get()
    }

    /// The room in the URL, or "" when the page is not a room (tracked).
    pub fn room(&self) -> String {
        self.page.with(|p| match p {
            Page::Room(room) => room.clone(),
            _ => String::new(),
        })
    }

    /// The document title of the current page (tracked). A page that is gone (the app
    /// unmounting) has the plain title: never a panic from a title.
    pub fn title(&self) -> String {
        self.page.try_with(page_title).unwrap_or_else(|| page_title(&Page::Lobby))
    }

    /// The path of the page shown.
    pub fn path(&self) -> String {
        self.page.with(|p| match p {
            Page::Room(room) => format!("/r/{room}"),
            _ => "/".to_owned(),
        })
    }

    /// Shows the page at `path` and records it in the browser's history.
    pub fn navigate(&self, path: &str) {
        #[cfg(feature = "hydrate")]
        if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
            let _ = history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(path));
        }
        self.page.set(Page::from_path(path));
    }
}

/// `#room · Confab` on a room's page, `Confab` elsewhere.
fn page_title(page: &Page) -> String {
    match page {
        Page::Room(room) => format!("#{room} · Confab"),
        _ => "Confab".to_owned(),
    }
}

/// Reads the page from the request (server) or the location (browser), and in the browser
/// follows the back and forward buttons and clicks on the app's own links.
pub fn provide_nav() -> Nav {
    let nav = Nav { page: RwSignal::new(Page::from_path(&current_path())) };
    #[cfg(feature = "hydrate")]
    browser::follow(nav);
    provide_context(nav);
    nav
}

pub fn use_nav() -> Nav {
    expect_context::<Nav>()
}

// With both features (`cargo check --all-features`), the browser's definition wins.
#[cfg(all(feature = "ssr", not(feature = "hydrate")))]
fn current_path() -> String {
    use_context::<axum::http::request::Parts>().map(|p| p.uri.path().to_owned()).unwrap_or_else(|| "/".into())
}

#[cfg(feature = "hydrate")]
fn current_path() -> String {
    web_sys::window().and_then(|w| w.location().pathname().ok()).unwrap_or_else(|| "/".into())
}

#[cfg(not(any(feature = "ssr", feature = "hydrate")))]
fn current_path() -> String {
    "/".into()
}

#[cfg(feature = "hydrate")]
mod browser {
    use super::{Nav, Page, current_path};
    use leptos::{ev, prelude::*};
    use wasm_bindgen::JsCast;

    pub fn follow(nav: Nav) {
        // Back and forward.
        let back =
            window_event_listener(ev::popstate, move |_| nav.page.set(Page::from_path(&current_path())));
        // A plain left click on a link to one of our pages: show it in place.
        let click = window_event_listener(ev::click, move |ev| {
            if let Some(path) = own_link(&ev) {
                ev.prevent_default();
                nav.navigate(&path);
            }
        });
        // The app lives as long as the page: keep listening.
        std::mem::forget((back, click));
    }

    /// The path of the link this click opens, when it is ours to handle.
    fn own_link(ev: &web_sys::MouseEvent) -> Option<String> {
        if ev.default_prevented()
            || ev.button() != 0
            || ev.meta_key()
            || ev.ctrl_key()
            || ev.shift_key()
            || ev.alt_key()
        {
            return None;
        }
        let target = ev.target()?.dyn_into::<web_sys::Element>().ok()?;
        let link = target.closest("a[href]").ok()??;
        if link.has_attribute("target") || link.has_attribute("download") {
            return None;
        }
        let href = link.get_attribute("href")?;
        let own =
            href.starts_with('/') && !href.starts_with("//") && Page::from_path(&href) != Page::NotFound;
        own.then_some(href)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_pages() {
        assert_eq!(Page::from_path("/"), Page::Lobby);
        assert_eq!(Page::from_path("/r/general"), Page::Room("general".into()));
        assert_eq!(Page::from_path("/r/Bad Name"), Page::Room("Bad Name".into()));
        for path in ["/r/", "/r", "/r/a/b", "/nope", "", "/pkg/confab.js"] {
            assert_eq!(Page::from_path(path), Page::NotFound, "{path}");
        }
    }

    #[test]
    fn titles_follow_the_page_and_survive_its_disposal() {
        let owner = Owner::new();
        owner.set();
        let nav = Nav { page: RwSignal::new(Page::Room("general".into())) };
        assert_eq!(nav.title(), "#general · Confab");
        nav.page.set(Page::Lobby);
        assert_eq!(nav.title(), "Confab");
        nav.page.set(Page::Room("x".into()));
        nav.page.dispose();
        assert_eq!(nav.title(), "Confab");
    }
}
