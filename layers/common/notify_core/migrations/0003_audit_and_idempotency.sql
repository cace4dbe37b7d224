-- The platform's shared ground: who changed what (audit), and replies kept for idempotent creates.

-- Every change made through the API or the CLI, written in the transaction of the change itself.
CREATE TABLE audit_events (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),  -- `at` in the API
    actor_type    text NOT NULL CHECK (actor_type IN ('api_key', 'cli', 'system')),
    actor_prefix  text,                -- the API key's prefix; never the key
    action        text NOT NULL,       -- '<resource>.<verb>': template.create, api_key.revoke, ...
    target_type   text NOT NULL,
    target_id     text,
    request_id    text,
    changes       jsonb NOT NULL DEFAULT '{}'  -- changed fields, secrets removed
);
CREATE INDEX audit_events_tenant_created_idx ON audit_events (tenant_id, created_at DESC, id DESC);
CREATE INDEX audit_events_target_idx ON audit_events (tenant_id, target_type, target_id, created_at DESC);
CREATE INDEX audit_events_created_idx ON audit_events (created_at);

-- Powertools' idempotency records (notify_core.idempotency.PostgresPersistenceLayer): the first
-- reply to a create, replayed for the same key and body. The key hashes tenant, route and key.
CREATE TABLE idempotency_records (
    id                     text PRIMARY KEY,
    expiration             bigint NOT NULL,   -- epoch seconds
    in_progress_expiration bigint,            -- epoch milliseconds
    status                 text NOT NULL,
    data                   text,
    validation             text
);
CREATE INDEX idempotency_records_expiration_idx ON idempotency_records (expiration);
