"""Push a distilled student (weights, card, example explanations) and its Gradio Space to the Hub; pull it back.

```python
from kd_hf.hub import load_student, push_student

push_student("outputs/student", "me/minilm-student", space_id="me/minilm-student-demo")
student = load_student("me/minilm-student")  # or a local folder
student.model, student.processor, student.card["teacher"]
```

The token comes from where `huggingface_hub` looks for it (`HF_TOKEN`, `hf auth login`), or is passed in; it is only
ever sent to the Hub, never written into a file. A push checks every repo id before it sends anything, publishes the
regular files of the folder only (never a symbolic link), leaves each repo holding exactly what it published, and gives
up on a Hub that does not answer within `timeout` seconds.

- `loading`: `load_student`, `read_card`, and `check_repo_id`, which every push runs before sending anything.
- `staging`: what each repo receives (`NOT_PUBLISHED` stays local; regular files only).
- `push`: `push_student`, which plans the teachers' repos, stages, and uploads within `PUSH_TIMEOUT`.
- `publishing_trainer`: `PublishingTrainer`, which routes every push of a training run through `push_student`.
"""

from .loading import HubIdError, LoadedStudent, check_repo_id, load_student, read_card
from .publishing_trainer import PublishingTrainer
from .push import HUB_ERRORS, PUSH_TIMEOUT, push_student
from .staging import NOT_PUBLISHED, SPACE_SOURCE


__all__ = [
    "HUB_ERRORS",
    "NOT_PUBLISHED",
    "PUSH_TIMEOUT",
    "SPACE_SOURCE",
    "HubIdError",
    "LoadedStudent",
    "PublishingTrainer",
    "check_repo_id",
    "load_student",
    "push_student",
    "read_card",
]
