-- The digitisation indicator's numerator (see the PostgreSQL migration of
-- the same number): filled from the stored cases, on the local (UTC+07:00)
-- date of each case's receipt.
ALTER TABLE day_counters ADD COLUMN received_digitized INTEGER NOT NULL DEFAULT 0;

UPDATE day_counters SET received_digitized = c.n
FROM (
    SELECT commune, date(received_at, '+7 hours') AS day, count(*) AS n
    FROM cases WHERE received_digitized GROUP BY 1, 2
) AS c
WHERE day_counters.commune = c.commune AND day_counters.day = c.day;
