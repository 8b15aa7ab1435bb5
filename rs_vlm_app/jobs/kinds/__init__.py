"""One module per kind of job; each defines a ``@register``-ed JobSpec (see docs/jobs.md).

Every module here is imported when a spec is looked up by kind, so keep module-level imports light.
"""
