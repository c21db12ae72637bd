-- The HMAC key each edge authenticates its acknowledgements with, set by a registration that proves it
-- with the edge's signing key; NULL for edges that sign every acknowledgement, and after a rotation
-- until the edge registers its new key.
ALTER TABLE edges ADD COLUMN ack_key TEXT;
