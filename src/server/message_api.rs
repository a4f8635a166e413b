//! Changing messages over HTTP, for bots and scripts signed in with a token (or a
//! browser's cookie): the same checks, dedup, allowances and answers as the socket's
//! `edit`, `delete` and `react`.
//!
//! - `PATCH /api/rooms/{room}/messages/{seq}` `{text, client_id}`: the stored `edit`;
//! - `DELETE /api/rooms/{room}/messages/{seq}?client_id=…`: the stored `delete`;
//! - `PUT /api/rooms/{room}/messages/{seq}/reactions` `{emoji, on}`: the stored `react`.
//!
//! Each answers once the event is stored (200 with the event as the socket sends it);
//! a retry with a `client_id` already stored answers the original event. The claim and
//! the commit (`claim_change`, `commit_event`) serve `POST …/messages` too.

use super::{
    auth::Identity,
    http::ApiError,
    hub::Hub,
    room::Room,
    session::{SendState, Session},
    store::committer::Job,
};
use crate::protocol::{
    DeleteEvent, EditEvent, ErrorCode, MessageText, ReactEvent, RoomEvent, RoomName, Seq, check_client_id,
};
use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use std::sync::{Arc, Weak};

/// Reaction changes per second per account over HTTP (burst of 10), as on a socket.
const REACT_RATE: f64 = 4.0;

#[derive(Deserialize)]
pub struct EditBody {
    text: String,
    client_id: String,
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    client_id: String,
}

#[derive(Deserialize)]
pub struct ReactBody {
    emoji: String,
    #[serde(default = "yes")]
    on: bool,
}

fn yes() -> bool {
    true
}

/// The signed-in caller, the room (404 unless they may read it) and their chat session.
async fn caller(
    hub: &Hub,
    headers: &HeaderMap,
    room: &str,
) -> Result<(Identity, Arc<Room>, Arc<Session>), ApiError> {
    let p = hub.auth.require(headers).await?;
    let who = p.identity();
    let name = RoomName::parse(room).map_err(|_| ApiError::from(super::access::Denied::NotFound))?;
    let room = hub.check_read(&name, &who)?;
    let session = hub.sessions.attach_account(p.account.id, who.nick.clone());
    Ok((who, room, session))
}

fn too_many(refusal: super::rate::Refusal) -> ApiError {
    ApiError {
        retry_after: Some(refusal.retry_after.as_secs_f64().ceil().max(1.0) as u64),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "slow down")
    }
}

pub async fn edit(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, Seq)>,
    Json(body): Json<EditBody>,
) -> Result<Response, ApiError> {
    let bad =
        |e: crate::protocol::ValidationError| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string());
    check_client_id(&body.client_id).map_err(bad)?;
    let text = MessageText::parse(body.text, hub.config.text_limit()).map_err(bad)?.into_string();
    let (who, room, session) = caller(&hub, &headers, &room).await?;
    let result = async {
        let check = async { hub.check_edit(&room, seq, &who).await.map_err(|e| ApiError::change(&e)) };
        if let Some(event) = claim_change(&hub, &who, &session, &body.client_id, check).await? {
            return Ok(answer(event));
        }
        let mentions = hub.mentions_in(&text).await;
        let event = EditEvent {
            room: room.name.as_str().to_owned(),
            seq: 0,
            target: seq,
            text,
            edited_ts: super::unix_ms(),
            user: who.id.to_string(),
            nick: who.nick.as_str().to_owned(),
            client_id: body.client_id.clone(),
            mentions,
        };
        let build = move |s| RoomEvent::Edit(EditEvent { seq: s, ..event });
        commit_event(&hub, &room, &session, Some(&body.client_id), build).await.map(answer)
    }
    .await;
    hub.sessions.detach(&session);
    result
}

pub async fn delete(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, Seq)>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    check_client_id(&q.client_id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    let (who, room, session) = caller(&hub, &headers, &room).await?;
    let result = async {
        let check = async { hub.check_delete(&room, seq, &who).await.map_err(|e| ApiError::change(&e)) };
        if let Some(event) = claim_change(&hub, &who, &session, &q.client_id, check).await? {
            return Ok(answer(event));
        }
        let event = DeleteEvent {
            room: room.name.as_str().to_owned(),
            seq: 0,
            target: seq,
            by: who.nick.as_str().to_owned(),
            user: who.id.to_string(),
            client_id: q.client_id.clone(),
        };
        let build = move |s| RoomEvent::Delete(DeleteEvent { seq: s, ..event });
        commit_event(&hub, &room, &session, Some(&q.client_id), build).await.map(answer)
    }
    .await;
    hub.sessions.detach(&session);
    result
}

