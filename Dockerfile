# One image for the three pg-retrain services of docker-compose.yml: the
# migrations (`worker migrate`), the worker (`worker listen`) and the MLflow
# tracking server (`mlflow server`, installed with pg-retrain).
# Everything is installed here, at build time; `docker compose up` installs
# nothing.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# The dependencies first, read from pyproject.toml, in a layer of their own:
# a change to the code does not download MLflow and scikit-learn again.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install -r requirements.txt

# Then pg-retrain itself. The wheel carries the migrations, the SQL and
# alembic.ini (pyproject force-includes them) and names README.md.
COPY README.md alembic.ini ./
COPY migrations ./migrations
COPY sql ./sql
COPY worker ./worker
RUN pip install --no-deps .

# Not root. /mlartifacts is where the MLflow server keeps artifacts (a volume
# in compose; a new volume takes this directory's owner).
RUN useradd --create-home --uid 10001 pgretrain \
    && mkdir -p /mlartifacts && chown pgretrain /mlartifacts
USER pgretrain
WORKDIR /home/pgretrain

CMD ["worker", "listen"]
