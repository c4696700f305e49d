"""Django settings, derived from the one `noctispro.conf.Settings` (DESIGN §2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from noctispro.conf import get_settings

PACKAGE_DIR = Path(__file__).resolve().parent.parent
_s = get_settings()


def database_from_url(url: str) -> dict[str, Any]:
    """Django DATABASES entry for `sqlite:///path` or `postgresql://user:pw@host:port/db`."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme == "sqlite":
        # sqlite:////absolute/path or sqlite:///relative/path (the SQLAlchemy convention).
        if parts.netloc:
            raise ValueError("DATABASE_URL for SQLite must be sqlite:////absolute/path")
        path = unquote(parts.path)[1:]
        if not path:
            raise ValueError("DATABASE_URL for SQLite needs a file path")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            # Keep connections: reconnecting costs the PRAGMAs, and closing the last
            # connection checkpoints the WAL (an fsync) — once per instance otherwise.
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                # Several processes write (api, dicom, worker): take the write lock at
                # BEGIN instead of upgrading later, which is where SQLITE_BUSY comes from.
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": (
                    "PRAGMA journal_mode=WAL;"
                    # FULL: a commit is on disk before the C-STORE-RSP / HTTP 200 that
                    # acknowledges it (NORMAL may lose the last commits of the WAL on
                    # power loss, leaving acknowledged blobs without their index rows).
                    "PRAGMA synchronous=FULL;"
                    "PRAGMA foreign_keys=ON;"
                    "PRAGMA busy_timeout=30000;"
                ),
            },
            "TEST": {"NAME": str(Path(path).with_name("test-" + Path(path).name))},
        }
    if scheme in {"postgres", "postgresql"}:
        options = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ValueError(f"unsupported DATABASE_URL scheme {parts.scheme!r}")


SECRET_KEY = _s.effective_secret_key()
DEBUG = _s.debug
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", *_s.allowed_hosts]
if _s.bind not in {"127.0.0.1", "0.0.0.0", "::", "localhost"}:
    ALLOWED_HOSTS.append(_s.bind)
CSRF_TRUSTED_ORIGINS = [o for o in _s.cors_origins if o.startswith(("http://", "https://"))]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "noctispro.accounts",
    "noctispro.index",
    "noctispro.jobs",
    "noctispro.orders",
    "noctispro.web.worklist",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "noctispro.web.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [PACKAGE_DIR / "web" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]
ASGI_APPLICATION = "noctispro.web.asgi.application"

DATABASES = {"default": database_from_url(_s.database_url)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "worklist:studies"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = _s.token_ttl_seconds
SESSION_COOKIE_SECURE = _s.is_production
CSRF_COOKIE_SECURE = _s.is_production
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Uploads through the web page stream to disk past 1 MiB; the request limit is ours.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
_s.tmp_dir.mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_TEMP_DIR = str(_s.tmp_dir)
DATA_UPLOAD_MAX_NUMBER_FILES = _s.max_upload_files

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = _s.data_dir / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "pynetdicom": {"level": "WARNING"},
        "django.db.backends": {"level": "WARNING"},
    },
}
