import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "noctispro.web.settings")

from noctispro.bootstrap import setup_django

setup_django()

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
