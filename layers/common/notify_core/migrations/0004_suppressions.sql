-- Addresses that must not receive, per tenant and channel (normalized: lower-cased email, E.164
-- phone, push token as given). Fed by provider callbacks (bounces, complaints, STOP, dead tokens),
-- by one-click unsubscribe and by people (manual). One row per address and reason.
CREATE TABLE suppressions (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel          text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    address          text NOT NULL CHECK (length(address) BETWEEN 1 AND 4096),
    reason           text NOT NULL CHECK (reason IN
                         ('hard_bounce', 'complaint', 'sms_stop', 'invalid_token', 'unsubscribe', 'manual')),
    notification_id  uuid,                 -- what caused it, when a send did
    note             text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX suppressions_address_reason_key ON suppressions (tenant_id, channel, address, reason);
CREATE INDEX suppressions_tenant_created_idx ON suppressions (tenant_id, created_at DESC, id DESC);
