-- Scoria schema, version 1. Portable between SQLite and PostgreSQL: TEXT ids,
-- BIGINT milliseconds, JSON text for maps. Every statement is idempotent so that
-- several processes starting at once can all run it.
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    size_gib BIGINT NOT NULL,
    status TEXT NOT NULL,
    volume_type TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    host TEXT,
    metadata TEXT NOT NULL,
    error_message TEXT NOT NULL,
    snapshot_id TEXT,
    source_volume_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS volumes_by_project ON volumes (project_id, created_at, id);
CREATE INDEX IF NOT EXISTS volumes_by_host ON volumes (host, status);
CREATE TABLE IF NOT EXISTS idempotency (
    project_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, request_id)
);
CREATE TABLE IF NOT EXISTS workers (
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    status TEXT NOT NULL,
    service TEXT NOT NULL,
    deadline BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (resource_type, resource_id)
);
CREATE INDEX IF NOT EXISTS workers_by_service ON workers (service, deadline);
CREATE TABLE IF NOT EXISTS services (
    binary_name TEXT NOT NULL,
    host TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    disabled BIGINT NOT NULL,
    disabled_reason TEXT NOT NULL,
    last_heartbeat BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (binary_name, host)
);
