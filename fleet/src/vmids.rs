//! VMID reservations. Proxmox cannot reserve an id, and `/cluster/nextid` only returns the lowest
//! id free at that moment, so concurrent callers get the same one (see `docs/proxmox.md`,
//! "VMIDs"). labfleet therefore reserves VMIDs in its own table before any Proxmox call: the
//! primary key `(cluster_db_id, vmid)` makes a reservation exclusive across every worker and API
//! replica.
//! States: `held` (a class VM has it), `quarantined` (a foreign VM sits there), `cooling` (freed;
//! reusable once `released_at` is older than the cool-down).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use labfleet_db::{placeholders, sql};
use sea_orm::{ConnectionTrait, DbErr, Value};

use crate::state::ReservationState;

/// Why VMIDs could not be reserved.
#[derive(Debug, thiserror::Error)]
pub enum VmidError {
    /// Not enough free ids left in the cluster's range.
    #[error("only {free} free VMIDs left in the cluster's range {start}–{end}, {wanted} needed")]
    RangeExhausted {
        /// First id of the range.
        start: i64,
        /// Last id of the range.
        end: i64,
        /// Free ids found.
        free: usize,
        /// Ids asked for.
        wanted: usize,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl VmidError {
    /// True when trying again later may succeed (the database was unreachable or busy); a range
    /// without free ids stays so until VMs are removed.
    pub fn is_transient(&self) -> bool {
        matches!(self, VmidError::Db(_))
    }
}

/// Reserves `count` VMIDs of `[start, end]` for `holder`, lowest first, skipping ids Proxmox
/// already uses (`in_use`), ids reserved or quarantined, and ids freed less than `cooldown` ago.
/// Run it inside the transaction that records what the ids are for.
pub async fn reserve<C: ConnectionTrait>(
    conn: &C,
    cluster_db_id: i64,
    (start, end): (i64, i64),
    count: usize,
    in_use: &BTreeSet<i64>,
    holder: &str,
    cooldown: std::time::Duration,
) -> Result<Vec<i64>, VmidError> {
    let backend = conn.get_database_backend();
    let now = Utc::now();
    let reusable_before = now - ChronoDuration::from_std(cooldown).unwrap_or_default();
    let rows = conn
        .query_all(sql(
            backend,
            "SELECT vmid, state, released_at FROM vmid_reservations \
             WHERE cluster_db_id = ? AND vmid >= ? AND vmid <= ?",
            vec![cluster_db_id.into(), start.into(), end.into()],
        ))
        .await?;
    // Known ids: true when a cooled-down id may be taken over.
    let mut known: HashMap<i64, bool> = HashMap::with_capacity(rows.len());
    for r in rows {
        let vmid: i64 = r.try_get("", "vmid")?;
        let state: String = r.try_get("", "state")?;
        let released: Option<DateTime<Utc>> = r.try_get("", "released_at")?;
        let reusable = ReservationState::parse(&state) == Some(ReservationState::Cooling)
            && released.is_some_and(|t| t <= reusable_before);
        known.insert(vmid, reusable);
    }
    let mut candidates = (start..=end)
        .filter(|id| !in_use.contains(id) && known.get(id).copied().unwrap_or(true))
        .peekable();
    let mut got = Vec::with_capacity(count);
    while got.len() < count && candidates.peek().is_some() {
        let want = count - got.len();
        let batch: Vec<i64> = candidates.by_ref().take(want.min(500)).collect();
        let (fresh, cooled): (Vec<i64>, Vec<i64>) =
            batch.iter().partition(|id| !known.contains_key(id));
        if !fresh.is_empty() {
            let mut values: Vec<Value> = Vec::with_capacity(fresh.len() * 4);
            let mut tuples = Vec::with_capacity(fresh.len());
            for id in &fresh {
                tuples.push("(?, ?, ?, ?, ?)");
                values.extend([
                    cluster_db_id.into(),
                    (*id).into(),
                    ReservationState::Held.as_str().into(),
                    holder.into(),
                    now.into(),
                ]);
            }
            // A concurrent reserver that took one of these ids first wins; we take the others.
            let text = format!(
                "INSERT INTO vmid_reservations (cluster_db_id, vmid, state, holder, reserved_at) \
                 VALUES {} ON CONFLICT DO NOTHING RETURNING vmid",
                tuples.join(", ")
            );
            for r in conn.query_all(sql(backend, &text, values)).await? {
                got.push(r.try_get("", "vmid")?);
            }
        }
        if !cooled.is_empty() {
            let mut values: Vec<Value> = vec![
                ReservationState::Held.as_str().into(),
                holder.into(),
                now.into(),
                cluster_db_id.into(),
                ReservationState::Cooling.as_str().into(),
                reusable_before.into(),
            ];
            values.extend(cooled.iter().map(|id| Value::from(*id)));
            // The state check re-runs in the UPDATE, so a racing reserver cannot take it too.
            let text = format!(
                "UPDATE vmid_reservations SET state = ?, holder = ?, reserved_at = ?, \
                 released_at = NULL WHERE cluster_db_id = ? AND state = ? \
                 AND released_at <= ? AND vmid IN ({}) RETURNING vmid",
                placeholders(cooled.len())
            );
            for r in conn.query_all(sql(backend, &text, values)).await? {
                got.push(r.try_get("", "vmid")?);
            }
        }
    }
    if got.len() < count {
        return Err(VmidError::RangeExhausted {
            start,
            end,
            free: got.len(),
            wanted: count,
        });
    }
    got.sort_unstable();
    Ok(got)
}

/// Frees a VMID: reusable after the cool-down.
pub async fn release<C: ConnectionTrait>(
    conn: &C,
    cluster_db_id: i64,
    vmid: i64,
) -> Result<(), DbErr> {
    conn.execute(sql(
        conn.get_database_backend(),
        "UPDATE vmid_reservations SET state = ?, holder = NULL, released_at = ? \
         WHERE cluster_db_id = ? AND vmid = ?",
        vec![
            ReservationState::Cooling.as_str().into(),
            Utc::now().into(),
            cluster_db_id.into(),
            vmid.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Marks a VMID as taken by a VM labfleet does not own: never handed out again by itself.
pub async fn quarantine<C: ConnectionTrait>(
    conn: &C,
    cluster_db_id: i64,
    vmid: i64,
) -> Result<(), DbErr> {
    conn.execute(sql(
        conn.get_database_backend(),
        "UPDATE vmid_reservations SET state = ?, holder = 'foreign' \
         WHERE cluster_db_id = ? AND vmid = ?",
        vec![
            ReservationState::Quarantined.as_str().into(),
            cluster_db_id.into(),
            vmid.into(),
        ],
    ))
    .await?;
    Ok(())
}
