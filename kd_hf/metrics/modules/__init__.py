"""The `evaluate` metric modules shipped with kd_hf, one folder each: the module `<name>.py`, its metric card
(`README.md`), `app.py` and `requirements.txt`. A folder loads offline with `evaluate.load(module_path(name))` and
can be pushed as it stands as a metric Space. The modules hold the math and need no kd_hf; kd_hf computes through
them, so `kd-hf eval`, direct callers and the Hub see one implementation.
"""

import os
import threading
from functools import cache


MODULES = ("explanation_agreement", "faithfulness")
_COMPUTING = threading.Lock()  # a loaded module keeps its inputs between `add_batch` and `compute`


def module_path(name: str) -> str:
    """The folder of kd_hf's `evaluate` module `name` (one of `MODULES`), for `evaluate.load` or a metric Space."""
    if name not in MODULES:
        raise ValueError(f"kd_hf ships no evaluate module {name!r}; the known ones are: {', '.join(MODULES)}.")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


@cache
def _load(name: str):
    import evaluate

    return evaluate.load(module_path(name), keep_in_memory=True)  # in memory: no cache files, no file locks


def compute(name: str, **inputs) -> dict:
    """`evaluate.load(module_path(name)).compute(**inputs)`, the module loaded once per process."""
    with _COMPUTING:
        return _load(name).compute(**inputs)
