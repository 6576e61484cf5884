# The order service: one image for web, worker, beat, flower and the release step.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APP_ENV=production

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --create-home --uid 10001 app && chown -R app /app
# Numeric, so Kubernetes can check runAsNonRoot.
USER 10001

EXPOSE 5000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "web:create_app()"]
