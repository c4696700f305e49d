from django.apps import AppConfig


class IndexConfig(AppConfig):
    name = "noctispro.index"
    label = "index"
    verbose_name = "Archive index"
