//! `confab admin …`: account administration from the command line, on the database of a
//! stopped or running server (the account store takes no server lock; SQLite orders the
//! writes). Passwords are read from CONFAB_PASSWORD or standard input, never from a flag
//! (which would show in the process list and the shell history).

use super::{
    auth::{Auth, SignupRequest},
    config::{AdminCommand, Config},
    store::{
        accounts::{AccountStore, InviteUse},
        sqlite_accounts::SqliteAccounts,
    },
    unix_ms,
};
use crate::protocol::Username;
use std::{io::BufRead, sync::Arc, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Auth(#[from] super::auth::AuthError),
    #[error("{0}")]
    Store(#[from] super::store::accounts::AccountError),
    #[error("opening the database: {0}")]
    Open(String),
    #[error("reading the password: {0}")]
    Input(#[from] std::io::Error),
    #[error("no account is called {0}")]
    NoSuchUser(String),
}

/// The password for a command: CONFAB_PASSWORD, else the first line of standard input.
fn read_password() -> Result<String, AdminError> {
    if let Ok(password) = std::env::var("CONFAB_PASSWORD") {
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Runs one admin command; returns what to print.
pub async fn run(config: &Config, command: &AdminCommand) -> Result<String, AdminError> {
    let store: Arc<dyn AccountStore> = if config.uses_postgres() {
        let url = config.db.to_str().unwrap_or_default();
        let pg =
            super::store::postgres::Pg::connect(url).await.map_err(|e| AdminError::Open(e.to_string()))?;
        Arc::new(super::store::postgres_accounts::PgAccounts::new(Arc::new(pg)))
    } else {
        Arc::new(SqliteAccounts::open(&config.db, config.sync == super::config::SyncMode::Full)?)
    };
    let auth = Auth::new(store.clone(), config);
    match command {
        AdminCommand::CreateUser { username, display_name, admin } => {
            let req = SignupRequest {
                username: username.clone(),
                password: read_password()?,
                display_name: display_name.clone(),
                invite: None,
            };
            let new = auth.new_account(&req, *admin).await?;
            let now = unix_ms();
            let account = auth.db(move |s| s.create_account(new, InviteUse::NotNeeded, now)).await?;
            Ok(format!("created {} (id {}, {})", account.username, account.id, account.role.as_str()))
        }
        AdminCommand::ResetPassword { username } => {
            let name = Username::parse(username).ok_or_else(|| AdminError::NoSuchUser(username.clone()))?;
            let lookup = name.clone();
            let (account, _) = auth
                .db(move |s| s.account_by_username(&lookup))
                .await?
                .ok_or_else(|| AdminError::NoSuchUser(username.clone()))?;
            auth.set_password(account.id, name.as_str(), &read_password()?, None).await?;
            Ok(format!("password of {name} set; every session of it has ended"))
        }
        AdminCommand::Invite { uses, expires_hours } => {
            let uses = (*uses > 0).then_some(*uses);
            let valid_for = (*expires_hours > 0).then(|| Duration::from_secs(expires_hours * 3600));
            let (row, code) = auth.create_invite(None, uses, valid_for).await?;
            let uses = row.uses_left.map_or("unlimited uses".to_owned(), |n| format!("{n} use(s)"));
            let expires = if *expires_hours > 0 {
                format!("expires in {expires_hours} h")
            } else {
                "never expires".into()
            };
            Ok(format!("{code}\n(invite {}: {uses}, {expires})", row.id))
        }
    }
}
