//! Components, one file per thing on screen, plus the shared chat state they read.

pub mod actions;
pub mod chat;
pub mod composer;
pub mod json;
pub mod lobby;
pub mod markdown;
pub mod members;
pub mod messages;
pub mod nav;
pub mod nick;
pub mod notice;
pub mod pacer;
pub mod room;
pub mod row;
pub mod scroll;
pub mod seed;
pub mod sidebar;
pub mod state;
pub mod sync;
pub mod text;
pub mod wire;
