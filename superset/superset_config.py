# Superset's configuration for the antenna platform (SUPERSET_CONFIG_PATH points here).
#
# Read by Superset's own venv (.venv-superset), never by the platform's. Nothing secret
# lives in this file: antenna_platform/dashboards/server.py passes the metadata database
# URL and the path of the SECRET_KEY file (generated once under ANTENNA_HOME) in the
# environment of the processes it starts.
import os
from pathlib import Path

SECRET_KEY = Path(os.environ["ANTENNA_SUPERSET_SECRET_KEY_FILE"]).read_text().strip()
# Superset's own metadata (users, charts, dashboards): database `superset` on the
# platform's Postgres.
SQLALCHEMY_DATABASE_URI = os.environ["ANTENNA_SUPERSET_METADATA_URL"]

# One process, no Redis: in-memory caches. Chart data is cached briefly so the live
# dashboard (refreshing every 30 s) still shows the stream's latest windows.
CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 300}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 20}
FILTER_STATE_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 86400}
EXPLORE_FORM_DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 86400}
RATELIMIT_STORAGE_URI = "memory://"

# Everyone logs in: no anonymous role with access to data.
PUBLIC_ROLE_LIKE = None
# Served on 127.0.0.1 over plain HTTP.
TALISMAN_ENABLED = False
WTF_CSRF_ENABLED = True
SESSION_COOKIE_SECURE = False
# No example data, no telemetry, no calls home.
SUPERSET_LOAD_EXAMPLES = False
SCARF_ANALYTICS = False
FEATURE_FLAGS = {"DASHBOARD_RBAC": False, "EMBEDDED_SUPERSET": False}
CONTENT_SECURITY_POLICY_WARNING = False
LOG_LEVEL = os.environ.get("ANTENNA_SUPERSET_LOG_LEVEL", "WARNING")
