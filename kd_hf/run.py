"""The jobs behind `kd-hf train` and `kd-hf distill`: build models and data from a recipe, train, save, evaluate."""

import copy
import logging
import time

import torch
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedModel, Trainer, default_data_collator, set_seed

from .checkpoints import (
    ResumableTrainer,
    check_recorded_recipe,
    checkpoint_problem,
    last_complete_checkpoint,
    record_recipe,
)
from .config import DistillationConfig
from .data import (
    TEACHER_PREFIX,
    DistillationDataCollator,
    add_transfer_set,
    augment_texts,
    label_names,
    load_raw_datasets,
    prepare_datasets,
    preprocess_images,
    split_names,
)
from .ensemble import EnsembleTeacher, load_teacher
from .evaluation import evaluate_student, explain_sample
from .explain.gradients import EXPLAINED_AS
from .hub import PublishingTrainer
from .metrics import classification_metrics
from .models import class_names, load_model, load_processor
from .pairing import apply_peft, build_student, check_max_length
from .student_init import project_teacher_embeddings
from .trainer import DistillationTrainer, check_output_dir
from .trainer.sharding import loading_whole, whole_weights
from .vocabulary import prune_tokenizer


logger = logging.getLogger(__name__)


def _processor(args: DistillationConfig, model: PreTrainedModel, source: str | None):
    if source is None and not args.is_image_task:
        raise ValueError(
            "A text model built from `model_config` needs a tokenizer: set `model_name_or_path` or a teacher."
        )
    return load_processor(source if source is not None else model, args.is_image_task, args.trust_remote_code)


def _num_channels(model: PreTrainedModel) -> int:
    return getattr(model.config, "num_channels", 3)


# Training examples whose teacher activations choose what a narrowed teacher-layer student keeps (as many as Minitron).
CALIBRATION_EXAMPLES = 1024


def _calibration_batches(args: DistillationConfig, train, processor, teacher, batch_size: int = 32) -> list[dict]:
    """The teacher's inputs for `CALIBRATION_EXAMPLES` training examples, drawn with the recipe's seed, in batches."""
    sample = train.shuffle(seed=args.seed).select(range(min(CALIBRATION_EXAMPLES, len(train))))
    if args.is_image_task:
        pixels = preprocess_images(
            sample, processor, image_column=args.image_column, label_column=None, num_channels=_num_channels(teacher)
        )["pixel_values"]
        return [{"pixel_values": pixels[start : start + batch_size]} for start in range(0, len(pixels), batch_size)]
    columns = [[text or "" for text in sample[column]] for column in args.text_columns]
    return [
        dict(
            processor(
                *[texts[start : start + batch_size] for texts in columns],
                truncation=True,
                max_length=args.max_length,
                padding=True,
                return_tensors="pt",
            )  # fmt: skip
        )
        for start in range(0, len(sample), batch_size)
    ]


def _collator(args: DistillationConfig, processor, dataset, teacher_processor=None):
    """Images stack as they are; text is padded per side, the teacher's own inputs (if any) with its tokenizer."""
    if args.is_image_task:
        return default_data_collator
    has_teacher_inputs = any(name.startswith(TEACHER_PREFIX + "input") for name in dataset.column_names)
    return DistillationDataCollator(processor, teacher_processor if has_teacher_inputs else None)


def _fit(trainer: Trainer, args: DistillationConfig, job: str) -> Trainer:
    """Train (resuming from the output folder's last complete checkpoint if any), save the model, evaluate.

    `job` (the command) is recorded with the recipe, which a later rerun in the same folder must match.
    """
    needs_optimizer = not args.save_only_model
    checkpoint = args.resume_from_checkpoint
    if checkpoint is not None:
        problem = checkpoint_problem(checkpoint, needs_optimizer)
        if problem is not None:
            raise ValueError(
                f"Cannot resume from {checkpoint}: {problem}. Give `resume_from_checkpoint` a complete one."
            )
    elif not args.overwrite_output_dir:
        checkpoint = last_complete_checkpoint(args.output_dir, needs_optimizer)
        if checkpoint is not None:
            logger.info(
                "Resuming from %s (pass `overwrite_output_dir: true` or change `output_dir` to start over).",
                checkpoint,
            )
    record_recipe(args, job)
    output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_metrics("train", output.metrics)  # train_results.json: the training time the card reports
    trainer.save_model()
    metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    if metrics:
        trainer.save_metrics("eval", metrics)
    return trainer


