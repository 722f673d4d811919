-- Scoria schema, version 3: volume types. Extra specs are JSON text (a map), as
-- volume metadata is. The default type `__DEFAULT__` (Cinder's name) has a fixed
-- id, so every process inserting it at once inserts it once.
CREATE TABLE IF NOT EXISTS volume_types (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    extra_specs TEXT NOT NULL,
    is_default BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO volume_types (id, name, description, extra_specs, is_default, created_at, updated_at)
VALUES ('00000000-0000-4000-8000-000000000001', '__DEFAULT__', 'Default Volume Type', '{}', 1, 0, 0)
ON CONFLICT DO NOTHING;
CREATE INDEX IF NOT EXISTS volumes_by_type ON volumes (volume_type);
