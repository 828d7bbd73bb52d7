# Developer shortcuts. `make test` is exactly what CI runs (see .ci/run and README.md).
PY ?= python

.PHONY: install build test lint annotate bench bench-quick bench-smoke clean

install:            ## install WonderQ with the test and dev extras, compiling the engine
	$(PY) -m pip install -e '.[test,dev]'

build:              ## recompile in place after editing a compiled module (see COMPILED) or its .pxd
	$(PY) setup.py build_ext --inplace

test: build
	$(PY) -m pytest

lint:
	ruff check wonderq tests bench
	ruff format --check wonderq tests bench
	cython-lint wonderq/_core.pyx wonderq/headscan.pyx wonderq/*.pxd wonderq/wal/*.pxd wonderq/engine/*.pxi wonderq/sqs/*.pyx wonderq/sqs/*.pxi
	mypy

# Every module setup.py compiles: the engine, and the pure-Python-mode layers a request crosses.
COMPILED = wonderq/_core.pyx wonderq/request.py wonderq/protocol.py wonderq/params.py wonderq/routing.py \
           wonderq/api.py wonderq/deferred.py wonderq/store.py wonderq/tls.py wonderq/bodyread.pyx \
           wonderq/headscan.pyx wonderq/pathscan.pyx wonderq/queuenames.pyx wonderq/wal/log.py \
           wonderq/sqs/_digest.pyx wonderq/sqs/_fast.pyx

annotate:           ## writes wonderq/<module>.html for each compiled module: yellow lines call into the Python C-API
	for f in $(COMPILED); do cython -3 -a $$f || exit 1; done

bench:              ## the whole benchmark run; rewrites bench/RESULTS.md
	$(PY) bench/run.py

bench-quick:
	$(PY) bench/run.py --quick

bench-smoke:        ## < 1 min, every HTTP server and workload for 1 s: checks the chain, figures are noise, writes no .md
	$(PY) bench/run.py --only ceiling wonderq --runs 1 --duration 1 --no-write --no-install

clean:
	rm -rf build *.egg-info wonderq/*.c wonderq/*.so wonderq/*.html wonderq/sqs/*.c wonderq/sqs/*.so wonderq/sqs/*.html
