# `make demo` and `make test` are the whole setup: each creates .venv if it is missing,
# installs biobench with its test extras, then runs the demo or the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.biobench-installed

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/biobench demo

test: $(STAMP)
	$(BIN)/python -m pytest

# What CI checks besides the tests (`ruff format .` fixes the formatting).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) biobench-demo
