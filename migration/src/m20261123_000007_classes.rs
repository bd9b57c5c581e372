//! Classes and their VMs, VMID reservations, the slots that cap concurrent Proxmox work per storage
//! and per node across all workers, and two job columns: the class a deployment belongs to (for
//! `GET /api/jobs?class=`) and a handler's current step (shown for every child in a job's progress).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Classes {
    Table,
    Id,
    Name,
    Slug,
    Description,
    Owner,
    ClusterDbId,
    TemplateVmid,
    Method,
    DeploymentNode,
    StartVms,
    PoolSize,
    IdleCpuPercent,
    IdleMinutes,
    State,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ClassVms {
    Table,
    Id,
    ClassId,
    Idx,
    ClusterDbId,
    Node,
    Vmid,
    Name,
    State,
    Upid,
    Error,
    JobId,
    Student,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum VmidReservations {
    Table,
    ClusterDbId,
    Vmid,
    State,
    Holder,
    ReservedAt,
    ReleasedAt,
}

#[derive(DeriveIden)]
enum ResourceSlots {
    Table,
    Resource,
    Slot,
    Holder,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    ClassId,
    Step,
}

fn tz<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Classes::Table)
                    .col(
                        ColumnDef::new(Classes::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Classes::Name).string_len(100).not_null())
                    .col(ColumnDef::new(Classes::Slug).string_len(63).not_null())
                    .col(ColumnDef::new(Classes::Description).text().null())
                    .col(ColumnDef::new(Classes::Owner).string_len(128).not_null())
                    .col(
                        ColumnDef::new(Classes::ClusterDbId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Classes::TemplateVmid)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Classes::Method).string_len(20).not_null())
                    .col(
                        ColumnDef::new(Classes::DeploymentNode)
                            .string_len(64)
                            .null(),
                    )
                    .col(ColumnDef::new(Classes::StartVms).boolean().not_null())
                    .col(ColumnDef::new(Classes::PoolSize).integer().not_null())
                    .col(ColumnDef::new(Classes::IdleCpuPercent).double().null())
                    .col(ColumnDef::new(Classes::IdleMinutes).integer().null())
                    .col(ColumnDef::new(Classes::State).string_len(20).not_null())
                    .col(tz(Classes::CreatedAt))
                    .col(tz(Classes::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ClassVms::Table)
                    .col(
                        ColumnDef::new(ClassVms::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ClassVms::ClassId).big_integer().not_null())
                    .col(ColumnDef::new(ClassVms::Idx).integer().not_null())
                    .col(
                        ColumnDef::new(ClassVms::ClusterDbId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(ClassVms::Node).string_len(64).not_null())
                    .col(ColumnDef::new(ClassVms::Vmid).big_integer().not_null())
                    .col(ColumnDef::new(ClassVms::Name).string_len(63).not_null())
                    .col(ColumnDef::new(ClassVms::State).string_len(20).not_null())
                    .col(ColumnDef::new(ClassVms::Upid).string_len(255).null())
                    .col(ColumnDef::new(ClassVms::Error).text().null())
                    .col(ColumnDef::new(ClassVms::JobId).uuid().null())
                    .col(ColumnDef::new(ClassVms::Student).string_len(128).null())
                    .col(tz(ClassVms::CreatedAt))
                    .col(tz(ClassVms::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_class_vms_class_idx")
                    .table(ClassVms::Table)
                    .col(ClassVms::ClassId)
                    .col(ClassVms::Idx)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_class_vms_cluster_vmid")
                    .table(ClassVms::Table)
                    .col(ClassVms::ClusterDbId)
                    .col(ClassVms::Vmid)
                    .to_owned(),
            )
            .await?;

        // The primary key is what makes a VMID reservation exclusive: two workers or API replicas
        // inserting the same (cluster, vmid) cannot both succeed.
        manager
            .create_table(
                Table::create()
                    .table(VmidReservations::Table)
                    .col(
                        ColumnDef::new(VmidReservations::ClusterDbId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(VmidReservations::Vmid)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(VmidReservations::State)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(VmidReservations::Holder)
                            .string_len(64)
                            .null(),
                    )
                    .col(tz(VmidReservations::ReservedAt))
                    .col(
                        ColumnDef::new(VmidReservations::ReleasedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(VmidReservations::ClusterDbId)
                            .col(VmidReservations::Vmid),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ResourceSlots::Table)
                    .col(
                        ColumnDef::new(ResourceSlots::Resource)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(ColumnDef::new(ResourceSlots::Slot).integer().not_null())
                    .col(ColumnDef::new(ResourceSlots::Holder).string_len(64).null())
                    .col(
                        ColumnDef::new(ResourceSlots::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(ResourceSlots::Resource)
                            .col(ResourceSlots::Slot),
                    )
                    .to_owned(),
            )
            .await?;

        // SQLite's ALTER TABLE adds one column per statement.
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(ColumnDef::new(Jobs::ClassId).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(ColumnDef::new(Jobs::Step).string_len(255).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_jobs_class_id")
                    .table(Jobs::Table)
                    .col(Jobs::ClassId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_jobs_class_id")
                    .table(Jobs::Table)
                    .to_owned(),
            )
            .await?;
        for col in [Jobs::Step, Jobs::ClassId] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        for table in [
            ResourceSlots::Table.into_iden(),
            VmidReservations::Table.into_iden(),
            ClassVms::Table.into_iden(),
            Classes::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
