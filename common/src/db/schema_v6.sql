-- Scoria schema, version 6: a snapshot whose creation failed holds no quota on
-- its way out either (`create_failed`, as volumes have it since version 5): its
-- delete (`error` -> `deleting`, maybe `error_deleting`) made it count again.
-- Only a failed create puts a snapshot in `error`, so those are marked. The
-- quota triggers are installed again and the usage recounted (see db/mod.rs).
ALTER TABLE snapshots ADD COLUMN create_failed BIGINT NOT NULL DEFAULT 0;
UPDATE snapshots SET create_failed = 1 WHERE status = 'error';
