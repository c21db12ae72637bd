CREATE TABLE alerts (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    key_id     TEXT NOT NULL,
    owner      TEXT,
    rule       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    action     TEXT NOT NULL,
    edge       TEXT NOT NULL,
    raised_at  BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
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
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    from_seq   BIGINT NOT NULL,
    from_alert BIGINT NOT NULL,
    deleted_at BIGINT
);

CREATE TABLE webhook_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id),
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    failed_at       BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, id);

CREATE TABLE notify_cursor (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    event_seq BIGINT NOT NULL,
    alert_seq BIGINT NOT NULL
);
INSERT INTO notify_cursor (id, event_seq, alert_seq) VALUES (1, 0, 0);
