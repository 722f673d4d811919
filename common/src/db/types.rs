//! The `volume_types` table: named sets of extra specs (Cinder's volume types).
//! Volumes refer to their type by name, so a type in use cannot be deleted, and a
//! type's name never changes.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{Db, DbError, DbResult};
use crate::model::{VolumeType, now_ms};

const COLUMNS: &str = "id, name, description, extra_specs, is_default, created_at, updated_at";

/// The id of the default type the migration inserts.
pub const DEFAULT_VOLUME_TYPE_ID: &str = "00000000-0000-4000-8000-000000000001";
/// The name of the default type (Cinder's).
pub const DEFAULT_VOLUME_TYPE_NAME: &str = "__DEFAULT__";

/// Changes of [`Db::update_volume_type`]; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeTypeChanges {
    /// New description.
    pub description: Option<String>,
    /// New extra specs (replace all).
    pub extra_specs: Option<BTreeMap<String, String>>,
}

/// The outcome of [`Db::delete_volume_type`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeDeleted {
    /// The type was removed.
    Deleted,
    /// There is no such type.
    NotFound,
    /// It is the default type, which stays.
    Default,
    /// Volumes use it (this many, when it was refused).
    InUse(i64),
}

impl Db {
    /// Inserts `volume_type`; `false` if its name (or id) is taken.
    pub async fn create_volume_type(&self, volume_type: &VolumeType) -> DbResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO volume_types (id, name, description, extra_specs, is_default, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&volume_type.id)
        .bind(&volume_type.name)
        .bind(&volume_type.description)
        .bind(specs_json(&volume_type.extra_specs))
        .bind(i64::from(volume_type.is_default))
        .bind(volume_type.created_at_ms)
        .bind(volume_type.updated_at_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// The type whose id is `id_or_name`, else the one of that name.
    #[tracing::instrument(name = "db.get_volume_type", level = "trace", skip_all, fields(id_or_name = %id_or_name))]
    pub async fn get_volume_type(&self, id_or_name: &str) -> DbResult<Option<VolumeType>> {
        for column in ["id", "name"] {
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM volume_types WHERE {column} = $1"
            )))
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return type_from_row(&row).map(Some);
            }
        }
        Ok(None)
    }

    /// The default type (the one volumes created without a type get).
    #[tracing::instrument(name = "db.default_volume_type", level = "trace", skip_all)]
    pub async fn default_volume_type(&self) -> DbResult<Option<VolumeType>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM volume_types WHERE is_default = 1 ORDER BY created_at, id LIMIT 1"
        )))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(type_from_row).transpose()
    }

    /// Every type, by name.
    pub async fn list_volume_types(&self) -> DbResult<Vec<VolumeType>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM volume_types ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(type_from_row).collect()
    }

    /// Applies `changes` to type `id`; `None` if there is none.
    pub async fn update_volume_type(
        &self,
        id: &str,
        changes: &VolumeTypeChanges,
    ) -> DbResult<Option<VolumeType>> {
        let updated = sqlx::query(
            "UPDATE volume_types SET description = COALESCE($1, description), \
             extra_specs = COALESCE($2, extra_specs), updated_at = $3 WHERE id = $4",
        )
        .bind(changes.description.clone())
        .bind(changes.extra_specs.as_ref().map(specs_json))
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        self.get_volume_type(id).await
    }

    /// Deletes type `id` unless it is the default or a volume uses it (checked
    /// in the same statement as the delete).
    pub async fn delete_volume_type(&self, id: &str) -> DbResult<TypeDeleted> {
        let row = sqlx::query("SELECT name, is_default FROM volume_types WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(TypeDeleted::NotFound);
        };
        let name: String = row.try_get("name")?;
        if row.try_get::<i64, _>("is_default")? != 0 {
            return Ok(TypeDeleted::Default);
        }
        let deleted = sqlx::query(
            "DELETE FROM volume_types WHERE id = $1 AND is_default = 0 \
             AND NOT EXISTS (SELECT 1 FROM volumes WHERE volume_type = $2)",
        )
        .bind(id)
        .bind(&name)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if deleted == 1 {
            return Ok(TypeDeleted::Deleted);
        }
        let users = self.count_volumes_of_type(&name).await?;
        Ok(if users > 0 {
            TypeDeleted::InUse(users)
        } else {
            // Deleted by someone else in between.
            TypeDeleted::NotFound
        })
    }

    /// How many volumes (of every project) are of the type named `name`.
    pub async fn count_volumes_of_type(&self, name: &str) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM volumes WHERE volume_type = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

fn specs_json(specs: &BTreeMap<String, String>) -> String {
    serde_json::to_string(specs).unwrap_or_else(|_| "{}".to_owned())
}

