CREATE TABLE log_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq {integer} NOT NULL
);
INSERT INTO log_head (id, seq) VALUES (1, 0);

CREATE TABLE keys (
    id             TEXT PRIMARY KEY,
    created_seq    {integer} NOT NULL UNIQUE,
    prefix         TEXT NOT NULL,
    owner          TEXT NOT NULL,
    name           TEXT,
    apis           TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    verifier       TEXT NOT NULL,
    created_at     {integer} NOT NULL,
    expires_at     {integer},
    revoked_at     {integer},
    revoked_reason TEXT,
    rotated_from   TEXT,
    replaced_by    TEXT
);
CREATE INDEX keys_by_owner ON keys (owner, created_seq);

CREATE TABLE key_apis (
    api    TEXT NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (api, key_id)
);

CREATE TABLE events (
    seq    {integer} PRIMARY KEY,
    at     {integer} NOT NULL,
    kind   TEXT NOT NULL,
    key_id TEXT NOT NULL,
    body   TEXT NOT NULL
);

CREATE TABLE audit (
    id        {serial},
    at        {integer} NOT NULL,
    principal TEXT NOT NULL,
    action    TEXT NOT NULL,
    key_id    TEXT,
    reason    TEXT,
    source    TEXT
);
CREATE INDEX audit_by_key ON audit (key_id, id);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    verifier   TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    owner      TEXT,
    created_at {integer} NOT NULL,
    created_by TEXT NOT NULL
);
