"""Django settings. Defaults need no servers: SQLite and a filesystem broker.

Set ``DATABASE_URL`` (e.g. ``postgres://user@host:5432/db``) and ``REDIS_URL``
to use PostgreSQL and Redis, as docker-compose.yml does.
"""

import os
import secrets
import tempfile
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CONDENSE_VAR_DIR", BASE_DIR / "var"))


def _secret_key() -> str:
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    # A per-install key kept on disk, so sessions survive restarts without a
    # key committed to the repository.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# Served over TLS (directly, or behind a proxy that sets X-Forwarded-Proto): cookies only over https,
# HSTS, and plain http redirected. `manage.py check --deploy` is clean with it and a DJANGO_SECRET_KEY.
CONDENSE_HTTPS = os.environ.get("CONDENSE_HTTPS", "0") == "1"
if CONDENSE_HTTPS:
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("CONDENSE_HSTS_SECONDS", 365 * 24 * 3600))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = os.environ.get("CONDENSE_HSTS_PRELOAD", "1") == "1"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc as static files: the API reference needs no CDN
    "webapp.modelhub",
    "webapp.datahub",
    "webapp.fleet",
    "webapp.accounts",
    "webapp.jobs",
    "webapp.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything reads the body (CSRF reads forms): oversized uploads are refused as they arrive.
    "webapp.common.upload_limits.UploadSizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}", conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so a worker process can share the test database.
    # Named per process so two test runs in one checkout do not collide.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"condense-test-{os.getpid()}.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request otherwise
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve static files straight from the source folders when collectstatic has not run.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(os.environ.get("CONDENSE_MEDIA_ROOT", VAR_DIR / "media"))


# -- Storage of uploads and job artifacts (docs/storage.md) ----------------------
def s3_storage_config(*, bucket: str, prefix: str = "", endpoint_url: str = "", region: str = "",
                      access_key: str = "", secret_key: str = "") -> dict:
    """``STORAGES["default"]`` for an S3-compatible store (django-storages). Empty values fall back to boto3's
    own lookup (its env variables, ~/.aws, an instance role).

    Example::

        >>> s3_storage_config(bucket="condense", endpoint_url="http://seaweedfs:8333")["OPTIONS"]["bucket_name"]
        'condense'
    """
    options = {
        "bucket_name": bucket,
        "location": prefix.strip("/"),  # every key under this folder: one bucket can serve several installs
        "file_overwrite": True,  # a name is written once (uploads carry a uuid); a re-run job replaces its files
        "signature_version": "s3v4",
        "querystring_expire": int(os.environ.get("CONDENSE_S3_PRESIGNED_SECONDS", 300)),
        # S3File spools reads and writes in memory up to this size, then on disk (0 would mean memory only).
        "max_memory_size": 8 * 1024 * 1024,
    }
    if endpoint_url:
        # Self-hosted stores (SeaweedFS, MinIO) answer on one host name: bucket in the path, not the host.
        options.update(endpoint_url=endpoint_url, addressing_style="path")
    if region:
        options["region_name"] = region
    if access_key and secret_key:
        options.update(access_key=access_key, secret_key=secret_key)
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


if os.environ.get("CONDENSE_S3_BUCKET"):
    _file_storage = s3_storage_config(
        bucket=os.environ["CONDENSE_S3_BUCKET"],
        prefix=os.environ.get("CONDENSE_S3_PREFIX", ""),
        endpoint_url=os.environ.get("CONDENSE_S3_ENDPOINT_URL", ""),
        region=os.environ.get("CONDENSE_S3_REGION", ""),
        access_key=os.environ.get("AWS_ACCESS_KEY_ID", ""),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
    )
else:
    _file_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}  # under MEDIA_ROOT