class FineTuningTrainer(ResumableTrainer, PublishingTrainer):
    """The `Trainer` of `kd-hf train`: it resumes exactly and publishes only the published files, as a student does."""


def train(args: DistillationConfig, callbacks: list | None = None) -> Trainer:
    """Fine-tune `model_name_or_path` (or a model built from `model_config`) with cross-entropy alone; `callbacks` go
    to the trainer."""
    if args.hub_space_id is not None:
        raise ValueError(
            "`hub_space_id` publishes the demo of a distilled student beside its teacher; `kd-hf train` has no "
            "teacher. Leave it out here, and set it in the `kd-hf distill` recipe that uses this model."
        )
    if args.has_transfer_set or args.augment_copies:
        raise ValueError(
            "A transfer set (`transfer_dataset_name`, `augment_copies`) adds unlabelled texts, which learn from a "
            "teacher's soft labels; `kd-hf train` has no teacher. Use `kd-hf distill`, or leave them out."
        )
    if args.should_save:
        check_output_dir(args.output_dir)
    check_recorded_recipe(args, "train")
    raw_datasets = load_raw_datasets(args)
    if args.label_column not in raw_datasets[0].column_names:
        raise ValueError(
            f"`kd-hf train` learns from labels alone, and split {args.train_split!r} has no label column "
            f"{args.label_column!r}: label the data, or distil a teacher's soft labels with `kd-hf distill`."
        )
    set_seed(args.seed)  # a model built from a config starts from the recipe's seed
    model = build_student(args, None, label_names(raw_datasets[0], args.label_column))
    processor = _processor(args, model, args.model_name_or_path)
    if args.prune_vocabulary:
        processor, _ = _pruned_vocabulary(args, raw_datasets, processor, model)
    if not args.is_image_task:
        check_max_length(args.max_length, model=model)
    if args.peft_config:
        model = apply_peft(model, args.peft_config, args.is_image_task)
    train_dataset, eval_dataset = prepare_datasets(
        args, processor, num_channels=_num_channels(model), raw_datasets=raw_datasets
    )
    trainer = FineTuningTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        data_collator=_collator(args, processor, train_dataset),
        compute_metrics=classification_metrics,
        callbacks=callbacks,
    )
    return _fit(trainer, args, "train")


def _augmented(args: DistillationConfig, train, teacher_tokenizer, teacher: PreTrainedModel):
    """The training split followed by its TinyBERT-style variants, read by the teacher's tokenizer and embeddings."""
    augmented = augment_texts(
        train, teacher_tokenizer, teacher.get_input_embeddings().weight, text_columns=args.text_columns,
        label_column=args.label_column, copies=args.augment_copies, word_prob=args.augment_word_prob,
        mask_prob=args.augment_mask_prob, seed=args.seed,
    )  # fmt: skip
    logger.info("Training on %d examples: %d labelled, %d augmented.", len(augmented), len(train),
                len(augmented) - len(train))  # fmt: skip
    return augmented


def _pruned_vocabulary(args: DistillationConfig, raw_datasets, tokenizer, model: PreTrainedModel):
    """The model's tokenizer cut to the tokens of the training and evaluation texts, and the kept token ids; the
    model's embedding table keeps the rows of those tokens (row i is token `kept[i]`).

    The evaluation texts count too (their words, never their labels), so that the student reads both splits as the
    teacher does: token-by-token losses then line up in evaluation as in training. The report's held-out split is
    not read."""
    splits = [split for split in raw_datasets if split is not None]
    texts = [text for split in splits for column in args.text_columns for text in split[column] if text]
    pruned, kept = prune_tokenizer(tokenizer, texts)
    before, rows = model.num_parameters(), model.get_input_embeddings().weight.detach()[kept].clone()
    model.resize_token_embeddings(len(kept))
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(rows)
    model.config.pad_token_id = pruned.pad_token_id
    logger.info(
        "Vocabulary cut to the %d tokens of the training and evaluation texts (of %d): %d parameters instead of %d.",
        len(kept), len(tokenizer), model.num_parameters(), before,
    )  # fmt: skip
    return pruned, kept


