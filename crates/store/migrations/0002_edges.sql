CREATE TABLE edges (
    id            TEXT PRIMARY KEY,
    region        TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    registered_at {integer} NOT NULL
);
