//! The scheduler's tables: the leader lease, one row per periodic tick (next and last run, what
//! it did), the idle history of each class VM (so a restart loses no idle time), and the orphans
//! reconciliation found. Also the per-cluster idle thresholds and the per-VM "keep running" flag.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SchedulerLeases {
    Table,
    Name,
    Holder,
    ExpiresAt,
    AcquiredAt,
}

#[derive(DeriveIden)]
enum SchedulerTicks {
    Table,
    Name,
    NextRunAt,
    LastStartedAt,
    LastFinishedAt,
    LastDurationMs,
    LastHolder,
    LastSeen,
    LastActions,
    LastNote,
    LastError,
    Runs,
}

#[derive(DeriveIden)]
enum VmActivity {
    Table,
    ClassVmId,
    LastSeenAt,
    LastStatus,
    LastCpu,
    IdleSince,
    NeedsHistory,
    ShutdownJobId,
    ShutdownAt,
}

#[derive(DeriveIden)]
enum Orphans {
    Table,
    ClusterDbId,
    Vmid,
    Node,
    Name,
    Marker,
    State,
    FirstSeenAt,
    LastSeenAt,
    JobId,
}

#[derive(DeriveIden)]
enum Clusters {
    Table,
    IdleCpuPercent,
    IdleMinutes,
}

#[derive(DeriveIden)]
enum ClassVms {
    Table,
    KeepRunning,
}

fn tz<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn tz_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SchedulerLeases::Table)
                    .col(
                        ColumnDef::new(SchedulerLeases::Name)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(SchedulerLeases::Holder)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(tz(SchedulerLeases::ExpiresAt))
                    .col(tz(SchedulerLeases::AcquiredAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SchedulerTicks::Table)
                    .col(
                        ColumnDef::new(SchedulerTicks::Name)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(tz(SchedulerTicks::NextRunAt))
                    .col(tz_null(SchedulerTicks::LastStartedAt))
                    .col(tz_null(SchedulerTicks::LastFinishedAt))
                    .col(
                        ColumnDef::new(SchedulerTicks::LastDurationMs)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(SchedulerTicks::LastHolder)
                            .string_len(128)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(SchedulerTicks::LastSeen)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(SchedulerTicks::LastActions)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(SchedulerTicks::LastNote).text().null())
                    .col(ColumnDef::new(SchedulerTicks::LastError).text().null())
                    .col(
                        ColumnDef::new(SchedulerTicks::Runs)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VmActivity::Table)
                    .col(
                        ColumnDef::new(VmActivity::ClassVmId)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(tz(VmActivity::LastSeenAt))
                    .col(
                        ColumnDef::new(VmActivity::LastStatus)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(VmActivity::LastCpu).double().not_null())
                    .col(tz_null(VmActivity::IdleSince))
                    .col(
                        ColumnDef::new(VmActivity::NeedsHistory)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(VmActivity::ShutdownJobId).uuid().null())
                    .col(tz_null(VmActivity::ShutdownAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Orphans::Table)
                    .col(
                        ColumnDef::new(Orphans::ClusterDbId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Orphans::Vmid).big_integer().not_null())
                    .col(ColumnDef::new(Orphans::Node).string_len(255).not_null())
                    .col(ColumnDef::new(Orphans::Name).string_len(255).not_null())
                    .col(ColumnDef::new(Orphans::Marker).string_len(255).not_null())
                    .col(ColumnDef::new(Orphans::State).string_len(32).not_null())
                    .col(tz(Orphans::FirstSeenAt))
                    .col(tz(Orphans::LastSeenAt))
                    .col(ColumnDef::new(Orphans::JobId).uuid().null())
                    .primary_key(Index::create().col(Orphans::ClusterDbId).col(Orphans::Vmid))
                    .to_owned(),
            )
            .await?;
        for col in [
            ColumnDef::new(Clusters::IdleCpuPercent)
                .double()
                .null()
                .to_owned(),
            ColumnDef::new(Clusters::IdleMinutes)
                .integer()
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Clusters::Table)
                        .add_column(col)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(ClassVms::Table)
                    .add_column(
                        ColumnDef::new(ClassVms::KeepRunning)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ClassVms::Table)
                    .drop_column(ClassVms::KeepRunning)
                    .to_owned(),
            )
            .await?;
        for col in [
            Clusters::IdleCpuPercent.into_iden(),
            Clusters::IdleMinutes.into_iden(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Clusters::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        for table in [
            Orphans::Table.into_iden(),
            VmActivity::Table.into_iden(),
            SchedulerTicks::Table.into_iden(),
            SchedulerLeases::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
