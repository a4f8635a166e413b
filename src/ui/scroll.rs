//! The reader's place in the message list, so a page of older messages added above does
//! not move what they are reading; and a watch on the top of the list that says when the
//! next older page should load.
//!
//! The place is a message (by seq) and its distance from the top of the view, not a
//! scroll offset: whatever is added above it, and whenever the DOM catches up, the same
//! message is put back at the same height. The browser's own scroll anchoring is turned
//! off for the list (`overflow-anchor: none`), so only this moves it.

use crate::protocol::Seq;
use leptos::wasm_bindgen::JsCast;
use leptos::web_sys::{Element, HtmlElement};

/// The first message the reader sees (even partly), and how far its top is below the top
/// of the view (negative when partly scrolled off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub seq: Seq,
    pub offset: i32,
}

fn html(el: Element) -> Option<HtmlElement> {
    el.dyn_into().ok()
}

/// Where the reader is in `list` (the scrolling element, positioned, so it is its items'
/// offset parent), whose children of `items` are the messages, oldest first.
pub fn place(list: &HtmlElement, items: &Element) -> Option<Place> {
    let top = list.scroll_top();
    let children = items.children();
    // Offsets grow down the list: the first item whose bottom is below the top of the view.
    let (mut lo, mut hi) = (0, children.length());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let el = children.item(mid).and_then(html)?;
        if el.offset_top() + el.offset_height() <= top {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let el = children.item(lo).and_then(html)?;
    let seq = el.get_attribute("data-seq")?.parse().ok()?;
    Some(Place { seq, offset: el.offset_top() - top })
}

/// Scrolls `list` so the message of `place` is back where it was; false if it is gone.
pub fn restore(list: &HtmlElement, items: &Element, place: Place) -> bool {
    let selector = format!("li[data-seq=\"{}\"]", place.seq);
    let Some(el) = items.query_selector(&selector).ok().flatten().and_then(html) else {
        return false;
    };
    list.set_scroll_top(el.offset_top() - place.offset);
    true
}

/// True when `edge` (the top of `list`) is in view, or less than `margin` px above it.
pub fn near_top(list: &HtmlElement, edge: &HtmlElement, margin: i32) -> bool {
    edge.offset_top() + edge.offset_height() >= list.scroll_top() - margin
}

/// Calls back when the top of a list comes within `margin` px of its view; stops
/// watching when dropped.
#[cfg(feature = "hydrate")]
pub struct TopWatch {
    observer: web_sys::IntersectionObserver,
    _callback: leptos::wasm_bindgen::closure::Closure<dyn FnMut(js_sys::Array)>,
}

#[cfg(feature = "hydrate")]
impl TopWatch {
    pub fn new(list: &Element, edge: &Element, margin: i32, on_near: impl Fn() + 'static) -> Option<Self> {
        use leptos::wasm_bindgen::closure::Closure;
        let callback = Closure::<dyn FnMut(js_sys::Array)>::new(move |entries: js_sys::Array| {
            let near = entries
                .iter()
                .any(|e| e.unchecked_into::<web_sys::IntersectionObserverEntry>().is_intersecting());
            if near {
                on_near();
            }
        });
        let init = web_sys::IntersectionObserverInit::new();
        init.set_root(Some(list));
        init.set_root_margin(&format!("{margin}px 0px 0px 0px"));
        let observer =
            web_sys::IntersectionObserver::new_with_options(callback.as_ref().unchecked_ref(), &init).ok()?;
        observer.observe(edge);
        Some(TopWatch { observer, _callback: callback })
    }
}

#[cfg(feature = "hydrate")]
impl Drop for TopWatch {
    fn drop(&mut self) {
        self.observer.disconnect();
    }
}