STORAGES = {
    "default": _file_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Downloads from an S3 store redirect to a pre-signed URL (the store must be reachable from users' browsers)
# instead of streaming through the web server.
CONDENSE_S3_PRESIGNED_DOWNLOADS = os.environ.get("CONDENSE_S3_PRESIGNED_DOWNLOADS", "0") == "1"
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
CONDENSE_MAX_UPLOAD_BYTES = int(os.environ.get("CONDENSE_MAX_UPLOAD_BYTES", 2 * 1024**3))
# The most values one input sample may have (3 x 1024 x 1024 by default): bounds inspection and jobs.
CONDENSE_MAX_INPUT_ELEMENTS = int(os.environ.get("CONDENSE_MAX_INPUT_ELEMENTS", 3 * 1024 * 1024))
# Caps on an uploaded dataset's content (zip bombs): unpacked bytes and image count.
CONDENSE_DATASET_MAX_UNCOMPRESSED_BYTES = int(os.environ.get("CONDENSE_DATASET_MAX_UNCOMPRESSED_BYTES", 1024**3))
CONDENSE_DATASET_MAX_IMAGES = int(os.environ.get("CONDENSE_DATASET_MAX_IMAGES", 50_000))
# Caps on an uploaded model zip (.onnx + external-data files; zip bombs): files in it, and bytes unpacked.
CONDENSE_MODEL_ZIP_MAX_ENTRIES = int(os.environ.get("CONDENSE_MODEL_ZIP_MAX_ENTRIES", 1000))
CONDENSE_MODEL_MAX_UNPACKED_BYTES = int(os.environ.get("CONDENSE_MODEL_MAX_UNPACKED_BYTES", 2 * 1024**3))
# What a file may declare, checked from its structure and headers before anything is built
# (compression_core.io.IntakeLimits, docs/security.md): ONNX nodes and subgraph nesting, elements of any one
# tensor, a zip member's compression ratio, pixels of one dataset image and of all of them.
CONDENSE_ONNX_MAX_NODES = int(os.environ.get("CONDENSE_ONNX_MAX_NODES", 15_000))
CONDENSE_ONNX_MAX_SUBGRAPH_DEPTH = int(os.environ.get("CONDENSE_ONNX_MAX_SUBGRAPH_DEPTH", 16))
CONDENSE_MAX_TENSOR_ELEMENTS = int(os.environ.get("CONDENSE_MAX_TENSOR_ELEMENTS", 2**28))
CONDENSE_ZIP_MAX_RATIO = float(os.environ.get("CONDENSE_ZIP_MAX_RATIO", 100))
CONDENSE_DATASET_MAX_IMAGE_PIXELS = int(os.environ.get("CONDENSE_DATASET_MAX_IMAGE_PIXELS", 4096 * 4096))
CONDENSE_DATASET_MAX_TOTAL_PIXELS = int(os.environ.get("CONDENSE_DATASET_MAX_TOTAL_PIXELS", 10**9))
# Each upload is inspected by a worker on the "inspect" queue, in a child process with this budget
# (docs/security.md): memory beyond the ~0.9 GB of libraries, CPU seconds, wall seconds, largest file written,
# threads. CONDENSE_INSPECT_ISOLATED=0 inspects inside the worker process without a budget (development only).
CONDENSE_INSPECT_MEMORY_MB = int(os.environ.get("CONDENSE_INSPECT_MEMORY_MB", 3072))
CONDENSE_INSPECT_CPU_S = int(os.environ.get("CONDENSE_INSPECT_CPU_S", 300))
CONDENSE_INSPECT_WALL_S = int(os.environ.get("CONDENSE_INSPECT_WALL_S", 600))
CONDENSE_INSPECT_FILE_MB = int(os.environ.get("CONDENSE_INSPECT_FILE_MB", 4096))
CONDENSE_INSPECT_THREADS = int(os.environ.get("CONDENSE_INSPECT_THREADS", 1))
CONDENSE_INSPECT_ISOLATED = os.environ.get("CONDENSE_INSPECT_ISOLATED", "1") == "1"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

# -- Sign-in lock-out and API tokens (webapp/accounts, docs/security.md) ----------------------------
# Failed sign-ins (login page and token endpoint together) within CONDENSE_LOGIN_LOCKOUT_S lock the username,
# or the client address at its higher cap, for CONDENSE_LOGIN_LOCKOUT_S; counted in the database.
CONDENSE_LOGIN_MAX_FAILURES = int(os.environ.get("CONDENSE_LOGIN_MAX_FAILURES", 5))
CONDENSE_LOGIN_MAX_FAILURES_PER_ADDRESS = int(os.environ.get("CONDENSE_LOGIN_MAX_FAILURES_PER_ADDRESS", 50))
CONDENSE_LOGIN_LOCKOUT_S = int(os.environ.get("CONDENSE_LOGIN_LOCKOUT_S", 15 * 60))
# Reverse proxies in front of the web server that append to X-Forwarded-For (0: clients connect directly).
CONDENSE_NUM_PROXIES = int(os.environ.get("CONDENSE_NUM_PROXIES", 0))
# Tokens from POST /api/v1/auth/token/ expire after this many days (0: never); the tokens page offers a choice.
CONDENSE_TOKEN_TTL_DAYS = int(os.environ.get("CONDENSE_TOKEN_TTL_DAYS", 90))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webapp.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "webapp.api.schema.ApiAutoSchema",  # documents each operation's error responses
    "DEFAULT_PAGINATION_CLASS": "webapp.common.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "webapp.common.exceptions.api_exception_handler",
    # Tries of the token endpoint per client address (webapp/api/auth.py); counted in the cache, per
    # web process unless a shared cache is configured. The lock-out below holds across processes.
    "DEFAULT_THROTTLE_RATES": {"auth": os.environ.get("CONDENSE_AUTH_RATE", "10/min")},
    "NUM_PROXIES": CONDENSE_NUM_PROXIES or None,
    "DEFAULT_PARSER_CLASSES": [
        "webapp.common.bounded_json.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Condense API",
    "DESCRIPTION": "Upload PyTorch models, run pruning and quantization jobs, download smaller models.",
    "VERSION": "1",
    # The schema lists every endpoint and field: signed-in users only, unless the operator publishes it.
    # Request bodies as components of their own: a file field is a binary part there, not a URL string.
    "COMPONENT_SPLIT_REQUEST": True,
    # POST /models/ is one of two shapes by "source" (webapp/api/serializers.py): each one's enum is named.
    "ENUM_NAME_OVERRIDES": {"SourceEnum": "webapp.modelhub.models.ModelArtifact.Source",
                            "JobStatusEnum": "webapp.jobs.models.Job.Status",
                            "UploadStatusEnum": "webapp.common.intake.IntakeStatus",
                            "OnnxSourceEnum": ["onnx"], "BuiltinSourceEnum": ["builtin"]},
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "webapp.api.schema.inline_one_value_enums"],
    # The API reference pages (/api/v1/docs/, /api/v1/redoc/) load their scripts from our static files.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge: Swagger UI would send the schema's URL to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SERVE_PERMISSIONS": (["rest_framework.permissions.AllowAny"] if os.environ.get("CONDENSE_PUBLIC_SCHEMA") == "1"
                          else ["rest_framework.permissions.IsAuthenticated"]),
}

