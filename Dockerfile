# The OKR Ledger service image: one process per container, chosen by the command (`okr serve`, ...).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY events ./events
COPY services ./services
COPY projections ./projections
RUN pip install --no-cache-dir .
RUN useradd --create-home okr && mkdir -p /app/var && chown okr /app/var
USER okr
EXPOSE 8000
CMD ["okr", "serve"]
