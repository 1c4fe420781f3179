-- The procedure (MaTTHC) of a case's winning receipt, for the lists of open
-- cases (coming due, overdue). Cases stored before this migration have none
-- (NULL, shown as null); `cchc rebuild` fills them from the topic.
ALTER TABLE cases ADD COLUMN received_procedure TEXT;