pub async fn react(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, Seq)>,
    Json(body): Json<ReactBody>,
) -> Result<Response, ApiError> {
    let (who, room, session) = caller(&hub, &headers, &room).await?;
    let result = async {
        let bucket = hub.bucket(&format!("react:{}", who.id), REACT_RATE, 10.0);
        bucket.lock().unwrap_or_else(|p| p.into_inner()).check().map_err(too_many)?;
        hub.check_react(&room, seq, &body.emoji, body.on, &who).await.map_err(|e| ApiError::change(&e))?;
        let event = ReactEvent {
            room: room.name.as_str().to_owned(),
            seq: 0,
            target: seq,
            emoji: body.emoji,
            user: who.id.to_string(),
            nick: who.nick.as_str().to_owned(),
            on: body.on,
        };
        let build = move |s| RoomEvent::React(ReactEvent { seq: s, ..event });
        commit_event(&hub, &room, &session, None, build).await.map(answer)
    }
    .await;
    hub.sessions.detach(&session);
    result
}

/// 200 with the event as the socket sends it.
fn answer(event: RoomEvent) -> Response {
    Json(event.into_server_msg()).into_response()
}

/// Claims `client_id` for a change by `who` (a message, an edit, a deletion), as the
/// socket does: a retry of a stored one is answered with it before any check (it costs a
/// read, so a `send` token too); a new one takes a `send` token and must pass `check`,
/// or its claim is freed and the refusal returned. `Some` is the stored event of a
/// retry; `None`, a new change claimed and allowed.
pub(super) async fn claim_change(
    hub: &Hub,
    who: &Identity,
    session: &Session,
    client_id: &str,
    check: impl std::future::Future<Output = Result<(), ApiError>>,
) -> Result<Option<RoomEvent>, ApiError> {
    let take =
        || hub.send_bucket(&who.id, 1).lock().unwrap_or_else(|p| p.into_inner()).check().map_err(too_many);
    match session.claim(client_id) {
        SendState::New => {}
        SendState::InFlight => {
            return Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::RateLimited,
                    "this client_id is being stored; retry shortly",
                )
            });
        }
        SendState::Stored(stored_in, seq) => {
            take()?;
            let page = hub
                .events_after(&stored_in.name, seq - 1, seq, 1)
                .await
                .map_err(|_| ApiError::internal("could not load the stored event"))?;
            let event = page
                .events
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::internal("the stored event is missing"))?;
            return Ok(Some(event));
        }
    }
    let checked = match take() {
        Ok(()) => check.await,
        Err(err) => Err(err),
    };
    match checked {
        Ok(()) => Ok(None),
        Err(err) => {
            session.forget(client_id);
            Err(err)
        }
    }
}

/// Gives a checked event its seq, queues it for the store, and returns it once stored.
pub(super) async fn commit_event(
    hub: &Hub,
    room: &Arc<Room>,
    session: &Arc<Session>,
    client_id: Option<&str>,
    build: impl FnOnce(Seq) -> RoomEvent,
) -> Result<RoomEvent, ApiError> {
    let forget = || {
        if let Some(id) = client_id {
            session.forget(id);
        }
    };
    let Some(permit) = hub.committer.place().await else {
        forget();
        return Err(ApiError::internal("the server is stopping"));
    };
    hub.metrics.messages_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let accepted = room.accept(build, |event, epoch| {
        hub.committer.enqueue(Job {
            room: room.clone(),
            event,
            epoch,
            session: Arc::downgrade(session),
            sender: Weak::new(),
            permit,
            done: Some(tx),
        })
    });
    if accepted.is_err() {
        forget();
        return Err(ApiError::internal("the server is stopping"));
    }
    match rx.await {
        Ok(Ok(event)) => Ok(event),
        _ => Err(ApiError::internal("the change could not be stored; send it again")),
    }
}
