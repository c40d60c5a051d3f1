package store

// HubsNeedingAttention answers "which hubs are offline or backed up, and
// since when" in one query over the agents table (docs/CENTRAL.md holds
// the same text; a test keeps them equal). A hub is:
//
//   - offline: its retained status says so; since its last sign of life
//     (the status's since, or its last health if later: the Last Will
//     carries the time its session started, not the time it went away);
//   - silent: online, but no health for over 2 minutes (four health
//     intervals), since that last health;
//   - backed up: its last health shows scans waiting for over 5 minutes,
//     since the oldest of them was buffered.
//
// Ordered by since, oldest first. Change the thresholds in the query.
const HubsNeedingAttention = `SELECT prefix, agent, site, problem, since, buffer_depth
FROM (
    SELECT prefix, agent, site, buffer_depth,
        CASE
            WHEN status = 'offline' THEN 'offline'
            WHEN health_at < now() - interval '2 minutes' THEN 'silent'
            WHEN buffer_oldest_age_seconds > 300 THEN 'backed_up'
        END AS problem,
        CASE
            WHEN status = 'offline' THEN greatest(status_since, health_at)
            WHEN health_at < now() - interval '2 minutes' THEN health_at
            ELSE health_at - make_interval(secs => buffer_oldest_age_seconds)
        END AS since
    FROM agents
) hubs
WHERE problem IS NOT NULL
ORDER BY since`
