# cython: language_level=3
"""What a store that keeps a table of its queues' names offers the HTTP layer, as C calls.

The protocol names a request's queue as soon as its target arrives (``prefetch_name``), and
the router hands a queue route's ``{queue}`` segment on as the store's own str for that
name (``known_name``): see Router.hint_queues. Both run on every request to a queue's
routes, so they are methods of this cdef class, which the engine's Broker derives from, and
the protocol and the router call them through its vtable: a C call each, where calling the
two as bound methods through Python cost ~480 instructions more, a second hash of the name
included (bench/instructions.py spread100k). This base answers as a store with no such
table: it prefetches nothing and knows no name.
"""


cdef class QueueNames:
    cpdef prefetch_name(self, bytes data, Py_ssize_t start):
        """A hint: the queue named ``data[start:end]`` (``end``: the next ``/`` or ``?``, or
        the end) is about to be looked up. Reads and changes nothing; any bytes will do."""
        return None

    cpdef known_name(self, str path, Py_ssize_t start, Py_ssize_t end):
        """The store's own str for the queue named ``path[start:end]`` (the same object on
        every call), or None when it knows no queue so named. Any str and bounds will do."""
        return None
