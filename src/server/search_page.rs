//! `/search`: the chat's search, as a page the server renders (no script: the chat's
//! bundle carries none of it). A hit links to its room at that message (`/r/{room}?at=`),
//! where the chat loads older history until the message is in view.
//!
//! The same rules as the socket's `search` and `GET /api/search`: only rooms the viewer
//! may read (an anonymous visitor is a guest: public rooms), `from:` and `in:` filters.

use super::{
    account_pages::{alert, esc, page, viewer, when},
    hub::Hub,
    search::Query as SearchQuery,
};
use crate::protocol::{ErrorCode, SEARCH_PAGE};
use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
    before: Option<i64>,
}

pub async fn search_page(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(p): Query<SearchParams>,
) -> Response {
    let (who, principal) = viewer(&hub, &headers).await;
    if principal.is_none() && !hub.auth.guests {
        return Redirect::to("/login?next=/search").into_response();
    }
    let form = format!(
        "<h1>Search messages</h1>\
         <form class=\"account-form\" role=\"search\" action=\"/search\" method=\"get\">\
         <label for=\"q\">Words to find</label>\
         <input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" maxlength=\"200\" autofocus \
          aria-describedby=\"q-help\">\
         <p id=\"q-help\" class=\"hint\">\"a phrase\", word* for a prefix, -word to leave out, \
          from:username, in:room</p>\
         <button type=\"submit\">Search</button></form>",
        esc(&p.q)
    );
    if p.q.trim().is_empty() {
        return page(StatusCode::OK, "Search", &form);
    }
    let query = match SearchQuery::parse(&p.q) {
        Ok(q) => q,
        Err(err) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Search",
                &format!("{form}{}", alert(Some(&err.to_string()))),
            );
        }
    };
    if hub.search_allowed(&who).is_err() {
        let message = "Too many searches: wait a few seconds and try again.";
        return page(StatusCode::TOO_MANY_REQUESTS, "Search", &format!("{form}{}", alert(Some(message))));
    }
    let found = hub.search(&who, &query, None, p.before, SEARCH_PAGE as usize).await;
    let page_ = match found {
        Ok(page_) => page_,
        Err(err) => {
            let (status, message) = match err.code() {
                ErrorCode::NotFound => {
                    (StatusCode::NOT_FOUND, "No room of that name you may read.".to_owned())
                }
                ErrorCode::InvalidQuery => (StatusCode::BAD_REQUEST, err.to_string()),
                _ => {
                    tracing::error!(%err, "search page failed");
                    (StatusCode::INTERNAL_SERVER_ERROR, "The search failed; try again.".to_owned())
                }
            };
            return page(status, "Search", &format!("{form}{}", alert(Some(&message))));
        }
    };
    let mut body = form;
    if page_.hits.is_empty() {
        body.push_str("<p role=\"status\">Nothing found.</p>");
    } else {
        body.push_str(&format!(
            "<h2>Results</h2><ol class=\"search-hits\" aria-label=\"Results for {}\">",
            esc(&p.q)
        ));
        for hit in &page_.hits {
            body.push_str(&format!(
                "<li><a href=\"/r/{room}?at={seq}\"><span class=\"hit-room\">#{room}</span> \
                 <span class=\"hit-nick\">{nick}</span> <time>{time}</time></a>\
                 <p class=\"snippet\">{snippet}</p></li>",
                room = esc(&hit.room),
                seq = hit.seq,
                nick = esc(&hit.nick),
                time = when(hit.ts),
                snippet = esc(&hit.snippet),
            ));
        }
        body.push_str("</ol>");
    }
    if let Some(next) = page_.next {
        body.push_str(&format!(
            "<p><a href=\"/search?q={}&amp;before={next}\">Older results</a></p>",
            esc(&url_encode(&p.q))
        ));
    }
    body.push_str("<p><a href=\"/\">Back to the chat</a></p>");
    page(StatusCode::OK, "Search", &body)
}

/// Percent-encodes a query-string value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
