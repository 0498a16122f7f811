"""pagerace.harness: engines, schedulers, artifacts and the command line."""
