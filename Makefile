# Two commands do all set-up on a fresh machine (Python >= 3.11, Node.js/npm on PATH):
#   make book   - create .venv, install the pinned packages and the vendored JavaScript, build the
#                 HTML into _build/html (executing every chapter; fails on any cell error or warning)
#   make test   - the same set-up, then unit tests, every chapter through nbmake, and the browser test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
VENDOR := book/_static/vendor
VENDOR_STAMP := $(VENDOR)/.installed
# JupyterLab opens the MyST chapters as notebooks on double-click (Jupytext Notebook as default viewer)
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json

export JAX_PLATFORMS ?= cpu
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test unit chapters replicate browser setup vendor bench lab clean

setup: $(VENV_STAMP) $(VENDOR_STAMP) $(LAB_SETTINGS)

$(LAB_SETTINGS): book/_lab/overrides.json $(VENV_STAMP)
	mkdir -p $(dir $@) && cp $< $@

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[book,test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
	touch $@

# MathJax and the ipywidgets HTML manager are served from the book itself (no CDN).
$(VENDOR_STAMP): book/vendor/package.json book/vendor/package-lock.json
	cd book/vendor && npm ci --no-audit --no-fund --loglevel=error
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/npm/@jupyter-widgets/html-manager/dist
	cp -r book/vendor/node_modules/mathjax/es5 $(VENDOR)/mathjax
	cd book/vendor/node_modules/@jupyter-widgets/html-manager/dist && \
	  cp *.js *.woff* *.ttf *.eot *.svg ../../../../../_static/vendor/npm/@jupyter-widgets/html-manager/dist/
	cp book/vendor/node_modules/requirejs/require.js $(VENDOR)/require.js
	touch $@

book: setup
	$(PY) -m tests.build_book

test: setup
	$(PY) -m pytest -m "not browser" tests book
	$(PY) -m pytest -m browser tests/test_html.py tests/test_lab.py

unit: setup
	$(PY) -m pytest -m "not browser and not chapter" tests

chapters: setup
	$(PY) -m pytest book

# Every chapter again with other seeds (SGDNOTES_SEED=s gives chapter c the seed 1000*s + c): each
# assert must hold for any seed, and every quoted number is glued, so it changes with the computation.
REPLICATE_SEEDS ?= 1
replicate: setup
	for s in $(REPLICATE_SEEDS); do SGDNOTES_SEED=$$s $(PY) -m pytest book || exit 1; done

browser: setup
	$(PY) -m pytest -m browser tests/test_html.py tests/test_lab.py

bench: setup
	$(PY) bench/bench_sgd.py
	$(PY) bench/bench_sde.py

lab: setup
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) book

clean:
	rm -rf _build book/.nbmake-*.ipynb .pytest_cache .hypothesis
