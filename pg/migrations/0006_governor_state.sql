-- What the leading governor replica keeps beside the log (arf-governor), so the
-- replica that takes the lead carries on from it rather than from its own file.

-- The guard rails' memory (`guard_state.json`: outcome statistics, error budgets,
-- graduation tracks, the hour's autonomous runs, trips, the kill switch), as JSON,
-- written by the leader after each change. A new leader starts from it, then makes
-- it at least as strict as the log says.
CREATE TABLE governor_guard (
    id       smallint    PRIMARY KEY CHECK (id = 1),
    state    bytea       NOT NULL,
    saved_at timestamptz NOT NULL DEFAULT now()
);

-- Where the leader's notifications stand: the last log record every event of which
-- has been delivered, saved whenever its queues are empty. A replica that takes the
-- lead follows the log from there, so what the last leader queued and never
-- delivered is delivered (events may repeat, with the same ids; none is lost).
CREATE TABLE governor_notify (
    id                smallint PRIMARY KEY CHECK (id = 1),
    delivered_through bigint   NOT NULL
);
