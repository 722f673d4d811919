-- Scoria schema, version 8: volume transfers between projects.
-- `transfers` holds one row per pending offer of a volume (`volume_id`, at most
-- one per volume) by project `source_project_id`: only `salt` and `key_hash`
-- (SHA-256 of the salt and the one-time key, both hex) are kept, never the key,
-- `failed_attempts` counts wrong keys presented, `expires_at` is when the offer
-- lapses (the API's sweep then returns the volume to available). Accepting or
-- withdrawing an offer removes its row.
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    name TEXT NOT NULL,
    source_project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    salt TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    no_snapshots BIGINT NOT NULL DEFAULT 0,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS transfers_volume ON transfers (volume_id);
CREATE INDEX IF NOT EXISTS transfers_project ON transfers (source_project_id, created_at, id);
CREATE INDEX IF NOT EXISTS transfers_expiry ON transfers (expires_at)
