CREATE TABLE alerts (
    seq        {serial},
    id         TEXT NOT NULL UNIQUE,
    key_id     TEXT NOT NULL,
    owner      TEXT,
    rule       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    action     TEXT NOT NULL,
    edge       TEXT NOT NULL,
    raised_at  {integer} NOT NULL,
    received_at {integer} NOT NULL,
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
    created_at {integer} NOT NULL,
    created_by TEXT NOT NULL,
    from_seq   {integer} NOT NULL,
    from_alert {integer} NOT NULL,
    deleted_at {integer}
);

CREATE TABLE webhook_deliveries (
    id              {serial},
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id),
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      {integer} NOT NULL,
    attempts        {integer} NOT NULL DEFAULT 0,
    next_attempt_at {integer} NOT NULL,
    delivered_at    {integer},
    failed_at       {integer},
    last_error      TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, id);

CREATE TABLE notify_cursor (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    event_seq {integer} NOT NULL,
    alert_seq {integer} NOT NULL
);
INSERT INTO notify_cursor (id, event_seq, alert_seq) VALUES (1, 0, 0);