fn type_from_row(row: &AnyRow) -> DbResult<VolumeType> {
    let id: String = row.try_get("id")?;
    let specs: String = row.try_get("extra_specs")?;
    let extra_specs = serde_json::from_str(&specs).map_err(|e| DbError::Corrupt {
        table: "volume_types",
        id: id.clone(),
        reason: format!("extra_specs: {e}"),
    })?;
    Ok(VolumeType {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        extra_specs,
        is_default: row.try_get::<i64, _>("is_default")? != 0,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Volume, VolumeStatus};

    /// A temporary directory, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn url(&self) -> String {
            format!("sqlite://{}", self.0.join("scoria.db").display())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn db() -> (TempDir, Db) {
        let dir =
            TempDir(std::env::temp_dir().join(format!("scoria-types-{}", uuid::Uuid::new_v4())));
        let db = Db::connect(&dir.url()).await.expect("db");
        (dir, db)
    }

    fn gold() -> VolumeType {
        VolumeType {
            id: uuid::Uuid::new_v4().to_string(),
            name: "gold".into(),
            description: "fast".into(),
            extra_specs: [("volume_backend_name".to_owned(), "file".to_owned())].into(),
            is_default: false,
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn the_migration_inserts_the_default_type_once() {
        let (dir, db) = db().await;
        let default = db
            .default_volume_type()
            .await
            .expect("db")
            .expect("default");
        assert_eq!(
            (
                default.id.as_str(),
                default.name.as_str(),
                default.is_default
            ),
            (DEFAULT_VOLUME_TYPE_ID, DEFAULT_VOLUME_TYPE_NAME, true)
        );
        // A second process connecting runs nothing twice.
        let again = Db::connect(&dir.url()).await.expect("db");
        assert_eq!(again.list_volume_types().await.expect("db").len(), 1);
    }

    #[tokio::test]
    async fn create_get_list_update() {
        let (_dir, db) = db().await;
        let gold = gold();
        assert!(db.create_volume_type(&gold).await.expect("db"));
        let taken = VolumeType {
            id: uuid::Uuid::new_v4().to_string(),
            ..gold.clone()
        };
        assert!(
            !db.create_volume_type(&taken).await.expect("db"),
            "names are unique"
        );
        assert_eq!(
            db.get_volume_type(&gold.id).await.expect("db"),
            Some(gold.clone())
        );
        assert_eq!(
            db.get_volume_type("gold").await.expect("db"),
            Some(gold.clone())
        );
        assert_eq!(db.get_volume_type("silver").await.expect("db"), None);
        let names: Vec<String> = db
            .list_volume_types()
            .await
            .expect("db")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["__DEFAULT__", "gold"]);

        let changes = VolumeTypeChanges {
            description: None,
            extra_specs: Some([("multiattach".to_owned(), "<is> True".to_owned())].into()),
        };
        let updated = db
            .update_volume_type(&gold.id, &changes)
            .await
            .expect("db")
            .expect("exists");
        assert_eq!(updated.description, "fast");
        assert_eq!(
            updated.extra_specs,
            changes.extra_specs.clone().expect("set")
        );
        assert!(updated.updated_at_ms > 1);
        assert_eq!(
            db.update_volume_type("nope", &changes).await.expect("db"),
            None
        );
    }

    #[tokio::test]
    async fn delete_refuses_the_default_and_types_in_use() {
        let (_dir, db) = db().await;
        assert_eq!(
            db.delete_volume_type(DEFAULT_VOLUME_TYPE_ID)
                .await
                .expect("db"),
            TypeDeleted::Default
        );
        let gold = gold();
        assert!(db.create_volume_type(&gold).await.expect("db"));
        let volume = Volume {
            migration_status: Default::default(),
            migration_error: String::new(),
            id: uuid::Uuid::new_v4().to_string(),
            project_id: "p1".into(),
            user_id: "u1".into(),
            name: String::new(),
            description: String::new(),
            size_gib: 1,
            status: VolumeStatus::Available,
            volume_type: "gold".into(),
            availability_zone: String::new(),
            host: None,
            metadata: Default::default(),
            error_message: String::new(),
            snapshot_id: None,
            source_volume_id: None,
            created_at_ms: 1,
            updated_at_ms: 1,
        };
        let worker = super::super::WorkerEntry {
            kind: super::super::WorkerKind::Volume,
            resource_id: volume.id.clone(),
            status: "creating".into(),
            service: "x".into(),
            deadline_ms: 0,
        };
        db.create_volume(&volume, None, &worker).await.expect("db");
        assert_eq!(db.count_volumes_of_type("gold").await.expect("db"), 1);
        assert_eq!(
            db.delete_volume_type(&gold.id).await.expect("db"),
            TypeDeleted::InUse(1)
        );
        assert!(db.delete_volume_row(&volume.id).await.expect("db"));
        assert_eq!(
            db.delete_volume_type(&gold.id).await.expect("db"),
            TypeDeleted::Deleted
        );
        assert_eq!(
            db.delete_volume_type(&gold.id).await.expect("db"),
            TypeDeleted::NotFound
        );
    }
}