def _report_config(args: DistillationConfig) -> DistillationConfig:
    """The recipe as the final report reads its data: on `report_split`, held out of training and of the evaluations
    during it, when the dataset has that split; else on `eval_split`, with a warning."""
    if args.report_split is None or args.report_split == args.eval_split:
        return args
    splits = split_names(args)
    if args.report_split not in splits:
        logger.warning(
            "No %r split to report on (splits: %s): the report and the card use %r, which training evaluated on.",
            args.report_split, ", ".join(splits), args.eval_split,
        )  # fmt: skip
        return args
    report = copy.copy(args)
    report.eval_split = args.report_split
    return report


def distill(args: DistillationConfig, callbacks: list | None = None) -> DistillationTrainer:
    """Distil `teacher_model_name_or_path` (or `teachers`) into the recipe's student; `callbacks` go to the trainer."""
    if args.teacher_model_name_or_path is None:
        raise ValueError("`kd-hf distill` needs `teacher_model_name_or_path`; use `kd-hf train` to fine-tune alone.")
    started = time.perf_counter()
    if args.should_save:
        check_output_dir(args.output_dir)
    check_recorded_recipe(args, "distill")
    image = args.is_image_task
    # A student made of teacher layers copies them at full precision; the trainer then casts the teacher.
    teacher = load_teacher(args, dtype=args.teacher_dtype if args.model_init != "teacher_layers" else "auto")
    reference = teacher.teachers[0] if isinstance(teacher, EnsembleTeacher) else teacher
    raw_datasets = load_raw_datasets(args)
    set_seed(args.seed)  # a student built from a config starts from the recipe's seed
    # Classes as the labelled split names them; unlabelled data (soft labels alone) takes the teacher's.
    labelled = [split for split in raw_datasets if split is not None and args.label_column in split.column_names]
    labels = label_names(labelled[0], args.label_column) if labelled else class_names(reference.config)
    teacher_processor = load_processor(args.teacher_model_name_or_path, image, args.trust_remote_code)
    # Under DeepSpeed ZeRO-3 the teacher loads partitioned; the student is built from its whole weights.
    with whole_weights(reference):
        student = build_student(
            args,
            reference,
            labels,
            calibration=lambda: _calibration_batches(args, raw_datasets[0], teacher_processor, reference),
        )
        if args.model_init == "checkpoint" or (args.model_init == "config" and args.model_name_or_path):
            processor = _processor(args, student, args.model_name_or_path)
        else:
            processor = teacher_processor
        if args.has_transfer_set:
            raw_datasets = (add_transfer_set(raw_datasets[0], args), raw_datasets[1])
        if args.augment_copies:
            raw_datasets = (_augmented(args, raw_datasets[0], teacher_processor, reference), raw_datasets[1])
        token_ids = None
        if args.prune_vocabulary:
            processor, token_ids = _pruned_vocabulary(args, raw_datasets, processor, student)
        if args.embedding_init == "teacher":
            project_teacher_embeddings(reference, student, token_ids)
    if not image:
        check_max_length(args.max_length, student=student, teacher=teacher)
    if args.peft_config:
        student = apply_peft(student, args.peft_config, image)
    train_dataset, eval_dataset = prepare_datasets(
        args,
        processor,
        teacher_processor,
        num_channels=_num_channels(student),
        teacher_num_channels=_num_channels(teacher),
        raw_datasets=raw_datasets,
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        data_collator=_collator(args, processor, train_dataset, teacher_processor),
        callbacks=callbacks,
    )
    _fit(trainer, args, "distill")
    if eval_dataset is not None and "labels" not in eval_dataset.column_names:
        logger.info("The eval split has no labels: no accuracy report; the log holds the agreement with the teacher.")
    elif eval_dataset is not None and args.should_save:
        with loading_whole(args):  # the report runs on the main process alone
            _report(trainer, args, processor, teacher_processor, started)
    if args.push_to_hub:
        trainer.push_to_hub()
    return trainer


