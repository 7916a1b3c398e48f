#!/usr/bin/env bash
# First start of the compose PostgreSQL (run by the image from
# /docker-entrypoint-initdb.d/ on an empty data directory only): one role and one
# database per service. Each role owns its database alone and may not connect to
# the others', so no service can read another's tables.
# Each NAME's password comes from the environment as NAME_DB_PASSWORD
# (USERS_DB_PASSWORD, ...). SERVICE_DATABASES names them; by default, every NAME
# with a NAME_DB_PASSWORD, that is each service's that docker-compose.yml passes
# (so a new service's database needs no line here).
set -euo pipefail

passwords_given() {  # the NAMEs of the NAME_DB_PASSWORD variables, lower case
  local variable
  for variable in $(compgen -e); do
    if [[ $variable == ?*_DB_PASSWORD ]]; then
      variable=${variable%_DB_PASSWORD}
      echo "${variable,,}"
    fi
  done
}

create_service_database() {  # create_service_database NAME
  local name=$1
  local password_variable="${name^^}_DB_PASSWORD"
  local password="${!password_variable:-}"
  if [ -z "$password" ]; then
    echo "init-databases: no password for the $name role; set $password_variable" >&2
    exit 1
  fi
  # psql variables (:"name", :'password') quote identifiers and literals safely
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"name" TO :"name";
SQL
  # PostgreSQL 15 no longer lets everyone create in public; the owner may
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$name" \
    -v name="$name" <<'SQL'
ALTER SCHEMA public OWNER TO :"name";
SQL
}

databases=${SERVICE_DATABASES:-$(passwords_given)}
if [ -z "${databases//[[:space:]]/}" ]; then
  echo "init-databases: no database to make; set NAME_DB_PASSWORD for each service" >&2
  exit 1
fi
for name in $databases; do
  create_service_database "$name"
done
