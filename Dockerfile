# promptship production image: CPU-only PyTorch, non-root, migrates on start.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/promptship
# CPU wheels only: any other torch requirement pulls a multi-GB CUDA build.
RUN /opt/promptship/bin/pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY src ./src
COPY bot ./bot
# the server extra: serve and the local commands (the base install is the client and CLI)
RUN /opt/promptship/bin/pip install ".[server]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 promptship
COPY --from=build /opt/promptship /opt/promptship
ENV PATH=/opt/promptship/bin:$PATH \
    PROMPTSHIP_DATABASE_URL=sqlite+aiosqlite:////data/promptship.db \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
RUN mkdir /data && chown promptship /data
USER promptship
WORKDIR /home/promptship
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["promptship", "serve", "--host", "0.0.0.0", "--port", "8000"]
