"""Declares WonderQ's compiled extensions; everything else lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("wonderq._core", ["wonderq/_core.pyx"], extra_compile_args=["-O2"]),
    # Plain Python compiled in Cython's pure-Python mode, its C types in protocol.pxd; the .py
    # also runs as is when not built.
    Extension("wonderq.request", ["wonderq/request.py"], extra_compile_args=["-O2"]),
    Extension("wonderq.protocol", ["wonderq/protocol.py"], extra_compile_args=["-O2"]),
    # The same for the layers every request goes through (types in each .pxd): the checks
    # of what a client sent, the dispatch, WonderQ's routes, and the store interface.
    Extension("wonderq.params", ["wonderq/params.py"], extra_compile_args=["-O2"]),
    Extension("wonderq.routing", ["wonderq/routing.py"], extra_compile_args=["-O2"]),
    Extension("wonderq.api", ["wonderq/api.py"], extra_compile_args=["-O2"]),
    Extension("wonderq.deferred", ["wonderq/deferred.py"], extra_compile_args=["-O2"]),
    Extension("wonderq.store", ["wonderq/store.py"], extra_compile_args=["-O2"]),
    # Every read of an HTTPS connection goes through tls.TlsReads.
    Extension("wonderq.tls", ["wonderq/tls.py"], extra_compile_args=["-O2"]),
    Extension("wonderq.bodyread", ["wonderq/bodyread.pyx"], extra_compile_args=["-O2"]),
    # The write-ahead log's appends run on every durable publish and delete: its pending
    # frame and append methods are C (types in wal/log.pxd), the rest compiled plain Python.
    Extension("wonderq.wal.log", ["wonderq/wal/log.py"], extra_compile_args=["-O2"]),
    # The Authorization line lifted out of a head before llhttp (access control's hot path).
    Extension("wonderq.headscan", ["wonderq/headscan.pyx"], extra_compile_args=["-O2"]),
    # The router's compares of a path against a queue route's literal parts.
    Extension("wonderq.pathscan", ["wonderq/pathscan.pyx"], extra_compile_args=["-O2"]),
    # The engine's name table as the protocol and the router call it (the Broker's base).
    Extension("wonderq.queuenames", ["wonderq/queuenames.pyx"], extra_compile_args=["-O2"]),
    # The SQS face's hot path: its digests (C in digest.h) and the fast path of its most
    # common JSON requests.
    Extension(
        "wonderq.sqs._digest",
        ["wonderq/sqs/_digest.pyx"],
        include_dirs=["wonderq/sqs"],
        depends=["wonderq/sqs/digest.h"],
        extra_compile_args=["-O2"],
    ),
    Extension(
        "wonderq.sqs._fast",
        ["wonderq/sqs/_fast.pyx"],
        include_dirs=["wonderq/sqs"],
        depends=["wonderq/sqs/digest.h"],
        extra_compile_args=["-O2"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
        annotate=False,
    ),
)
