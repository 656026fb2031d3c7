"""prs_nb's stand-in for the ``azureml_user`` package of the Azure ML parallel-run runtime.

Importable only where prs_nb put its shim folder on ``sys.path`` (its worker processes, or the
caller's process while an inline job runs): it is never installed as a top-level package. Only
``azureml_user.parallel_run.EntryScript`` is provided, the part of the runtime scripts use.
"""
