-- Scoria schema, version 7: backups.
-- `backups` holds one row per backup (its bytes are chunk objects and a
-- manifest on the backup target every volume service shares), `parent_id` is
-- the backup an incremental one builds on, `host` the volume service that made
-- it, `restore_volume_id` the volume a `restoring` backup is restored into.
-- The chunk index counts who uses each chunk object of the target, so a
-- deleted backup removes exactly the chunks no other backup shares:
-- `backup_chunk_refs` holds one row per (backup, chunk digest) and
-- `backup_chunks` one per digest with its number of references, whether its
-- object was written (`stored`) and its state (`live`, or `deleting` while its
-- object is being removed, since `deleting_since`).
-- The quota triggers (`backups`, `backup_gigabytes`) are installed after this SQL.
CREATE TABLE IF NOT EXISTS backups (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    parent_id TEXT,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    size_gib BIGINT NOT NULL,
    status TEXT NOT NULL,
    error_message TEXT NOT NULL,
    host TEXT,
    incremental BIGINT NOT NULL DEFAULT 0,
    object_count BIGINT NOT NULL DEFAULT 0,
    stored_bytes BIGINT NOT NULL DEFAULT 0,
    restore_volume_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS backups_project ON backups (project_id, created_at, id);
CREATE INDEX IF NOT EXISTS backups_volume ON backups (volume_id, created_at);
CREATE INDEX IF NOT EXISTS backups_parent ON backups (parent_id);
CREATE TABLE IF NOT EXISTS backup_chunk_refs (
    backup_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (backup_id, digest)
);
CREATE TABLE IF NOT EXISTS backup_chunks (
    digest TEXT PRIMARY KEY,
    refs BIGINT NOT NULL,
    state TEXT NOT NULL,
    stored BIGINT NOT NULL DEFAULT 0,
    deleting_since BIGINT
);
