-- Fencing tokens drawn from one sequence (arf-executor): a token is never issued
-- twice, so a write or unlock by an earlier process under a replica's name, delayed
-- however long, can never match a row that a later process locked or claimed.
CREATE SEQUENCE executor_fences;
SELECT setval('executor_fences', GREATEST(
    (SELECT COALESCE(MAX(fence), 0) FROM executor_executions),
    (SELECT COALESCE(MAX(fence), 0) FROM executor_target_locks),
    1));
