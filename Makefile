# Developer shortcuts. `make test` is exactly what CI runs (see .ci/run and README.md).
PY ?= python

.PHONY: install build test lint annotate bench bench-quick clean

install:            ## install WonderQ with the test and dev extras, compiling the engine
	$(PY) -m pip install -e '.[test,dev]'

build:              ## recompile in place after editing _core.pyx, protocol.py or api.py (or their .pxd)
	$(PY) setup.py build_ext --inplace

test: build
	$(PY) -m pytest

lint:
	ruff check wonderq tests bench
	ruff format --check wonderq tests bench
	cython-lint wonderq/_core.pyx wonderq/engine/*.pxi wonderq/_core.pxd wonderq/protocol.pxd wonderq/api.pxd
	mypy

annotate:           ## writes wonderq/_core.html: yellow lines call into the Python C-API
	cython -3 -a wonderq/_core.pyx

bench:              ## the whole benchmark run; rewrites bench/RESULTS.md
	$(PY) bench/run.py

bench-quick:
	$(PY) bench/run.py --quick

clean:
	rm -rf build *.egg-info wonderq/*.c wonderq/*.so wonderq/*.html
