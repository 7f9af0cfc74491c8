# Everything runs inside .venv, created and filled from constraints.txt on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?= models/ecbsr_m4c16_x2.pth
OUT ?= out/demo
SERIAL ?=
DELEGATES ?= cpu,gpu
BENCH_ARGS ?=
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install test lint demo bench-android clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ecbdeploy tests

demo: $(STAMP)
	$(BIN)/ecbdeploy export $(MODEL) -o $(OUT)
	$(BIN)/ecbdeploy upscale $(OUT)/$$(basename $(MODEL) .pth)_int8.tflite models/sample_lr.png -o $(OUT)/upscaled

bench-android: $(STAMP)
	@test -f $(OUT)/report.json || $(BIN)/ecbdeploy export $(MODEL) -o $(OUT)
	$(BIN)/ecbdeploy bench-android $(OUT)/*.tflite $(if $(SERIAL),--serial $(SERIAL)) --delegates $(DELEGATES) --json $(OUT)/bench_android.json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
