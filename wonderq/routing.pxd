# cython: language_level=3
# C types for routing.py, compiled in Cython's pure-Python mode (the .py stays the readable
# source): the dispatch every request goes through.

cimport cython

from wonderq.params cimport known_queue
from wonderq.pathscan cimport PathIndex, segment_after
from wonderq.queuenames cimport QueueNames
from wonderq.request cimport Request


@cython.final
cdef class Route:
    cdef readonly str name           # the template
    cdef readonly dict handlers      # method -> (handler, label, counts by status)
    cdef Py_ssize_t segments         # of the template split at "/"
    cdef tuple literals              # (index, text) of the literal segments, the last first
    cdef readonly tuple params       # (index, name) of the {name} segments
    cdef readonly bint queue_only    # its only {param} is {queue} (dispatch sets req.queue)

    @cython.locals(i=Py_ssize_t, text=str, name=str, value=str, found=dict)
    cpdef dict match(self, list segments)


@cython.final
cdef class Router:
    cdef public dict static          # path without {params} -> {method: entry}
    cdef public list dynamic         # Routes with {params}, in the order first added
    cdef PathIndex _singles          # the one-{param} routes by literal parts: match()
    cdef tuple _single_routes        # those routes, in the PathIndex's order
    cdef list _deeper                # (prefix, its length, [(Route, tail Route)]): match()
    cdef Route _matched              # the route _match_params found last, or None
    cdef dict _routes                # template -> Route
    cdef object _on_cancel           # called with a deferred request whose connection closed
    cdef dict _other_counts          # (route label, status) -> responses not by a route
    cdef str _last_path              # the static path dispatched last (None at first)
    cdef dict _last_methods          # static[_last_path]
    cdef str _last_dyn_path          # the path with {params} dispatched last (None at first)
    cdef Route _last_dyn_route       # its route
    cdef dict _last_dyn_params       # its path parameters (shared: read only), or None
    cdef str _last_dyn_queue         # or its {queue} segment (queue_only routes)
    cdef public object authorizer    # wonderq.auth.Authorizer with --auth-file, else None
    cdef public tuple queue_hint     # (target prefixes, the store's names): hint_queues
    cdef QueueNames _names           # the store's table of queue names, or None
    cdef dict _allowed               # authorizer.allowed, the decision cache
    cdef object _allowed_of          # the authorizer _allowed belongs to
    # The last decision that allowed a request (see _authorize): its header, its queue,
    # the header's per-queue dict in _allowed (empty once it is stale) and its mask.
    cdef object _ok_header
    cdef object _ok_queue
    cdef dict _ok_queues
    cdef Py_ssize_t _ok_mask
    cdef dict _fallback              # {method: entry} for paths no route matches, or None
    cdef object _fallback_accepts    # whether the fallback takes a request
    cdef object _new_block           # the store's body_block (read_bodies_into), or None
    cdef set _block_handlers         # the handlers whose big bodies go into such blocks

    @cython.locals(route=Route)
    cpdef tuple match(self, str path)

    @cython.locals(route=Route, tail=Route, params=dict, prefix=bytes, n=Py_ssize_t,
                   end=Py_ssize_t, i=Py_ssize_t, deeper=list, segments=list, name=object,
                   walked=Route)
    cdef object _match_params(self, str path)

    @cython.locals(route=Route, params=dict)
    cpdef tuple walk(self, str path)

    @cython.locals(path=str, methods=dict, entry=tuple, response=tuple, status=Py_ssize_t,
                   route=Route, found=object, kept=tuple)
    cpdef dispatch(self, Request req)

    @cython.locals(per_queue=dict, bit=Py_ssize_t, bits=Py_ssize_t)
    cdef _authorize(self, Request req, tuple access)
    cpdef count(self, str route, int status)
    cpdef answer(self, Request req, tuple response)
