"""WonderQ: a work queue over plain HTTP -- publish, lease, process, delete.

``wonderq serve`` runs the server (see wonderq.cli); wonderq.client is a small client.
The compiled engine (wonderq._core) is imported only by the server, so ``--help`` and the
client work without it.
"""

__version__ = "0.1.0"
