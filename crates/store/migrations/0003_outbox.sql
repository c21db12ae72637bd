ALTER TABLE log_head ADD COLUMN published_seq {integer} NOT NULL DEFAULT 0;
