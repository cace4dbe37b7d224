-- The operator console (issue 14): the activity feed's filters, a notification's timeline, and the
-- dead letters' filters. Indexes only, plus one column a trigger keeps (held_until).

-- ---------------------------------------------------------------- the activity feed

-- `?category=` walks only that category's rows, newest first (keyset on (created_at, id)).
CREATE INDEX notifications_tenant_category_created_idx
    ON notifications (tenant_id, category, created_at DESC, id DESC) WHERE category IS NOT NULL;

-- `?q=` by recipient: a case-insensitive prefix of the address the notification goes to (email and
-- SMS `to`, push `token`, else `topic`; notify_core.notifications.RECIPIENT is the same expression).
-- An expression index: adding it does not rewrite the table.
CREATE INDEX notifications_tenant_recipient_idx
    ON notifications (tenant_id, (lower(coalesce(payload->>'to', payload->>'token', payload->>'topic'))) text_pattern_ops);

-- ---------------------------------------------------------------- a notification's timeline

-- The webhook deliveries about one notification: notification.* events carry it as data.id,
-- dlq.created as data.notification_id (notify_core.timeline.WEBHOOK_SUBJECT is the same expression).
CREATE INDEX webhook_deliveries_subject_idx
    ON webhook_deliveries (tenant_id, (coalesce(payload->'data'->>'notification_id', payload->'data'->>'id')));

-- Dead letters of one notification, replayed ones included (the open one has its unique index).
CREATE INDEX notification_dlq_notification_idx ON notification_dlq (notification_id, created_at);

-- When the notification was last held for the user's quiet hours, and until when. A hold is a move
-- to `scheduled` whose next_attempt_at is later than the requested send_at (at ingest, and at send
-- time by the delivery engine's `held` outcome); a plain scheduled send (next_attempt_at = send_at)
-- is no hold. Kept by a row trigger that runs only for rows going to `scheduled`, so that neither
-- ingest nor the engine has to know about it, and the timeline can show a hold after it ended.
ALTER TABLE notifications ADD COLUMN held_at timestamptz;
ALTER TABLE notifications ADD COLUMN held_until timestamptz;

CREATE FUNCTION notifications_note_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.next_attempt_at IS NOT NULL AND (NEW.send_at IS NULL OR NEW.next_attempt_at > NEW.send_at)
       AND NEW.next_attempt_at IS DISTINCT FROM NEW.held_until THEN
        NEW.held_at := now();
        NEW.held_until := NEW.next_attempt_at;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER notifications_hold_insert BEFORE INSERT ON notifications
    FOR EACH ROW WHEN (NEW.status = 'scheduled') EXECUTE FUNCTION notifications_note_hold();
CREATE TRIGGER notifications_hold_update BEFORE UPDATE ON notifications
    FOR EACH ROW WHEN (NEW.status = 'scheduled' AND OLD.status IS DISTINCT FROM 'scheduled')
    EXECUTE FUNCTION notifications_note_hold();
