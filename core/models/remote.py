"""What a remote client may name in a request: models, LoRAs and embeddings by their installed names, never a
file or folder on the server.  One rule for the engine's ``serve --listen`` and the cluster gateway.

Every refusal is the same ValidationError whether or not the thing exists, so a client learns nothing about the
server's files from it."""

from __future__ import annotations

from pathlib import Path

from ..contract.jobs import NAMED_FILE_FIELDS, JobRequest
from ..contract.params import ValidationError
from . import adapters
from .resolver import INSTALLED_NAME, LAMA_KEY, REMOTE_MODEL_RULE, check_remote_model


def adapter_names(req: JobRequest) -> dict[str, list]:
    return {"loras": [f for f, _ in req.params.loras], "embeddings": list(req.params.embeddings)}


def check_request(req: JobRequest, models_dir: Path | None) -> None:
    """On a machine that holds the models: each named model and adapter file is installed in ``models_dir``."""
    for name in NAMED_FILE_FIELDS:
        check_remote_model(getattr(req, name), models_dir)
    for i, c in enumerate(req.controls):    # a ControlNet: a catalogue key or an installed name
        try:
            check_remote_model(c.model, models_dir)
        except ValidationError as e:
            raise ValidationError(f"controls[{i}].model", str(e)) from None
    for field, names in adapter_names(req).items():
        adapters.check_remote(field, names, models_dir)


def check_names(req: JobRequest, known_models=()) -> None:
    """On a gateway, where the files live on the workers: each name has the form of an installed name (a
    catalogue key, ``known_models`` or a plain folder name; plain adapter file names).  The worker then finds it
    in its own models folder or says it is not installed."""
    from ..contract.catalog import CATALOG

    named = [(field, getattr(req, field)) for field in NAMED_FILE_FIELDS]
    named += [(f"controls[{i}].model", c.model) for i, c in enumerate(req.controls)]
    for field, name in named:
        if name is None or name in CATALOG or name == LAMA_KEY or name in known_models:
            continue
        if not (isinstance(name, str) and INSTALLED_NAME.match(name) and ".." not in name):
            raise ValidationError(field, REMOTE_MODEL_RULE)
    for field, names in adapter_names(req).items():
        for name in names:
            if not (isinstance(name, str) and name.strip() and adapters.is_plain_name(name)):
                raise ValidationError(field, f"{field}: {adapters.REMOTE_ADAPTER_RULE}")
