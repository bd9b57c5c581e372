//! Reading and writing clusters. Exactly one cluster is the default: making one the default
//! clears the flag on the others in the same transaction, the first cluster becomes the default,
//! and deleting the default hands the flag to the highest-priority remaining cluster. The last
//! cluster cannot be deleted.

use chrono::Utc;
use labfleet_entities::cluster;
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use secrecy::SecretString;

use crate::{
    input::{ClusterFields, ClusterInput, InputError, NewSecrets},
    secrets::{DecryptError, SecretBox},
};

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The input is missing or has a bad value.
    #[error(transparent)]
    Input(#[from] InputError),
    /// No cluster has that id.
    #[error("cluster {0} not found")]
    NotFound(String),
    /// The change conflicts with the stored state (duplicate id, last cluster, default flag).
    #[error("{0}")]
    Conflict(String),
    /// A stored secret cannot be decrypted.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

/// Decrypted credentials of a cluster, for talking to it.
#[derive(Debug, Default)]
pub struct ClusterSecrets {
    /// Proxmox password.
    pub password: Option<SecretString>,
    /// API token secret.
    pub token_secret: Option<SecretString>,
    /// SSH password.
    pub ssh_password: Option<SecretString>,
    /// SSH private key.
    pub ssh_private_key: Option<SecretString>,
}

/// Access to clusters.
#[derive(Clone)]
pub struct ClusterStore {
    db: DatabaseConnection,
    secrets: SecretBox,
}

impl ClusterStore {
    /// A store on a migrated database, sealing secrets with `secrets`.
    pub fn new(db: DatabaseConnection, secrets: SecretBox) -> Self {
        ClusterStore { db, secrets }
    }

    /// Every cluster, default first, then by priority (highest first) and id.
    pub async fn list(&self) -> Result<Vec<cluster::Model>, ClusterError> {
        Ok(cluster::Entity::find()
            .order_by_desc(cluster::Column::IsDefault)
            .order_by_desc(cluster::Column::Priority)
            .order_by_asc(cluster::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// The stored inventory (nodes, storages, templates, ISOs) of every cluster.
    pub fn inventory(&self) -> crate::inventory::Inventory {
        crate::inventory::Inventory::new(self.db.clone())
    }

    /// One cluster by row id.
    pub async fn get(&self, db_id: i64) -> Result<cluster::Model, ClusterError> {
        cluster::Entity::find_by_id(db_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| ClusterError::NotFound(db_id.to_string()))
    }

    /// One cluster by its slug.
    pub async fn get_by_cluster_id(
        &self,
        cluster_id: &str,
    ) -> Result<Option<cluster::Model>, ClusterError> {
        Ok(cluster::Entity::find()
            .filter(cluster::Column::ClusterId.eq(cluster_id))
            .one(&self.db)
            .await?)
    }

    /// Registers a cluster.
    pub async fn create(&self, input: ClusterInput) -> Result<cluster::Model, ClusterError> {
        let (fields, secrets) = input.resolve(None)?;
        let txn = self.db.begin().await?;
        let duplicate = cluster::Entity::find()
            .filter(cluster::Column::ClusterId.eq(&fields.cluster_id))
            .count(&txn)
            .await?
            > 0;
        if duplicate {
            return Err(ClusterError::Conflict(format!(
                "a cluster with cluster_id `{}` already exists",
                fields.cluster_id
            )));
        }
        let first = cluster::Entity::find().count(&txn).await? == 0;
        let make_default = fields.is_default || first;
        if make_default {
            clear_default(&txn).await?;
        }
        let now = Utc::now();
        let mut row = self.active_model(&fields, &secrets, None);
        row.is_default = Set(make_default);
        row.created_at = Set(now);
        row.updated_at = Set(now);
        let saved = row
            .insert(&txn)
            .await
            .map_err(|e| unique_violation(e, &fields.cluster_id))?;
        txn.commit().await?;
        Ok(saved)
    }

    /// Changes the fields `input` carries; omitted or empty secrets are kept.
    pub async fn update(
        &self,
        db_id: i64,
        input: ClusterInput,
    ) -> Result<cluster::Model, ClusterError> {
        let txn = self.db.begin().await?;
        let current = cluster::Entity::find_by_id(db_id)
            .one(&txn)
            .await?
            .ok_or_else(|| ClusterError::NotFound(db_id.to_string()))?;
        let (fields, secrets) = input.resolve(Some(&current))?;
        if current.is_default && !fields.is_default {
            return Err(ClusterError::Conflict(
                "this is the default cluster; make another cluster the default instead".into(),
            ));
        }
        if fields.is_default && !current.is_default {
            clear_default(&txn).await?;
        }
        let mut row = self.active_model(&fields, &secrets, Some(&current));
        row.id = Set(current.id);
        row.created_at = Set(current.created_at);
        row.updated_at = Set(Utc::now());
        let saved = row.update(&txn).await?;
        txn.commit().await?;
        Ok(saved)
    }

    /// Removes a cluster, unless it is the last one.
    pub async fn delete(&self, db_id: i64) -> Result<(), ClusterError> {
        let txn = self.db.begin().await?;
        let current = cluster::Entity::find_by_id(db_id)
            .one(&txn)
            .await?
            .ok_or_else(|| ClusterError::NotFound(db_id.to_string()))?;
        if cluster::Entity::find().count(&txn).await? <= 1 {
            return Err(ClusterError::Conflict(
                "the last cluster cannot be deleted".into(),
            ));
        }
        cluster::Entity::delete_by_id(db_id).exec(&txn).await?;
        if current.is_default {
            if let Some(next) = cluster::Entity::find()
                .order_by_desc(cluster::Column::IsActive)
                .order_by_desc(cluster::Column::Priority)
                .order_by_asc(cluster::Column::Id)
                .one(&txn)
                .await?
            {
                cluster::Entity::update_many()
                    .col_expr(cluster::Column::IsDefault, Expr::value(true))
                    .filter(cluster::Column::Id.eq(next.id))
                    .exec(&txn)
                    .await?;
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// The cluster's credentials in clear text, for talking to it.
    pub fn secrets_of(&self, c: &cluster::Model) -> Result<ClusterSecrets, ClusterError> {
        let open = |field: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| self.secrets.open(&c.cluster_id, field, s))
                .transpose()
        };
        Ok(ClusterSecrets {
            password: open("password", &c.password_enc)?,
            token_secret: open("token_secret", &c.token_secret_enc)?,
            ssh_password: open("ssh_password", &c.ssh_password_enc)?,
            ssh_private_key: open("ssh_private_key", &c.ssh_private_key_enc)?,
        })
    }

    fn active_model(
        &self,
        f: &ClusterFields,
        s: &NewSecrets,
        current: Option<&cluster::Model>,
    ) -> cluster::ActiveModel {
        let seal = |field: &str, new: &Option<SecretString>, old: Option<&Option<String>>| match new
        {
            Some(v) => Some(self.secrets.seal(&f.cluster_id, field, v)),
            None => old.cloned().flatten(),
        };
        cluster::ActiveModel {
            id: sea_orm::ActiveValue::NotSet,
            cluster_id: Set(f.cluster_id.clone()),
            name: Set(f.name.clone()),
            host: Set(f.host.clone()),
            port: Set(f.port),
            username: Set(f.user.clone()),
            password_enc: Set(seal(
                "password",
                &s.password,
                current.map(|c| &c.password_enc),
            )),
            token_id: Set(f.token_id.clone()),
            token_secret_enc: Set(seal(
                "token_secret",
                &s.token_secret,
                current.map(|c| &c.token_secret_enc),
            )),
            verify_ssl: Set(f.verify_ssl),
            tls_fingerprint: Set(f.tls_fingerprint.clone()),
            ssh_user: Set(f.ssh_user.clone()),
            ssh_port: Set(f.ssh_port),
            ssh_password_enc: Set(seal(
                "ssh_password",
                &s.ssh_password,
                current.map(|c| &c.ssh_password_enc),
            )),
            ssh_private_key_enc: Set(seal(
                "ssh_private_key",
                &s.ssh_private_key,
                current.map(|c| &c.ssh_private_key_enc),
            )),
            ssh_host_key_fingerprint: Set(f.ssh_host_key_fingerprint.clone()),
            is_active: Set(f.is_active),
            is_default: Set(f.is_default),
            priority: Set(f.priority),
            allow_vm_deployment: Set(f.allow_vm_deployment),
            allow_template_sync: Set(f.allow_template_sync),
            allow_iso_sync: Set(f.allow_iso_sync),
            auto_shutdown_enabled: Set(f.auto_shutdown_enabled),
            default_storage: Set(f.default_storage.clone()),
            template_storage: Set(f.template_storage.clone()),
            description: Set(f.description.clone()),
            vmid_range_start: Set(f.vmid_range_start),
            vmid_range_end: Set(f.vmid_range_end),
            idle_cpu_percent: Set(f.idle_cpu_percent),
            idle_minutes: Set(f.idle_minutes),
            created_at: sea_orm::ActiveValue::NotSet,
            updated_at: sea_orm::ActiveValue::NotSet,
        }
    }
}

async fn clear_default<C: sea_orm::ConnectionTrait>(conn: &C) -> Result<(), DbErr> {
    cluster::Entity::update_many()
        .col_expr(cluster::Column::IsDefault, Expr::value(false))
        .filter(cluster::Column::IsDefault.eq(true))
        .exec(conn)
        .await
        .map(|_| ())
}

/// A concurrent create with the same cluster_id loses on the unique index: say so, as a 409.
fn unique_violation(e: DbErr, cluster_id: &str) -> ClusterError {
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("unique") || text.contains("duplicate") {
        ClusterError::Conflict(format!(
            "a cluster with cluster_id `{cluster_id}` already exists"
        ))
    } else {
        ClusterError::Db(e)
    }
}
