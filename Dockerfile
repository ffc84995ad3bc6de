# registryd: slim image, non-root, config at /etc/registryd/registry.toml, data in a volume.
# Python 3.12: the leveldb extra then brings plyvel-next, which has wheels for x86_64 and
# aarch64 (plyvel has an x86_64 wheel for 3.11 and 3.12 only), so the image builds on both.
# The build context is only what .dockerignore admits: pyproject.toml, README.md, LICENSE and
# registryd/ (no .venv, data, dev keys or configs).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY registryd ./registryd
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[leveldb,redis]"

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/registryd --shell /usr/sbin/nologin registryd \
    && mkdir -p /etc/registryd /var/lib/registryd \
    && chown registryd:registryd /var/lib/registryd \
    && chmod 0700 /var/lib/registryd
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "registryd[leveldb,redis]" \
    && rm -rf /wheels
USER registryd
WORKDIR /var/lib/registryd
# Paths live in the config; the config's own path and the health check's settings come from
# the environment (override with docker run -e). The default health check trusts the CA at
# /etc/registryd/tls/ca.pem and expects a certificate naming "localhost"; set
# REGISTRYD_HEALTH_SERVERNAME to the name your certificate carries (README: Docker).
ENV REGISTRYD_CONFIG=/etc/registryd/registry.toml \
    REGISTRYD_HEALTH_URL=https://127.0.0.1:8443 \
    REGISTRYD_HEALTH_CAFILE=/etc/registryd/tls/ca.pem \
    REGISTRYD_HEALTH_SERVERNAME=localhost
VOLUME ["/var/lib/registryd"]
EXPOSE 8443
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["registryd", "health", "--timeout", "5"]
ENTRYPOINT ["registryd"]
CMD ["serve"]
