-- Operating the platform: provider routes per tenant, the config each attempt used, and the metrics
-- roll-up (hourly rows, and the hours a change made stale).

-- A tenant's provider route for a channel: its active configs in priority order (lowest first).
-- The credentials live in Secrets Manager (`secret_arn`, read at `secret_version`); this table holds
-- only the names of the credential fields that were given, never their values.
CREATE TABLE provider_configs (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel            text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    provider           text NOT NULL CHECK (length(provider) BETWEEN 1 AND 64),
    priority           integer NOT NULL CHECK (priority BETWEEN 0 AND 1000),
    settings           jsonb NOT NULL DEFAULT '{}',
    secret_arn         text,
    secret_version     text,
    credential_fields  text[] NOT NULL DEFAULT '{}',
    active             boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((secret_arn IS NULL) = (secret_version IS NULL))
);
-- One active config per priority on a tenant's channel: the route's order is never ambiguous.
CREATE UNIQUE INDEX provider_configs_active_priority_key
    ON provider_configs (tenant_id, channel, priority) WHERE active;
CREATE INDEX provider_configs_tenant_created_idx ON provider_configs (tenant_id, created_at DESC, id DESC);

-- Which config an attempt went through (NULL: the deployment's own provider), and whose fault a
-- failed attempt was: the provider's (it fails over) or the recipient's (it never does).
ALTER TABLE notification_attempts ADD COLUMN provider_config_id uuid;
ALTER TABLE notification_attempts ADD COLUMN fault text CHECK (fault IN ('provider', 'recipient'));

-- ---------------------------------------------------------------- metrics

-- Per tenant and hour of acceptance (UTC): how many notifications, and a sparse histogram of their
-- accepted->sent latency over fixed log-spaced bins (bin b holds latencies in [2^(b/8), 2^((b+1)/8))
-- ms), for every combination of the four dimensions (a cube): `dims` says which of channel (8),
-- provider (4), status (2) and category (1) the row is grouped by; a dimension it is not grouped by
-- is ''. A query reads exactly the rows of its group_by (per hour, one row per group), and hours
-- merge into days by adding bins; a percentile from the bins is within 4.5% of the exact one.
CREATE TABLE metrics_hourly (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    dims            smallint NOT NULL CHECK (dims BETWEEN 0 AND 15),
    hour            timestamptz NOT NULL,
    channel         text NOT NULL DEFAULT '',
    provider        text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT '',
    category        text NOT NULL DEFAULT '',  -- also '' for notifications without a category
    count           bigint NOT NULL,
    latency_bins    smallint[] NOT NULL DEFAULT '{}',
    latency_counts  bigint[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, dims, hour, channel, provider, status, category)
);
-- The roll-up replaces a tenant's hour, whatever the dims.
CREATE INDEX metrics_hourly_hour_idx ON metrics_hourly (tenant_id, hour);

-- The hours whose rows a change made stale. Every statement that inserts, updates or deletes
-- notifications adds its distinct (tenant, hour of acceptance) pairs here, in its own transaction;
-- the roll-up takes what is committed, recounts those hours from the notifications, and deletes
-- exactly the rows it took. Insert-only for writers: nothing here ever waits on a lock.
CREATE TABLE metrics_stale_hours (
    tenant_id  uuid NOT NULL,
    hour       timestamptz NOT NULL
);

CREATE FUNCTION metrics_mark_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO metrics_stale_hours (tenant_id, hour)
    SELECT DISTINCT tenant_id, date_trunc('hour', created_at, 'UTC') FROM changed;
    RETURN NULL;
END
$$;

CREATE TRIGGER notifications_metrics_insert AFTER INSERT ON notifications
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION metrics_mark_stale();
CREATE TRIGGER notifications_metrics_update AFTER UPDATE ON notifications
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION metrics_mark_stale();
CREATE TRIGGER notifications_metrics_delete AFTER DELETE ON notifications
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION metrics_mark_stale();
