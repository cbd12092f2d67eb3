"""One module per job kind.  Each exposes ``run(request, models, control) -> JobResult``."""
