"""Saving the student with its explanation card: `CardWritingTrainer`, a `Trainer` mixin of `DistillationTrainer`.

Each save writes the card (`README.md` and `explanation_card.json`, see `kd_hf.card`) beside the student's weights,
in place of Trainer's generic card; the end of an adapter run saves the merged student (or the adapter with the
student's config).
"""

import copy
import os

from transformers import Trainer

from ..card import card_facts, data_facts, write_card
from ..evaluation import read_results


class CardWritingTrainer(Trainer):
    """A `Trainer` mixin that saves the student (never the teacher) with its explanation card.

    It reads `_data_facts` and `_compute`, which `DistillationTrainer.__init__` sets to `None`.
    """

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the student (never the teacher) and, on the main process, its explanation card next to it."""
        super().save_model(output_dir, _internal_call)
        folder = output_dir or self.args.output_dir
        whole = self.is_fsdp_enabled and "FULL_STATE_DICT" in str(self.accelerator.state.fsdp_plugin.state_dict_type)
        if not _internal_call and self.is_fsdp_enabled and not whole:
            # Under `SHARDED_STATE_DICT` Trainer saves FSDP checkpoints as shards and the student not at all; the one a
            # run ends with must load in plain transformers (the report and a push read it). Every process gathers.
            self._save(folder, state_dict=self.accelerator.get_state_dict(self.model))
        if self.args.should_save:
            if self.args.peft_config and os.path.abspath(folder) == os.path.abspath(self.args.output_dir):
                self._save_final_adapter(folder)
            self.write_card(folder)

    def _save_final_adapter(self, folder: str) -> None:
        """The end of an adapter run (checkpoints keep the adapter alone): by default the student merged into plain
        weights that load without peft, the adapter moved to `adapter/`; else the adapter with the student's config,
        whose labels plain transformers and kd_hf read."""
        student = self.accelerator.unwrap_model(self.model)
        if not self.args.merge_adapter:
            student.config.save_pretrained(folder)
            return
        adapter = os.path.join(folder, "adapter")
        os.makedirs(adapter, exist_ok=True)
        for name in os.listdir(folder):
            if name.startswith("adapter_"):
                os.replace(os.path.join(folder, name), os.path.join(adapter, name))
        copy.deepcopy(student).merge_and_unload().save_pretrained(folder)

    def write_card(self, folder: str | None = None, results: dict | None = None, compute: dict | None = None) -> str:
        """Render the explanation card (`README.md` and `explanation_card.json`) into `folder`.

        `results` defaults to the folder's `eval_results.json` (as `kd_hf.evaluation.evaluate_student` writes it),
        else to the last evaluation of this run; `compute` holds the run's `student_seconds` (loading, teacher cache
        and training) and `report_seconds` (the evaluation), once known.
        """
        folder = folder or self.args.output_dir
        results = results or read_results(folder) or self._last_evaluation()
        student = self.accelerator.unwrap_model(self.model)
        self._compute = compute or self._compute  # later cards (a push's save) keep them
        if self._data_facts is None:  # read once: the label column of every training example
            labels = [student.config.id2label[i] for i in range(student.config.num_labels)]
            self._data_facts = data_facts(self.train_dataset, self.eval_dataset, labels)
        facts = card_facts(
            self.args, student, results, self.state.global_step, getattr(self, "hub_model_id", None),
            data=self._data_facts, compute=self._compute,
        )  # fmt: skip
        return write_card(folder, facts)

    def create_model_card(self, *args, **kwargs) -> None:
        """Trainer's generic card would replace the explanation card: write ours instead."""
        if self.is_world_process_zero():
            self.write_card()

    def _last_evaluation(self) -> dict | None:
        """The student's figures from this run's last evaluation, shaped like `eval_results.json`."""
        logged = [entry for entry in self.state.log_history if "eval_accuracy" in entry]
        if not logged:
            return None
        last = logged[-1]
        return {
            "task": "image-classification" if self.args.is_image_task else "text-classification",
            "dataset": {
                "name": self.args.dataset_name,
                "config": self.args.dataset_config_name,
                "split": self.args.eval_split,
                "num_examples": len(self.eval_dataset) if self.eval_dataset is not None else None,
            },
            "student": {
                "accuracy": last["eval_accuracy"],
                "macro_f1": last.get("eval_macro_f1"),
                "top1_agreement": last.get("eval_teacher_agreement"),
                "step": last.get("step"),
            },
            "teacher": None,
            "explanations": None,
        }
