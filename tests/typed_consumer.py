"""A consumer of the client library, as its README shows it; checked against the wheel."""

from registryd.client import IdentityKeys, RegistryClient

with RegistryClient("https://127.0.0.1:8443", bytes(32), cafile="ca.pem") as client:
    client.register("alice", IdentityKeys.generate())
