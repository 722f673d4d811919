-- Scoria schema, version 6: active-active volume services (Cinder's `cluster`).
-- `services.cluster` is the routing identity (`cluster@backend`) a volume service
-- serves with the other members of its cluster (empty: none): the scheduler sees
-- one pool per cluster, and work owned by the cluster is orphaned only when no
-- member is up. `attachments.export_host` is the member (`host@backend`) that
-- started the attachment's export (empty: its volume's host, as before).
ALTER TABLE services ADD COLUMN cluster TEXT NOT NULL DEFAULT '';
ALTER TABLE attachments ADD COLUMN export_host TEXT NOT NULL DEFAULT '';
