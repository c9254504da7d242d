-- Per task: what the gateway's controls did to it. Why retries stopped (`max_attempts`,
-- `retry_budget`, or empty), whether the answer was the policy's fallback, the loop cap
-- that answered it (`capped`) and the spend that cap avoided.
ALTER TABLE tasks ADD COLUMN retry_stop String;
ALTER TABLE tasks ADD COLUMN fallback UInt8;
ALTER TABLE tasks ADD COLUMN cap String;
ALTER TABLE tasks ADD COLUMN avoided_cost Decimal128(12);
