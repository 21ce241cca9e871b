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

# The main loop on the embedded synthetic scenes (with their DEMs: slope and relative
# elevation beside the optical bands), into outputs/demo: prepare tiles, pretrain (short
# SimCLR), fine-tune on the labels of two regions (test = the held-out region peel), map the
# held-out region: probability rasters, slump polygons, quicklooks with predicted outlines.
# Peel, not yamal, is held out: yamal's sea coast is a look-alike that peel and banks lack,
# so a model trained without it scores 0.08-0.64 there by seed and recipe
# (experiments/finetune_diagnosis); label_efficiency_synthetic keeps yamal as the hard test.
# Predicted slumps under 500 m^2 are dropped: the cut that maximised object F1 on the
# training region banks (experiments/finetune_diagnosis, "Small false positives").
DEMO := outputs/demo
SYNTHETIC := $${paths.cache_dir}/synthetic/planet-seed0-512px
demo: $(VENV)/.installed
	$(PY) -m rts_ssl prepare data=synthetic_planet_dem
	$(PY) -m rts_ssl pretrain data=synthetic_planet_dem hydra.run.dir=$(DEMO)/pretrain \
		overwrite=true
	$(PY) -m rts_ssl finetune data=synthetic_planet_dem pretrained=$(DEMO)/pretrain \
		'split.test_regions=[peel]' hydra.run.dir=$(DEMO)/finetune overwrite=true
	$(PY) -m rts_ssl predict model=$(DEMO)/finetune/model output=$(DEMO)/predict \
		'input=$(SYNTHETIC)/scenes/peel' 'dem=$(SYNTHETIC)/dem' min_area_m2=500 overwrite=true

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# pytest exits 5 when it collects no test: not a failure here.
test: lint
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

bench: $(VENV)/.installed
	$(PY) -m rts_ssl bench data

clean:
	rm -rf outputs data/prepared
