"""The scheduler: a pure policy (who runs where, who waits and why) and the leader that applies it in Postgres."""
