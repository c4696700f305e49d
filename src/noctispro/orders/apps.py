from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "noctispro.orders"
    label = "orders"
    verbose_name = "Orders (Modality Worklist)"
