-- Scoria schema, version 4: attachments. Portable and idempotent like version 1.
-- `volume_host` is the volume's backend (the service that exports it), copied so
-- that a volume service finds what it must export at start without a join.
CREATE TABLE IF NOT EXISTS attachments (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    connector TEXT NOT NULL,
    mode TEXT NOT NULL,
    volume_host TEXT NOT NULL,
    connection_info TEXT,
    error_message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    attached_at BIGINT
);
CREATE INDEX IF NOT EXISTS attachments_by_volume ON attachments (volume_id, created_at, id);
CREATE INDEX IF NOT EXISTS attachments_by_project ON attachments (project_id, created_at, id);
CREATE INDEX IF NOT EXISTS attachments_by_host ON attachments (volume_host, status);
