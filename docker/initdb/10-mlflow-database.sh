#!/bin/sh
# Run by the postgres image once, when its data volume is first initialised:
# the database of MLflow's tracking server, next to pg-retrain's own.
# (With a volume initialised before this script existed, create it by hand:
#  docker compose exec db createdb -U postgres mlflow)
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v mlflow_db="${MLFLOW_DB:-mlflow}" <<'SQL'
CREATE DATABASE :"mlflow_db";
SQL
