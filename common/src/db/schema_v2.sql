-- Scoria schema, version 2: snapshots. Portable and idempotent like version 1.
-- A snapshot lives on its volume's backend (`host`), so a volume made from it is
-- placed there too.
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    size_gib BIGINT NOT NULL,
    status TEXT NOT NULL,
    host TEXT,
    error_message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_by_project ON snapshots (project_id, created_at, id);
CREATE INDEX IF NOT EXISTS snapshots_by_volume ON snapshots (volume_id, created_at, id);
CREATE INDEX IF NOT EXISTS volumes_by_snapshot ON volumes (snapshot_id, status);
