# registryd: slim image, non-root, config at /etc/registryd/registry.toml, data in a volume.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY registryd ./registryd
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/registryd --shell /usr/sbin/nologin registryd \
    && mkdir -p /etc/registryd /var/lib/registryd \
    && chown registryd:registryd /var/lib/registryd \
    && chmod 0700 /var/lib/registryd
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER registryd
WORKDIR /var/lib/registryd
VOLUME ["/var/lib/registryd"]
EXPOSE 8443
ENTRYPOINT ["registryd"]
CMD ["serve", "--config", "/etc/registryd/registry.toml"]
