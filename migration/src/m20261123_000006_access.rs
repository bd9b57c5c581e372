//! Access control and audit: users with a role, their API tokens (only a SHA-256 digest of each
//! token is stored) and the audit log of configuration changes and user actions.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Name,
    Role,
    CreatedAt,
    DisabledAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    UserId,
    TokenHash,
    Label,
    Prefix,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Actor,
    ActorRole,
    Action,
    Target,
    Detail,
    Source,
    Outcome,
}

fn id<T: Iden + 'static>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn timestamp<T: Iden + 'static>(col: T) -> ColumnDef {
    ColumnDef::new(col).timestamp_with_time_zone().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(id(Users::Id))
                    .col(
                        ColumnDef::new(Users::Name)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Users::Role).string_len(16).not_null())
                    .col(timestamp(Users::CreatedAt).not_null())
                    .col(timestamp(Users::DisabledAt).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .col(id(ApiTokens::Id))
                    .col(ColumnDef::new(ApiTokens::UserId).big_integer().not_null())
                    .col(
                        ColumnDef::new(ApiTokens::TokenHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(ApiTokens::Label).string_len(100).null())
                    .col(ColumnDef::new(ApiTokens::Prefix).string_len(16).not_null())
                    .col(timestamp(ApiTokens::CreatedAt).not_null())
                    .col(timestamp(ApiTokens::ExpiresAt).null())
                    .col(timestamp(ApiTokens::RevokedAt).null())
                    .col(timestamp(ApiTokens::LastUsedAt).null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_tokens_user")
                            .from(ApiTokens::Table, ApiTokens::UserId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_api_tokens_user")
                    .table(ApiTokens::Table)
                    .col(ApiTokens::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(id(AuditEvents::Id))
                    .col(timestamp(AuditEvents::At).not_null())
                    .col(ColumnDef::new(AuditEvents::Actor).string_len(64).not_null())
                    .col(
                        ColumnDef::new(AuditEvents::ActorRole)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Action)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Target)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditEvents::Detail).json().null())
                    .col(
                        ColumnDef::new(AuditEvents::Source)
                            .string_len(100)
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditEvents::Outcome).string_len(32).null())
                    .to_owned(),
            )
            .await?;
        // `GET /api/audit` filters by actor or action and pages newest first (by id).
        for (name, col) in [
            ("ix_audit_events_actor", AuditEvents::Actor),
            ("ix_audit_events_action", AuditEvents::Action),
            ("ix_audit_events_at", AuditEvents::At),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditEvents::Table)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            ApiTokens::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
