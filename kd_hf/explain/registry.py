"""The registry of explainers: one `Explainer` entry per explanation method, read by every place that names one (the
config's choices, `explain_text` / `explain_images`, the robustness measures, the report's settings and the demo).

An explainer is a function `(inputs, target) -> (scores, delta)` per modality: see `kd_hf.explain.methods`. Add one
with:

```python
from kd_hf.explain import Explainer, register_explainer

register_explainer(Explainer("my_method", "my method", text=my_text_function, image=my_image_function))
```
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .methods import (
    attention_rollout_image,
    attention_rollout_text,
    grad_cam,
    input_x_gradient,
    integrated_gradients,
    saliency,
)
from .occlusion import occlusion_image, occlusion_text


MODALITIES = ("text", "image")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Explainer:
    """One explanation method.

    Attributes:
        name (`str`): what recipes, the CLI and the demo's API call it (lowercase snake_case).
        label (`str`): what people read, e.g. "integrated gradients".
        text (`Callable`, *optional*): its function on `AttributionInputs` of text; `None` where it does not apply.
        image (`Callable`, *optional*): its function on `AttributionInputs` of images; `None` where it does not apply.
        takes_n_steps (`bool`, *optional*, defaults to `False`): whether `n_steps` (integration steps) applies.
        requires (`str`, *optional*): what the model must be, where not every classifier can be explained
            (e.g. "eager attention"); the demo offers only methods without requirements.
        attribution (`str`, *optional*): its name as a differentiable `attribution_method` of the `attribution`
            loss (`kd_hf.explain.gradients`), for methods that can be trained through.
        settings (`Mapping[str, str]`, *optional*): how it works, in words, added to the report's and card's
            explanation settings.
    """

    name: str
    label: str
    text: Callable | None = None
    image: Callable | None = None
    takes_n_steps: bool = False
    requires: str | None = None
    attribution: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)

    def explains(self, modality: str) -> bool:
        return getattr(self, modality) is not None


EXPLAINERS: dict[str, Explainer] = {}


def register_explainer(explainer: Explainer) -> Explainer:
    """Add `explainer` to `EXPLAINERS` under its name (lowercase snake_case, not yet taken)."""
    if not _NAME.match(explainer.name):
        raise ValueError(f"Explainer name {explainer.name!r} must be lowercase snake_case, e.g. 'occlusion'.")
    if explainer.name in EXPLAINERS:
        raise ValueError(f"An explainer named {explainer.name!r} is already registered; pick another name.")
    if not any(explainer.explains(modality) for modality in MODALITIES):
        raise ValueError(f"Explainer {explainer.name!r} needs a `text` or an `image` function.")
    EXPLAINERS[explainer.name] = explainer
    return explainer


def explainer_names(modality: str | None = None) -> tuple[str, ...]:
    """The registered methods, in registration order; those that explain `modality` (`text`, `image`) if given."""
    return tuple(name for name, e in EXPLAINERS.items() if modality is None or e.explains(modality))


def get_explainer(name: str, modality: str | None = None) -> Explainer:
    """The explainer called `name`; `ValueError` naming the known ones if there is none (for `modality`)."""
    if name not in EXPLAINERS:
        raise ValueError(f"Unknown explanation method {name!r}; known methods: {', '.join(explainer_names())}.")
    explainer = EXPLAINERS[name]
    if modality is not None and not explainer.explains(modality):
        raise ValueError(
            f"`{name}` does not explain {modality}s; for {modality}s use one of {', '.join(explainer_names(modality))}."
        )
    return explainer


# Integrated gradients first: it is the default of reports, cards and the demo.
for explainer in (
    Explainer("integrated_gradients", "integrated gradients", integrated_gradients, integrated_gradients,
              takes_n_steps=True, attribution="integrated_gradients"),
    Explainer("input_x_gradient", "input × gradient", input_x_gradient, input_x_gradient,
              attribution="input_x_gradient"),
    Explainer("saliency", "saliency", saliency, saliency, attribution="gradient"),
    Explainer("attention_rollout", "attention rollout", attention_rollout_text, attention_rollout_image,
              requires="a transformer with eager attention"),
    Explainer("grad_cam", "Grad-CAM", image=grad_cam, requires="a CNN"),
    Explainer("occlusion", "occlusion", occlusion_text, occlusion_image,
              settings={"occlusion": "each word or patch-grid cell replaced by the baseline in turn; score = the "
                        "drop of the target's logit"}),
):  # fmt: skip
    register_explainer(explainer)
