-- The digitisation indicator (digitization_rate = cases received with
-- `digitized = true` / cases received): its numerator's day counter. The
-- fact was stored with every case from the start (`received_digitized`), so
-- the counter is filled from the cases here and no rebuild is needed: a case
-- counts on the local (UTC+07:00) date of its winning receipt, as in the fold.
ALTER TABLE day_counters ADD COLUMN received_digitized BIGINT NOT NULL DEFAULT 0;

UPDATE day_counters d SET received_digitized = c.n
FROM (
    SELECT commune, ((received_at AT TIME ZONE 'UTC') + interval '7 hours')::date AS day,
           count(*) AS n
    FROM cases WHERE received_digitized GROUP BY 1, 2
) c
WHERE d.commune = c.commune AND d.day = c.day;
