-- Per-attempt CPU time, instantiation time and egress request count.
ALTER TABLE usage_events ADD COLUMN cpu_time_us UInt64 AFTER wall_time_us;
ALTER TABLE usage_events ADD COLUMN instantiate_us UInt64 AFTER cpu_time_us;
ALTER TABLE usage_events ADD COLUMN egress_requests UInt64 AFTER egress_bytes;
