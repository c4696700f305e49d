from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "noctispro.accounts"
    label = "accounts"
    verbose_name = "Users and facilities"
