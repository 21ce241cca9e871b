# `make demo` and `make test` create the virtual environment on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The main loop on the embedded synthetic scenes: prepare tiles, pretrain (short SimCLR),
# fine-tune on 25 % of the labels, test on the held-out region, quicklook.
demo: $(VENV)/.installed
	$(PY) -m rts_ssl prepare
	$(PY) -m rts_ssl pretrain
	$(PY) -m rts_ssl finetune data.label_fraction=0.25 \
		pretrained=$$(ls -td outputs/pretrain/*/*/encoder | head -n 1)
	$(PY) -m rts_ssl quicklook output=outputs/quicklook.png

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# pytest exits 5 when it collects no test: not a failure here.
test: lint
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

bench: $(VENV)/.installed
	$(PY) -m rts_ssl bench data

clean:
	rm -rf outputs data/prepared
