-- The audit log of every node: each node keeps its own in LMDB (its API
-- lists those) and copies it here in batches, so that the cluster's whole
-- log is in one place. An entry's id counts within its node.
CREATE TABLE llm_proxy_audit (
    node text NOT NULL,
    id bigint NOT NULL,
    at timestamptz NOT NULL,
    entry jsonb NOT NULL,
    PRIMARY KEY (node, id)
);
CREATE INDEX llm_proxy_audit_by_time ON llm_proxy_audit (at);
