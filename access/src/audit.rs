//! The audit log: who did what to which object, when, from where, and how it ended. Rows are only
//! ever added. `detail` is for non-secret particulars; as a last line of defence, values under
//! keys that name a secret are replaced before the row is written.

use chrono::{DateTime, Utc};
use labfleet_entities::audit_event;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Serialize;
use serde_json::Value;

use crate::{role::Role, store::AccessStore};

/// Keys whose values never reach the log, wherever they appear in `detail`.
const SECRET_KEYS: [&str; 7] = [
    "password",
    "secret",
    "token",
    "token_secret",
    "ssh_password",
    "ssh_private_key",
    "private_key",
];

/// One action to record.
#[derive(Clone, Debug)]
pub struct NewAuditEvent {
    /// Who did it (a user name, `admin` for the bootstrap token).
    pub actor: String,
    /// Their role.
    pub actor_role: Role,
    /// What was done, `<object>.<verb>` (`cluster.update`).
    pub action: String,
    /// What it was done to, `<object>:<id>` (`cluster:3`).
    pub target: String,
    /// Non-secret particulars.
    pub detail: Option<Value>,
    /// Where the request came from (the peer address, or `cli`).
    pub source: String,
    /// How it ended (`succeeded`, `failed`).
    pub outcome: Option<String>,
}

/// Filters of the audit log.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only this actor's actions.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only actions at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Page size.
    pub limit: u64,
    /// Rows to skip.
    pub offset: u64,
}

/// An audit event as shown to admins.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    /// Row id (grows with time).
    pub id: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it.
    pub actor: String,
    /// Their role then.
    pub actor_role: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Particulars.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
    /// Where the request came from.
    pub source: String,
    /// How it ended.
    pub outcome: Option<String>,
}

impl From<audit_event::Model> for AuditEventView {
    fn from(e: audit_event::Model) -> Self {
        AuditEventView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            actor_role: e.actor_role,
            action: e.action,
            target: e.target,
            detail: e.detail,
            source: e.source,
            outcome: e.outcome,
        }
    }
}

/// Replaces the values of secret-named keys, at any depth.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                    *v = Value::String("[redacted]".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The row for an event, its detail redacted.
fn row(event: NewAuditEvent) -> audit_event::ActiveModel {
    let detail = event.detail.map(|mut d| {
        redact(&mut d);
        d
    });
    audit_event::ActiveModel {
        id: sea_orm::ActiveValue::NotSet,
        at: Set(Utc::now()),
        actor: Set(event.actor),
        actor_role: Set(event.actor_role.as_str().to_string()),
        action: Set(event.action),
        target: Set(event.target),
        detail: Set(detail),
        source: Set(event.source),
        outcome: Set(event.outcome),
    }
}

impl AccessStore {
    /// Appends an event to the audit log.
    pub async fn record(&self, event: NewAuditEvent) -> Result<(), DbErr> {
        row(event).insert(&self.db).await.map(|_| ())
    }

    /// Appends many events (a scheduler sweep's), a few hundred per statement.
    pub async fn record_all(&self, events: Vec<NewAuditEvent>) -> Result<(), DbErr> {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<_> = events.by_ref().take(500).map(row).collect();
            audit_event::Entity::insert_many(chunk)
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }

    /// Audit events matching `filter`, newest first.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEventView>, DbErr> {
        let mut q = audit_event::Entity::find();
        if let Some(actor) = &filter.actor {
            q = q.filter(audit_event::Column::Actor.eq(actor.as_str()));
        }
        if let Some(action) = &filter.action {
            q = q.filter(audit_event::Column::Action.eq(action.as_str()));
        }
        if let Some(since) = filter.since {
            q = q.filter(audit_event::Column::At.gte(since));
        }
        Ok(q.order_by_desc(audit_event::Column::Id)
            .limit(filter.limit)
            .offset(filter.offset)
            .all(&self.db)
            .await?
            .into_iter()
            .map(AuditEventView::from)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_named_values_are_redacted_at_any_depth() {
        let mut d = json!({
            "cluster_id": "c1",
            "fields": ["name", "password"],
            "Password": "hunter2",
            "nested": {"token": "lf_x", "ssh_private_key": "-----BEGIN", "token_id": 4},
            "list": [{"secret": "s"}],
        });
        redact(&mut d);
        let text = d.to_string();
        for secret in ["hunter2", "lf_x", "BEGIN", "\"s\""] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(d["fields"], json!(["name", "password"]));
        assert_eq!(d["nested"]["token_id"], 4);
        assert_eq!(d["cluster_id"], "c1");
    }
}
