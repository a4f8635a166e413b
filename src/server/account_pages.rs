//! Server-rendered account pages (sign-in, sign-up, account, admin).
use super::hub::Hub;
use axum::Router;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
}
