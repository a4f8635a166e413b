//! The reader's place in the message list, so a page of older messages added above does
//! not move what they are reading; and whether the top of the list is near enough to
//! load the next older page.
//!
//! The place is a message (by seq) and its distance from the top of the view, not a
//! scroll offset: whatever is added above it, and whenever the DOM catches up, the same
//! message is put back at the same height. The browser's own scroll anchoring is turned
//! off for the list (`overflow-anchor: none`), so only this moves it.
//!
//! The list is the scrolling element, positioned (so it is its items' offset parent);
//! its first child is its top edge and its last child holds the messages, oldest first,
//! as `li[data-seq]`.

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

/// Where the reader is in `list`.
pub fn place(list: &HtmlElement) -> Option<Place> {
    let top = list.scroll_top();
    let children = list.last_element_child()?.children();
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
pub fn restore(list: &HtmlElement, place: Place) -> bool {
    let selector = format!("li[data-seq=\"{}\"]", place.seq);
    let Some(el) = list.query_selector(&selector).ok().flatten().and_then(html) else {
        return false;
    };
    list.set_scroll_top(el.offset_top() - place.offset);
    true
}

/// True when the top edge of `list` is in view, or less than `margin` px above it.
pub fn near_top(list: &HtmlElement, margin: i32) -> bool {
    let Some(edge) = list.first_element_child().and_then(html) else { return false };
    edge.offset_top() + edge.offset_height() >= list.scroll_top() - margin
}