def _report(
    trainer: DistillationTrainer, args: DistillationConfig, processor, teacher_processor, started: float
) -> None:
    """The evaluation report and the explanation card of a finished run, on the main process; then ONNX, if asked.

    It judges the models as a user loads them: the student without the autocast that `bf16`/`fp16` training wraps
    around it, the teacher in its own precision, whatever `teacher_dtype` it was trained with. Under FSDP or DeepSpeed
    each process may hold a shard of the models, which run only with every process: the report reads the whole
    student `_fit` saved, and loads the teacher whole.
    """
    distilled = time.perf_counter()
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    student = args.output_dir if sharded else _as_saved(trainer.accelerator.unwrap_model(trainer.model)).eval()
    if trainer.is_deepspeed_enabled or isinstance(trainer.teacher, FSDPModule) or args.teacher_dtype != "auto":
        teacher = load_teacher(args, dtype="auto")
    else:
        teacher = trainer.accelerator.unwrap_model(trainer.teacher)
    results = evaluate_student(
        student,
        teacher,
        output_dir=args.output_dir,
        config=_report_config(args),
        explanation_examples=args.explanation_examples,
        explanation_method=args.explanation_method,
        explanation_n_steps=args.explanation_n_steps,
        global_examples=args.global_examples,
        student_processor=processor,
        teacher_processor=teacher_processor,
        student_name=args.hub_model_id or args.output_dir,
        trained_method=EXPLAINED_AS[args.attribution_method] if "attribution" in args.loss_type else None,
    )
    compute = {"student_seconds": distilled - started, "report_seconds": time.perf_counter() - distilled}
    trainer.write_card(results=results, compute=compute)
    logger.info("Wrote the evaluation report and the explanation card to %s", args.output_dir)
    if args.export_onnx:
        _export(args, teacher, teacher_processor)


def _as_saved(model: PreTrainedModel) -> PreTrainedModel:
    """`model` without the autocast that accelerate wraps around its forward for `bf16`/`fp16` training.

    accelerate keeps the forward it replaced as `_original_forward`; its own `unwrap_model(keep_fp32_wrapper=False)`
    unwraps further, through the `functools.wraps` decorators of transformers' forwards, so it is not used here."""
    original = vars(model).pop("_original_forward", None)
    if original is not None:
        model.forward = original
    return model


def _export(args: DistillationConfig, teacher, teacher_processor) -> None:
    """`export_onnx`: the saved student as ONNX graphs, measured against it and the teacher on the report's split; the
    card gains its *Deployment* section (`kd-hf export` does the same later)."""
    from .export import export_student
    from .report import parity_tables

    results = export_student(
        args.output_dir,
        quantize="int8" if args.export_onnx == "int8" else None,
        teacher=None if isinstance(teacher, EnsembleTeacher) else teacher,  # several teachers: no single reference
        teacher_processor=teacher_processor,
        config=_report_config(args),
    )
    logger.info("Exported the student to ONNX:\n%s", parity_tables(results))


def explain(
    model: str,
    teacher: str,
    output_dir: str,
    dataset_name: str,
    split: str = "validation",
    num_examples: int = 50,
    method: str = "integrated_gradients",
    n_steps: int = 32,
    **data_fields,
) -> str:
    """Compare the explanations of `model` and `teacher` on `num_examples` of a dataset; write the report."""
    from .explain.report import write_report

    config = DistillationConfig(
        output_dir=output_dir, model_name_or_path=model, dataset_name=dataset_name, eval_split=split,
        max_eval_samples=num_examples, report_to=[], **data_fields,
    )  # fmt: skip
    _, evaluation = load_raw_datasets(config)
    image = config.is_image_task
    student_model, teacher_model = load_model(model, image), load_model(teacher, image)
    comparison, shown, _ = explain_sample(
        config, evaluation, student_model, teacher_model, load_processor(model, image), load_processor(teacher, image),
        num_examples, method, n_steps,
    )  # fmt: skip
    if image:
        return write_report(comparison, output_dir, list(range(len(shown))), shown)
    return write_report(comparison, output_dir, shown)
