"""Connections, below the app: accepted by registryd, spoken to with Hypercorn's protocols.

listener.py     accepts connections: the connection cap and per-client shares, TLS handshakes
                with bounded memory, a clean stop on SIGTERM
connection.py   one connection: bytes in and out, lingering close after an early answer
protocols.py    Hypercorn's HTTP/1.1 and HTTP/2 protocols, answering malformed requests with
                the wire error body
drain.py        ASGI middleware: an early answer settles the body it did not read
peers.py        the peer listener: a second TLS listener for peers, with a peer-only CA
metrics.py      the metrics listener: plain HTTP, GET /metrics only (``[metrics] address``)
"""

PEER_LISTENER = "registryd.peer_listener"
"""Scope key the peer listener sets (to True) on every request it serves; the app reads it
(:func:`registryd.api.auth.on_peer_listener`) without loading the listener."""
