//! Two API instances, two schedulers and three volume services on PostgreSQL.
