"""Jobs: submitted work as a state machine in Postgres, run by workers under leases."""
