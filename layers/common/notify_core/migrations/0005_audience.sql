-- Audience: who gets what, when, in which words (issue 10). Templates with versions and per
-- channel/locale variants, categories, per-user preferences and quiet hours, messages that fan out
-- to users' channels, and what a notification records of the template it was rendered from.

-- The locale a template falls back to when neither the request nor the user names one.
ALTER TABLE tenants ADD COLUMN default_locale text NOT NULL DEFAULT 'en'
    CHECK (length(default_locale) BETWEEN 2 AND 35);

-- A template: a key and its latest version; archived templates are hidden and cannot be sent.
CREATE TABLE templates (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key             text NOT NULL CHECK (key ~ '^[a-z0-9_.-]{1,64}$'),
    latest_version  integer NOT NULL CHECK (latest_version >= 1),
    archived_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX templates_tenant_key ON templates (tenant_id, key);
CREATE INDEX templates_tenant_created_idx ON templates (tenant_id, created_at DESC, id DESC);

-- Every version stays readable: notifications record (template_key, template_version).
CREATE TABLE template_versions (
    template_id  uuid NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    version      integer NOT NULL CHECK (version >= 1),
    name         text NOT NULL,
    category     text,
    variants     jsonb NOT NULL,   -- [{channel, locale, subject, body, html, title, data}]
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, version)
);

-- What a notification is about; critical ones bypass preferences and quiet hours (never a hard
-- suppression); default_channels are a message's channels when it names none.
CREATE TABLE categories (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key               text NOT NULL CHECK (key ~ '^[a-z0-9_.-]{1,64}$'),
    name              text NOT NULL,
    critical          boolean NOT NULL DEFAULT false,
    default_channels  text[] NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX categories_tenant_key ON categories (tenant_id, key);
CREATE INDEX categories_tenant_created_idx ON categories (tenant_id, created_at DESC, id DESC);

-- A user's preferences: {"sms": false}, {"orders": {"enabled": bool, "channels": {...}}} and
-- quiet hours {"start": "22:00", "end": "07:00", "days": [...]} in the user's time zone.
CREATE TABLE user_preferences (
    user_id      uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channels     jsonb NOT NULL DEFAULT '{}',
    categories   jsonb NOT NULL DEFAULT '{}',
    quiet_hours  jsonb,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One request to reach users through their channels; its notifications point back to it.
CREATE TABLE messages (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    template_key      text NOT NULL,
    template_version  integer NOT NULL,
    category          text,
    channels          text[] NOT NULL,
    routing           text NOT NULL CHECK (routing IN ('all', 'first')),
    send_at           timestamptz,
    skipped           jsonb NOT NULL DEFAULT '[]',  -- [{user_id, external_id, channel, reason}]
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_tenant_created_idx ON messages (tenant_id, created_at DESC, id DESC);

ALTER TABLE notifications ADD COLUMN template_key text;
ALTER TABLE notifications ADD COLUMN template_version integer;
ALTER TABLE notifications ADD COLUMN message_id uuid REFERENCES messages(id) ON DELETE SET NULL;
CREATE INDEX notifications_message_idx ON notifications (message_id) WHERE message_id IS NOT NULL;

-- Each template with its latest version, for lists and for ingest's one-query lookup.
CREATE VIEW template_latest AS
    SELECT t.id, t.tenant_id, t.key, t.latest_version AS version, t.archived_at, t.created_at,
           v.created_at AS updated_at, v.name, v.category, v.variants
    FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.latest_version;
