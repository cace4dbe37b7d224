-- Foundation: tenants, API keys, users, notifications, attempts, dead letters.
-- Every row belongs to a tenant; every query filters by tenant_id.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          text NOT NULL DEFAULT '',
    prefix        text NOT NULL UNIQUE,             -- shown in lists and logs, never enough to authenticate
    key_hash      bytea NOT NULL UNIQUE,            -- sha256 of the whole key; the key itself is never stored
    scopes        text[] NOT NULL,
    rate_limit    integer CHECK (rate_limit IS NULL OR rate_limit > 0),  -- requests per window; NULL = default
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at DESC);

CREATE TABLE users (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email        text,
    phone        text,
    push_tokens  text[] NOT NULL DEFAULT '{}',
    username     text,
    external_id  text,
    locale       text,
    timezone     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_tenant_created_idx ON users (tenant_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX users_tenant_external_id_key ON users (tenant_id, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE notifications (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id              uuid REFERENCES users(id) ON DELETE SET NULL,
    channel              text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    provider             text NOT NULL,
    payload              jsonb NOT NULL,
    category             text,
    status               text NOT NULL CHECK (status IN (
                             'pending', 'scheduled', 'queued', 'sending', 'retrying',
                             'sent', 'delivered', 'failed', 'cancelled', 'suppressed')),
    idempotency_key      text,
    request_hash         bytea,
    max_attempts         integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 50),
    attempt_count        integer NOT NULL DEFAULT 0,
    send_at              timestamptz,
    next_attempt_at      timestamptz,                -- when the sweeper should look at it (pending/scheduled/retrying)
    claimed_until        timestamptz,                -- lease of a sender holding it in 'sending'
    last_error           text,
    provider_message_id  text,
    provider_response    jsonb,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    queued_at            timestamptz,
    sent_at              timestamptz,
    failed_at            timestamptz,
    cancelled_at         timestamptz
);
-- Idempotency: one live key per tenant (cleared by the cleanup job after the window).
CREATE UNIQUE INDEX notifications_tenant_idempotency_key ON notifications (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Listing, newest first, keyset pagination on (created_at, id).
CREATE INDEX notifications_tenant_created_idx ON notifications (tenant_id, created_at DESC, id DESC);
CREATE INDEX notifications_tenant_user_created_idx ON notifications (tenant_id, user_id, created_at DESC, id DESC)
    WHERE user_id IS NOT NULL;
-- Due work for the sweeper: only rows a schedule must move on are in the index.
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at)
    WHERE status IN ('pending', 'scheduled', 'retrying');
CREATE INDEX notifications_claim_expiry_idx ON notifications (claimed_until)
    WHERE status = 'sending';

CREATE TABLE notification_attempts (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id      uuid NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
    tenant_id            uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    attempt_number       integer NOT NULL,
    provider             text NOT NULL,
    outcome              text NOT NULL CHECK (outcome IN ('sent', 'transient_error', 'permanent_error')),
    error                text,
    provider_message_id  text,
    duration_ms          integer NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_attempts_notification_idx ON notification_attempts (notification_id, attempt_number);
CREATE INDEX notification_attempts_created_idx ON notification_attempts (created_at);

CREATE TABLE notification_dlq (
    id               uuid PRIMARY KEY,
    notification_id  uuid NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel          text NOT NULL,
    provider         text NOT NULL,
    reason           text NOT NULL CHECK (reason IN ('permanent_error', 'max_attempts', 'redrive')),
    last_error       text,
    attempt_count    integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    replayed_at      timestamptz
);
-- At most one open dead letter per notification: the DLQ processor's insert is idempotent.
CREATE UNIQUE INDEX notification_dlq_open_key ON notification_dlq (notification_id) WHERE replayed_at IS NULL;
CREATE INDEX notification_dlq_tenant_created_idx ON notification_dlq (tenant_id, created_at DESC, id DESC);
CREATE INDEX notification_dlq_created_idx ON notification_dlq (created_at);
