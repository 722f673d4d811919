-- Scoria schema, version 9: volume migration and retype.
-- `volumes.migration_status` is where the volume's last move to another backend
-- stands ('' never, `migrating`, `success`, `error`) and `migration_error` why
-- the last one failed. `migrations` holds one row per volume being moved: the
-- source and destination `host@backend`, the new type of a retype that moves
-- ('' for a plain migration), its `state` (`copying` while the destination
-- copies the bytes, owned by the destination, `cleanup` once the volume
-- switched host, owned by the source, which must remove its old object) with
-- the owner's deadline. A row in `cleanup` is the record that the source
-- object is unwanted: the source's reconciler removes it even if the cast
-- telling it to was lost.
ALTER TABLE volumes ADD COLUMN migration_status TEXT NOT NULL DEFAULT '';
ALTER TABLE volumes ADD COLUMN migration_error TEXT NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS migrations (
    volume_id TEXT PRIMARY KEY,
    source_host TEXT NOT NULL,
    dest_host TEXT NOT NULL,
    new_type TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    deadline BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS migrations_owner ON migrations (owner, state)
