"""The HTTP API: handlers over one :class:`~registryd.runtime.Runtime`, mounted by
:func:`registryd.app.create_app`.

public.py     spec 4.5: /register /resolve /check_user /envelope_pubkey(s) /health,
              /pow/challenge
ownership.py  extensions spec §2: /identity/update /identity/delete, signed /announce,
              /presence/resolve
peers.py      /sync, GET and POST /nodes (peers: the peer listener or a peer token)
admin.py      /admin/keys, /admin/keys/rotate, /admin/reload (loopback or peer listener + token)
directory.py  the node directory (extensions spec §3): /api/registry/*, /api/nodes,
              /admin/directory
auth.py       who a caller is: loopback, the peer listener, bearer tokens
body.py       the body reader (content type, size, deadline, strict JSON) and JSON responses
"""
