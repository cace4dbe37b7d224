-- Delivery engine v2: claims owned by one invocation, ambiguous sends named, recovery of lost
-- queue messages, status-filtered lists served by an index.

-- The invocation that holds a `sending` row. Outcomes are written only by the claim's owner, so a
-- sender that outlived its lease cannot overwrite the outcome of the one that re-claimed the row.
ALTER TABLE notifications ADD COLUMN claim_id uuid;

-- An attempt whose request reached the provider without an answer coming back.
ALTER TABLE notification_attempts DROP CONSTRAINT notification_attempts_outcome_check;
ALTER TABLE notification_attempts ADD CONSTRAINT notification_attempts_outcome_check
    CHECK (outcome IN ('sent', 'transient_error', 'permanent_error', 'ambiguous'));
ALTER TABLE notification_attempts ADD COLUMN error_code text;

-- A dead letter whose last attempt was ambiguous: the provider may have delivered it.
ALTER TABLE notification_dlq DROP CONSTRAINT notification_dlq_reason_check;
ALTER TABLE notification_dlq ADD CONSTRAINT notification_dlq_reason_check
    CHECK (reason IN ('permanent_error', 'max_attempts', 'redrive', 'ambiguous'));

-- `?status=<rare status>` walks only that status's rows, newest first.
CREATE INDEX notifications_tenant_status_created_idx
    ON notifications (tenant_id, status, created_at DESC, id DESC);

-- `queued` rows whose message should have arrived long ago (the sweeper re-enqueues them).
CREATE INDEX notifications_queued_idx ON notifications ((coalesce(next_attempt_at, queued_at)))
    WHERE status = 'queued';
