ALTER TABLE tokens ADD COLUMN revoked_at {integer};
