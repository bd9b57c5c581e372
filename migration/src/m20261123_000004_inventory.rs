//! What labfleet knows about each cluster's contents, refreshed by the inventory sync: nodes,
//! storages (one row per node that reaches the storage), QEMU templates with their disks, and ISOs.
//! Templates and ISOs that vanish from a cluster are marked `gone`, never deleted, because classes
//! may still reference them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ClusterNodes {
    Table,
    Id,
    ClusterDbId,
    Node,
    Online,
    Ip,
    Cpus,
    MaxMem,
    Guests,
    SyncedAt,
}

#[derive(DeriveIden)]
enum ClusterStorages {
    Table,
    Id,
    ClusterDbId,
    Node,
    Storage,
    StorageType,
    Shared,
    Content,
    Active,
    Total,
    Used,
    SyncedAt,
}

#[derive(DeriveIden)]
enum Templates {
    Table,
    Id,
    ClusterDbId,
    Vmid,
    Name,
    Node,
    Disks,
    AllShared,
    HasCloudinit,
    Qcow2Files,
    Gone,
    GoneAt,
    FirstSeenAt,
    SyncedAt,
}

#[derive(DeriveIden)]
enum Isos {
    Table,
    Id,
    ClusterDbId,
    Node,
    Storage,
    Volid,
    Name,
    Size,
    Shared,
    Gone,
    GoneAt,
    FirstSeenAt,
    SyncedAt,
}

fn id<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn timestamp<T: IntoIden>(col: T) -> ColumnDef {
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
                    .table(ClusterNodes::Table)
                    .col(id(ClusterNodes::Id))
                    .col(
                        ColumnDef::new(ClusterNodes::ClusterDbId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(ClusterNodes::Node).string_len(64).not_null())
                    .col(ColumnDef::new(ClusterNodes::Online).boolean().not_null())
                    .col(ColumnDef::new(ClusterNodes::Ip).string_len(64).null())
                    .col(ColumnDef::new(ClusterNodes::Cpus).integer().null())
                    .col(ColumnDef::new(ClusterNodes::MaxMem).big_integer().null())
                    .col(ColumnDef::new(ClusterNodes::Guests).integer().not_null())
                    .col(timestamp(ClusterNodes::SyncedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_cluster_nodes_cluster_node")
                    .table(ClusterNodes::Table)
                    .col(ClusterNodes::ClusterDbId)
                    .col(ClusterNodes::Node)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ClusterStorages::Table)
                    .col(id(ClusterStorages::Id))
                    .col(
                        ColumnDef::new(ClusterStorages::ClusterDbId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterStorages::Node)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterStorages::Storage)
                            .string_len(100)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterStorages::StorageType)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(ClusterStorages::Shared).boolean().not_null())
                    .col(
                        ColumnDef::new(ClusterStorages::Content)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(ColumnDef::new(ClusterStorages::Active).boolean().not_null())
                    .col(ColumnDef::new(ClusterStorages::Total).big_integer().null())
                    .col(ColumnDef::new(ClusterStorages::Used).big_integer().null())
                    .col(timestamp(ClusterStorages::SyncedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_cluster_storages_cluster_node_storage")
                    .table(ClusterStorages::Table)
                    .col(ClusterStorages::ClusterDbId)
                    .col(ClusterStorages::Node)
                    .col(ClusterStorages::Storage)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Templates::Table)
                    .col(id(Templates::Id))
                    .col(
                        ColumnDef::new(Templates::ClusterDbId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Templates::Vmid).big_integer().not_null())
                    .col(ColumnDef::new(Templates::Name).string_len(128).not_null())
                    .col(ColumnDef::new(Templates::Node).string_len(64).not_null())
                    .col(ColumnDef::new(Templates::Disks).json().not_null())
                    .col(ColumnDef::new(Templates::AllShared).boolean().not_null())
                    .col(ColumnDef::new(Templates::HasCloudinit).boolean().not_null())
                    .col(ColumnDef::new(Templates::Qcow2Files).boolean().not_null())
                    .col(ColumnDef::new(Templates::Gone).boolean().not_null())
                    .col(
                        ColumnDef::new(Templates::GoneAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(timestamp(Templates::FirstSeenAt))
                    .col(timestamp(Templates::SyncedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_templates_cluster_vmid")
                    .table(Templates::Table)
                    .col(Templates::ClusterDbId)
                    .col(Templates::Vmid)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Isos::Table)
                    .col(id(Isos::Id))
                    .col(ColumnDef::new(Isos::ClusterDbId).big_integer().not_null())
                    .col(ColumnDef::new(Isos::Node).string_len(64).not_null())
                    .col(ColumnDef::new(Isos::Storage).string_len(100).not_null())
                    .col(ColumnDef::new(Isos::Volid).string_len(300).not_null())
                    .col(ColumnDef::new(Isos::Name).string_len(255).not_null())
                    .col(ColumnDef::new(Isos::Size).big_integer().null())
                    .col(ColumnDef::new(Isos::Shared).boolean().not_null())
                    .col(ColumnDef::new(Isos::Gone).boolean().not_null())
                    .col(
                        ColumnDef::new(Isos::GoneAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(timestamp(Isos::FirstSeenAt))
                    .col(timestamp(Isos::SyncedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_isos_cluster_node_volid")
                    .table(Isos::Table)
                    .col(Isos::ClusterDbId)
                    .col(Isos::Node)
                    .col(Isos::Volid)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Isos::Table.into_iden(),
            Templates::Table.into_iden(),
            ClusterStorages::Table.into_iden(),
            ClusterNodes::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
