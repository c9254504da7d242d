-- The spool batch that inserted each row. When an insert's answer is lost, the shipper
-- asks which rows of that batch landed and sends only the others: no row twice, none lost.
ALTER TABLE usage_events ADD COLUMN batch_id UInt64;
ALTER TABLE tasks ADD COLUMN batch_id UInt64;
