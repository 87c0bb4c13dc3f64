"""`medseg models`: the registered networks with their output stride and default channels."""

from __future__ import annotations

from medseg.models import MODELS


def list_models() -> list[str]:
    """One line per model: the name first (what `model.name` takes), then its metadata."""
    out = []
    for name, spec in MODELS.items():
        chans = spec.channels()
        facts = [f"stride {spec.output_stride()}"] + ([f"channels {list(chans)}"] if chans else [])
        facts += [f"deep supervision up to {spec.side_outputs} side outputs"] if spec.side_outputs else []
        facts += ["image head"] if spec.image_head else []
        facts += ([spec.description] if spec.description else [])
        out.append(f"{name}\t{'; '.join(facts)}")
    return out
