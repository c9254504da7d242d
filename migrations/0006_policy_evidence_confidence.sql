-- Per attempt: the configuration version its policy came from, the policy's verdict,
-- whether its evidence is complete, and the agent's confidence when given.
ALTER TABLE usage_events ADD COLUMN policy_version String AFTER policy_id;
ALTER TABLE usage_events ADD COLUMN verdict String AFTER policy_version;
ALTER TABLE usage_events ADD COLUMN evidence_complete UInt8 AFTER verdict;
ALTER TABLE usage_events ADD COLUMN confidence Nullable(Float32) AFTER evidence_complete;
