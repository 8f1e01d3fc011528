-- The shared store: what every node's LMDB replica is a copy of, and the
-- escrow of limits across nodes. Applied by `llm-proxy migrate` and by a
-- server started with DATABASE_URL.

-- One row: the cluster's id (a node's replica names the cluster it copies)
-- and the number of the last change. Writers lock this row, so changes
-- commit in the order of their numbers.
CREATE TABLE llm_proxy_cluster (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    cluster_id text NOT NULL,
    change_no bigint NOT NULL DEFAULT 0
);

-- The records (projects, keys, users, teams, deployments, credentials, the
-- audit log, sign-ins, and the indexes of names and key digests), one row
-- each, as JSON. A deleted record stays as a row without a body until every
-- node has seen it. `change_no` is the change that last wrote the row.
CREATE TABLE llm_proxy_records (
    tbl text NOT NULL,
    id text NOT NULL,
    body jsonb,
    change_no bigint NOT NULL,
    PRIMARY KEY (tbl, id)
);
CREATE INDEX llm_proxy_records_by_change ON llm_proxy_records (change_no);

-- The nodes that serve, and the last change each one applied.
CREATE TABLE llm_proxy_nodes (
    node text PRIMARY KEY,
    applied bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- Limits held in escrow: of each party's allowance (`lim`), what was used
-- and what nodes hold leased. A lease is taken only out of what is left,
-- so `used + leased` never passes `lim` (unless `lim` is lowered).
CREATE TABLE llm_proxy_allowances (
    party text NOT NULL,
    meter text NOT NULL,
    lim bigint,
    used bigint NOT NULL DEFAULT 0,
    leased bigint NOT NULL DEFAULT 0,
    -- What leases of nodes that vanished held, taken as used (see below).
    written_off bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (party, meter)
);

-- A node's time of holding leases. A node renews it while it can reach the
-- database; one not renewed in time has expired, and what its leases held
-- is taken as used (written off): the node may have served it.
CREATE TABLE llm_proxy_lease_terms (
    term text PRIMARY KEY,
    node text NOT NULL,
    expires_at timestamptz NOT NULL,
    expired boolean NOT NULL DEFAULT false
);

-- What each term holds of each allowance.
CREATE TABLE llm_proxy_leases (
    term text NOT NULL REFERENCES llm_proxy_lease_terms (term),
    party text NOT NULL,
    meter text NOT NULL,
    held bigint NOT NULL CHECK (held >= 0),
    PRIMARY KEY (term, party, meter)
);

-- Reports of use already applied, so that a report sent again (its answer
-- was lost) is applied once.
CREATE TABLE llm_proxy_reports (
    term text NOT NULL,
    batch bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (term, batch)
);
