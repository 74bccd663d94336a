"""Live delivery: the per-process event hub fed by one MongoDB change stream on `task_events`."""
