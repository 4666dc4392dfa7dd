//! `bridge users …`: invite a console user (a one-time link to set a password) and issue a
//! password reset link. The links start with `console.base_url` (default `http://` + `listen`).

use super::{parse_account, print, JsonFlag};
use crate::commands::console_users::{self as users, ConsoleUserCommandError};
use crate::config::Config;
use crate::console::{link, LinkKind};
use crate::store::{EventStore, Metadata};
use anyhow::anyhow;
use clap::Subcommand;
use domain::console_user::{ConsoleUserError, Email, Role};
use domain::ids::AccountId;
use serde_json::json;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Invite a console user of an account: prints a one-time link, valid 24 hours, to set a
    /// password and sign in.
    Invite {
        #[arg(long)]
        account: String,
        #[arg(long)]
        email: String,
        /// `owner` (also manages users and API keys) or `developer`.
        #[arg(long, default_value = "owner")]
        role: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Print a one-time link, valid 24 hours, for the user with this email to set a new password.
    ResetLink {
        email: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

fn base_url(config: &Config) -> String {
    config.console.base_url.clone().unwrap_or_else(|| format!("http://{}", config.listen))
}

fn user_error(e: ConsoleUserCommandError, email: &str, account: &str) -> anyhow::Error {
    match e {
        ConsoleUserCommandError::AccountNotFound => anyhow!("no account {account}"),
        ConsoleUserCommandError::EmailTaken => anyhow!("{email} is already a console user"),
        ConsoleUserCommandError::User(crate::commands::CommandError::Rejected(ConsoleUserError::NotFound)) => {
            anyhow!("no console user {email}")
        }
        ConsoleUserCommandError::User(crate::commands::CommandError::Rejected(e)) => anyhow!("{email}: {e}"),
        ConsoleUserCommandError::User(other) => anyhow::Error::new(other),
    }
}

pub async fn run(
    command: UsersCommand,
    config: &Config,
    store: &EventStore,
    pool: &sqlx::PgPool,
    operator: Metadata,
) -> anyhow::Result<()> {
    let base = base_url(config);
    match command {
        UsersCommand::Invite { account, email, role, out } => {
            let account_id = parse_account(&account)?;
            let email = Email::parse(&email).map_err(|e| anyhow!("{e}"))?;
            let role = Role::parse(&role).map_err(|e| anyhow!("{e}"))?;
            let (user, token) = users::invite(store, &operator, &account_id, email.clone(), role)
                .await
                .map_err(|e| user_error(e, email.as_str(), &account))?;
            let link = link(&base, LinkKind::Invite, &token);
            print(
                out.json,
                json!({"user_id": user.user_id, "account_id": user.account_id, "email": user.email.as_str(), "role": role.as_str(), "link": link}),
                || {
                    format!(
                        "invited {} ({}) to {}\n\n  {link}\n\nThe link works once, for 24 hours.",
                        user.email.as_str(),
                        role.as_str(),
                        user.account_id
                    )
                },
            );
        }
        UsersCommand::ResetLink { email, out } => {
            let email = Email::parse(&email).map_err(|e| anyhow!("{e}"))?;
            let (user, token) =
                users::issue_reset_link(store, pool, &operator, &email).await.map_err(|e| user_error(e, email.as_str(), ""))?;
            let link = link(&base, LinkKind::Reset, &token);
            print(out.json, json!({"user_id": user.user_id, "email": user.email.as_str(), "link": link}), || {
                format!("password reset link for {}\n\n  {link}\n\nThe link works once, for 24 hours.", user.email.as_str())
            });
        }
    }
    Ok(())
}

/// The owner of the demo account (`serve --demo`): its email and the link to set its password.
pub async fn demo_owner(
    store: &EventStore,
    operator: &Metadata,
    account_id: &AccountId,
    base: &str,
) -> anyhow::Result<(String, String)> {
    // One email is one user: each demo account gets its own.
    let suffix = &account_id.as_str()[account_id.as_str().len() - 8..];
    let email = Email::parse(&format!("demo-{suffix}@example.com")).map_err(|e| anyhow!("{e}"))?;
    let (_, token) = users::invite(store, operator, account_id, email.clone(), Role::Owner)
        .await
        .map_err(|e| user_error(e, email.as_str(), ""))?;
    Ok((email.as_str().to_owned(), link(base, LinkKind::Invite, &token)))
}
