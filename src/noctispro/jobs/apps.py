from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "noctispro.jobs"
    label = "jobs"
    verbose_name = "Jobs"
