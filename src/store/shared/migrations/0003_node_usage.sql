-- What each node counted of each party's use (a key's requests, spend and
-- last use; a user's, a team's and a key's model's spend), as absolute
-- figures the node rewrites every second, so that a lost write is made good
-- by the next one. The management API of every node shows the sums.
-- `window_end` is the end of the budget window the spend is counted in (0:
-- no window): spend of a window that has passed no longer counts.
CREATE TABLE llm_proxy_node_usage (
    node text NOT NULL,
    party text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    spend bigint NOT NULL DEFAULT 0,
    window_end bigint NOT NULL DEFAULT 0,
    last_used_at bigint,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, party)
);
CREATE INDEX llm_proxy_node_usage_by_time ON llm_proxy_node_usage (updated_at);
