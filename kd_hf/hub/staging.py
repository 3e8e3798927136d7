"""What each repo of a push receives, staged in a temporary folder before anything is sent.

The model repo gets the published files of the student's folder (`NOT_PUBLISHED` stays local) with its card rendered
again for the Hub (`_published_card`); a local teacher's repo gets its folder's published files and a card linking the
student; the Space gets kd_hf's `space/` app and the kd_hf package itself. Only regular files are staged: a symbolic
link is never followed, and the folders staged from are only read.
"""

import copy
import fnmatch
import os
import shutil
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..card import space_readme, write_card
from ..evaluation import RESULTS_FILE, write_results


# What a training run leaves in its folder (or a checkpoint in its own) that is not part of the published student:
# checkpoints, optimizer/scheduler/RNG state, pickled training arguments and the recipe record (local paths),
# Trainer's state, the loss projections (`kd_hf.trainer.LOSS_STATE_NAME`), TensorBoard runs, Trainer's private files,
# the Space (it has its own repo), and the adapter of a student that was merged into plain weights (its base was never
# saved).
NOT_PUBLISHED = (
    "checkpoint-*", "last-checkpoint", "_*", "training_args.bin", "kd_hf_recipe.json", "trainer_state.json",
    "kd_hf_loss_state.safetensors", "runs", "space", "*.pt", "*.pth", "adapter",
)  # fmt: skip
# The kd_hf package, shipped with the Space (its app imports kd_hf's explainers), and the source checkout's `space/`.
KD_HF_FOLDER = Path(__file__).resolve().parent.parent
SPACE_SOURCE = KD_HF_FOLDER.parent / "space"


def _copy_regular_files(source: str, target: str, ignore: tuple[str, ...]) -> list[str]:
    """Copy the regular files under `source` into `target` (hard links where possible, so big weights are not copied),
    leaving out every file or folder whose name matches a pattern of `ignore`, and every symbolic link: a link could
    bring in files from anywhere (`~/.ssh`), and even one that stays inside duplicates a file. Returns the paths left
    out for being links or not regular files (FIFOs, sockets), for the caller to report. `source` is only read."""
    skipped = []
    os.makedirs(target, exist_ok=True)
    for root, folders, names in os.walk(source):  # never follows a link to a folder
        relative = os.path.relpath(root, source)
        kept = []
        for name in sorted(folders):
            if any(fnmatch.fnmatch(name, pattern) for pattern in ignore):
                continue
            if os.path.islink(os.path.join(root, name)):
                skipped.append(os.path.normpath(os.path.join(relative, name)))
            else:
                kept.append(name)
                os.makedirs(os.path.join(target, relative, name), exist_ok=True)
        folders[:] = kept
        for name in sorted(names):
            if any(fnmatch.fnmatch(name, pattern) for pattern in ignore):
                continue
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                skipped.append(os.path.normpath(os.path.join(relative, name)))
                continue
            destination = os.path.join(target, relative, name)
            try:
                os.link(path, destination)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(path, destination)
    return skipped


def _stage(folder: str, staging: str, card: dict) -> list[str]:
    """What the model repo receives: the published files of `folder`, with the card (`_published_card`) rendered
    again now that it knows its repo id, its Space and its teachers' Hub ids, and the report naming the models as the
    card does, never by a local path. Returns the links and other non-regular files left out. `folder` is only read."""
    skipped = _copy_regular_files(folder, staging, NOT_PUBLISHED)
    if card.get("task"):  # a folder kd_hf made: its card learns where it lives
        # Both write new files renamed over the staged ones (`os.replace`), never through their links to `folder`.
        if os.path.exists(os.path.join(staging, RESULTS_FILE)) and card.get("results"):
            write_results(card["results"], staging)
        write_card(staging, card)
    return skipped


def _has_weights(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json")) and any(Path(folder).glob("*.safetensors"))


def _published_card(card: dict, repo_id: str, space_id: str | None, plan: list[tuple[dict, str | None]]) -> dict:
    """The card as the Hub sees it: its repo id, its Space, and teachers named by their Hub ids (no local path)."""
    published = copy.deepcopy(card)
    published.update(model_id=repo_id, space_id=space_id or card.get("space_id"))
    if not plan:
        return published
    names = {source["name"]: hub_id for source, hub_id in plan if hub_id}
    published["teacher_sources"] = [
        {**source, "name": hub_id or os.path.basename(source["name"].rstrip("/")), "hub_id": hub_id, "folder": None}
        for source, hub_id in plan
    ]
    shown = [source["name"] for source in published["teacher_sources"]]
    if published.get("teachers"):
        published["teachers"] = shown
    published["teacher"] = shown[0]
    results = published.get("results") or {}
    if results.get("teacher"):
        teacher = results["teacher"]["name_or_path"]
        results["teacher"]["name_or_path"] = names.get(teacher, " + ".join(shown) if " + " in teacher else shown[0])
    if results.get("student"):
        results["student"]["name_or_path"] = repo_id
    return published


def _teacher_files(source: dict, staging: str, repo_id: str, student_card: dict) -> None:
    """A local teacher as its repo receives it: its published files, and a card linking the student if it has none."""
    _copy_regular_files(source["folder"], staging, NOT_PUBLISHED)
    if os.path.isfile(os.path.join(staging, "README.md")):
        return
    dataset = student_card.get("dataset", {}).get("hub_id")
    data = ModelCardData(
        base_model=source.get("base"), datasets=[dataset] if dataset else None, license=student_card.get("license"),
        library_name="transformers", pipeline_tag=student_card.get("task"), tags=["kd_hf", "teacher"],
    )  # fmt: skip
    student = student_card["model_id"]
    base = (
        f", fine-tuned from [{source['base']}](https://huggingface.co/{source['base']})" if source.get("base") else ""
    )
    ModelCard(
        f"---\n{data.to_yaml()}\n---\n\n# {repo_id.split('/')[-1]}\n\nThe teacher of "
        f"[{student}](https://huggingface.co/{student}), a student distilled from it with kd_hf{base}. Its accuracy "
        "next to the student's, and how alike their explanations are, are in the student's card.\n"
    ).save(os.path.join(staging, "README.md"))


def _space_files(space_dir: str, model_id: str, card: dict) -> None:
    """The Space: the app and its requirements from kd_hf's `space/` folder, a README that links the student, and
    kd_hf itself (the app imports its explainers; kd_hf is not on PyPI)."""
    os.makedirs(space_dir)
    shutil.copy(SPACE_SOURCE / "app.py", space_dir)
    shutil.copy(SPACE_SOURCE / "requirements.txt", space_dir)
    _copy_regular_files(str(KD_HF_FOLDER), os.path.join(space_dir, "kd_hf"), ("__pycache__", "*.pyc"))
    with open(os.path.join(space_dir, "README.md"), "w") as file:
        file.write(space_readme(model_id, card))
