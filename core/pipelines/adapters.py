"""A job's LoRAs and textual-inversion embeddings, applied to a loaded pipeline for that job only.

Through diffusers' own loaders: ``load_lora_weights`` + ``set_adapters`` (one adapter per file, each
with its weight) and ``load_textual_inversion`` (the token is the file's name).  After the job, in all
cases, ``unload_textual_inversion`` and ``unload_lora_weights`` put the pipeline back as it was loaded:
the base model is never reloaded, and nothing of a job's LoRA reaches the next job (the text encoder and
tokenizer are shared by several loaded pipelines, so nothing may stay attached to them).  A compiled
UNet runs eagerly while a LoRA is attached (its graphs hold the weights without the LoRA).

Files are checked by their headers first (``core.models.adapters``): a LoRA or embedding made for
another base model is refused, naming the model it was made for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ..contract.params import ValidationError, embedding_token
from ..models import adapters as files
from ..models.resolver import ModelError

log = logging.getLogger(__name__)
STATE_ATTR = "_dd_adapter_state"    # on the text encoder: what is attached (the prompt cache's key)


class AdaptersUnavailable(ModelError):
    code = "adapters_unavailable"


def widths(pipe) -> tuple[int, int]:
    return int(pipe.unet.config.cross_attention_dim), int(pipe.text_encoder.config.hidden_size)


def resolve(params, models_dir, pipe) -> tuple[list, list]:
    """[(path, weight)], [(path, token)]: the files found and checked against ``pipe``'s shapes."""
    cross, text = widths(pipe)
    loras, embeddings = [], []
    for name, weight in params.loras:
        path = files.find(name, "loras", models_dir)
        files.check_fits(path, "loras", _named(files.inspect_lora, path, "loras"), cross, text)
        loras.append((path, float(weight)))
    for name in params.embeddings:
        path = files.find(name, "embeddings", models_dir)
        files.check_fits(path, "embeddings", _named(files.inspect_embedding, path, "embeddings"), cross, text)
        embeddings.append((path, embedding_token(name)))
    return loras, embeddings


def _named(inspect, path, field):
    try:
        return inspect(path)
    except ValidationError as e:
        raise ValidationError(field, str(e) if str(e).startswith(field) else f"{field}: {e}") from None


def _peft_ready() -> bool:
    from diffusers.utils import USE_PEFT_BACKEND

    return bool(USE_PEFT_BACKEND)


@contextlib.contextmanager
def applied(pipe, params, models_dir=None) -> Iterator[None]:
    """Attach ``params.loras`` and ``params.embeddings`` to ``pipe`` for the block; always detached after."""
    if not params.loras and not params.embeddings:
        yield
        return
    loras, embeddings = resolve(params, models_dir, pipe)
    if loras and not _peft_ready():
        raise AdaptersUnavailable("LoRAs need the peft package in the engine's environment: run the setup's "
                                  "Repair (python -m installer engine) to install it")
    from ..models.unet_compile import eager

    tokens: list[str] = []
    attached = False
    te, tokenizer = pipe.text_encoder, pipe.tokenizer
    rows, vocab = te.get_input_embeddings(), te.config.vocab_size
    # Resizing may swap the module, its weight, or (transformers 5) the weight's data in place: keep all.
    weight, data, count = rows.weight, rows.weight.data, rows.num_embeddings
    words_before = set(tokenizer.get_added_vocab())
    with eager(pipe.unet):
        try:
            names = []
            for i, (path, _w) in enumerate(loras):
                name = f"dd_lora_{i}"
                attached = True
                try:
                    pipe.load_lora_weights(str(path), adapter_name=name)
                except (ValueError, KeyError, RuntimeError) as e:
                    log.info("LoRA %s did not load: %s: %s", path, type(e).__name__, e)
                    raise ValidationError("loras", f"loras: {path.name} does not fit this model's layers (another "
                                                   f"base model, or not a LoRA for Stable Diffusion 2)") from None
                names.append(name)
            if names:
                pipe.set_adapters(names, adapter_weights=[w for _p, w in loras])
            for path, token in embeddings:
                try:
                    pipe.load_textual_inversion(str(path), token=token)
                except ValueError as e:
                    log.info("embedding %s did not load: %s", path, e)
                    raise ValidationError("embeddings", f"embeddings: {path.name} cannot be added as the word "
                                                        f"{token!r} (already a word of the model, or not an "
                                                        f"embedding): rename the file, e.g. <{token}>.safetensors") \
                        from None
                tokens.append(token)
            setattr(pipe.text_encoder, STATE_ATTR, (tuple((files.stamp(p), w) for p, w in loras),
                                                     tuple((files.stamp(p), t) for p, t in embeddings)))
            yield
        finally:
            with contextlib.suppress(AttributeError):
                delattr(pipe.text_encoder, STATE_ATTR)
            if tokens:   # every word added (a multi-vector embedding adds word, word_1, ...), then the rows
                added = [w for w in tokenizer.get_added_vocab() if w not in words_before]
                if added:
                    pipe.unload_textual_inversion(added)
                if te.get_input_embeddings() is not rows:
                    te.set_input_embeddings(rows)
                if rows.weight is not weight:
                    rows.weight = weight
                if rows.weight.data is not data:
                    rows.weight.data = data
                rows.num_embeddings = count
                te.config.vocab_size = vocab
            if attached:
                pipe.unload_lora_weights()


def convert_prompt(pipe, text: str) -> str:
    """A prompt with each multi-vector embedding's word expanded to its vectors' tokens (diffusers'
    ``maybe_convert_prompt``), when embeddings are attached."""
    if not getattr(pipe.text_encoder, STATE_ATTR, None) or not hasattr(pipe, "maybe_convert_prompt"):
        return text
    return pipe.maybe_convert_prompt(text, pipe.tokenizer)
