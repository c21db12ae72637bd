//! Schema migrations, embedded in the binary and applied in order at start-up.
//!
//! Each backend has its own ordered list of scripts. A `schema_version` table records the highest applied;
//! every pending script runs in its own transaction together with the version bump, so a crash mid-way
//! leaves the schema at a whole version.

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "keys, event log, audit, tokens",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "edge registrations",
        sql: include_str!("../migrations/sqlite/0002_edges.sql"),
    },
    Migration {
        version: 3,
        name: "outbox high-water mark",
        sql: include_str!("../migrations/sqlite/0003_outbox.sql"),
    },
    Migration {
        version: 4,
        name: "token revocation",
        sql: include_str!("../migrations/sqlite/0004_token_revocation.sql"),
    },
    Migration {
        version: 5,
        name: "usage alerts and webhooks",
        sql: include_str!("../migrations/sqlite/0005_alerts_webhooks.sql"),
    },
];

pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "keys, event log, audit, tokens",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "edge registrations",
        sql: include_str!("../migrations/postgres/0002_edges.sql"),
    },
    Migration {
        version: 3,
        name: "outbox high-water mark",
        sql: include_str!("../migrations/postgres/0003_outbox.sql"),
    },
    Migration {
        version: 4,
        name: "token revocation",
        sql: include_str!("../migrations/postgres/0004_token_revocation.sql"),
    },
    Migration {
        version: 5,
        name: "usage alerts and webhooks",
        sql: include_str!("../migrations/postgres/0005_alerts_webhooks.sql"),
    },
];
