-- Feedback: what providers report after a send (delivery events), and signed outgoing webhooks
-- with their outbox and delivery log.

-- One row per provider event, stored once: SendGrid's sg_event_id, Twilio's MessageSid:MessageStatus.
-- `effect` is what the event does to its notification (delivered / failed, or nothing); `applied`
-- is false while that effect waits for the notification to reach `sent` (a callback that overtook
-- the sender's commit); the engine applies it when it records the send.
CREATE TABLE delivery_events (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    notification_id    uuid NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
    provider           text NOT NULL,
    provider_event_id  text NOT NULL CHECK (length(provider_event_id) BETWEEN 1 AND 300),
    type               text NOT NULL CHECK (type IN
                           ('delivered', 'bounced', 'dropped', 'deferred', 'opened', 'clicked',
                            'complained', 'undelivered')),
    occurred_at        timestamptz NOT NULL,
    detail             jsonb NOT NULL DEFAULT '{}',
    effect             text CHECK (effect IN ('delivered', 'failed')),
    applied            boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX delivery_events_provider_event_key ON delivery_events (provider, provider_event_id);
CREATE INDEX delivery_events_notification_idx ON delivery_events (notification_id, created_at DESC, id DESC);
CREATE INDEX delivery_events_unapplied_idx ON delivery_events (notification_id) WHERE NOT applied;
CREATE INDEX delivery_events_created_idx ON delivery_events (created_at);

-- Customer endpoints. The secret signs (HMAC-SHA256, Standard Webhooks), so it is kept, never shown
-- again after creation or rotation; the previous one keeps signing until previous_secret_expires_at.
CREATE TABLE webhook_endpoints (
    id                          uuid PRIMARY KEY,
    tenant_id                   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url                         text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description                 text,
    events                      text[] NOT NULL,
    active                      boolean NOT NULL DEFAULT true,
    secret                      text NOT NULL,
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    failing_since               timestamptz,   -- first failure since the last success
    disabled_at                 timestamptz,   -- set when the system disabled it (failing throughout)
    disabled_reason             text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant_created_idx ON webhook_endpoints (tenant_id, created_at DESC, id DESC);
-- The outbox insert joins every event against this: tenants without an active endpoint find nothing.
CREATE INDEX webhook_endpoints_active_idx ON webhook_endpoints (tenant_id) WHERE active;

-- One event for one endpoint: the outbox (written in the transaction of the state change that causes
-- it, attempt_count 0 until the dispatcher first tries it) and then the delivery's state.
CREATE TABLE webhook_deliveries (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    endpoint_id       uuid NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id          uuid NOT NULL,                -- webhook-id: the same for every endpoint and redelivery
    event_type        text NOT NULL,
    payload           jsonb NOT NULL,               -- {"type", "timestamp", "data"}: the body sent
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempt_count     integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    enqueued_at       timestamptz,                  -- when its current message becomes visible on SQS
    locked_until      timestamptz,                  -- a dispatcher is delivering it
    last_status_code  integer,
    last_error        text,
    last_duration_ms  integer,
    delivered_at      timestamptz,
    redelivery_of     uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_endpoint_created_idx
    ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
-- What the sweeper looks at: deliveries still to be made.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at);

CREATE TABLE webhook_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     uuid NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    attempt_number  integer NOT NULL,
    status_code     integer,
    duration_ms     integer NOT NULL,
    error           text,
    next_retry_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, attempt_number);
