//! The `attachments` table, and the volume status that follows from it.
//!
//! A volume's status while attachments come and go is not set by whoever acts
//! last: every change of an attachment recomputes it from the attachments in the
//! same transaction ([`settle`]):
//!
//! | the volume's active attachments | volume status |
//! | --- | --- |
//! | one `reserved` or `attaching` | `attaching` |
//! | else one `detaching` | `detaching` |
//! | else one `attached` or `error_detaching` (its export may still run) | `in-use` |
//! | none | `available` |
//!
//! Each transaction first writes the volume's row (which takes its lock on
//! PostgreSQL, and the write lock on SQLite), so two attachments of one volume
//! changing at once are serialised and the second sees the first's outcome. An
//! attach and a delete of one volume race on the volume's status (`available` ->
//! `attaching` against `available` -> `deleting`): exactly one wins.

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{
    Db, DbError, DbResult, WorkerEntry, WorkerKind,
    keyset::Keyset,
    placeholders,
    quota::{self, Demand},
    row::RowReader,
    workers::remove_worker,
};
use crate::changes::ChangeKind;
use crate::model::{
    AttachMode, Attachment, AttachmentStatus, ConnectionInfo, Connector, Volume, VolumeStatus,
    now_ms,
};

const COLUMNS: &str = "id, volume_id, project_id, user_id, status, instance_id, connector, mode, \
    volume_host, connection_info, error_message, created_at, updated_at, attached_at";

/// The volume statuses an attachment's change may settle (not `error`, `deleting`,
/// ...: an operator's reset or another operation is left alone).
const SETTLEABLE: [VolumeStatus; 5] = [
    VolumeStatus::Available,
    VolumeStatus::Reserved,
    VolumeStatus::Attaching,
    VolumeStatus::InUse,
    VolumeStatus::Detaching,
];

/// The volume statuses a multiattach volume may take another attachment in.
const MULTIATTACH_FROM: [VolumeStatus; 5] = SETTLEABLE;

/// Which attachments [`Db::list_attachments`] returns: `(created_at, id)` order,
/// keyset-paged.
#[derive(Debug, Clone, Default)]
pub struct AttachmentQuery {
    /// Only this project's (None: all projects).
    pub project_id: Option<String>,
    /// Only of this volume.
    pub volume_id: Option<String>,
    /// Only of volumes of this backend (`host@backend`).
    pub volume_host: Option<String>,
    /// Only those whose export this member (`host@backend`) started, or whose
    /// export host is not recorded.
    pub export_host: Option<String>,
    /// Only in one of these statuses (empty: any).
    pub statuses: Vec<AttachmentStatus>,
    /// Only after this `(created_at_ms, id)`.
    pub after: Option<(i64, String)>,
    /// At most this many (0: no limit).
    pub limit: u32,
}

/// The outcome of [`Db::reserve_attachment`].
// Returned once per request, matched at once: boxing the row buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachReserve {
    /// The attachment is `attaching`, and so is its volume (returned).
    Reserved(Volume),
    /// The volume is gone.
    VolumeNotFound,
    /// The volume's status does not allow an attachment (it is not `available`,
    /// nor in use with multiattach).
    WrongStatus(VolumeStatus),
    /// The volume is attached already (the ids of its active attachments) and is
    /// not multiattach.
    NotMultiattach(Vec<String>),
}

/// The outcome of [`Db::start_detach`].
// Returned once per request, matched at once: boxing the row buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetachStart {
    /// The attachment is `detaching` now (returned).
    Started(Attachment),
    /// The attachment is gone.
    NotFound,
    /// The attachment is in a status it cannot be detached from (being attached
    /// or detached right now).
    WrongStatus(AttachmentStatus),
}

