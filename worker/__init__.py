"""RQ jobs and the worker process: persist permits, link zones."""
