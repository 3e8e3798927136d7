"""`PublishingTrainer`: a `Trainer` mixin whose every push to the Hub goes through `push_student`.

`DistillationTrainer` and the teacher's `FineTuningTrainer` inherit it, so a recipe with `push_to_hub: true` publishes
only what `kd-hf push` would: never a checkpoint, optimizer state or `training_args.bin`; the Space (`hub_space_id`)
follows at the end.
"""

import logging
import os

from transformers import Trainer
from transformers.trainer_utils import HubStrategy, SaveStrategy

from ..card import model_source
from .loading import check_repo_id
from .push import push_student


logger = logging.getLogger(__name__)


class PublishingTrainer(Trainer):
    """A `Trainer` whose every push (`push_to_hub: true`, at each save and at the end) goes through `push_student`,
    so that nothing but the published files ever reaches the Hub, whichever path pushes; the repo ids are checked
    before the repo is created. Checkpoints stay local whatever `hub_strategy` says; `end` pushes at the end only."""

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Check the repo ids (`hub_model_id`, else the output folder's name, and `hub_space_id`) on every process
        before Trainer creates the model repo: a bad id fails here, before training and before anything is sent, not
        after the model was pushed without its Space."""
        name = self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
        check_repo_id(name, "hub_model_id")
        if getattr(self.args, "hub_space_id", None) is not None:
            check_repo_id(self.args.hub_space_id, "hub_space_id")
        if getattr(self.args, "hub_teacher_id", None) is not None:
            check_repo_id(self.args.hub_teacher_id, "hub_teacher_id")
        if (
            getattr(self.args, "hub_space_id", None) is not None
            and not getattr(self.args, "hub_push_teacher", True)
            and any(model_source(name)["hub_id"] is None for name in self.args.teachers or
                    [self.args.teacher_model_name_or_path] if name)
        ):  # fmt: skip
            raise ValueError(
                "`hub_space_id` publishes a Space that shows the teacher beside the student, but the teacher is a local "
                "folder and `hub_push_teacher: false` keeps it local: set `hub_push_teacher: true` (it goes to "
                "`hub_teacher_id`, default `<hub_model_id>-teacher`), or leave out `hub_space_id`."
            )
        super().init_hf_repo(token=token, private=private)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, token=None,
                    revision=None, private=None, **kwargs):  # fmt: skip
        """Save the model with its card and push it, and its Space (`args.hub_space_id`, if set), with
        `push_student`; checkpoints, `training_args.bin` and the rest of `NOT_PUBLISHED` stay local."""
        if getattr(self, "hub_model_id", None) is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        self.create_model_card()
        self._finish_current_push()
        return push_student(
            self.args.output_dir,
            self.hub_model_id,
            space_id=getattr(self.args, "hub_space_id", None),
            private=self.args.hub_private_repo if private is None else private,
            token=token if token is not None else self.args.hub_token,
            commit_message=commit_message or "End of training",
            teacher_repo_id=getattr(self.args, "hub_teacher_id", None),
            push_teacher=getattr(self.args, "hub_push_teacher", True),
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Trainer's push at each save uploads the output folder, `training_args.bin` included, and with
        `checkpoint`/`all_checkpoints` the checkpoints themselves: push the saved model with `push_student` instead,
        model repo only (the Space follows at the end).

        It runs in the foreground (a save waits for it, `timeout` bounded); a failure is logged and training goes on,
        since the push at the end tries again.
        """
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        when = (
            f"step {self.state.global_step}"
            if self.args.save_strategy == SaveStrategy.STEPS
            else f"epoch {int(self.state.epoch or 0)}"
        )
        try:
            push_student(
                checkpoint_folder,
                self.hub_model_id,
                private=self.args.hub_private_repo,
                token=self.args.hub_token,
                commit_message=f"Training in progress, {when}",
            )
        except (ConnectionError, FileNotFoundError) as error:  # a down Hub; an adapter-only checkpoint
            logger.warning("Not pushed at %s: %s Training goes on; the push at the end tries again.", when, error)
