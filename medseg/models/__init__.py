"""Model registry: a name in config -> a 2D network with one output channel (logits), with its metadata.

One module per family (`unet`, `flexunet`, `segresnet`), each registering `ModelSpec`s;
`create_model(name, ...)` builds one, `get_model_spec(name)` tells its output stride, default
channels and the key prefixes of its encoder. `load_weights` loads a local weights file.
"""

# each module registers its models; this order is the order `medseg models` lists them
from medseg.models import unet  # noqa: F401, I001
from medseg.models import flexunet, segresnet  # noqa: F401, I001
from medseg.models import smp  # noqa: F401, I001 — only when segmentation_models_pytorch is installed
from medseg.models.registry import MODELS, ModelSpec, available_models, create_model, create_model_from_config, get_model_spec, register_model
from medseg.models.weights import load_weights

__all__ = ["MODELS", "ModelSpec", "available_models", "create_model", "create_model_from_config", "get_model_spec", "load_weights", "register_model"]
