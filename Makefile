# Two commands: `make demo` (set up, run the simulated robot demo) and `make test` (set up, run tests).
VENV ?= .venv
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa

.PHONY: setup demo test bench clean

setup:
	@VENV=$(VENV) ./scripts/setup.sh

demo: setup
	$(VENV)/bin/spatialvlm demo

test: setup
	$(VENV)/bin/python -m pytest

bench: setup   # figures for the README's table (several minutes; run on a quiet machine)
	$(VENV)/bin/python benchmarks/estimator_accuracy.py
	$(VENV)/bin/python benchmarks/node_latency.py --transport both
	$(VENV)/bin/python benchmarks/wrapper_overhead.py
	$(VENV)/bin/python benchmarks/synthesis_throughput.py
	$(VENV)/bin/python benchmarks/data_quality.py
	$(VENV)/bin/python benchmarks/vlm_speed.py
	$(VENV)/bin/python benchmarks/vlm_reach_frames.py
	$(VENV)/bin/python benchmarks/soak.py 10
	$(VENV)/bin/python benchmarks/question_latency.py

clean:
	rm -rf build install log results
