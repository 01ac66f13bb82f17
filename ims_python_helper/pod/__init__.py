"""The job-pod toolkit: the job's status, the ranged download engine, safe extraction, recipe templating."""
