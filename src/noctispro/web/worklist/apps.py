from django.apps import AppConfig


class WorklistConfig(AppConfig):
    name = "noctispro.web.worklist"
    label = "worklist"
    verbose_name = "Worklist"
