//! Users: created with a name and a role, listed, disabled (never deleted, so the names in jobs
//! and the audit log keep meaning one person).

use chrono::{DateTime, Utc};
use labfleet_entities::user;
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, DbErr, EntityTrait,
    QueryFilter, QueryOrder,
};
use serde::Serialize;

use crate::{error::AccessError, role::Role, store::AccessStore};

/// The bootstrap admin's name (`LABFLEET_ADMIN_TOKEN`). Jobs record their creator by name, so a
/// user of another role called `admin` would see the bootstrap admin's jobs: only an admin may
/// carry this name.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// A user as shown to admins.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Unique name (the owner name of the user's jobs).
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user was disabled, if they were.
    pub disabled_at: Option<DateTime<Utc>>,
}

impl User {
    /// The user of a row; `None` for a role this version does not know.
    pub(crate) fn from_row(row: user::Model) -> Option<User> {
        let role = Role::parse(&row.role)?;
        Some(User {
            id: row.id,
            name: row.name,
            role,
            created_at: row.created_at,
            disabled_at: row.disabled_at,
        })
    }
}

/// Checks a user name: 1–64 characters, letters, digits and `.`, `_`, `-`, `@`, starting with a
/// letter or digit (names appear in logs, job lists and audit targets unquoted).
pub fn validate_name(name: &str) -> Result<(), AccessError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > 64 {
        return Err(AccessError::input(
            "name",
            "name must be 1–64 characters long",
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(ok_char) {
        return Err(AccessError::input(
            "name",
            format!("name `{name}` may only hold letters, digits, `.`, `_`, `-` and `@`, starting with a letter or digit"),
        ));
    }
    Ok(())
}

impl AccessStore {
    /// Creates a user. A name already taken (even by a disabled user) is a conflict.
    pub async fn create_user(&self, name: &str, role: Role) -> Result<User, AccessError> {
        validate_name(name)?;
        if name == BOOTSTRAP_ADMIN && role != Role::Admin {
            return Err(AccessError::input(
                "name",
                format!("the name `{BOOTSTRAP_ADMIN}` belongs to the bootstrap admin; only an admin may have it"),
            ));
        }
        if self.user_by_name(name).await?.is_some() {
            return Err(duplicate(name));
        }
        let row = user::ActiveModel {
            id: sea_orm::ActiveValue::NotSet,
            name: Set(name.to_string()),
            role: Set(role.as_str().to_string()),
            created_at: Set(Utc::now()),
            disabled_at: Set(None),
        }
        .insert(&self.db)
        .await
        // Two creates of one name at once: the unique index decides.
        .map_err(|e| {
            if is_unique_violation(&e) {
                duplicate(name)
            } else {
                e.into()
            }
        })?;
        User::from_row(row).ok_or_else(|| AccessError::Db(DbErr::Custom("role lost".into())))
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, AccessError> {
        Ok(user::Entity::find()
            .order_by_asc(user::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(User::from_row)
            .collect())
    }

    /// One user by id.
    pub async fn user(&self, id: i64) -> Result<User, AccessError> {
        user::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .and_then(User::from_row)
            .ok_or_else(|| AccessError::NotFound(format!("user {id} not found")))
    }

    /// One user by name, if there is one.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, AccessError> {
        Ok(user::Entity::find()
            .filter(user::Column::Name.eq(name))
            .one(&self.db)
            .await?
            .and_then(User::from_row))
    }

    /// Disables a user: none of their tokens is accepted any more (other API processes notice
    /// within their token cache's TTL; `Authenticator::disable_user` evicts this process's).
    pub async fn disable_user(&self, id: i64) -> Result<User, AccessError> {
        self.user(id).await?;
        user::Entity::update_many()
            .col_expr(user::Column::DisabledAt, Expr::value(Utc::now()))
            .filter(user::Column::Id.eq(id))
            .filter(user::Column::DisabledAt.is_null())
            .exec(&self.db)
            .await?;
        self.user(id).await
    }
}

fn duplicate(name: &str) -> AccessError {
    AccessError::Conflict(format!("a user named `{name}` already exists"))
}

pub(crate) fn is_unique_violation(e: &DbErr) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("unique") || text.contains("duplicate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_checked() {
        for ok in ["alice", "t.smith", "bob-2", "x@lab", "A_1"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-lead",
            "with space",
            "semi;colon",
            "ünïcode",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(
                    validate_name(bad),
                    Err(AccessError::Input { field: "name", .. })
                ),
                "{bad}"
            );
        }
    }
}
