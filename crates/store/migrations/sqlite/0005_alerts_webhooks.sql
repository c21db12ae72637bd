CREATE TABLE alerts (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    key_id     TEXT NOT NULL,
    owner      TEXT,
    rule       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    action     TEXT NOT NULL,
    edge       TEXT NOT NULL,
    raised_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    details    TEXT NOT NULL
);
CREATE INDEX alerts_by_key ON alerts (key_id, seq);
CREATE INDEX alerts_by_owner ON alerts (owner, seq);

CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    events     TEXT NOT NULL,
    owner      TEXT,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    from_seq   INTEGER NOT NULL,
    from_alert INTEGER NOT NULL,
    deleted_at INTEGER
);

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id),
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    failed_at       INTEGER,
    last_error      TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, id);

CREATE TABLE notify_cursor (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    event_seq INTEGER NOT NULL,
    alert_seq INTEGER NOT NULL
);
INSERT INTO notify_cursor (id, event_seq, alert_seq) VALUES (1, 0, 0);
