-- Scoria schema, version 5: quotas. Usage (`quota_usages`) is moved only by the
-- quota triggers (generated per engine, see db/quota, installed by the latest
-- version that changed them, see db/mod.rs), in the transaction of the row change
-- itself, `quotas` holds the per-project limits
-- (the defaults come from the API's config), a project's `quota_locks` row is
-- taken first by every request that checks a limit, so checks of one project are
-- serialised.
-- `extend_to` is the size an `extending` volume grows to (reserved until done),
-- `create_failed` marks a volume or snapshot whose creation failed (it holds
-- nothing, also on its way out: `deleting`, `error_deleting`), a snapshot keeps its
-- volume's type for the per-type quotas. Only a failed create puts a snapshot in
-- `error`, so those are marked, an `error` volume from before counts (whether its
-- create failed was not recorded). The quota triggers are installed and the usage
-- counted after this SQL (see db/mod.rs).
ALTER TABLE volumes ADD COLUMN extend_to BIGINT;
ALTER TABLE volumes ADD COLUMN create_failed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE snapshots ADD COLUMN volume_type TEXT NOT NULL DEFAULT '';
ALTER TABLE snapshots ADD COLUMN create_failed BIGINT NOT NULL DEFAULT 0;
UPDATE snapshots SET create_failed = 1 WHERE status = 'error';
UPDATE snapshots SET volume_type = COALESCE((SELECT v.volume_type FROM volumes v WHERE v.id = snapshots.volume_id), '');
CREATE TABLE IF NOT EXISTS quotas (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);
CREATE TABLE IF NOT EXISTS quota_usages (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    in_use BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);
CREATE TABLE IF NOT EXISTS quota_locks (
    project_id TEXT PRIMARY KEY,
    serial BIGINT NOT NULL
);