impl Db {
    /// Inserts `attachment` as `attaching` with its worker entry, and moves its
    /// volume to `attaching`, in one transaction, if the volume is `available` (or,
    /// when `multiattach`, attached already). Nothing is written otherwise. The
    /// attachment must fit its project's quota
    /// ([`DbError::OverQuota`] otherwise, nothing written).
    pub async fn reserve_attachment(
        &self,
        attachment: &Attachment,
        multiattach: bool,
        worker: &WorkerEntry,
    ) -> DbResult<AttachReserve> {
        let mut tx = self.begin_write().await?;
        let demand = Demand::attachment(&attachment.project_id);
        quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        if !lock_volume(&mut tx, &attachment.volume_id).await? {
            return Ok(AttachReserve::VolumeNotFound);
        }
        let status = volume_status(&mut tx, &attachment.volume_id).await?;
        let active = active_attachments(&mut tx, &attachment.volume_id).await?;
        let attached = status != VolumeStatus::Available || !active.is_empty();
        if attached && !MULTIATTACH_FROM.contains(&status) {
            return Ok(AttachReserve::WrongStatus(status));
        }
        if attached && !multiattach {
            return Ok(AttachReserve::NotMultiattach(active));
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO attachments ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )))
        .bind(&attachment.id)
        .bind(&attachment.volume_id)
        .bind(&attachment.project_id)
        .bind(&attachment.user_id)
        .bind(AttachmentStatus::Attaching.as_str())
        .bind(&attachment.instance_id)
        .bind(to_json(&attachment.connector))
        .bind(attachment.mode.as_str())
        .bind(&attachment.volume_host)
        .bind(attachment.connection_info.as_ref().map(to_json))
        .bind(&attachment.error_message)
        .bind(attachment.created_at_ms)
        .bind(attachment.updated_at_ms)
        .bind(attachment.attached_at_ms)
        .execute(&mut *tx)
        .await?;
        worker.upsert(&mut *tx).await?;
        settle(&mut tx, &attachment.volume_id).await?;
        let volume = super::volumes::get_volume_in(&mut tx, &attachment.volume_id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Attachment, &attachment.id);
        self.changed(ChangeKind::Volume, &attachment.volume_id);
        Ok(match volume {
            Some(volume) => AttachReserve::Reserved(volume),
            None => AttachReserve::VolumeNotFound,
        })
    }

    /// `attaching` -> `attached` with `info`; the worker entry goes and the volume
    /// settles (`in-use`). `None` if the attachment is gone or not `attaching`.
    pub async fn finish_attach(
        &self,
        id: &str,
        info: &ConnectionInfo,
    ) -> DbResult<Option<Attachment>> {
        let from = [AttachmentStatus::Attaching];
        if !self
            .change_attachment(id, &from, Change::Attached(info))
            .await?
        {
            return Ok(None);
        }
        self.get_attachment(id).await
    }

    /// `attaching` -> `error_attaching` with `error`; the worker entry goes and the
    /// volume settles (back to `available` or `in-use`). Whether it changed.
    pub async fn fail_attach(&self, id: &str, error: &str) -> DbResult<bool> {
        self.set_attachment_status(
            id,
            &[AttachmentStatus::Attaching, AttachmentStatus::Reserved],
            AttachmentStatus::ErrorAttaching,
            Some(error),
        )
        .await
    }

    /// Moves attachment `id` to `detaching` (from a detachable status) with its
    /// worker entry, and settles its volume (`detaching`).
    pub async fn start_detach(&self, id: &str, worker: &WorkerEntry) -> DbResult<DetachStart> {
        let Some(current) = self.get_attachment(id).await? else {
            return Ok(DetachStart::NotFound);
        };
        let mut tx = self.pool.begin().await?;
        lock_volume(&mut tx, &current.volume_id).await?;
        let won = cas(
            &mut tx,
            id,
            &AttachmentStatus::DETACHABLE,
            AttachmentStatus::Detaching,
            None,
        )
        .await?;
        if !won {
            drop(tx);
            return Ok(match self.get_attachment(id).await? {
                Some(attachment) => DetachStart::WrongStatus(attachment.status),
                None => DetachStart::NotFound,
            });
        }
        worker.upsert(&mut *tx).await?;
        settle(&mut tx, &current.volume_id).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM attachments WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        self.changed(ChangeKind::Attachment, id);
        self.changed(ChangeKind::Volume, &current.volume_id);
        match row.as_ref().map(attachment_from_row).transpose()? {
            Some(attachment) => Ok(DetachStart::Started(attachment)),
            None => Ok(DetachStart::NotFound),
        }
    }

    /// Removes the `detaching` attachment `id` and its worker entry, and settles its
    /// volume. Whether a row went.
    pub async fn finish_detach(&self, id: &str) -> DbResult<bool> {
        self.change_attachment(id, &[AttachmentStatus::Detaching], Change::Remove)
            .await
    }

    /// `detaching` -> `error_detaching` with `error`; the worker entry goes and the
    /// volume settles (`in-use`: the export may still run). Whether it changed.
    pub async fn fail_detach(&self, id: &str, error: &str) -> DbResult<bool> {
        self.set_attachment_status(
            id,
            &[AttachmentStatus::Detaching],
            AttachmentStatus::ErrorDetaching,
            Some(error),
        )
        .await
    }

    /// Compare-and-set of attachment `id`'s status (and `error_message` when
    /// given); the worker entry goes and the volume settles. Whether it won.
    pub async fn set_attachment_status(
        &self,
        id: &str,
        from: &[AttachmentStatus],
        to: AttachmentStatus,
        error_message: Option<&str>,
    ) -> DbResult<bool> {
        self.change_attachment(id, from, Change::Status(to, error_message))
            .await
    }

    /// Recomputes volume `volume_id`'s status from its attachments (see the
    /// module's table), if it is in an attach-related status. For the reconciler.
    pub async fn settle_volume_attachments(&self, volume_id: &str) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        if lock_volume(&mut tx, volume_id).await? {
            settle(&mut tx, volume_id).await?;
        }
        tx.commit().await?;
        self.changed(ChangeKind::Volume, volume_id);
        Ok(())
    }

    /// Replaces the connection info of attachment `id` if it holds an export
    /// (`attached`, `detaching` or `error_detaching`): its volume was exported
    /// again on another port after a restart. Whether it changed.
    pub async fn update_connection_info(&self, id: &str, info: &ConnectionInfo) -> DbResult<bool> {
        const HOLDING: [AttachmentStatus; 3] = [
            AttachmentStatus::Attached,
            AttachmentStatus::Detaching,
            AttachmentStatus::ErrorDetaching,
        ];
        let sql = format!(
            "UPDATE attachments SET connection_info = $1, updated_at = $2 \
             WHERE id = $3 AND status IN ({})",
            placeholders(4, HOLDING.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(to_json(info))
            .bind(now_ms())
            .bind(id);
        for status in HOLDING {
            q = q.bind(status.as_str());
        }
        let changed = q.execute(&self.pool).await?.rows_affected() == 1;
        if changed {
            self.changed(ChangeKind::Attachment, id);
        }
        Ok(changed)
    }

    /// The attachment `id`, of any project.
    pub async fn get_attachment(&self, id: &str) -> DbResult<Option<Attachment>> {
        self.get_by_id("attachments", COLUMNS, id, attachment_from_row)
            .await
    }

    /// Attachments matching `query`, oldest first.
    pub async fn list_attachments(&self, query: &AttachmentQuery) -> DbResult<Vec<Attachment>> {
        let rows = Keyset::new("attachments", COLUMNS)
            .eq("project_id", query.project_id.as_deref())
            .eq("volume_id", query.volume_id.as_deref())
            .eq("volume_host", query.volume_host.as_deref())
            .any_of(
                "export_host",
                query.export_host.iter().flat_map(|h| [h.as_str(), ""]),
            )
            .any_of("status", query.statuses.iter().map(|s| s.as_str()))
            .after(query.after.as_ref())
            .limit(Some(query.limit).filter(|&n| n > 0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attachment_from_row).collect()
    }

    /// Records that member `host` (`host@backend`) starts the export of the
    /// `attaching` attachment `id`. Whether the row was `attaching`.
    pub async fn set_export_host(&self, id: &str, host: &str) -> DbResult<bool> {
        let done =
            sqlx::query("UPDATE attachments SET export_host = $1 WHERE id = $2 AND status = $3")
                .bind(host)
                .bind(id)
                .bind(AttachmentStatus::Attaching.as_str())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The member that started attachment `id`'s export, if recorded (None: the
    /// row is gone, or its volume's host exports it).
    pub async fn export_host(&self, id: &str) -> DbResult<Option<String>> {
        let row = sqlx::query("SELECT export_host FROM attachments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| row.try_get::<String, _>("export_host"))
            .transpose()
            .map(|h| h.filter(|h| !h.is_empty()))
            .map_err(Into::into)
    }

    /// The member (`host@backend`) that exports volume `volume_id` for one of its
    /// live attachments (attaching, attached or detaching) in `mode`, if one has
    /// recorded it: a further attachment of a multiattach volume in a cluster must
    /// go to that member, which shares its export, not start a second server on
    /// the same object elsewhere.
    pub async fn volume_export_host(
        &self,
        volume_id: &str,
        read_only: bool,
    ) -> DbResult<Option<String>> {
        let rows = sqlx::query(
            "SELECT export_host, mode FROM attachments \
             WHERE volume_id = $1 AND export_host <> '' AND status IN ($2, $3, $4) \
             ORDER BY created_at, id",
        )
        .bind(volume_id)
        .bind(AttachmentStatus::Attaching.as_str())
        .bind(AttachmentStatus::Attached.as_str())
        .bind(AttachmentStatus::Detaching.as_str())
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let mode: String = row.try_get("mode")?;
            if (mode == AttachMode::ReadOnly.as_str()) == read_only {
                return Ok(Some(row.try_get("export_host")?));
            }
        }
        Ok(None)
    }

    /// Applies `change` to attachment `id` if it is in one of `from`, inside a
    /// transaction that first locks its volume; on a win the worker entry goes and
    /// the volume settles. Whether it won.
    async fn change_attachment(
        &self,
        id: &str,
        from: &[AttachmentStatus],
        change: Change<'_>,
    ) -> DbResult<bool> {
        let Some(current) = self.get_attachment(id).await? else {
            return Ok(false);
        };
        if !from.contains(&current.status) {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        lock_volume(&mut tx, &current.volume_id).await?;
        let won = match change {
            Change::Attached(info) => {
                let now = now_ms();
                let sql = format!(
                    "UPDATE attachments SET status = $1, connection_info = $2, error_message = '', \
                     attached_at = $3, updated_at = $3 WHERE id = $4 AND status IN ({})",
                    placeholders(5, from.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql))
                    .bind(AttachmentStatus::Attached.as_str())
                    .bind(to_json(info))
                    .bind(now)
                    .bind(id);
                for status in from {
                    q = q.bind(status.as_str());
                }
                q.execute(&mut *tx).await?.rows_affected() == 1
            }
            Change::Remove => {
                let sql = format!(
                    "DELETE FROM attachments WHERE id = $1 AND status IN ({})",
                    placeholders(2, from.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql)).bind(id);
                for status in from {
                    q = q.bind(status.as_str());
                }
                q.execute(&mut *tx).await?.rows_affected() == 1
            }
            Change::Status(to, error_message) => cas(&mut tx, id, from, to, error_message).await?,
        };
        if !won {
            return Ok(false);
        }
        remove_worker(&mut *tx, WorkerKind::Attachment, id).await?;
        settle(&mut tx, &current.volume_id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Attachment, id);
        self.changed(ChangeKind::Volume, &current.volume_id);
        Ok(true)
    }
}

/// What [`Db::change_attachment`] does to the row.
enum Change<'a> {
    /// Attached, with this connection info.
    Attached(&'a ConnectionInfo),
    /// Removed (detached).
    Remove,
    /// Another status, with this error message.
    Status(AttachmentStatus, Option<&'a str>),
}

/// Touches volume `id`'s row (taking its lock); whether it exists.
async fn lock_volume(conn: &mut sqlx::AnyConnection, id: &str) -> DbResult<bool> {
    let done = sqlx::query("UPDATE volumes SET updated_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn volume_status(conn: &mut sqlx::AnyConnection, id: &str) -> DbResult<VolumeStatus> {
    let status: String = sqlx::query("SELECT status FROM volumes WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?
        .try_get("status")?;
    status.parse().map_err(|reason| DbError::Corrupt {
        table: "volumes",
        id: id.to_owned(),
        reason,
    })
}

/// The ids of volume `volume_id`'s active attachments, oldest first.
async fn active_attachments(
    conn: &mut sqlx::AnyConnection,
    volume_id: &str,
) -> DbResult<Vec<String>> {
    let sql = format!(
        "SELECT id FROM attachments WHERE volume_id = $1 AND status IN ({}) ORDER BY created_at, id",
        placeholders(2, AttachmentStatus::ACTIVE.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(volume_id);
    for status in AttachmentStatus::ACTIVE {
        q = q.bind(status.as_str());
    }
    let rows = q.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<String, _>("id")?))
        .collect()
}

/// The attachment CAS (sets `error_message` when given).
async fn cas(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    from: &[AttachmentStatus],
    to: AttachmentStatus,
    error_message: Option<&str>,
) -> DbResult<bool> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    super::cas_status(
        conn,
        "attachments",
        id,
        &from,
        to.as_str(),
        error_message,
        "",
        "",
    )
    .await
}

/// Sets volume `volume_id`'s status from its attachments (the module's table), if
/// it is in a settleable status.
async fn settle(conn: &mut sqlx::AnyConnection, volume_id: &str) -> DbResult<()> {
    let rows = sqlx::query("SELECT status FROM attachments WHERE volume_id = $1")
        .bind(volume_id)
        .fetch_all(&mut *conn)
        .await?;
    let statuses = rows
        .iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            status
                .parse::<AttachmentStatus>()
                .map_err(|reason| DbError::Corrupt {
                    table: "attachments",
                    id: volume_id.to_owned(),
                    reason,
                })
        })
        .collect::<DbResult<Vec<_>>>()?;
    let has = |wanted: &[AttachmentStatus]| statuses.iter().any(|s| wanted.contains(s));
    let to = if has(&[AttachmentStatus::Reserved, AttachmentStatus::Attaching]) {
        VolumeStatus::Attaching
    } else if has(&[AttachmentStatus::Detaching]) {
        VolumeStatus::Detaching
    } else if has(&[AttachmentStatus::Attached, AttachmentStatus::ErrorDetaching]) {
        VolumeStatus::InUse
    } else {
        VolumeStatus::Available
    };
    let sql = format!(
        "UPDATE volumes SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ({})",
        placeholders(4, SETTLEABLE.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(to.as_str())
        .bind(now_ms())
        .bind(volume_id);
    for status in SETTLEABLE {
        q = q.bind(status.as_str());
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn attachment_from_row(row: &AnyRow) -> DbResult<Attachment> {
    let read = RowReader::new(row, "attachments")?;
    let connection_info: Option<String> = row.try_get("connection_info")?;
    Ok(Attachment {
        volume_id: row.try_get("volume_id")?,
        project_id: row.try_get("project_id")?,
        user_id: row.try_get("user_id")?,
        status: read.parse("status")?,
        instance_id: row.try_get("instance_id")?,
        connector: read.json::<Connector>("connector")?,
        mode: read.parse("mode")?,
        volume_host: row.try_get("volume_host")?,
        connection_info: connection_info
            .map(|text| read.json_text::<ConnectionInfo>("connection_info", &text))
            .transpose()?,
        error_message: row.try_get("error_message")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        attached_at_ms: row.try_get("attached_at")?,
        id: read.into_id(),
    })
}
