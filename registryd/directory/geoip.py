"""Countries from a local MaxMind DB (extensions spec §3.6), never downloaded.

The file is read whole into memory (``MODE_MEMORY``) at start-up and on reload: a memory map
would crash the daemon with SIGBUS if the file were truncated or rewritten in place, and a
GeoLite2-Country file is ~9 MB (-City ~60 MB). A missing or unreadable file is one warning and
no countries; a lookup that fails on corrupt data is a warning once per opened file, never a
failed round.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import anyio.to_thread
import maxminddb

log = logging.getLogger("registryd.directory")

Country = tuple[str | None, str | None]
NO_COUNTRY: Country = (None, None)


class GeoIP:
    """Looks up ``(country_code, country_name)`` (English) for an IP address."""

    def __init__(self) -> None:
        self._reader: Any = None
        self._path: str | None = None
        self._warned = False

    @property
    def loaded(self) -> bool:
        return self._reader is not None

    async def open(self, path: str | None) -> None:
        """(Re)open ``path`` in a worker thread, or close the database when None."""
        reader = None
        if path is not None:
            try:
                reader = await anyio.to_thread.run_sync(
                    maxminddb.open_database, path, maxminddb.MODE_MEMORY
                )
            except Exception as exc:  # any unreadable file is a warning (spec §3.6)
                log.warning(
                    "directory.geoip_db_path %s cannot be read (%s): probing goes on without "
                    "countries",
                    path,
                    type(exc).__name__,
                )
        self.close()
        self._reader, self._path, self._warned = reader, path, False
        if reader is not None:
            log.info("GeoIP database %s loaded", path)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def country(self, ip: str) -> Country:
        """The country of ``ip`` (an IPv4-mapped address as its IPv4), or ``(None, None)``."""
        if self._reader is None:
            return NO_COUNTRY
        try:
            address = ipaddress.ip_address(ip)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            found = self._reader.get(address)
        except ValueError:  # not an address; or an IPv6 address in an IPv4-only database
            return NO_COUNTRY
        except Exception as exc:  # corrupt data decodes to many error types
            if not self._warned:
                self._warned = True
                log.warning(
                    "GeoIP database %s has corrupt data (%s): countries may be missing",
                    self._path,
                    type(exc).__name__,
                )
            return NO_COUNTRY
        country = found.get("country") if isinstance(found, dict) else None
        if not isinstance(country, dict):
            return NO_COUNTRY
        code = country.get("iso_code")
        names = country.get("names")
        name = names.get("en") if isinstance(names, dict) else None
        return (
            code if isinstance(code, str) else None,
            name if isinstance(name, str) else None,
        )
