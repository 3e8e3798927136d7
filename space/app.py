"""The Hugging Face Space of a student distilled with kd_hf: its and its teacher's predictions and explanations.

The student is the `KD_HF_STUDENT` variable (a Hub id, or a folder), else the first entry of `models:` in the front
matter of the README.md beside this file (what `kd-hf push` writes); the teacher is `KD_HF_TEACHER`, else the one
the student's card names (one that cannot be loaded here leaves the student alone, with a one-line note). `kd-hf push`
ships this file with the `kd_hf` package beside it; run the same app on your machine with
`kd-hf demo STUDENT [--teacher T]`. The app is `kd_hf.demo.build_demo(...)`, queued for a free CPU Space and launched
with its upload limit.
"""

import os
import sys
from pathlib import Path

import yaml


HERE = Path(__file__).resolve().parent
# In a Space, kd_hf sits beside this file; in a source checkout, one folder up.
sys.path.insert(0, str(HERE if (HERE / "kd_hf").is_dir() else HERE.parent))


def student_from_readme(readme: Path = HERE / "README.md") -> str | None:
    """The first model listed in the `models:` front matter of `readme` (None if there is none)."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not text.startswith("---"):
        return None
    front = yaml.safe_load(text.split("---", 2)[1]) or {}
    models = front.get("models") or []
    return str(models[0]) if models else None


def main() -> None:
    from kd_hf.demo import launch_demo

    student = os.environ.get("KD_HF_STUDENT") or student_from_readme()
    if not student:
        raise SystemExit(
            "No student to show: set the Space variable KD_HF_STUDENT to its Hub id, or list it under `models:` in "
            "the front matter of README.md."
        )
    launch_demo(student, os.environ.get("KD_HF_TEACHER") or None)


if __name__ == "__main__":
    main()
