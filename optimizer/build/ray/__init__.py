"""Running a build's parallel work on a Ray cluster while the driver keeps cache and output.

`address` checks a cluster address before anything else happens, `portable` turns model
folders and datasets into values that travel through Ray's object store, `work` is what
runs on a worker, and `ray_executor` places tasks, reports what cannot be placed and
keeps checkpoints on the driver's node so a retried task resumes where the killed one was.
"""
