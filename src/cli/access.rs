//! `labfleet user …` and `labfleet token …`: users and their API tokens, straight on the database
//! `serve` uses (no running API needed). `token create` prints the token alone on stdout, so
//! scripts can do `T=$(labfleet token create --user ci --role admin)`; messages go to stderr.
//! Every change is written to the audit log with the actor `cli`.

use anyhow::{bail, Context};
use chrono::SecondsFormat;
use clap::Subcommand;
use labfleet_access::{AccessStore, NewAuditEvent, Role};
use labfleet_config::Settings;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::components::{self, IfMissing};

/// `labfleet user …`
#[derive(Subcommand)]
pub enum UserCommand {
    /// Creates a user.
    Create {
        /// Unique name: letters, digits, `.`, `_`, `-`, `@`.
        #[arg(long)]
        name: String,
        /// admin, teacher or student.
        #[arg(long)]
        role: Role,
    },
    /// Lists users (on stdout).
    List,
    /// Disables a user: none of their tokens is accepted any more (running API processes
    /// notice within 10 s).
    Disable {
        /// The user's name.
        #[arg(long)]
        name: String,
    },
}

/// `labfleet token …`
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issues an API token to a user and prints it once, alone, on stdout.
    Create {
        /// The user's name.
        #[arg(long)]
        user: String,
        /// Create the user with this role if there is none (admin, teacher or student).
        #[arg(long)]
        role: Option<Role>,
        /// What the token is for.
        #[arg(long)]
        label: Option<String>,
        /// Days until the token stops working (1–3650); never, if omitted.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Revokes a token (running API processes refuse it within 10 s).
    Revoke {
        /// The token's id (`GET /api/users/{id}/tokens` lists them).
        #[arg(long)]
        id: i64,
    },
}

async fn store(settings: &Settings, if_missing: IfMissing) -> anyhow::Result<AccessStore> {
    Ok(AccessStore::new(
        components::cli_database(settings, if_missing).await?,
    ))
}

/// Writes an audit row for a change made from the command line; a failure is reported, not fatal
/// (the change itself is done).
pub async fn audit(store: &AccessStore, action: &str, target: String, detail: Value) {
    let event = NewAuditEvent {
        actor: "cli".into(),
        actor_role: Role::Admin,
        action: action.into(),
        target,
        detail: Some(detail),
        source: "cli".into(),
        outcome: Some("succeeded".into()),
    };
    if let Err(e) = store.record(event).await {
        tracing::error!(action, error = %e, "could not write the audit log");
    }
}

/// Runs a `user` subcommand.
pub async fn user(settings: Settings, command: UserCommand) -> anyhow::Result<()> {
    let if_missing = match command {
        UserCommand::Create { .. } => IfMissing::Create,
        UserCommand::List | UserCommand::Disable { .. } => IfMissing::Refuse,
    };
    let store = store(&settings, if_missing).await?;
    match command {
        UserCommand::Create { name, role } => {
            let user = store.create_user(&name, role).await?;
            audit(
                &store,
                "user.create",
                format!("user:{}", user.id),
                json!({"name": user.name, "role": user.role}),
            )
            .await;
            eprintln!(
                "created user {} (id {}, role {})",
                user.name, user.id, user.role
            );
        }
        UserCommand::Disable { name } => {
            let Some(user) = store.user_by_name(&name).await? else {
                bail!("there is no user named {name}");
            };
            store.disable_user(user.id).await?;
            audit(
                &store,
                "user.disable",
                format!("user:{}", user.id),
                json!({"name": user.name}),
            )
            .await;
            eprintln!("user {name} disabled; their tokens are refused (by running API processes within 10 s)");
        }
        UserCommand::List => {
            let time =
                |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
            println!(
                "{:>6}  {:<24} {:<8} {:<21} disabled",
                "id", "name", "role", "created"
            );
            for u in store.list_users().await? {
                let disabled = u.disabled_at.map(time).unwrap_or_default();
                println!(
                    "{:>6}  {:<24} {:<8} {:<21} {}",
                    u.id,
                    u.name,
                    u.role,
                    time(u.created_at),
                    disabled
                );
            }
        }
    }
    Ok(())
}

/// Runs a `token` subcommand.
pub async fn token(settings: Settings, command: TokenCommand) -> anyhow::Result<()> {
    let if_missing = match command {
        TokenCommand::Create { .. } => IfMissing::Create,
        TokenCommand::Revoke { .. } => IfMissing::Refuse,
    };
    let store = store(&settings, if_missing).await?;
    match command {
        TokenCommand::Create {
            user,
            role,
            label,
            expires_in_days,
        } => {
            let owner = match (store.user_by_name(&user).await?, role) {
                (Some(u), Some(r)) if u.role != r => {
                    bail!("user {user} exists with the role {}, not {r}", u.role)
                }
                (Some(u), _) => u,
                (None, Some(r)) => {
                    let u = store.create_user(&user, r).await?;
                    audit(
                        &store,
                        "user.create",
                        format!("user:{}", u.id),
                        json!({"name": u.name, "role": u.role}),
                    )
                    .await;
                    eprintln!("created user {} (id {}, role {})", u.name, u.id, u.role);
                    u
                }
                (None, None) => bail!("there is no user named {user}; pass --role to create it"),
            };
            let issued = store
                .issue_token(owner.id, label.as_deref(), expires_in_days)
                .await
                .context("cannot issue the token")?;
            audit(
                &store,
                "token.issue",
                format!("token:{}", issued.token_id),
                json!({"user": owner.name, "user_id": owner.id, "label": label, "expires_at": issued.expires_at}),
            )
            .await;
            let expiry = issued
                .expires_at
                .map(|t| format!("expires {}", t.to_rfc3339_opts(SecondsFormat::Secs, true)))
                .unwrap_or_else(|| "does not expire".into());
            eprintln!(
                "token {} for {} ({}); it is shown only once:",
                issued.token_id, owner.name, expiry
            );
            println!("{}", issued.token.expose_secret());
        }
        TokenCommand::Revoke { id } => {
            let token = store.revoke_token(id).await?;
            audit(
                &store,
                "token.revoke",
                format!("token:{id}"),
                json!({"user_id": token.user_id}),
            )
            .await;
            eprintln!(
                "token {id} revoked (running API processes refuse it within {} s)",
                labfleet_access::verify::CACHE_TTL.as_secs()
            );
        }
    }
    Ok(())
}
