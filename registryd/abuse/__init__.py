"""Abuse resistance: who a client is, how fast it may go, and what proof of work it owes.

clientip.py    the client key: the TCP peer (IPv6 by /64), or behind trusted proxies the
               right-most untrusted X-Forwarded-For hop
ratelimit.py   per-client GCRA token buckets (spec 4.8) and the middleware that charges them
pow.py         stateless hashcash challenges (spec 4.7), adaptive difficulty, the spent set

The rule itself (the header, the leading-zero-bits check, the solver) is
:mod:`registryd.hashcash`, shared with the client.
"""
