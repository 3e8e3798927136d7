"""The Gradio demo of a distilled student: its and its teacher's predictions and explanations, side by side.

```python
from kd_hf.demo import launch_demo

launch_demo("outputs/minilm-rotten-tomatoes-student")  # the teacher named in its card, if it loads
```

`kd-hf demo STUDENT [--teacher T]` runs the same locally and `space/app.py` on a Hub Space. Both models explain the
teacher's predicted class (the student's own without a teacher). Text is compared word by word (whitespace words, so
two tokenizers line up), images cell by cell on the student's patch grid. The app reads only the models it was
launched with and the example files their card names: users give text, or images as uploads, never paths.

The default method is integrated gradients, the one the card judges students by. Heatmaps and word highlights use
the card's diverging scale (`kd_hf.explain.explanation.DIVERGING_CMAP`). Visitors see models by their Hub id, or a
local folder by its name alone: never a path on the server, nor an exception (those go to the server's log).

API (e.g. `gradio_client.Client(url).predict(text, "integrated_gradients", 16, api_name="/explain_text")`):
`/explain_text (text, method, steps)` and `/explain_image (image, method, steps)` return the fields of `Answer`
in order (`Answer(*client.predict(...))` reads them by name: message, teacher and student labels and attributions,
figures, deletion curves), the figures a table (`{"headers": ["metric", "teacher", "student"], "data": [...]}`, no
teacher column without a teacher); `/status` returns what was loaded (or why nothing could be).

Its modules: `inputs` (the limits, the methods on offer, what is read of an upload), `loading` (the models, and the
names visitors see), `explaining` (one model on one input), `endpoints` (both models side by side, as an `Answer`)
and `page` (the layout, apart from loading: `build_demo`, `launch_demo`).
"""

# `_name as _name`: internals that tests reach as `kd_hf.demo._name`, re-exported explicitly; the API is `__all__`.
from .endpoints import TOP_K, Answer
from .endpoints import _Explainer as _Explainer
from .explaining import DELETION_STEPS, DISPLAY_SIDE, OVERLAY_OPACITY
from .explaining import _overlay as _overlay
from .inputs import (
    DEFAULT_METHOD,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    MAX_QUEUE,
    MAX_STEPS,
    MAX_TEXT_CHARS,
    MAX_TOKENS,
    MAX_UPLOAD_SIZE,
    METHODS,
)
from .inputs import _BadInput as _BadInput
from .inputs import _settings as _settings
from .loading import MAX_EXAMPLES
from .loading import _examples as _examples
from .loading import _Model as _Model
from .loading import _shown_name as _shown_name
from .page import build_demo, launch_demo, show_steps


__all__ = [
    "DEFAULT_METHOD",
    "DELETION_STEPS",
    "DISPLAY_SIDE",
    "MAX_EXAMPLES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "MAX_QUEUE",
    "MAX_STEPS",
    "MAX_TEXT_CHARS",
    "MAX_TOKENS",
    "MAX_UPLOAD_SIZE",
    "METHODS",
    "OVERLAY_OPACITY",
    "TOP_K",
    "Answer",
    "build_demo",
    "launch_demo",
    "show_steps",
]