# -- Celery --------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
BROKER_DIR = Path(os.environ.get("CONDENSE_BROKER_DIR", VAR_DIR / "broker"))


def filesystem_broker_options(folder: Path) -> dict:
    """Kombu's filesystem transport: a broker that needs no server."""
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }


# Publishing a job waits at most this long per try for the broker (then the sweep retries it).
CONDENSE_PUBLISH_TIMEOUT_S = float(os.environ.get("CONDENSE_PUBLISH_TIMEOUT_S", 2))
CONDENSE_PUBLISH_RETRIES = int(os.environ.get("CONDENSE_PUBLISH_RETRIES", 1))
# A queued job that could not be published for this long fails with a sentence.
CONDENSE_PUBLISH_GIVE_UP_S = int(os.environ.get("CONDENSE_PUBLISH_GIVE_UP_S", 15 * 60))
# A queued job whose message was sent this long ago while its queue is empty is sent again.
CONDENSE_REPUBLISH_S = int(os.environ.get("CONDENSE_REPUBLISH_S", 60))
# Leases (webapp/jobs/leases.py): renewed every HEARTBEAT_S, taken over LEASE_S after the last renewal.
CONDENSE_HEARTBEAT_S = float(os.environ.get("CONDENSE_HEARTBEAT_S", 10))
CONDENSE_LEASE_S = float(os.environ.get("CONDENSE_LEASE_S", 30))
# Every worker sweeps this often (expired leases, lost messages, orphaned scratch folders).
CONDENSE_SWEEP_S = float(os.environ.get("CONDENSE_SWEEP_S", 15))
# Runs of one job before it fails with its history (a job that kills its worker twice will again).
CONDENSE_JOB_MAX_ATTEMPTS = int(os.environ.get("CONDENSE_JOB_MAX_ATTEMPTS", 2))
# Time limits: at the soft limit a job stops at its next step; the hard limit (soft + grace) kills it.
# Sized for fine-tuning a large model for many epochs on a CPU worker.
CONDENSE_JOB_TIME_LIMIT_S = int(os.environ.get("CONDENSE_JOB_TIME_LIMIT_S", 8 * 3600))
CONDENSE_JOB_HARD_LIMIT_GRACE_S = int(os.environ.get("CONDENSE_JOB_HARD_LIMIT_GRACE_S", 10 * 60))



def redis_broker_options() -> dict:
    """Kombu's Redis transport: a broker that stops answering costs a publish seconds, not minutes."""
    return {
        # A message is redelivered after visibility_timeout; with leases a redelivery of a running job
        # does nothing, so this only bounds how long a message of a killed worker waits to come back.
        "visibility_timeout": CONDENSE_JOB_TIME_LIMIT_S + CONDENSE_JOB_HARD_LIMIT_GRACE_S + 600,
        "socket_timeout": CONDENSE_PUBLISH_TIMEOUT_S,
        "socket_connect_timeout": CONDENSE_PUBLISH_TIMEOUT_S,
    }


if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = redis_broker_options()
    CELERY_BROKER_CONNECTION_TIMEOUT = CONDENSE_PUBLISH_TIMEOUT_S
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(BROKER_DIR)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A worker is live while its last heartbeat is younger than this (it beats every ~10 s).
CONDENSE_WORKER_TIMEOUT_S = int(os.environ.get("CONDENSE_WORKER_TIMEOUT_S", 45))
# A job asking for a GPU while no GPU worker is live: refused (default), or queued to wait for one (1).
CONDENSE_GPU_JOBS_WAIT = os.environ.get("CONDENSE_GPU_JOBS_WAIT", "0") == "1"
# Models in and out of a job; trusted mode lets workers unpickle uploads.
CONDENSE_TRUSTED_PICKLES = os.environ.get("CONDENSE_TRUSTED_PICKLES", "0") == "1"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("CONDENSE_LOG_LEVEL", "INFO")},
}
