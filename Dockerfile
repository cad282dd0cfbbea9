# One image for every cloudinv role: producers, worker, api (the command picks the role).
#   docker build -t cloudinv .
#   docker run --rm cloudinv --help
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cloudinv ./cloudinv
COPY streams ./streams
COPY producers ./producers
COPY sinks ./sinks
COPY api ./api
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/cloudinv --create-home cloudinv
COPY --from=build /install /usr/local
USER cloudinv
WORKDIR /var/lib/cloudinv
ENV CLOUDINV_STORAGE__DATA_DIR=/var/lib/cloudinv \
    PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["cloudinv"]
CMD ["--help"]
